"""What "every value parses exactly" means for the types ``SYNC_INFER_TYPES`` may give a column.

A column whose declared type names a date, time, timestamp, JSON or UUID starts, with the setting, from
the PostgreSQL type it names (column_types.py); these encoders then accept only the values that read
back from that type as the same value, and refuse any other (``ValueRejected``), which widens the
column back to text as any misfit widens a column. Accepted values are sent as they are, for
PostgreSQL's input function to read (as for a pin); what reads back differently, in form only:

* ``date``: ``YYYY-MM-DD``, a real calendar day of years 0001 to 9999; reads back identical.
* ``time``: ``HH:MM:SS`` with up to 6 fractional digits (PostgreSQL keeps microseconds: a 7th digit
  would be rounded), hours 00 to 23; trailing fractional zeros read back dropped (``.500`` as ``.5``).
* ``timestamp``: a date, ``T`` or a space, a time as above, no offset; reads back with a space.
* ``timestamptz``: the same with ``Z`` or ``+HH:MM``/``-HH:MM`` (up to 15:59, PostgreSQL's range);
  the instant is kept, the offset is not: it reads back in the reader's session time zone.
* ``jsonb``: an object or array (a bare scalar is any text, not a document) that is valid JSON with
  no duplicate key (jsonb keeps the last one: a value lost), no NaN/Infinity, no ``\\u0000`` or lone
  surrogate (jsonb refuses them), no number past 1e±1000; key order, whitespace, escapes and number
  spelling (``1e2`` as ``100``) read back normalized, the document equal.
* ``uuid``: 8-4-4-4-12 hex digits, either case; reads back lowercase. No braces, no ``urn:``.

Only text storage qualifies: an integer or real in a DATE column (an epoch number) is not read as a
date, and keeps the column text. ``SYNC_COLUMN_TYPES`` pins instead for a column to convert anyway.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from decimal import Decimal

from .types import COPY_NULL, TEXT, PgType, ValueRejected, _describe, _encode_text, pg_type_for

_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,6})?"
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-5]):[0-5][0-9])"
_DATE_RE = re.compile(_DATE, re.ASCII)
_TIME_RE = re.compile(_TIME, re.ASCII)
_TIMESTAMP_RE = re.compile(f"{_DATE}[T ]{_TIME}", re.ASCII)
_TIMESTAMPTZ_RE = re.compile(f"{_DATE}[T ]{_TIME}{_OFFSET}", re.ASCII)
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
_MAX_JSON_EXPONENT = 1000


def _real_day(match: re.Match[str]) -> bool:
    try:
        datetime.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:  # Feb 30, month 13, year 0000
        return False
    return True


def _real_time(hours: str, minutes: str, seconds: str) -> bool:
    return int(hours) < 24 and int(minutes) < 60 and int(seconds) < 60


def exact_date(text: str) -> bool:
    found = _DATE_RE.fullmatch(text)
    return found is not None and _real_day(found)


def exact_time(text: str) -> bool:
    found = _TIME_RE.fullmatch(text)
    return found is not None and _real_time(found[1], found[2], found[3])


def _exact_stamp(pattern: re.Pattern[str], text: str) -> bool:
    found = pattern.fullmatch(text)
    return found is not None and _real_day(found) and _real_time(found[4], found[5], found[6])


def exact_timestamp(text: str) -> bool:
    return _exact_stamp(_TIMESTAMP_RE, text)


def exact_timestamptz(text: str) -> bool:
    return _exact_stamp(_TIMESTAMPTZ_RE, text)


def exact_uuid(text: str) -> bool:
    return _UUID_RE.fullmatch(text) is not None


class _NotExact(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _NotExact("duplicate key")
    return found


def _refuse_constant(name: str) -> object:
    raise _NotExact(name)


def _number(text: str) -> Decimal:
    number = Decimal(text)
    if abs(number.adjusted()) > _MAX_JSON_EXPONENT:
        raise _NotExact("number out of range")
    return number


def _strings_held(doc: object) -> bool:
    """Whether jsonb holds every string of ``doc``: no NUL, no lone surrogate (JSON escapes may spell both)."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item or any("\ud800" <= c <= "\udfff" for c in item):
                return False
    return True


