"""SQLite declared types to PostgreSQL types, and the COPY text encoders that go with them.

SQLite gives a column an *affinity* from its declared type by five ordered rules
(https://www.sqlite.org/datatype3.html section 3.1); any string is a legal type name, so the
mapping below is total: an unknown declared type never crashes, it lands on a rule.

Each PostgreSQL type has an encoder that turns one SQLite value into one field of COPY's text
format. An encoder accepts exactly the values that read back from PostgreSQL equal to what
SQLite holds and raises :class:`ValueRejected` for any other, so a value is never silently
changed (a text in an INTEGER column, a NUL byte in text, an integer too large for a double).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

COPY_NULL = "\\N"
_MAX_EXACT_DOUBLE_INT = 2**53


class Affinity(StrEnum):
    INTEGER = "INTEGER"
    TEXT = "TEXT"
    BLOB = "BLOB"
    REAL = "REAL"
    NUMERIC = "NUMERIC"


def affinity(declared_type: str) -> Affinity:
    """SQLite's column affinity for a declared type, by the documented rule order."""
    name = declared_type.upper()
    if "INT" in name:
        return Affinity.INTEGER
    if "CHAR" in name or "CLOB" in name or "TEXT" in name:
        return Affinity.TEXT
    if "BLOB" in name or not name.strip():
        return Affinity.BLOB
    if "REAL" in name or "FLOA" in name or "DOUB" in name:
        return Affinity.REAL
    return Affinity.NUMERIC


class ValueRejected(ValueError):
    """One SQLite value does not fit its PostgreSQL column; the message says why."""


Encoder = Callable[[object], str]


def _describe(value: object) -> str:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({_storage_class(value)})"


def _storage_class(value: object) -> str:
    return {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)


