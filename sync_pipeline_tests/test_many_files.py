"""Many SQLite files into one PostgreSQL table per SQLite table, rows told apart by ``_source_file``.

Three demo files share their keys (each numbers its rows from 1), so any statement that forgot
the file's filter would touch another file's rows: each test checks the other files' rows are
byte-identical (a checksum of their text) after what one file's sync did.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from sync_pipeline.demo import generate
from sync_pipeline.engine import SchemaMismatchError, SqliteSnapshot, SyncError, SyncOptions, sync_table
from sync_pipeline.engine.scope import SOURCE_FILE_COLUMN

from .conftest import query

FILES = ("run_a", "run_b", "run_c")
TABLES = ("experiments", "narrative_results", "source_narratives")


def _sync_file(path: Path, dsn: str, schema: str, key: str, **options: object) -> dict[str, object]:
    conn = psycopg2.connect(dsn)
    try:
        with SqliteSnapshot(path, arrow=False) as snapshot:
            return {
                t.name: sync_table(snapshot, conn, t, schema, SyncOptions(**options), source_file=key)  # type: ignore[arg-type]
                for t in snapshot.tables()
            }
    finally:
        conn.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {key: generate(tmp_path / f"{key}.sqlite", rows=300 + 100 * i, seed=i) for i, key in enumerate(FILES)}


def _checksum(dsn: str, schema: str, table: str, where: str, key: str) -> tuple[int, str]:
    """(rows, md5 of their text in key order) of the rows whose file is ``=``/``<>`` ``key``."""
    operator = sql.SQL("=" if where == "=" else "<>")
    (row,) = query(
        dsn,
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} AS t WHERE {} {} %s"
        ).format(sql.Identifier(schema, table), sql.Identifier(SOURCE_FILE_COLUMN), operator),
        (key,),
    )
    return int(row[0]), str(row[1])


def _file_rows(dsn: str, schema: str, table: str, key: str) -> list[tuple[object, ...]]:
    columns = query(
        dsn,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 1 AND NOT attisdropped "
        "ORDER BY attnum",
        (f'"{schema}"."{table}"',),
    )
    names = sql.SQL(", ").join(sql.Identifier(c) for (c,) in columns)
    rows = query(
        dsn,
        sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
            names, sql.Identifier(schema, table), sql.Identifier(SOURCE_FILE_COLUMN)
        ),
        (key,),
    )
    return sorted(rows, key=repr)


def _sqlite(path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
    finally:
        conn.close()


def test_three_files_with_overlapping_keys_share_one_table_per_sqlite_table(files, pg_dsn, schema):
    for key, path in files.items():
        results = _sync_file(path, pg_dsn, schema, key)
        assert all(r.pg_rows_before == 0 and r.pg_rows_after == r.sqlite_rows for r in results.values())

    assert sorted(
        r for (r,) in query(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
    ) == sorted(TABLES)
    for table in TABLES:
        for key, path in files.items():
            assert _file_rows(pg_dsn, schema, table, key) == _sqlite(path, table)
    key_columns = query(
        pg_dsn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (f'"{schema}".experiments',),
    )
    assert sorted(c for (c,) in key_columns) == sorted([SOURCE_FILE_COLUMN, "experiment_id"])
    again = _sync_file(files["run_b"], pg_dsn, schema, "run_b")
    assert all(r.rows_changed == 0 for r in again.values())


@pytest.mark.parametrize(
    "options", [{"delete_orphans": True}, {"full_refresh": True}], ids=["delete_orphans", "full_refresh"]
)
def test_a_sync_of_one_file_leaves_the_other_files_rows_byte_identical(files, pg_dsn, schema, options):
    for key, path in files.items():
        _sync_file(path, pg_dsn, schema, key)
    others = {t: _checksum(pg_dsn, schema, t, "<>", "run_b") for t in TABLES}
    conn = sqlite3.connect(files["run_b"])
    with conn:
        conn.execute("DELETE FROM narrative_results WHERE result_id <= 50")
        conn.execute("UPDATE experiments SET notes = 'changed in b' WHERE experiment_id = 1")
    conn.close()

    results = _sync_file(files["run_b"], pg_dsn, schema, "run_b", **options)

    assert results["narrative_results"].rows_deleted >= 50
    assert {t: _checksum(pg_dsn, schema, t, "<>", "run_b") for t in TABLES} == others
    for table in TABLES:
        assert _file_rows(pg_dsn, schema, table, "run_b") == _sqlite(files["run_b"], table)


def test_keyless_tables_compare_and_delete_within_their_file(tmp_path, pg_dsn, schema):
    paths = {}
    for key, rows in (("a", [(1, "x"), (1, "x"), (2, "y")]), ("b", [(1, "x"), (3, "z")])):
        paths[key] = tmp_path / f"{key}.sqlite"
        conn = sqlite3.connect(paths[key])
        conn.execute("CREATE TABLE log (n INTEGER, s TEXT)")
        conn.executemany("INSERT INTO log VALUES (?, ?)", rows)
        conn.commit()
        conn.close()
        _sync_file(paths[key], pg_dsn, schema, key)
    before_b = _checksum(pg_dsn, schema, "log", "=", "b")
    conn = sqlite3.connect(paths["a"])
    conn.execute("DELETE FROM log WHERE n = 1")
    conn.commit()
    conn.close()

    result = _sync_file(paths["a"], pg_dsn, schema, "a", delete_orphans=True)["log"]

    assert (result.rows_deleted, result.pg_rows_after) == (2, 1)
    assert _file_rows(pg_dsn, schema, "log", "a") == [(2, "y")]
    assert _checksum(pg_dsn, schema, "log", "=", "b") == before_b


def test_files_whose_tables_differ_are_unioned_and_types_widen_for_all(tmp_path, pg_dsn, schema):
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    for path, ddl, rows in (
        (old, "CREATE TABLE m (id INTEGER PRIMARY KEY, score INTEGER)", [(1, 10), (2, 20)]),
        (new, "CREATE TABLE m (id INTEGER PRIMARY KEY, score INTEGER, label TEXT)", [(1, "n/a", "x"), (3, 30, "y")]),
    ):
        conn = sqlite3.connect(path)
        conn.execute(ddl)
        conn.executemany(f"INSERT INTO m VALUES ({', '.join('?' * len(rows[0]))})", rows)
        conn.commit()
        conn.close()
    _sync_file(old, pg_dsn, schema, "old")

    added = _sync_file(new, pg_dsn, schema, "new")["m"]

    assert added.columns_added == ("label",) and added.columns_widened == ("score",)
    assert _file_rows(pg_dsn, schema, "m", "old") == [(1, "10", None), (2, "20", None)]
    assert _file_rows(pg_dsn, schema, "m", "new") == [(1, "n/a", "x"), (3, "30", "y")]
    again = _sync_file(old, pg_dsn, schema, "old")["m"]  # the older file still syncs, into the wider table
    assert again.rows_changed == 0 and [r.column for r in again.columns_retyped] == ["score"]


def test_files_that_disagree_on_the_key_are_refused_clearly(tmp_path, pg_dsn, schema):
    for key, ddl in (
        ("a", "CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT)"),
        ("b", "CREATE TABLE k (id INTEGER, v TEXT PRIMARY KEY)"),
    ):
        path = tmp_path / f"{key}.sqlite"
        conn = sqlite3.connect(path)
        conn.execute(ddl)
        conn.execute("INSERT INTO k VALUES (1, 'one')")
        conn.commit()
        conn.close()
        if key == "a":
            _sync_file(path, pg_dsn, schema, key)
        else:
            with pytest.raises(SchemaMismatchError, match="agree on its key"):
                _sync_file(path, pg_dsn, schema, key)


def test_two_files_sync_one_table_at_the_same_time_and_one_file_never_twice(files, pg_dsn, schema):
    _sync_file(files["run_a"], pg_dsn, schema, "run_a")
    holder = psycopg2.connect(pg_dsn)
    holder.autocommit = False
    try:
        with holder.cursor() as cur:  # what a sync of run_a's experiments holds while it runs
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{schema}.experiments:run_a",)
            )
        done: list[object] = []
        other = threading.Thread(target=lambda: done.append(_sync_file(files["run_b"], pg_dsn, schema, "run_b")))
        other.start()
        other.join(timeout=60)
        assert done, "run_b's sync waited for run_a's lock"
        with pytest.raises(SyncError, match=r"another sync of .*experiments held its lock"):
            _sync_file(files["run_a"], pg_dsn, schema, "run_a", lock_timeout_s=0.5)
    finally:
        holder.rollback()
        holder.close()


def test_a_sqlite_column_named_like_the_file_column_is_refused(tmp_path, pg_dsn, schema):
    path = tmp_path / "x.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {SOURCE_FILE_COLUMN} TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(SyncError, match=f"a column named '{SOURCE_FILE_COLUMN}'"):
        _sync_file(path, pg_dsn, schema, "x")
