"""Many files sharing a table, when one file's shape moves: a file removed mid-sync, a column widened
by one file (the others' rows rewritten from their own files), dropped in one file, or excluded.

Each test syncs real SQLite files into a real PostgreSQL, and checks the other files' rows too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance, materialize
from psycopg2 import sql

from sync_pipeline.assets import OP_NAME, build_sync_assets
from sync_pipeline.engine import (
    SchemaMismatchError,
    SourceFileGoneError,
    SqliteSnapshot,
    SyncOptions,
    list_tables,
    pending_rewrites,
    sync_table,
)
from sync_pipeline.engine.bookkeeping import DEFAULT_STATE_SCHEMA
from sync_pipeline.engine.selection import Selection
from sync_pipeline.partitions import PARTITIONS_NAME, SQLITE_FILES, discover, union_tables
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.translator import SqliteTableTranslator

from .conftest import query
from .test_many_files import _file_rows, _sync_file


def _file(path: Path, ddl: str, rows: list[tuple[object, ...]]) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(ddl)
        if rows:
            conn.executemany(f"INSERT INTO m VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.close()
    return path


def _change(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement)
    conn.close()


def _materialize(runs: Path, dsn: str, schema: str, key: str, selection: Selection | None = None):
    """One partition's Dagster run, as the sensor starts it; (result, the run's log lines)."""
    files = discover(str(runs))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_NAME, list(files))
    assets = build_sync_assets(
        union_tables(list_tables(f) for f in files.values()),
        SqliteTableTranslator(pg_schema=schema),
        selection=selection,
        partitions_def=SQLITE_FILES,
    )
    result = materialize(
        [assets],
        instance=instance,
        partition_key=key,
        resources={"sqlite": SQLiteSource(path=str(runs)), "postgres": PostgresTarget(conn_str=dsn, pg_schema=schema)},
        raise_on_error=False,
    )
    return result, [entry.user_message for entry in instance.all_logs(result.run_id)]


def _pending(dsn: str, schema: str) -> list[str]:
    conn = psycopg2.connect(dsn)
    try:
        return pending_rewrites(conn, schema, DEFAULT_STATE_SCHEMA, "m")
    finally:
        conn.close()


def test_a_file_removed_while_its_sync_runs_writes_nothing_for_it(tmp_path, pg_dsn, schema):
    ddl = "CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT)"
    a = _file(tmp_path / "a.sqlite", ddl, [(1, "a1"), (2, "a2")])
    _sync_file(_file(tmp_path / "b.sqlite", ddl, [(1, "b1")]), pg_dsn, schema, "b")
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(a, arrow=False) as snapshot:
            a.unlink()  # the sensor's removal (its rows' deletion) commits before the sync reaches m
            with pytest.raises(SourceFileGoneError, match=r"table 'm': file .*a\.sqlite.* was removed during the sync"):
                sync_table(snapshot, conn, snapshot.table("m"), schema, SyncOptions(), source_file="a")
    finally:
        conn.close()
    assert query(pg_dsn, sql.SQL("SELECT _source_file, id FROM {}").format(sql.Identifier(schema, "m"))) == [("b", 1)]


def _reals(tmp_path: Path) -> Path:
    """Files a, b, c sharing m.x, a REAL column: b holds reals whose text PostgreSQL's cast changes, c only NULLs."""
    runs = tmp_path / "runs"
    runs.mkdir()
    ddl = "CREATE TABLE m (id INTEGER PRIMARY KEY, x REAL)"
    _file(runs / "a.sqlite", ddl, [(1, 1.5)])
    _file(runs / "b.sqlite", ddl, [(1, 100.0), (2, 1e292)])
    _file(runs / "c.sqlite", ddl, [(1, None)])
    return runs


def test_a_column_one_file_widens_is_rewritten_for_the_other_files_in_the_same_run(tmp_path, pg_dsn, schema):
    runs = _reals(tmp_path)
    for key in "abc":
        _sync_file(runs / f"{key}.sqlite", pg_dsn, schema, key)
    _change(runs / "a.sqlite", "UPDATE m SET x = 'n/a' WHERE id = 1")  # m.x must become text
    b_before = (runs / "b.sqlite").stat().st_mtime_ns

    result, logs = _materialize(runs, pg_dsn, schema, "a")

    assert result.success
    assert [m.partition for m in result.asset_materializations_for_node(OP_NAME)] == ["a"]
    # What the engine writes for b's reals in a text column (their repr), not PostgreSQL's cast ('100').
    assert _file_rows(pg_dsn, schema, "m", "b") == [(1, "100.0"), (2, "1e+292")]
    assert _file_rows(pg_dsn, schema, "m", "a") == [(1, "n/a")]
    assert (runs / "b.sqlite").stat().st_mtime_ns == b_before
    assert _pending(pg_dsn, schema) == []
    assert [line for line in logs if line.startswith("↻")] == [
        "↻ m: rewrote the rows of file 'b' after column 'x' (double precision to text) widened by the sync of file 'a'"
    ]


