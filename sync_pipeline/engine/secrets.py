"""Keep PostgreSQL passwords out of logs, metadata and exception messages.

libpq is lenient: a URI password may hold raw ``?``, ``#`` or ``@``, and a ``key=value``
password may hold ``&``. So masking is by pattern (which may hide a little too much, never
too little) and then by value: whatever password libpq itself would use is replaced
wherever it still appears.
"""

from __future__ import annotations

import re

import psycopg2.extensions

MASK = "***"
# Greedy up to the last "@": everything between "user:" and the host is the password.
_URI_USERINFO = re.compile(r"^(?P<head>[a-z][a-z0-9+.-]*://[^:@/?#]*:)(?P<pw>.*)(?P<tail>@[^@]*)$", re.I | re.S)
_URI_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&]*)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S*)", re.I)


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries, if any (URI or key=value form), as libpq reads it."""
    try:
        return psycopg2.extensions.parse_dsn(dsn).get("password") or None
    except psycopg2.ProgrammingError:
        return None


def _written_passwords(dsn: str) -> list[str]:
    """The password as written in the DSN text (it may be percent-encoded or quoted)."""
    found = [m["pw"] for m in (_URI_USERINFO.match(dsn),) if m and m["pw"]]
    found += [m["pw"] for m in _URI_QUERY_PASSWORD.finditer(dsn) if m["pw"]]
    found += [m["pw"] for m in _KV_PASSWORD.finditer(dsn) if m["pw"]]
    decoded = dsn_password(dsn)
    return [p for p in {*found, *([decoded] if decoded else [])} if p]


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``; safe to show anywhere."""
    if "://" in dsn.split("=", 1)[0]:
        masked = _URI_USERINFO.sub(lambda m: m["head"] + (MASK if m["pw"] else "") + m["tail"], dsn)
        masked = _URI_QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, masked)
    else:
        masked = _KV_PASSWORD.sub(lambda m: m["head"] + MASK, dsn)
    for password in sorted(_written_passwords(dsn), key=len, reverse=True):
        masked = masked.replace(password, MASK)
    return masked


def redact(text: str, dsn: str | None) -> str:
    """Remove the DSN, and its password in any spelling, from any text (a driver's error, say)."""
    if not dsn:
        return text
    text = text.replace(dsn, mask_dsn(dsn))
    for password in sorted(_written_passwords(dsn), key=len, reverse=True):
        text = text.replace(password, MASK)
    return text
