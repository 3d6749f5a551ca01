"""Cursor mode: a table names a column its application bumps on every write; a sync reads only
the rows at or past the watermark of the last one, stored in PostgreSQL with the data."""

from __future__ import annotations

import sqlite3

import psycopg2
import pytest
from psycopg2 import sql

from sync_pipeline.demo import mutate
from sync_pipeline.engine import SyncError
from sync_pipeline.engine.sync_state import SyncState

from .conftest import pg_rows, query, sqlite_rows, sync_all

CURSOR = {"narrative_results": "updated_at"}


def _stored_watermark(dsn: str, schema: str, table: str) -> object:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            last = SyncState(cur, schema).load(table)
            return None if last is None else last.watermark
    finally:
        conn.close()


def _sqlite_value(path, statement: str, params: tuple[object, ...] = ()) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(statement, params).fetchone()[0]
    finally:
        conn.close()


def test_cursor_mode_reads_only_rows_at_or_past_the_watermark_and_stores_the_new_one(demo_db, pg_dsn, schema):
    first = sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR)["narrative_results"]
    high = _sqlite_value(demo_db, "SELECT max(updated_at) FROM narrative_results")
    assert first.mode == "cursor" and first.watermark_before is None and first.watermark_after == high
    assert _stored_watermark(pg_dsn, schema, "narrative_results") == high

    updated, added = mutate(demo_db, 2)
    expected_read = _sqlite_value(demo_db, "SELECT count(*) FROM narrative_results WHERE updated_at >= ?", (high,))
    second = sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR, delete_orphans=True)["narrative_results"]
    assert second.watermark_before == high
    assert second.rows_processed == expected_read < second.sqlite_rows
    assert (second.rows_inserted, second.rows_updated, second.rows_deleted) == (added, updated, 0)
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")
    newest = _sqlite_value(demo_db, "SELECT max(updated_at) FROM narrative_results")
    assert newest > high and _stored_watermark(pg_dsn, schema, "narrative_results") == newest


def test_ties_at_the_watermark_are_read_again_and_rows_whose_cursor_did_not_move_are_not(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR)
    high = _sqlite_value(demo_db, "SELECT max(updated_at) FROM narrative_results")
    conn = sqlite3.connect(demo_db)
    with conn:
        # Written in the same second as the last synced row: equal cursor, must not be lost.
        tie = conn.execute("SELECT min(result_id) FROM narrative_results WHERE updated_at = ?", (high,)).fetchone()[0]
        conn.execute("UPDATE narrative_results SET label = 'tie' WHERE result_id = ?", (tie,))
        # Changed without bumping the cursor: the documented blind spot of cursor mode.
        conn.execute("UPDATE narrative_results SET label = 'silent' WHERE result_id = 1")
    conn.close()
    result = sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR)["narrative_results"]
    assert result.rows_updated == 1
    labels = dict(
        query(
            pg_dsn,
            sql.SQL("SELECT result_id, label FROM {} WHERE result_id IN (1, %s)").format(
                sql.Identifier(schema, "narrative_results")
            ),
            (tie,),
        )
    )
    assert labels[tie] == "tie" and labels[1] != "silent"
    # A full scan (no cursor) catches what the cursor could not see.
    sync_all(demo_db, pg_dsn, schema)
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")


def test_rows_with_a_null_cursor_are_read_every_time(tmp_path, pg_dsn, schema):
    db = tmp_path / "n.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, version INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, "a", 1), (2, "b", None), (3, "c", 5)])
    conn.commit()
    sync_all(db, pg_dsn, schema, cursor_columns={"t": "version"})
    conn.execute("UPDATE t SET v = 'b2' WHERE id = 2")
    conn.commit()
    conn.close()
    result = sync_all(db, pg_dsn, schema, cursor_columns={"t": "version"})["t"]
    assert result.watermark_before == 5 and result.rows_processed == 2 and result.rows_updated == 1
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")


def test_deleted_rows_are_found_by_a_keys_only_comparison(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR)
    conn = sqlite3.connect(demo_db)
    with conn:
        deleted = conn.execute("DELETE FROM narrative_results WHERE result_id % 100 = 7").rowcount
    conn.close()
    kept = sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR)["narrative_results"]
    assert kept.rows_deleted == 0 and kept.pg_rows_after == kept.sqlite_rows + deleted
    result = sync_all(demo_db, pg_dsn, schema, cursor_columns=CURSOR, delete_orphans=True)["narrative_results"]
    assert result.rows_deleted == deleted > 0 and result.rows_processed < result.sqlite_rows
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")


def test_a_failed_cursor_sync_keeps_rows_and_watermark_as_they_were(tmp_path, pg_dsn, schema):
    db = tmp_path / "f.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, version INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, 10, 1), (2, 20, 2)])
    conn.commit()
    sync_all(db, pg_dsn, schema, cursor_columns={"t": "version"})
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(3, 30, 3), (4, "not a number", 4)])
    conn.commit()
    conn.close()
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema, cursor_columns={"t": "version"}, strict_types=True)
    assert "column 'n'" in str(failure.value) and "(id=4)" in str(failure.value)
    assert pg_rows(pg_dsn, schema, "t") == [(1, 10, 1), (2, 20, 2)]
    assert _stored_watermark(pg_dsn, schema, "t") == 2


@pytest.mark.parametrize(
    ("ddl", "cursor", "message"),
    [
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "missing", "'missing' is not a column"),
        ("CREATE TABLE t (v TEXT, version INTEGER)", "version", "needs a primary key"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, version BLOB); INSERT INTO t VALUES (1, x'01')", "version", "blobs"),
    ],
)
def test_a_cursor_the_table_cannot_have_fails_naming_it(tmp_path, pg_dsn, schema, ddl, cursor, message):
    db = tmp_path / "c.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript(ddl)
    conn.commit()
    conn.close()
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema, cursor_columns={"t": cursor})
    assert message in str(failure.value) and "'t'" in str(failure.value)
