"""Ways a sync once reported success while leaving PostgreSQL different from SQLite, each pinned by
the scenario that found it: the engine cases (cursor and shape, merged keys, client encoding,
large real watermarks) and the concurrency cases (an older snapshot written over a newer one).

The rule they all check: a sync that succeeds leaves PostgreSQL equal to the SQLite state it
read and never older than a state already written; any other sync fails naming the table and
changes nothing.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from sync_pipeline import assets as assets_module
from sync_pipeline.demo import generate
from sync_pipeline.engine import (
    SqliteSnapshot,
    StaleSnapshotError,
    SyncError,
    SyncOptions,
    row_counts,
    sync_table,
)
from sync_pipeline.engine.sync_state import SyncState
from sync_pipeline.engine.versions import SnapshotClock

from .conftest import pg_rows, query, sqlite_rows, sync_all
from .test_dagster_assets import log_text, run_sync
from .test_faults import copying_backend


def _db(path: Path, script: str, rows: list[tuple[object, ...]] = (), insert: str = "") -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(script)
    if rows:
        conn.executemany(insert, rows)
    conn.commit()
    conn.close()
    return path


def _write(path: Path, *statements: str) -> None:
    """Commit in another process: a connection closed in this one could drop the file locks of a
    reader of a different SQLite library open here (the POSIX lock rule)."""
    script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n"
    script += "".join(f"c.execute({s!r})\n" for s in statements) + "c.commit()\nc.close()\n"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)


def _stored(dsn: str, schema: str, table: str):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            return SyncState(cur, schema).load(table)
    finally:
        conn.close()


# --- 1. cursor mode and a column added with a value for every row ------------------------------


@pytest.mark.parametrize(
    "column",
    [
        "status TEXT NOT NULL DEFAULT 'active'",
        "twice INTEGER GENERATED ALWAYS AS (id * 2) VIRTUAL",
    ],
)
def test_a_column_added_with_a_value_for_every_row_reaches_rows_below_the_cursor_watermark(
    tmp_path, pg_dsn, schema, column
):
    db = _db(
        tmp_path / "t.sqlite",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER)",
        [(i, f"v{i}", i) for i in range(1, 101)],
        "INSERT INTO t VALUES (?, ?, ?)",
    )
    cursor = {"t": "updated_at"}
    sync_all(db, pg_dsn, schema, cursor_columns=cursor)
    _write(db, f"ALTER TABLE t ADD COLUMN {column}", "UPDATE t SET v = 'bumped', updated_at = 1000 WHERE id = 5")

    changed = sync_all(db, pg_dsn, schema, cursor_columns=cursor)["t"]
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")
    assert changed.watermark_before is None and changed.rows_processed == 100  # the shape changed: all read

    again = sync_all(db, pg_dsn, schema, cursor_columns=cursor)["t"]
    assert again.watermark_before == 1000 and again.rows_processed == 1  # same shape: the cursor is back


def test_a_column_dropped_and_added_again_under_the_same_name_reaches_rows_below_the_watermark(
    tmp_path, pg_dsn, schema
):
    """Same columns before and after, so only SQLite's schema cookie tells (found by the stateful test)."""
    db = _db(
        tmp_path / "t.sqlite",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER, extra TEXT)",
        [(i, f"v{i}", i, "old") for i in range(1, 21)],
        "INSERT INTO t VALUES (?, ?, ?, ?)",
    )
    cursor = {"t": "updated_at"}
    sync_all(db, pg_dsn, schema, cursor_columns=cursor)
    _write(
        db,
        "ALTER TABLE t DROP COLUMN extra",
        "ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'new'",
        "UPDATE t SET v = 'bumped', updated_at = 100 WHERE id = 3",
    )
    result = sync_all(db, pg_dsn, schema, cursor_columns=cursor)["t"]
    assert result.watermark_before is None and result.rows_updated == 20
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")


