"""Declared types are hints: files whose values break them sync, and every change is reported.

Each file reproduces a habit of a real application (a CSV imported with its header line as a
row, an ``integer`` column the application fills with text, GeoPackage geometry blobs, text and
blobs in one column, invalid UTF-8). Without ``strict_types`` each syncs with no failed table,
and every value reads back equal or is reported by ``columns_retyped`` (and the check); with
``strict_types`` each fails as before: naming table, column and key, writing nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from sync_pipeline.engine import SyncError, ValueMismatchError
from sync_pipeline.translator import TYPES_CHECK

from .conftest import query, sync_all
from .test_dagster_assets import log_text, metadata_by_table, run_sync

HEADER_ROWS = 100_000


def _file(path: Path, ddl: str, rows: dict[str, list[tuple[object, ...]]]) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(ddl)
    for table, values in rows.items():
        if values:
            marks = ", ".join("?" * len(values[0]))
            conn.executemany(f'INSERT INTO "{table}" VALUES ({marks})', values)
    conn.commit()
    conn.close()
    return path


def _csv_with_header_row(path: Path, rows: int = HEADER_ROWS) -> Path:
    """A CSV imported by a tool that kept the header line as the first row, into typed columns."""
    data = [("movieId", "title", "rating")] + [(i, f"movie {i}", i % 5 + 0.5) for i in range(1, rows)]
    return _file(path, "CREATE TABLE ratings (movieId INTEGER, title TEXT, rating REAL);", {"ratings": data})


def _mostly_text_integer(path: Path) -> Path:
    data = [(i, f"due {i}" if i % 10 else i) for i in range(1, 501)]
    return _file(path, "CREATE TABLE cards (id INTEGER PRIMARY KEY, due integer);", {"cards": data})


def _geopackage_like(path: Path) -> Path:
    blob = bytes(range(256)) * 2
    data = [(i, blob[i:], blob[: i + 1], None if i % 3 else blob, b"GP\x00\x01" + bytes([i])) for i in range(1, 51)]
    return _file(
        path,
        "CREATE TABLE roads (fid INTEGER PRIMARY KEY, geom GEOMETRY, pt POINT, line LINESTRING, area POLYGON);",
        {"roads": data},
    )


def _text_and_blobs(path: Path) -> Path:
    return _file(
        path,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);",
        {"notes": [(1, "plain"), (2, b"\x00\xffraw"), (3, "nul\x00inside"), (4, 42), (5, None)]},
    )


def _pg(dsn: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in query(dsn, statement, params)]


def _pg_type(dsn: str, schema: str, table: str, column: str) -> str:
    return _pg(
        dsn,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
        (f'"{schema}"."{table}"', column),
    )[0][0]


def _sqlite(path: Path, statement: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


def _as_text(value: object) -> object:
    """SQLite's value as a text column holds it exactly (README: numbers as their exact decimal text)."""
    return value if value is None or isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "exact"])
def test_a_csv_header_row_in_a_100k_row_keyless_table_syncs_and_the_columns_it_broke_are_reported(
    tmp_path, pg_dsn, schema, arrow
):
    path = _csv_with_header_row(tmp_path / "movies.sqlite")

    result = sync_all(path, pg_dsn, schema, arrow=arrow)["ratings"]

    assert result.pg_rows_after == HEADER_ROWS
    retyped = {r.column: r for r in result.columns_retyped}
    assert sorted(retyped) == ["movieId", "rating"]
    assert (retyped["movieId"].declared, retyped["movieId"].mapped, retyped["movieId"].pg_type) == (
        "INTEGER",
        "bigint",
        "text",
    )
    assert retyped["movieId"].example_key == "(rowid=1)" and "1 text" in retyped["movieId"].why
    assert retyped["rating"].pg_type == "text" and retyped["movieId"].values_changed == 0
    assert [_pg_type(pg_dsn, schema, "ratings", c) for c in ("movieId", "title", "rating")] == ["text"] * 3
    expected = sorted(tuple(map(_as_text, row)) for row in _sqlite(path, "SELECT * FROM ratings"))
    assert sorted(_pg(pg_dsn, f'SELECT * FROM "{schema}".ratings')) == expected
    comment = _pg(pg_dsn, f"SELECT col_description('\"{schema}\".ratings'::regclass, 1)")[0][0]
    assert "text here, bigint cannot hold its values" in comment

    again = sync_all(path, pg_dsn, schema, arrow=arrow)["ratings"]
    assert again.rows_changed == 0 and again.columns_widened == ()
    assert {r.column for r in again.columns_retyped} == {"movieId", "rating"}  # reported while it lasts


