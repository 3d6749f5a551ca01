"""Property: any SQLite value reads back from PostgreSQL equal, or is reported, or (with
``strict_types``) the sync fails naming it.

Hypothesis builds tables with random declared types and fills them with values of every
SQLite storage class (text in INTEGER columns, NUL bytes, blobs, +-Infinity, -0.0, 64-bit
bounds, dates as text and as numbers, booleans as 0/1 and 't'/'f', typeless columns). What
SQLite actually stored (after its own affinity conversions) is the ground truth.
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from sync_pipeline.engine import SqliteSnapshot, SyncOptions, TableSyncResult, ValueMismatchError, sync_table
from sync_pipeline.engine.sqlite_source import quote_sqlite_identifier
from sync_pipeline.engine.types import pg_type_for

from .conftest import drop_schema, query

DECLARED = [
    "INTEGER", "INT", "BIGINT", "TEXT", "VARCHAR(20)", "CLOB", "BLOB", "", "REAL", "DOUBLE", "FLOAT",
    "NUMERIC", "DECIMAL(10,2)", "BOOLEAN", "DATETIME", "DATE", "TIMESTAMP", "JSON", "some custom type",
]  # fmt: skip

VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, -(2**63), 2**63 - 1, 1700000000]),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 0.1, 1e300, float("inf"), float("-inf"), 1.5]),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    st.sampled_from(["t", "f", "1", "0", "2024-02-29 12:00:00", "1700000000", "1.0", " 42", "\\N", "a\tb\nc\\d"]),
    st.binary(max_size=12),
)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[object]]]:
    types = draw(st.lists(st.sampled_from(DECLARED), min_size=1, max_size=4))
    rows = draw(st.lists(st.lists(VALUES, min_size=len(types), max_size=len(types)), max_size=6))
    return types, rows


def _float_text(value: float) -> str:
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def reads_back_equal(pg_type: str, stored: object, got: object) -> bool:
    if stored is None or got is None:
        return stored is None and got is None
    if pg_type == "text":
        expected = (
            stored if isinstance(stored, str) else _float_text(stored) if isinstance(stored, float) else str(stored)
        )
        return got == expected
    if pg_type == "bytea":
        return bytes(got) == stored
    if pg_type == "double precision":
        return got == stored and math.copysign(1, got) == math.copysign(1, stored)
    if pg_type == "numeric":
        return Decimal(got) == Decimal(repr(stored) if isinstance(stored, float) else stored)
    return got == stored  # bigint, boolean (True == 1)


def _sync(path: Path, dsn: str, schema: str, strict: bool) -> TableSyncResult:
    conn = psycopg2.connect(dsn)
    try:
        with SqliteSnapshot(path) as snapshot:
            return sync_table(
                snapshot, conn, snapshot.table("t"), schema, SyncOptions(batch_size=3, strict_types=strict)
            )
    finally:
        conn.close()


_LIMIT = 2**53


def _fits(pg_type: str, values: list[object]) -> bool:
    """The README's rule of which values each mapped type holds exactly (written here, not imported)."""
    kinds = {type(v) for v in values}
    ints = [v for v in values if type(v) is int]
    if pg_type == "boolean":
        return kinds <= {int} and all(v in (0, 1) for v in ints)
    if pg_type == "bigint":
        return kinds <= {int}
    if pg_type == "double precision":
        return kinds <= {int, float} and all(-_LIMIT <= v <= _LIMIT for v in ints)
    if pg_type == "numeric":
        return kinds <= {int, float}
    if pg_type == "bytea":
        return kinds <= {bytes}
    return bytes not in kinds and not any(isinstance(v, str) and "\x00" in v for v in values)  # text


def _expected_type(mapped: str, values: list[object]) -> str:
    """The narrowest type for a column's values, by the issue's examples."""
    values = [v for v in values if v is not None]
    kinds = {type(v) for v in values}
    if _fits(mapped, values):
        return mapped
    if str in kinds or (bytes in kinds and kinds & {int, float}):
        return "text"
    if bytes in kinds:
        return "bytea"
    if float in kinds:
        return "double precision" if _fits("double precision", values) else "numeric"
    return "bigint"


def _repaired(value: object) -> object:
    """What the README says a repaired text column stores for a value text cannot hold."""
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _pg_table(dsn: str, schema: str) -> list[tuple[object, ...]]:
    rows = query(dsn, sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(schema, "t")))
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


@pytest.mark.parametrize("strict", [True, False], ids=["strict_types", "types_from_data"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_every_value_reads_back_equal_or_is_reported_or_with_strict_types_fails_naming_it(pg_dsn, strict, table):
    types, rows = table
    columns = [f"c{i}" for i in range(len(types))]
    schema = f"h_{uuid.uuid4().hex[:10]}"
    query(pg_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(tmp) / "h.sqlite"
            src = sqlite3.connect(path)
            definition = ", ".join(f"{c} {t}" for c, t in zip(columns, types, strict=True))
            src.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {definition})")
            src.executemany("INSERT INTO t (id) VALUES (?)", [(i,) for i in range(1, len(rows) + 1)])
            src.commit()
            _sync(path, pg_dsn, schema, strict)  # the last good state: every value NULL
            before = _pg_table(pg_dsn, schema)
            for row_id, values in enumerate(rows, start=1):
                assignments = ", ".join(f"{c} = ?" for c in columns)
                src.execute(f"UPDATE t SET {assignments} WHERE id = ?", [*values, row_id])
            src.commit()
            stored = src.execute(f"SELECT * FROM {quote_sqlite_identifier('t')} ORDER BY id").fetchall()
            src.close()

            try:
                result = _sync(path, pg_dsn, schema, strict)
            except ValueMismatchError as exc:
                assert strict, f"without strict_types nothing may fail: {exc}"
                event("refused, naming the value")
                assert exc.table == "t"
                assert exc.column in columns
                assert exc.row_key.startswith("(id=")
                assert _pg_table(pg_dsn, schema) == before
                return
            event("every value read back equal")
            got = _pg_table(pg_dsn, schema)
            pg_types = [
                typ
                for (typ,) in query(
                    pg_dsn,
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 1 ORDER BY attnum",
                    (f'"{schema}".t',),
                )
            ]
            assert len(got) == len(stored)
            retyped = {r.column: r for r in result.columns_retyped}
            for index, (column, declared) in enumerate(zip(columns, types, strict=True)):
                values = [row[index + 1] for row in stored]
                mapped = pg_type_for(declared).name
                assert pg_types[index] == _expected_type(mapped, values), (declared, values, pg_types[index])
                changed = sum(1 for v in values if v is not None and _repaired(v) != v and pg_types[index] == "text")
                if pg_types[index] != mapped or changed:
                    assert column in retyped, (column, declared, pg_types[index])
                    assert (retyped[column].pg_type, retyped[column].values_changed) == (pg_types[index], changed)
                    assert retyped[column].example_key is None or retyped[column].example_key.startswith("(id=")
                else:
                    assert column not in retyped
            for stored_row, got_row in zip(stored, got, strict=True):
                for index, (pg_type, s, g) in enumerate(zip(pg_types, stored_row[1:], got_row[1:], strict=True)):
                    if columns[index] in retyped and retyped[columns[index]].values_changed:
                        s = _repaired(s)
                    assert reads_back_equal(pg_type, s, g), (pg_type, s, g)
        finally:
            drop_schema(pg_dsn, schema)