# --- 2. keys that SQLite keeps apart and PostgreSQL text would merge ----------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"cursor_columns": {"k": "n"}},
        {"batch_size": 5},  # full scans: the batch holding integer 7 is skipped as unchanged
        {"batch_size": 5, "delete_orphans": True},
    ],
    ids=["cursor", "skipped-batches", "delete-orphans"],
)
def test_integer_7_and_text_7_in_a_typeless_key_fail_naming_the_key_and_change_nothing(
    tmp_path, pg_dsn, schema, options
):
    # A text key from the start: both syncs take the exact path, so the second can skip batches.
    db = _db(
        tmp_path / "k.sqlite",
        "CREATE TABLE k (k PRIMARY KEY, v TEXT, n INTEGER)",
        [(i, f"v{i}", i) for i in range(1, 21)] + [("x", "text key", 0)],
        "INSERT INTO k VALUES (?, ?, ?)",
    )
    sync_all(db, pg_dsn, schema, **options)
    before = pg_rows(pg_dsn, schema, "k")
    _write(db, "INSERT INTO k VALUES ('7', 'text seven', 100)")

    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema, **options)
    assert "'k'" in str(failure.value) and "k='7'" in str(failure.value)
    assert pg_rows(pg_dsn, schema, "k") == before


def test_text_beside_numbers_in_a_typeless_key_syncs_when_no_two_keys_meet(tmp_path, pg_dsn, schema):
    db = _db(
        tmp_path / "k.sqlite",
        "CREATE TABLE k (k PRIMARY KEY, v TEXT, n INTEGER)",
        [(i, f"v{i}", i) for i in range(1, 21)],
        "INSERT INTO k VALUES (?, ?, ?)",
    )
    sync_all(db, pg_dsn, schema, cursor_columns={"k": "n"})
    _write(db, "INSERT INTO k VALUES ('seven', 'text key', 100)", "DELETE FROM k WHERE k = 3")
    result = sync_all(db, pg_dsn, schema, cursor_columns={"k": "n"}, delete_orphans=True)["k"]
    assert (result.rows_inserted, result.rows_deleted) == (1, 1)
    assert sorted(r[0] for r in pg_rows(pg_dsn, schema, "k")) == sorted(str(r[0]) for r in sqlite_rows(db, "k"))


# --- 3. a session whose client_encoding is not UTF8 ---------------------------------------------

TEXTS = [(1, "café"), (2, "naïve 日本語"), (3, "emoji 🎉 and ß")]
INSERT_TEXTS = "INSERT INTO e VALUES (?, ?)"


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "exact"])
def test_text_arrives_exactly_over_a_session_whose_client_encoding_is_latin1(tmp_path, pg_dsn, schema, arrow):
    db = _db(tmp_path / "e.sqlite", "CREATE TABLE e (id INTEGER PRIMARY KEY, s TEXT)", TEXTS, INSERT_TEXTS)
    conn = psycopg2.connect(pg_dsn, options="-c client_encoding=LATIN1")
    try:
        assert conn.encoding == "LATIN1"
        with SqliteSnapshot(db, arrow=arrow) as snapshot:
            sync_table(snapshot, conn, snapshot.table("e"), schema, SyncOptions())
    finally:
        conn.close()
    assert pg_rows(pg_dsn, schema, "e") == TEXTS


def test_counting_a_non_ascii_table_over_a_latin1_session_finds_it(tmp_path, pg_dsn, schema):
    db = _db(
        tmp_path / "w.sqlite",
        'CREATE TABLE "wörter" (id INTEGER PRIMARY KEY, v TEXT)',
        [(1, "café")],
        'INSERT INTO "wörter" VALUES (?, ?)',
    )
    sync_all(db, pg_dsn, schema)
    conn = psycopg2.connect(pg_dsn, options="-c client_encoding=LATIN1")
    try:
        with SqliteSnapshot(db, arrow=False) as snapshot:
            assert row_counts(snapshot, conn, snapshot.table("wörter"), schema) == (1, 1)
    finally:
        conn.close()


