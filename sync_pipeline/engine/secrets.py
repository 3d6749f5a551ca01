"""Keep PostgreSQL passwords out of logs, metadata and exception messages."""

from __future__ import annotations

import re

import psycopg2.extensions

_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/?#\s]*)(?P<tail>@)", re.I)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)
MASK = "***"


def dsn_password(dsn: str) -> str | None:
    """The password a DSN carries, if any (URI or key=value form)."""
    try:
        return psycopg2.extensions.parse_dsn(dsn).get("password") or None
    except psycopg2.ProgrammingError:
        return None


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``; safe to show anywhere."""
    masked = _URI_PASSWORD.sub(lambda m: m["head"] + (MASK if m["pw"] else "") + m["tail"], dsn)
    return _KV_PASSWORD.sub(lambda m: m["head"] + MASK, masked)


def redact(text: str, dsn: str | None) -> str:
    """Remove the DSN's password from any text (an error message from a driver, say)."""
    if not dsn:
        return text
    text = text.replace(dsn, mask_dsn(dsn))
    password = dsn_password(dsn)
    if password:
        text = text.replace(password, MASK)
    return mask_dsn(text)