def test_a_rewrite_left_pending_by_a_run_that_died_is_done_by_the_next_sync_of_any_file(tmp_path, pg_dsn, schema):
    runs = _reals(tmp_path)
    for key in "abc":
        _sync_file(runs / f"{key}.sqlite", pg_dsn, schema, key)
    _change(runs / "a.sqlite", "UPDATE m SET x = 'n/a' WHERE id = 1")

    widened = _sync_file(runs / "a.sqlite", pg_dsn, schema, "a")["m"]  # the engine alone: no rewrite step after

    assert widened.columns_widened == ("x",) and list(widened.pending_rewrites) == ["b"]  # c holds no value in x
    assert _pending(pg_dsn, schema) == ["b"]  # committed with the ALTER, read on a new connection
    assert _file_rows(pg_dsn, schema, "m", "b") == [(1, "100"), (2, "1e+292")]  # PostgreSQL's cast, for now
    (batches,) = query(
        pg_dsn,
        "SELECT batches FROM sqlite_pg_sync._sps_table_state WHERE target_schema = %s AND source_file = 'b'",
        (schema,),
    )
    assert batches == (None,)  # nothing of b can be skipped as unchanged

    result, logs = _materialize(runs, pg_dsn, schema, "c")

    assert result.success
    assert _file_rows(pg_dsn, schema, "m", "b") == [(1, "100.0"), (2, "1e+292")]
    assert _pending(pg_dsn, schema) == []
    assert any(line.startswith("↻ m: rewrote the rows of file 'b'") for line in logs)


def test_a_column_dropped_from_one_file_is_null_for_its_rows_once(tmp_path, pg_dsn, schema):
    ddl = "CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT, extra TEXT)"
    a = _file(tmp_path / "a.sqlite", ddl, [(1, "a1", "gone"), (2, "a2", None), (3, "a3", "gone")])
    b = _file(tmp_path / "b.sqlite", ddl, [(1, "b1", "kept")])
    _sync_file(a, pg_dsn, schema, "a")
    _sync_file(b, pg_dsn, schema, "b")
    _change(a, "ALTER TABLE m DROP COLUMN extra")

    dropped = _sync_file(a, pg_dsn, schema, "a", delete_orphans=True)["m"]

    assert dropped.rows_updated == 2
    assert _file_rows(pg_dsn, schema, "m", "a") == [(1, "a1", None), (2, "a2", None), (3, "a3", None)]
    assert _file_rows(pg_dsn, schema, "m", "b") == [(1, "b1", "kept")]
    assert _sync_file(a, pg_dsn, schema, "a")["m"].rows_changed == 0


def test_an_excluded_column_is_dropped_from_a_shared_table_and_still_refused_for_one_file(
    tmp_path, pg_dsn, schema, other_schema
):
    runs = tmp_path / "runs"
    runs.mkdir()
    ddl = "CREATE TABLE m (id INTEGER PRIMARY KEY, v TEXT, secret TEXT)"
    _file(runs / "a.sqlite", ddl, [(1, "a1", "pin a")])
    _file(runs / "b.sqlite", ddl, [(1, "b1", "pin b")])
    for key in "ab":
        _sync_file(runs / f"{key}.sqlite", pg_dsn, schema, key)
    excluded = Selection(exclude_columns=("m.secret",))

    result, _ = _materialize(runs, pg_dsn, schema, "a", excluded)

    assert result.success
    columns = query(
        pg_dsn,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        (f'"{schema}"."m"',),
    )
    assert columns == [("_source_file",), ("id",), ("v",)]  # every file's secrets gone at once
    assert _file_rows(pg_dsn, schema, "m", "b") == [(1, "b1")]

    # One file: the same exclusion of a synced column fails, asking for full_refresh, as before.
    one = _file(tmp_path / "one.sqlite", ddl, [(1, "x", "pin")])
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(one, arrow=False) as snapshot:
            sync_table(snapshot, conn, snapshot.table("m"), other_schema, SyncOptions())
            with pytest.raises(SchemaMismatchError, match="full_refresh"):
                table = excluded.columns_of(snapshot.table("m"))
                sync_table(snapshot, conn, table, other_schema, SyncOptions(exclude_columns=excluded.exclude_columns))
    finally:
        conn.close()