def test_an_integer_column_holding_mostly_text_becomes_text_with_every_value_exact(tmp_path, pg_dsn, schema):
    path = _mostly_text_integer(tmp_path / "app.sqlite")

    result = sync_all(path, pg_dsn, schema)["cards"]

    assert [r.column for r in result.columns_retyped] == ["due"]
    assert result.columns_retyped[0].example_key == "(id=1)"
    expected = [(i, _as_text(v)) for i, v in _sqlite(path, "SELECT * FROM cards ORDER BY id")]
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".cards ORDER BY id') == expected


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "exact"])
def test_geometry_blobs_become_bytea_whatever_the_declared_type_says(tmp_path, pg_dsn, schema, arrow):
    path = _geopackage_like(tmp_path / "gpkg.sqlite")

    result = sync_all(path, pg_dsn, schema, arrow=arrow)["roads"]

    # POINT contains INT (INTEGER affinity, bigint); the others have NUMERIC affinity (text).
    assert {r.column: (r.mapped, r.pg_type) for r in result.columns_retyped} == {
        "geom": ("text", "bytea"),
        "pt": ("bigint", "bytea"),
        "line": ("text", "bytea"),
        "area": ("text", "bytea"),
    }
    assert all(r.values_changed == 0 for r in result.columns_retyped)
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".roads ORDER BY fid') == _sqlite(
        path, "SELECT * FROM roads ORDER BY fid"
    )


def test_text_beside_blobs_nul_bytes_and_invalid_utf8_are_stored_changed_as_documented_and_counted(
    tmp_path, pg_dsn, schema
):
    path = _text_and_blobs(tmp_path / "mixed.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO notes VALUES (6, CAST(x'66ff6f' AS TEXT))")  # 'f', an invalid byte, 'o'
    conn.commit()
    conn.close()

    result = sync_all(path, pg_dsn, schema)["notes"]

    (retyped,) = result.columns_retyped
    assert (retyped.column, retyped.mapped, retyped.pg_type, retyped.values_changed) == ("body", "text", "text", 3)
    assert retyped.example_key == "(id=2)"
    assert "U+FFFD" in retyped.why
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".notes ORDER BY id') == [
        (1, "plain"),
        (2, "\\x00ff726177"),  # PostgreSQL's own text form of bytea
        (3, "nul\ufffdinside"),
        (4, "42"),
        (5, None),
        (6, "f\ufffdo"),
    ]
    again = sync_all(path, pg_dsn, schema)["notes"]
    assert again.rows_changed == 0 and again.columns_retyped[0].values_changed == 3


@pytest.mark.parametrize(
    ("build", "table", "column", "key"),
    [
        (_csv_with_header_row, "ratings", "movieId", "#1 (table has no primary key)"),
        (_mostly_text_integer, "cards", "due", "(id=1)"),
        (_geopackage_like, "roads", "geom", "(fid=1)"),
        (_text_and_blobs, "notes", "body", "(id=2)"),
    ],
)
def test_with_strict_types_each_messy_file_fails_as_before_naming_it_and_writes_nothing(
    tmp_path, pg_dsn, schema, build, table, column, key
):
    path = build(tmp_path / "messy.sqlite")

    with pytest.raises(ValueMismatchError) as caught:
        sync_all(path, pg_dsn, schema, strict_types=True)

    assert (caught.value.table, caught.value.column, caught.value.row_key) == (table, column, key)
    assert query(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)) == [(0,)]


def test_numbers_widen_to_the_narrowest_exact_type(tmp_path, pg_dsn, schema):
    path = _file(
        tmp_path / "n.sqlite",
        "CREATE TABLE m (id INTEGER PRIMARY KEY, ratio INTEGER, big INTEGER, flag BOOLEAN, odd BOOLEAN);",
        {"m": [(1, 1, 2**62, 1, 0), (2, 0.5, 0.25, 0, 2), (3, 7, 3, None, -1)]},
    )

    result = sync_all(path, pg_dsn, schema)["m"]

    assert {r.column: r.pg_type for r in result.columns_retyped} == {
        "ratio": "double precision",  # integers and reals
        "big": "numeric",  # ... with an integer past 2^53
        "odd": "bigint",  # booleans outside 0/1
    }
    rows = _pg(pg_dsn, f'SELECT id, ratio, big::text, flag, odd FROM "{schema}".m ORDER BY id')
    assert rows == [(1, 1.0, str(2**62), True, 0), (2, 0.5, "0.25", False, 2), (3, 7.0, "3", None, -1)]