def test_a_dagster_run_stores_utf8_exactly_whatever_pgclientencoding_says(tmp_path, pg_dsn, schema, monkeypatch):
    db = _db(tmp_path / "e.sqlite", "CREATE TABLE e (id INTEGER PRIMARY KEY, s TEXT)", TEXTS, INSERT_TEXTS)
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    assert run_sync(db, pg_dsn, schema).success
    monkeypatch.delenv("PGCLIENTENCODING")
    assert pg_rows(pg_dsn, schema, "e") == TEXTS


# --- 4. a REAL cursor with values past 2^53 --------------------------------------------------------


def test_ties_at_a_large_real_watermark_are_read_again(tmp_path, pg_dsn, schema):
    top = 1.7000000001234568e18
    rows = [(i, f"v{i}", top - (10 - i) * 1e9) for i in range(1, 11)]
    ddl = "CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT, ts REAL)"
    db = _db(tmp_path / "r.sqlite", ddl, rows, "INSERT INTO r VALUES (?, ?, ?)")
    sync_all(db, pg_dsn, schema, cursor_columns={"r": "ts"})
    stored = _stored(pg_dsn, schema, "r").watermark
    assert type(stored) is float and stored == top

    _write(db, "UPDATE r SET v = 'tie' WHERE id = 10", f"INSERT INTO r VALUES (11, 'new tie', {top!r})")
    result = sync_all(db, pg_dsn, schema, cursor_columns={"r": "ts"})["r"]
    assert result.watermark_before == top and result.rows_processed == 2
    assert (result.rows_inserted, result.rows_updated) == (1, 1)
    assert pg_rows(pg_dsn, schema, "r") == sqlite_rows(db, "r")


def test_text_beside_numbers_in_a_cursor_column_warns_naming_it_and_reads_every_row(tmp_path, pg_dsn, schema):
    db = _db(
        tmp_path / "c.sqlite",
        "CREATE TABLE c (id INTEGER PRIMARY KEY, v TEXT, n)",
        [(i, f"v{i}", i) for i in range(1, 11)],
        "INSERT INTO c VALUES (?, ?, ?)",
    )
    cursor = {"c": "n"}
    sync_all(db, pg_dsn, schema, cursor_columns=cursor)
    _write(db, "INSERT INTO c VALUES (11, 'text cursor', 'later')")
    first = sync_all(db, pg_dsn, schema, cursor_columns=cursor)["c"]
    # A numeric bump now sorts below the text: only a full read sees it.
    _write(db, "UPDATE c SET v = 'bumped', n = 12 WHERE id = 3")
    second = sync_all(db, pg_dsn, schema, cursor_columns=cursor)["c"]
    for result in (first, second):
        assert any("'n'" in w and "text beside numbers" in w for w in result.warnings)
        assert result.rows_processed == result.sqlite_rows == 11
    assert second.rows_updated == 1
    # A typeless column is text in PostgreSQL: numbers as their decimal text.
    assert pg_rows(pg_dsn, schema, "c") == sorted(((i, v, str(n)) for i, v, n in sqlite_rows(db, "c")), key=repr)


# --- 5. an older snapshot never overwrites a newer sync -----------------------------------------