def exact_json(text: str) -> bool:
    if text.lstrip(" \t\n\r")[:1] not in ("{", "["):
        return False
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
            parse_float=_number,
            parse_int=_number,
        )
    except (ValueError, RecursionError):  # invalid JSON (json's own error is a ValueError), or _NotExact
        return False
    return _strings_held(doc)


def _encoder(name: str, exact: Callable[[str], bool], form: str) -> Callable[[object], str]:
    def encode(value: object) -> str:
        if value is None:
            return COPY_NULL
        if type(value) is str and exact(value):
            return _encode_text(value)  # JSON may hold tabs, newlines or backslashes: escaped for COPY
        raise ValueRejected(f"value {_describe(value)} is not {form}, which {name} needs (SYNC_INFER_TYPES)")

    return encode


def _inferred(name: str, exact: Callable[[str], bool], form: str) -> PgType:
    return PgType(name, _encoder(name, exact, form))


DATE = _inferred("date", exact_date, "an ISO-8601 date YYYY-MM-DD")
TIME = _inferred("time without time zone", exact_time, "an ISO-8601 time HH:MM:SS[.ffffff]")
TIMESTAMP = _inferred(
    "timestamp without time zone", exact_timestamp, "an ISO-8601 timestamp without offset, YYYY-MM-DD HH:MM:SS[.ffffff]"
)
TIMESTAMPTZ = _inferred(
    "timestamp with time zone", exact_timestamptz, "an ISO-8601 timestamp with Z or an offset +HH:MM"
)
JSONB = _inferred("jsonb", exact_json, "a JSON object or array without duplicate keys")
UUID = _inferred("uuid", exact_uuid, "a UUID of 8-4-4-4-12 hex digits")
INFERRED = {t.name: t for t in (DATE, TIME, TIMESTAMP, TIMESTAMPTZ, JSONB, UUID)}

# Per value, whichever a timestamp column's values are: a column takes timestamptz only when every value
# has an offset, timestamp only when none has (a mix has no one type: text).
CHECKS: dict[str, Callable[[str], bool]] = {
    DATE.name: exact_date,
    TIME.name: exact_time,
    TIMESTAMP.name: exact_timestamp,
    TIMESTAMPTZ.name: exact_timestamptz,
    JSONB.name: exact_json,
    UUID.name: exact_uuid,
}


def candidates(declared_type: str) -> tuple[PgType, ...]:
    """The inferred types a column declared so may take, the one to start from first; () for none.
    Only names that map to text today (types.pg_type_for): an INTEGER-affinity name stays bigint."""
    if pg_type_for(declared_type) is not TEXT:
        return ()
    name = declared_type.upper()
    if "JSON" in name:
        return (JSONB,)
    if "UUID" in name or "GUID" in name:
        return (UUID,)
    if "DATETIME" in name or "TIMESTAMP" in name:
        return (TIMESTAMP, TIMESTAMPTZ)
    if "DATE" in name:
        return (DATE,)
    if "TIME" in name:
        return (TIME,)
    return ()


# The same checks for the Arrow path (adbc_sqlite.py), which reads in C and sends each value's text for
# PostgreSQL to read: RE2 patterns a batch's column must match throughout, checked only in batches that are
# sent (an unchanged batch, recognised by its digest, costs nothing more), else the table reads on the exact
# path, whose encoders decide. They check the shape only: within it PostgreSQL's input functions refuse what
# the checks above refuse (Feb 30, month 13, year 0000, an offset past 15:59), so that COPY fails and the read
# falls back to the exact path too. What PostgreSQL would accept but read differently (hour 24, second 60,
# a 7th fractional digit, other formats) is outside the shapes. jsonb has none (duplicate keys are beyond a
# pattern): a batch with a jsonb value always reads on the exact path.
_ARROW_DATE = "[0-9]{4}-[0-9]{2}-[0-9]{2}"
_ARROW_TIME = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
_ARROW_STAMP = f"{_ARROW_DATE}[T ]{_ARROW_TIME}"
ARROW_PATTERNS: dict[str, str | None] = {
    DATE.name: f"^{_ARROW_DATE}$",
    TIME.name: f"^{_ARROW_TIME}$",
    TIMESTAMP.name: f"^{_ARROW_STAMP}$",
    TIMESTAMPTZ.name: f"^{_ARROW_STAMP}(Z|[+-][01][0-9]:[0-5][0-9])$",
    JSONB.name: None,
    UUID.name: "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}