def test_an_incremental_sync_meeting_text_in_a_bigint_column_widens_it_exactly_while_readers_poll(
    tmp_path, pg_dsn, schema
):
    rows = 50_000
    path = _file(
        tmp_path / "w.sqlite",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, note TEXT);",
        {"t": [(i, i * 3, f"row {i}") for i in range(1, rows + 1)]},
    )
    first = sync_all(path, pg_dsn, schema)["t"]
    assert first.columns_retyped == () and _pg_type(pg_dsn, schema, "t", "n") == "bigint"
    conn = sqlite3.connect(path)
    conn.execute("UPDATE t SET n = 'n/a' WHERE id = 777")
    conn.commit()
    conn.close()

    errors: list[BaseException] = []
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        reader = psycopg2.connect(pg_dsn)
        reader.autocommit = True
        try:
            while not stop.is_set():
                with reader.cursor() as cur:
                    cur.execute(f'SELECT count(*), min(n::text) FROM "{schema}".t')
                    seen.append(cur.fetchone())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
            errors.append(exc)
        finally:
            reader.close()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    try:
        result = sync_all(path, pg_dsn, schema)["t"]
    finally:
        time.sleep(0.2)
        stop.set()
        poller.join()

    assert errors == []
    assert {count for count, _ in seen} == {rows}  # never an empty or half-synced table
    assert result.columns_widened == ("n",) and result.rows_updated == 1
    assert _pg_type(pg_dsn, schema, "t", "n") == "text"
    expected = [(i, _as_text(n), note) for i, n, note in _sqlite(path, "SELECT * FROM t ORDER BY id")]
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".t ORDER BY id') == expected
    assert sync_all(path, pg_dsn, schema)["t"].rows_changed == 0  # and it stays text: never narrowed


def test_full_refresh_recomputes_types_from_the_data(tmp_path, pg_dsn, schema):
    path = _mostly_text_integer(tmp_path / "app.sqlite")
    sync_all(path, pg_dsn, schema)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE cards SET due = id")
    conn.commit()
    conn.close()
    assert [r.column for r in sync_all(path, pg_dsn, schema)["cards"].columns_retyped] == ["due"]  # kept

    refreshed = sync_all(path, pg_dsn, schema, full_refresh=True)["cards"]

    assert refreshed.columns_retyped == () and _pg_type(pg_dsn, schema, "cards", "due") == "bigint"


def test_a_pinned_type_is_used_and_a_value_it_cannot_hold_fails_naming_the_column(tmp_path, pg_dsn, schema):
    path = _file(
        tmp_path / "p.sqlite",
        "CREATE TABLE e (id INTEGER PRIMARY KEY, config TEXT, at TEXT);",
        {"e": [(1, '{"a": 1}', "2024-02-29 12:00:00+00"), (2, "[]", "2024-03-01 00:00:00+00")]},
    )
    pins = {"e.config": "jsonb", "e.at": "timestamptz"}

    result = sync_all(path, pg_dsn, schema, column_types=pins)["e"]

    assert result.columns_retyped == ()  # a pin is a declaration, not a retype
    assert [_pg_type(pg_dsn, schema, "e", c) for c in ("config", "at")] == ["jsonb", "timestamp with time zone"]
    assert _pg(pg_dsn, f"SELECT config->>'a' FROM \"{schema}\".e WHERE id = 1") == [("1",)]
    before = _pg(pg_dsn, f'SELECT * FROM "{schema}".e ORDER BY id')
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO e VALUES (3, 'not json', '2024-03-02 00:00:00+00')")
    conn.commit()
    conn.close()

    with pytest.raises(ValueMismatchError) as caught:
        sync_all(path, pg_dsn, schema, column_types=pins)
    assert (caught.value.table, caught.value.column, caught.value.row_key) == ("e", "config", "(id=3)")
    assert "does not fit the pinned type jsonb" in str(caught.value)
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".e ORDER BY id') == before

    with pytest.raises(SyncError, match="column_types pins column 'config' to 'jsonbb'"):
        sync_all(path, pg_dsn, schema, column_types={"e.config": "jsonbb"})


