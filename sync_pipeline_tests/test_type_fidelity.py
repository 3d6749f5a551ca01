"""Property: any SQLite value reads back from PostgreSQL equal, or the sync fails naming it.

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
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from sync_pipeline.engine import SqliteSnapshot, SyncOptions, ValueMismatchError, sync_table
from sync_pipeline.engine.sqlite_source import quote_sqlite_identifier

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


def _sync(path: Path, dsn: str, schema: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        with SqliteSnapshot(path) as snapshot:
            sync_table(snapshot, conn, snapshot.table("t"), schema, SyncOptions(batch_size=3))
    finally:
        conn.close()


def _pg_table(dsn: str, schema: str) -> list[tuple[object, ...]]:
    rows = query(dsn, sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(schema, "t")))
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_every_value_reads_back_equal_or_the_sync_fails_naming_it_and_changes_nothing(pg_dsn, table):
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
            _sync(path, pg_dsn, schema)  # the last good state: every value NULL
            before = _pg_table(pg_dsn, schema)
            for row_id, values in enumerate(rows, start=1):
                assignments = ", ".join(f"{c} = ?" for c in columns)
                src.execute(f"UPDATE t SET {assignments} WHERE id = ?", [*values, row_id])
            src.commit()
            stored = src.execute(f"SELECT * FROM {quote_sqlite_identifier('t')} ORDER BY id").fetchall()
            src.close()

            try:
                _sync(path, pg_dsn, schema)
            except ValueMismatchError as exc:
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
            for stored_row, got_row in zip(stored, got, strict=True):
                for pg_type, s, g in zip(pg_types, stored_row[1:], got_row[1:], strict=True):
                    assert reads_back_equal(pg_type, s, g), (pg_type, s, g)
        finally:
            drop_schema(pg_dsn, schema)