@pytest.mark.parametrize("options", [{}, {"full_refresh": True}, {"cursor_columns": {"t": "n"}}])
def test_a_sync_from_a_snapshot_older_than_the_last_written_one_is_refused_and_changes_nothing(
    tmp_path, pg_dsn, schema, options
):
    db = _db(tmp_path / "s.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
    _write(db, "INSERT INTO t VALUES (1, 'v1', 1)")
    clock = SnapshotClock(lambda: psycopg2.connect(pg_dsn), schema)
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(db, arrow=False, clock=clock) as older:
            _write(db, "UPDATE t SET v = 'v2', n = 2 WHERE id = 1", "INSERT INTO t VALUES (2, 'new', 2)")
            with SqliteSnapshot(db, arrow=False, clock=clock) as newer:
                assert newer.version > older.version
                sync_table(newer, conn, newer.table("t"), schema, SyncOptions(**options))
            with pytest.raises(StaleSnapshotError) as failure:
                sync_table(older, conn, older.table("t"), schema, SyncOptions(**options))
    finally:
        conn.close()
    assert "newer SQLite snapshot" in str(failure.value) and "'t'" in str(failure.value)
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t") == [(1, "v2", 2), (2, "new", 2)]


def _waiting_on_a_lock(dsn: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if query(
            dsn,
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'sqlite-pg-sync' AND wait_event_type = 'Lock' "
            "AND datname = current_database()",
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the sync never waited on the lock")


@pytest.mark.parametrize("options", [{}, {"full_refresh": True}], ids=["incremental", "full_refresh"])
def test_a_run_held_up_by_a_lock_does_not_write_its_older_snapshot_over_a_newer_run(tmp_path, pg_dsn, schema, options):
    """Run A (every table) takes its snapshot, then waits on table ``a``, locked by someone else;
    run B syncs a newer ``t``; the lock goes; A reaches ``t``. PostgreSQL must end up equal to
    SQLite, never with A's older ``t``."""
    db = _db(
        tmp_path / "l.sqlite",
        "CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        "INSERT INTO a VALUES (1, 'a'); INSERT INTO t VALUES (1, 'v1');",
    )
    assert run_sync(db, pg_dsn, schema).success
    instance = DagsterInstance.ephemeral()
    locker = psycopg2.connect(pg_dsn)
    outcome: dict[str, object] = {}
    try:
        with locker.cursor() as cur:
            cur.execute(f'LOCK TABLE "{schema}".a IN ACCESS EXCLUSIVE MODE')

        def run_a_sync() -> None:
            outcome["a"] = run_sync(db, pg_dsn, schema, instance=instance, parallel_tables=1, **options)

        run_a = threading.Thread(target=run_a_sync)
        run_a.start()
        _waiting_on_a_lock(pg_dsn)  # A has its snapshot (t = v1) and waits on a
        _write(db, "UPDATE t SET v = 'v2' WHERE id = 1")
        assert run_sync(db, pg_dsn, schema, selection=["t"], **options).success  # B
        assert pg_rows(pg_dsn, schema, "t") == [(1, "v2")]
    finally:
        locker.rollback()
        locker.close()
    run_a.join(timeout=60)
    result = outcome["a"]
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t") == [(1, "v2")]
    assert result.success  # type: ignore[attr-defined]
    assert "newer SQLite snapshot" in log_text(instance, result)  # type: ignore[arg-type]


def test_a_table_retried_after_a_lost_connection_is_read_from_a_fresh_snapshot(tmp_path, pg_dsn, schema, monkeypatch):
    """The retry must not write the run's own, now older, snapshot: SQLite changed meanwhile."""
    monkeypatch.setattr(assets_module, "RETRY_DELAYS_S", (0.2,))
    db = generate(tmp_path / "big.sqlite", rows=100_000, seed=11)
    instance = DagsterInstance.ephemeral()

    def change_then_kill() -> None:
        backend = copying_backend(pg_dsn)
        _write(db, "UPDATE narrative_results SET label = 'after the snapshot' WHERE result_id % 1000 = 0")
        query(pg_dsn, "SELECT pg_terminate_backend(%s)", (backend,))

    killer = threading.Thread(target=change_then_kill)
    killer.start()
    try:
        result = run_sync(db, pg_dsn, schema, instance=instance, selection=["narrative_results"], batch_size=500)
    finally:
        killer.join()
    assert result.success
    assert "fresh SQLite snapshot" in log_text(instance, result)
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(db, "narrative_results")
