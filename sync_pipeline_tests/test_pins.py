"""Pins PostgreSQL can read (issue 25, item 4): a pinned column takes every value PostgreSQL's input function
reads for its type, whatever SQLite stored it as, under session settings the sync fixes itself.

Expected values are PostgreSQL's own reading of the same text (``SELECT %s::type``) under those settings,
so the tests say "what PostgreSQL reads", not how each type parses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from sync_pipeline.engine.errors import ValueMismatchError
from sync_pipeline.engine.sqlite_source import SqliteSnapshot
from sync_pipeline.engine.sync import SyncOptions, sync_table

# pin -> (texts PostgreSQL reads as that type, one text it cannot read). Session-dependent texts on
# purpose: '2024-03-10 02:30' does not exist in New York, 'IST' is +02 in the Default abbreviations and
# +05:30 in the India set, '01/02/2024' is 1 February under DMY, '-1 2:00:00' negates both fields
# under IntervalStyle sql_standard.
PINS: dict[str, tuple[list[str], str]] = {
    "bigint": (["5", " -7 "], "19.99"),
    "int8": (["9223372036854775807"], "9223372036854775808"),
    "numeric": (["19.99", "5", "1.50"], "abc"),
    "decimal": (["-0.001"], "1,5"),
    "double precision": (["19.99", "Infinity"], "abc"),
    "float8": (["5", "1e-3"], "1e999"),
    "boolean": (["true", "f", "yes"], "maybe"),
    "timestamptz": (["2024-03-10 02:30", "2024-01-01 00:00 IST"], "2024-13-01"),
    "date": (["2024-02-29", "01/02/2024"], "2023-02-29"),
    "jsonb": (['{"a": 1}', "[1, 2.50]"], "{a}"),
    "uuid": (["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"], "not-a-uuid"),
    "interval": (["1 day", "-1 2:00:00"], "soon"),
}
# What a role's or database's settings might be; the sync must read pins the same under them.
HOSTILE = (
    "-c TimeZone=America/New_York -c DateStyle=SQL,DMY -c IntervalStyle=sql_standard -c timezone_abbreviations=India"
)
FIXED = "-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres -c timezone_abbreviations=Default"


def _column(pin: str) -> str:
    return "c_" + pin.replace(" ", "_")


def _sync(path: Path, dsn: str, schema: str, pins: Mapping[str, str], session: str = "") -> dict[str, object]:
    """Sync every table on a connection opened with ``session`` options (as a role's settings would be);
    returns the session's TimeZone afterwards too, which the sync must leave as it found it."""
    conn = psycopg2.connect(dsn, options=session)
    try:
        with SqliteSnapshot(path) as snapshot:
            results = {
                t.name: sync_table(snapshot, conn, t, schema, SyncOptions(column_types=dict(pins)))
                for t in snapshot.tables()
            }
        with conn, conn.cursor() as cur:
            cur.execute("SHOW TimeZone")
            results["TimeZone after"] = cur.fetchone()[0]
        return results
    finally:
        conn.close()


def _read(dsn: str, statement: sql.Composable, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows as text, read under the fixed settings (timestamptz and interval text depend on them)."""
    conn = psycopg2.connect(dsn, options=FIXED)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def _as_read_by_pg(dsn: str, pin: str, text: str | None) -> str | None:
    """PostgreSQL's own reading of ``text`` as ``pin``, shown as text under the fixed settings."""
    # The pin is one of PINS' own type names (a constant of this file), not an identifier.
    return _read(dsn, sql.SQL("SELECT %s::{}::text").format(sql.SQL(pin)), (text,))[0][0]


def _mirror(dsn: str, schema: str, table: str, columns: list[str]) -> list[tuple[object, ...]]:
    fields = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    return _read(dsn, sql.SQL("SELECT {} FROM {} ORDER BY id").format(fields, sql.Identifier(schema, table)))


def _rows() -> list[tuple[str | None, ...]]:
    """Row i holds each pin's i-th text (NULL past its last)."""
    depth = max(len(texts) for texts, _ in PINS.values())
    return [tuple(texts[i] if i < len(texts) else None for texts, _ in PINS.values()) for i in range(depth)]


def _all_pins_file(path: Path) -> Path:
    """Table t: one TEXT column per pin (text stays text in SQLite), rows as :func:`_rows`."""
    conn = sqlite3.connect(path)
    columns = ", ".join(f"{_column(p)} TEXT" for p in PINS)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {columns})")
    for i, row in enumerate(_rows()):
        conn.execute(f"INSERT INTO t VALUES ({i + 1}, {', '.join('?' * len(PINS))})", row)
    conn.commit()
    conn.close()
    return path


def test_every_pin_reads_text_as_postgresql_does_whatever_the_session_settings(tmp_path, pg_dsn, schema):
    path = _all_pins_file(tmp_path / "pins.sqlite")
    pins = {f"t.{_column(p)}": p for p in PINS}

    results = _sync(path, pg_dsn, schema, pins, session=HOSTILE)

    assert results["t"].rows_inserted == 3
    expected = [tuple(_as_read_by_pg(pg_dsn, p, v) for p, v in zip(PINS, row, strict=True)) for row in _rows()]
    assert _mirror(pg_dsn, schema, "t", [_column(p) for p in PINS]) == expected
    # The instant is 02:30 UTC, not the New York session's reading (02:30 does not exist there that day).
    (at,) = _read(
        pg_dsn,
        sql.SQL("SELECT extract(epoch FROM c_timestamptz) FROM {} WHERE id = 1").format(sql.Identifier(schema, "t")),
    )
    assert at == _read(pg_dsn, sql.SQL("SELECT extract(epoch FROM timestamptz '2024-03-10 02:30+00')"))[0]
    assert results["TimeZone after"] == "America/New_York"  # SET LOCAL: the caller's session keeps its own

    assert _sync(path, pg_dsn, schema, pins, session=HOSTILE)["t"].rows_changed == 0  # read the same again


@pytest.mark.parametrize("pin", list(PINS))
def test_a_text_postgresql_cannot_read_fails_naming_column_and_key_and_changes_nothing(tmp_path, pg_dsn, schema, pin):
    path = _all_pins_file(tmp_path / "pins.sqlite")
    pins = {f"t.{_column(p)}": p for p in PINS}
    _sync(path, pg_dsn, schema, pins)
    columns = [_column(p) for p in PINS]
    before = _mirror(pg_dsn, schema, "t", columns)
    conn = sqlite3.connect(path)
    conn.execute(f"INSERT INTO t (id, {_column(pin)}) VALUES (100, ?)", (PINS[pin][1],))
    conn.commit()
    conn.close()

    with pytest.raises(ValueMismatchError) as caught:
        _sync(path, pg_dsn, schema, pins)

    assert (caught.value.table, caught.value.column, caught.value.row_key) == ("t", _column(pin), "(id=100)")
    assert "does not fit the pinned type" in str(caught.value)
    assert _mirror(pg_dsn, schema, "t", columns) == before


def test_pins_read_integers_reals_and_text_alike_and_only_bytea_reads_a_blob(tmp_path, pg_dsn, schema):
    path = tmp_path / "mixed.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, price, flag, n, raw)")  # typeless: values keep their class
    conn.executemany(
        "INSERT INTO m VALUES (?, ?, ?, ?, ?)",
        [(1, 5, 0, 42, b"\x00\xff"), (2, 19.99, 1, " 43", "abc"), (3, "19.99", "true", "-1", None)],
    )
    conn.commit()
    conn.close()
    pins = {"m.price": "numeric", "m.flag": "boolean", "m.n": "bigint", "m.raw": "bytea"}

    _sync(path, pg_dsn, schema, pins)

    assert _mirror(pg_dsn, schema, "m", ["price", "flag", "n", "raw"]) == [
        ("5", "false", "42", "\\x00ff"),
        ("19.99", "true", "43", "\\x616263"),
        ("19.99", "true", "-1", None),
    ]
    before = _mirror(pg_dsn, schema, "m", ["price", "flag", "n", "raw"])
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO m (id, price) VALUES (4, x'01')")
    conn.commit()
    conn.close()

    with pytest.raises(ValueMismatchError) as caught:
        _sync(path, pg_dsn, schema, pins)

    assert (caught.value.column, caught.value.row_key) == ("price", "(id=4)")
    assert "no text for PostgreSQL to read as the pinned type numeric" in str(caught.value)
    assert _mirror(pg_dsn, schema, "m", ["price", "flag", "n", "raw"]) == before