def _encode_bigint(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is int:
        return str(value)
    raise ValueRejected(f"value {_describe(value)} is not an integer")


def _encode_float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _encode_double(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is float:
        return _encode_float(value)
    if type(value) is int:
        if -_MAX_EXACT_DOUBLE_INT <= value <= _MAX_EXACT_DOUBLE_INT:
            return str(value)
        raise ValueRejected(f"integer {value} cannot be stored exactly as double precision")
    raise ValueRejected(f"value {_describe(value)} is not a number")


def _encode_numeric(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return _encode_float(value)
    raise ValueRejected(f"value {_describe(value)} is not a number")


def _encode_boolean(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is int and value in (0, 1):
        return "t" if value else "f"
    raise ValueRejected(f"value {_describe(value)} is not a boolean (0 or 1)")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _encode_text(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is str:
        if "\x00" in value:
            raise ValueRejected("text contains a NUL byte, which PostgreSQL text cannot hold")
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    # Numbers in a column that maps to text (typeless, DATE/TIME, JSON...) keep their exact
    # decimal text: an epoch timestamp 1700000000 becomes '1700000000', 0.1 becomes '0.1'.
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return _encode_float(value)
    if type(value) is Repaired:
        raise ValueRejected("text is not valid UTF-8, which PostgreSQL text requires")
    raise ValueRejected(f"value {_describe(value)} is not text")


class Repaired(str):
    """Text SQLite held as bytes that are not valid UTF-8, decoded with U+FFFD for each bad byte.

    A subclass so that only the repairing encoder accepts it: every other encoder (and the
    inline fast paths, which test for ``str`` exactly) sends it to the full encoder, which refuses it.
    """


def decode_leniently(raw: bytes) -> str:
    """sqlite3's ``text_factory`` for tables with a repaired text column (valid text stays a plain str)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return Repaired(raw.decode("utf-8", "replace"))


REPLACEMENT = "\ufffd"


def _encode_text_repaired(value: object) -> str:
    """Text for a column no type holds exactly: what text cannot hold is changed, as documented.

    A blob becomes ``\\x`` and its hex digits (PostgreSQL's own text form of bytea), a NUL byte
    becomes U+FFFD, and so does each byte of text that is not valid UTF-8 (see :class:`Repaired`).
    Numbers keep their exact decimal text, as in any text column.
    """
    if type(value) is bytes:
        return "\\\\x" + value.hex()
    if isinstance(value, str) and (type(value) is Repaired or "\x00" in value):
        return _encode_text(str(value).replace("\x00", REPLACEMENT))
    return _encode_text(value)


def _encode_bytea(value: object) -> str:
    if value is None:
        return COPY_NULL
    if type(value) is bytes:
        return "\\\\x" + value.hex()
    raise ValueRejected(f"value {_describe(value)} is not a blob")


@dataclass(frozen=True)
class PgType:
    """A PostgreSQL column type and the encoder of SQLite values into it.

    ``repairs``: the encoder changes the values no PostgreSQL type can hold as they are (see
    :data:`REPAIRED_TEXT`) instead of refusing them.
    """

    name: str
    encode: Encoder
    repairs: bool = False


BIGINT = PgType("bigint", _encode_bigint)
DOUBLE = PgType("double precision", _encode_double)
NUMERIC = PgType("numeric", _encode_numeric)
BOOLEAN = PgType("boolean", _encode_boolean)
TEXT = PgType("text", _encode_text)
BYTEA = PgType("bytea", _encode_bytea)
# Text for a column whose values no single type holds exactly (text beside blobs, NUL bytes,
# invalid UTF-8): chosen only from the data, never from a declaration (see column_types.py).
REPAIRED_TEXT = PgType("text", _encode_text_repaired, repairs=True)
NATIVE = {t.name: t for t in (BIGINT, DOUBLE, NUMERIC, BOOLEAN, TEXT, BYTEA)}


def _pinned_encoder(name: str) -> Encoder:
    """The encoder of a column pinned to the type ``name``: the value's own text, for PostgreSQL's input
    function of that type to read (COPY's text format feeds each field to it).

    The typed encoders refuse text in a ``bigint`` or ``numeric`` column because the engine picked that
    type from the declaration and must not change a value to fit it; a pin is the user saying "read
    this column as that type", and PostgreSQL's reading of a value is the contract ('19.99' into
    ``numeric``, 'true' into ``boolean``, '1 day' into ``interval``), or its error naming column and key.
    Integers go as their digits (0 and 1 read as false and true), reals as their exact shortest
    decimal, so PostgreSQL rounds only where its type does (a ``double precision`` pin of an integer
    past 2^53, as ``float8in`` would). A blob has no text: it is read only by a ``bytea`` pin.
    """
    if name == BYTEA.name:
        return lambda value: _encode_bytea(value) if type(value) is bytes else _encode_text(value)

    def encode(value: object) -> str:
        if type(value) is bytes:
            shown = _describe(value)
            raise ValueRejected(f"value {shown} has no text for PostgreSQL to read as the pinned type {name}")
        return _encode_text(value)

    return encode


def pinned_type(name: str) -> PgType:
    """The type a user pinned (``column_types``), by PostgreSQL's canonical name (``format_type``):
    whatever the type, the value's text read by PostgreSQL's input function (:func:`_pinned_encoder`).
    ``text`` is the engine's own text type already."""
    return TEXT if name == TEXT.name else PgType(name, _pinned_encoder(name))


def pg_type_for(declared_type: str) -> PgType:
    """The PostgreSQL type a SQLite column maps to.

    INTEGER affinity becomes ``bigint`` because SQLite integers are 64-bit. Within NUMERIC
    affinity the declared name decides: SQLite has no date, boolean or JSON storage, so
    dates and times stay the text SQLite holds (no time-zone guessing), BOOLEAN becomes
    ``boolean``, NUMERIC/DECIMAL become ``numeric``, and any other name (JSON, UUID, ...)
    is text. A typeless column (BLOB affinity, no declared type) is text; a declared BLOB
    is ``bytea``.
    """
    name = declared_type.upper()
    kind = affinity(declared_type)
    if kind is Affinity.INTEGER:
        return BIGINT
    if kind is Affinity.TEXT:
        return TEXT
    if kind is Affinity.BLOB:
        return BYTEA if "BLOB" in name else TEXT
    if kind is Affinity.REAL:
        return DOUBLE
    if "BOOL" in name:
        return BOOLEAN
    if "DATE" in name or "TIME" in name:
        return TEXT
    if "NUMERIC" in name or "DECIMAL" in name:
        return NUMERIC
    return TEXT


# Inline fast paths for the common case of each type; anything else goes to the full
# encoder ``{e}``, which escapes, converts or raises ValueRejected for the value ``{v}``.
_FAST_PATHS = {
    "bigint": '("\\\\N" if {v} is None else str({v}) if {v}.__class__ is int else {e}({v}))',
    "double precision": "(repr({v}) if {v}.__class__ is float and {v} - {v} == 0.0 else {e}({v}))",
    # isprintable() is False for tab, newline, CR and NUL (and for some harmless characters,
    # which then simply take the full path).
    "text": '({v} if {v}.__class__ is str and {v}.isprintable() and "\\\\" not in {v} else {e}({v}))',
}


def batch_encoder(types: list[PgType]) -> Callable[[list[tuple[object, ...]]], list[str]]:
    """A function turning a batch of rows into COPY text lines, specialised for these types.

    Calling one encoder per value costs a Python call each (about 270 ns a value); the
    generated list comprehension inlines the common case of each column instead, and calls
    the full encoder only for NULLs, escapes and values that may be rejected. The generated
    source names only ``v0..vN`` and ``e0..eN``: nothing from the SQLite file enters it.
    """
    fields = [_FAST_PATHS.get(t.name, "{e}({v})").format(v=f"v{i}", e=f"e{i}") for i, t in enumerate(types)]
    unpack = "".join(f"v{i}, " for i in range(len(types)))
    source = f"def encode(rows):\n    return ['\\t'.join(({', '.join(fields)},)) for ({unpack}) in rows]\n"
    namespace: dict[str, object] = {}
    namespace.update({f"e{i}": t.encode for i, t in enumerate(types)})
    exec(compile(source, "<batch_encoder>", "exec"), namespace)  # source built from the fixed templates above
    return namespace["encode"]  # type: ignore[return-value]
