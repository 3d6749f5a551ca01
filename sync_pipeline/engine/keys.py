"""Primary keys that SQLite keeps apart but PostgreSQL could merge once converted.

Two distinct SQLite keys become one PostgreSQL key only where a key column's conversion is not one
to one (``merging_key_columns`` lists every way the type model has):

* text beside numbers in a column mapped to ``text``: the integer ``7`` and the text ``'7'``;
* reals beside integers past 2^53 in a column mapped to ``numeric``: a real is sent as its shortest
  exact text, so ``1.1529215046068472e+18`` (the real 2^60 + 256) is the numeric
  1152921504606847200, which an integer may be too (SQLite compares them exactly: distinct);
* a column whose type repairs values (``types.REPAIRED_TEXT``): two texts that differ only in
  invalid bytes, or a blob and the text of its ``\\x`` hex digits;
* a pinned type PostgreSQL parses from text (``column_types``): its parser or its ``=`` may be
  coarser than SQLite's (``'A'`` and ``'a'`` as citext, ``'1 day'`` and ``'24 hours'`` as interval,
  16777217 and 16777216 as real).

Every other conversion is one to one: bigint, boolean and bytea take one storage class as it is, and
double precision takes integers only within 2^53, where they are exact. Within one storage class
numbers stay apart in text (a real's text always has a ``.``, an exponent or ``inf``), and the
merges SQLite's own ``=`` makes cannot be keys at all: ``3`` and ``3.0``, ``0.0`` and ``-0.0``
are one key in SQLite already.

Such a table has every key checked, not only the rows a sync happens to send: a row below the
cursor watermark, or in a batch skipped as unchanged, would otherwise be overwritten unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterator

from .sqlite_source import ColumnInfo, SqliteSnapshot, TableInfo, quote_sqlite_identifier
from .types import BIGINT, BOOLEAN, BYTEA, DOUBLE, NUMERIC, TEXT, Affinity, affinity, decode_leniently

_ONE_TO_ONE = (BIGINT, BOOLEAN, BYTEA, DOUBLE)
_ALWAYS = "1"
_PAST_EXACT_DOUBLE = "({q} > 9007199254740992 OR {q} < -9007199254740992)"


def _merging_condition(column: ColumnInfo, table: str) -> str | None:
    """When the conversion of key ``column`` can make two of its distinct values one: None never,
    else a SQLite expression over the table, true when it holds the values that can meet."""
    pg_type, q = column.pg_type, quote_sqlite_identifier(column.name)
    if pg_type in _ONE_TO_ONE:
        return None
    kind = affinity(column.declared_type)
    # STRICT tables keep an ANY column's values as given, whatever affinity its name has elsewhere.
    converts = column.declared_type.strip().upper() != "ANY"
    if pg_type == TEXT:
        if kind is Affinity.TEXT and converts:  # numbers become text there
            return None
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE typeof({q}) = 'text') "
            f"AND EXISTS (SELECT 1 FROM {table} WHERE typeof({q}) IN ('integer', 'real'))"
        )
    if pg_type == NUMERIC:
        # These affinities store an integral real within 64 bits as an integer (REAL: every number as
        # a real), so no real there has an integer's value.
        if kind in (Affinity.INTEGER, Affinity.NUMERIC, Affinity.REAL) and converts:
            return None
        past = _PAST_EXACT_DOUBLE.format(q=q)
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE typeof({q}) = 'real' AND {past}) "
            f"AND EXISTS (SELECT 1 FROM {table} WHERE typeof({q}) = 'integer' AND {past})"
        )
    return _ALWAYS  # repaired text, or a pinned type PostgreSQL parses


def merging_key_columns(snapshot: SqliteSnapshot, table: TableInfo) -> list[str]:
    """The key columns whose conversion can make two distinct SQLite keys one PostgreSQL key in this
    snapshot (see the module's docstring). Key columns of one-to-one types (the rowid, any integer
    key) cost nothing; the others one SQLite query for all of them, as cheap as a scan can be
    (each ``EXISTS`` stops at its first row)."""
    source = quote_sqlite_identifier(table.name)
    conditions = {c.name: _merging_condition(c, source) for c in table.columns if c.pk_position}
    asked = {name: cond for name, cond in conditions.items() if cond is not None}
    if not asked:
        return []
    found = snapshot.conn.execute(f"SELECT {', '.join(asked.values())}").fetchone()
    return [name for name, holds in zip(asked, found, strict=True) if holds]


def _shown(value: object, storage: str) -> str:
    """One SQLite value as an error names it: its literal (a text not UTF-8 by its bytes) and class."""
    if isinstance(value, bytes):
        try:
            shown = repr(value.decode()) if storage == "text" else f"x'{value.hex()}'"
        except UnicodeDecodeError:
            shown, storage = f"x'{value.hex()}'", "text, not UTF-8"
    else:
        shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{shown} ({storage})"


def key_sources(snapshot: SqliteSnapshot, keys: TableInfo) -> Iterator[bytes]:
    """COPY lines of every key of ``keys`` (a table of its key columns only), each converted as the
    sync converts it, then the SQLite key it came from as text, for naming the two keys that became
    one: read only after such a merge was found (a Python call per value), text as its bytes, so
    that two texts that differ only in invalid bytes are named apart."""
    names = [quote_sqlite_identifier(c) for c in keys.column_names]
    selected = ", ".join(f"{q}, typeof({q})" for q in names)
    conn = snapshot.conn
    conn.text_factory = bytes
    try:
        rows = conn.execute(f"SELECT {selected} FROM {quote_sqlite_identifier(keys.name)}")
        for row in rows:
            values = row[0::2]
            storages = [s.decode() for s in row[1::2]]
            read = [decode_leniently(v) if s == "text" else v for v, s in zip(values, storages, strict=True)]
            fields = [c.pg_type.encode(v) for c, v in zip(keys.columns, read, strict=True)]
            described = ", ".join(
                f"{c}={_shown(v, s)}" for c, v, s in zip(keys.column_names, values, storages, strict=True)
            )
            yield ("\t".join([*fields, TEXT.encode(f"({described})")]) + "\n").encode()
    finally:
        conn.text_factory = str
