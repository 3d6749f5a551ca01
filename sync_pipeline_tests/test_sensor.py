"""The file-change sensor's decisions, on real SQLite files, one tick at a time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dagster import (
    AssetSelection,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from sync_pipeline.assets import POOL
from sync_pipeline.resources import SQLiteSource
from sync_pipeline.sensor import MAX_WAIT_TICKS, build_sensor


class Ticker:
    """Calls the sensor as the daemon would, carrying the cursor from tick to tick."""

    def __init__(self, path: Path) -> None:
        self.sensor = build_sensor(AssetSelection.all())
        self.path = path
        self.cursor: str | None = None
        self.instance = DagsterInstance.ephemeral()
        self.run_keys: list[str] = []

    def tick(self) -> SensorResult | SkipReason:
        context = build_sensor_context(
            cursor=self.cursor, resources={"sqlite": SQLiteSource(path=str(self.path))}, instance=self.instance
        )
        result = self.sensor(context)
        if isinstance(result, SensorResult):
            self.cursor = result.cursor or self.cursor
            self.run_keys += [r.run_key for r in result.run_requests or []]
        return result

    def skip_message(self, result: SensorResult | SkipReason) -> str:
        reason = result if isinstance(result, SkipReason) else result.skip_reason
        assert reason is not None, f"expected a skip, got {result}"
        return reason.skip_message or ""


@pytest.fixture
def wal_db(tmp_path: Path):
    path = tmp_path / "w.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # keep commits in the -wal file, as a busy app would
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    yield path, writer
    writer.close()


def settle(ticker: Ticker) -> None:
    """The first two ticks: record the fingerprint, then sync once."""
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 1


def test_a_missing_file_is_a_skip_with_a_reason(tmp_path):
    ticker = Ticker(tmp_path / "nope.sqlite")
    assert "does not exist" in ticker.skip_message(ticker.tick())
    assert ticker.run_keys == []


def test_first_ticks_sync_once_then_an_unchanged_file_requests_nothing(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)

    assert "waiting one tick" in ticker.skip_message(ticker.tick())
    second = ticker.tick()
    assert isinstance(second, SensorResult) and len(second.run_requests) == 1
    for _ in range(3):
        assert "has not changed" in ticker.skip_message(ticker.tick())
    assert len(ticker.run_keys) == 1
    assert ticker.run_keys[0].startswith("db=")  # the fingerprint, not the clock


def test_a_commit_that_only_reaches_the_wal_file_is_seen(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)
    main_before = path.stat()

    writer.execute("INSERT INTO t (v) VALUES ('new')")

    assert (path.stat().st_size, path.stat().st_mtime_ns) == (main_before.st_size, main_before.st_mtime_ns)
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 2
    assert ticker.run_keys[0] != ticker.run_keys[1]


def test_a_commit_to_the_main_file_in_rollback_journal_mode_is_seen(tmp_path):
    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    ticker = Ticker(path)
    settle(ticker)

    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO t VALUES (1)")

    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 2


def test_a_burst_of_commits_gives_one_run_once_the_file_is_quiet(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)

    for i in range(3):
        writer.execute("INSERT INTO t (v) VALUES (?)", (f"burst {i}",))
        assert "waiting one tick" in ticker.skip_message(ticker.tick())
    ticker.tick()
    ticker.tick()

    assert len(ticker.run_keys) == 2  # the start-up sync and one for the whole burst


def test_a_write_in_progress_in_rollback_journal_mode_is_waited_for(tmp_path):
    path = tmp_path / "j.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    ticker = Ticker(path)
    settle(ticker)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")  # spills into <db>-journal before the commit
    try:
        assert Path(f"{path}-journal").exists()
        assert "write is in progress" in ticker.skip_message(ticker.tick())
    finally:
        writer.execute("COMMIT")
        writer.close()
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 2


def test_every_tick_makes_sure_the_pool_limit_exists(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    ticker.tick()
    limits = {p.name: p.limit for p in ticker.instance.event_log_storage.get_pool_limits()}
    assert limits[POOL] == 1


def test_a_writer_that_never_pauses_still_gets_a_sync_after_a_few_ticks(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)

    for i in range(MAX_WAIT_TICKS):
        writer.execute("INSERT INTO t (v) VALUES (?)", (f"constant {i}",))
        ticker.tick()

    assert len(ticker.run_keys) == 2


def test_a_failed_sync_is_requested_again_for_the_same_content(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    settle(ticker)
    ticker.instance.add_run(
        DagsterRun(
            job_name="__ASSET_JOB", tags={"dagster/run_key": ticker.run_keys[0]}, status=DagsterRunStatus.FAILURE
        )
    )

    ticker.tick()
    ticker.tick()

    assert len(ticker.run_keys) == 2
    assert ticker.run_keys[1].split("#")[0] == ticker.run_keys[0].split("#")[0]


def test_a_persistent_journal_left_after_a_commit_is_not_a_write_in_progress(tmp_path):
    path = tmp_path / "p.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=PERSIST")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    assert Path(f"{path}-journal").exists()
    ticker = Ticker(path)

    ticker.tick()
    ticker.tick()

    assert len(ticker.run_keys) == 1


def test_a_reader_creating_an_empty_wal_file_is_not_a_change(tmp_path):
    path = tmp_path / "e.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    conn.close()  # the last connection checkpoints and removes the -wal file
    ticker = Ticker(path)
    settle(ticker)

    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    reader.execute("SELECT count(*) FROM t").fetchone()
    try:
        ticker.tick()
        ticker.tick()
    finally:
        reader.close()

    assert len(ticker.run_keys) == 1