def test_the_catalog_shows_columns_retyped_the_check_warns_and_the_run_log_says_why(tmp_path, pg_dsn, schema):
    path = _csv_with_header_row(tmp_path / "movies.sqlite", rows=50)
    instance = DagsterInstance.ephemeral()

    result = run_sync(path, pg_dsn, schema, instance=instance)

    assert result.success
    records = metadata_by_table(result)["ratings"]["columns_retyped"].value.records
    assert [(r.data["column"], r.data["declared"], r.data["pg_type"]) for r in records] == [
        ("movieId", "INTEGER", "text"),
        ("rating", "REAL", "text"),
    ]
    assert records[0].data["example_key"] == "(rowid=1)"
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == TYPES_CHECK]
    assert not check.passed and check.severity.value == "WARN"
    assert "movieId (INTEGER -> text)" in check.description
    logs = log_text(instance, result)
    assert "column 'movieId' (declared 'INTEGER', maps to bigint) widened now to text in PostgreSQL" in logs


def test_a_double_column_meeting_integers_past_2_53_widens_to_numeric_exactly(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "d.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, u INTEGER);", {"t": [(1, 1.5)]})
    assert sync_all(path, pg_dsn, schema)["t"].columns_widened == ("u",)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE t SET u = 2")
    conn.execute("INSERT INTO t VALUES (2, 9007199254740993)")  # 2^53 + 1: no double holds it
    conn.commit()
    conn.close()

    result = sync_all(path, pg_dsn, schema)["t"]

    assert result.columns_widened == ("u",) and _pg_type(pg_dsn, schema, "t", "u") == "numeric"
    assert _pg(pg_dsn, f'SELECT id, u::text FROM "{schema}".t ORDER BY id') == [(1, "2"), (2, "9007199254740993")]


def test_with_strict_types_a_column_whose_postgresql_type_is_not_its_mapping_fails_until_full_refresh(
    tmp_path, pg_dsn, schema
):
    path = _file(tmp_path / "s.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);", {"t": [(1, "a")]})
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE t ADD COLUMN s TEXT")
    conn.commit()
    sync_all(path, pg_dsn, schema, strict_types=True)
    conn.execute("ALTER TABLE t DROP COLUMN s")
    conn.execute("ALTER TABLE t ADD COLUMN s INTEGER DEFAULT 0")
    conn.commit()
    conn.close()
    before = _pg(pg_dsn, f'SELECT * FROM "{schema}".t')

    with pytest.raises(SyncError, match=r"'s' is text in PostgreSQL but maps to bigint now; run with full_refresh"):
        sync_all(path, pg_dsn, schema, strict_types=True)
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".t') == before

    kept = sync_all(path, pg_dsn, schema)["t"]  # types from the data: never narrowed, and reported
    assert [(r.column, r.mapped, r.pg_type) for r in kept.columns_retyped] == [("s", "bigint", "text")]
    assert sync_all(path, pg_dsn, schema, strict_types=True, full_refresh=True)["t"].columns_retyped == ()
    assert _pg_type(pg_dsn, schema, "t", "s") == "bigint"


def test_keys_that_become_one_only_through_the_repair_fail_naming_the_key_and_lose_nothing(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "k.sqlite", "CREATE TABLE w (a TEXT PRIMARY KEY, b TEXT);", {})
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO w VALUES (CAST(x'636166e9' AS TEXT), 'one')")  # 'caf' and an invalid byte
    conn.commit()
    assert sync_all(path, pg_dsn, schema)["w"].columns_retyped[0].values_changed == 1
    conn.execute("INSERT INTO w VALUES (CAST(x'636166e8' AS TEXT), 'two')")  # another invalid byte: same repair
    conn.commit()
    conn.close()
    before = _pg(pg_dsn, f'SELECT * FROM "{schema}".w')

    with pytest.raises(SyncError, match=r"two SQLite rows have the key \(a='caf\ufffd'\)"):
        sync_all(path, pg_dsn, schema)
    assert _pg(pg_dsn, f'SELECT * FROM "{schema}".w') == before == [("caf\ufffd", "one")]
