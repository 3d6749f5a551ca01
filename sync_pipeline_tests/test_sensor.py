"""The file-change sensor's decisions, on real SQLite files, one tick at a time."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import (
    AssetSelection,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunsFilter,
    SensorResult,
    SkipReason,
    build_sensor_context,
)

from sync_pipeline.assets import POOL
from sync_pipeline.engine.fingerprint import file_state
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.sensor import MAX_WAIT_TICKS, build_sensor


class Ticker:
    """Calls the sensor as the daemon would, carrying the cursor from tick to tick.

    Its clock is the real one plus ``offset``, so a test can jump minutes ahead; the runs the
    sensor asks for are recorded in a real instance, and move through real run events, with
    ``launch``, ``fail`` and ``succeed``.
    """

    def __init__(self, path: Path) -> None:
        self.offset = timedelta(0)
        self.sensor = build_sensor(AssetSelection.all(), clock=self.now)
        self.path = path
        self.cursor: str | None = None
        self.instance = DagsterInstance.ephemeral()
        self.run_keys: list[str] = []

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)

    def launch(self, status: DagsterRunStatus = DagsterRunStatus.STARTED) -> DagsterRun:
        """Record the run of the last request, as the daemon would once it submits it."""
        run = DagsterRun(job_name="__ASSET_JOB", tags={"dagster/run_key": self.run_keys[-1]}, status=status)
        self.instance.add_run(run)
        return run

    def fail(self, run: DagsterRun | None = None) -> None:
        self.instance.report_run_failed(run or self.launch())

    def succeed(self, run: DagsterRun | None = None) -> None:
        run = run or self.launch()
        success = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
        self.instance.report_dagster_event(success, run.run_id)

    def status_of_last_request(self) -> DagsterRunStatus:
        (run,) = self.instance.get_runs(RunsFilter(tags={"dagster/run_key": self.run_keys[-1]}))
        return run.status

    def tick(self) -> SensorResult | SkipReason:
        context = build_sensor_context(
            cursor=self.cursor,
            # PostgreSQL is only reached to delete a removed file's rows (many files): never here.
            resources={"sqlite": SQLiteSource(path=str(self.path)), "postgres": PostgresTarget()},
            instance=self.instance,
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
    assert "no run with key" in ticker.skip_message(ticker.tick())  # requested, not launched yet
    ticker.succeed()
    assert ticker.status_of_last_request() == DagsterRunStatus.SUCCESS
    for _ in range(3):
        assert "has not changed since the last successful sync" in ticker.skip_message(ticker.tick())
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


def _same_size_copy_with_other_content(path: Path, copy: Path) -> None:
    """A different database of exactly the same size: one value rewritten with one of the same length."""
    shutil.copyfile(path, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE t SET v = 'B' WHERE v = 'A'")
    assert copy.stat().st_size == path.stat().st_size
    assert copy.read_bytes() != path.read_bytes()


@pytest.fixture
def rollback_db(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('A')")
    conn.close()
    return path


def test_a_same_size_same_mtime_replacement_by_rename_is_a_change(rollback_db, tmp_path):
    path = rollback_db
    ticker = Ticker(path)
    settle(ticker)
    old = path.stat()
    new = tmp_path / "restored.sqlite"
    _same_size_copy_with_other_content(path, new)
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))

    os.replace(new, path)

    now = path.stat()
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)  # what the old fingerprint saw
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 2
    assert ticker.run_keys[0] != ticker.run_keys[1]


def test_an_in_place_rewrite_with_the_mtime_set_back_is_a_change(rollback_db, tmp_path):
    """``cp -p`` over an existing file keeps its inode and restores the mtime; only ctime moves."""
    path = rollback_db
    ticker = Ticker(path)
    settle(ticker)
    old = path.stat()
    new = tmp_path / "restored.sqlite"
    _same_size_copy_with_other_content(path, new)
    time.sleep(0.05)  # past the kernel's timestamp granularity, so the rewrite gets another ctime

    path.write_bytes(new.read_bytes())
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))

    now = path.stat()
    assert (now.st_size, now.st_mtime_ns, now.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    ticker.tick()
    ticker.tick()
    assert len(ticker.run_keys) == 2


def _read(uri: str) -> None:
    conn = sqlite3.connect(uri, uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] >= 1
    finally:
        conn.close()


@pytest.mark.parametrize("reader", ["read-write", "read-only"])
def test_opening_and_reading_the_database_does_not_change_the_fingerprint(tmp_path, reader):
    """Readers touch -shm, create an empty -wal and (running as root) chown the -wal, changing its ctime.

    None of that is a commit. Covered: a WAL database with committed frames in -wal (a writer
    holds it open), a WAL database with no -wal yet, and a rollback-journal database.
    """
    suffix = "?mode=ro" if reader == "read-only" else ""
    live_wal = tmp_path / "live.sqlite"
    writer = sqlite3.connect(live_wal, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    writer.execute("INSERT INTO t (v) VALUES ('in the wal')")
    closed_wal = tmp_path / "closed.sqlite"
    with sqlite3.connect(closed_wal) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('checkpointed')")
    conn.close()
    rollback = tmp_path / "rollback.sqlite"
    with sqlite3.connect(rollback) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t (v) VALUES ('main file')")
    conn.close()
    try:
        assert Path(f"{live_wal}-wal").stat().st_size > 0
        assert not Path(f"{closed_wal}-wal").exists()
        paths = [live_wal, closed_wal, rollback]
        before = [file_state(p).fingerprint for p in paths]
        time.sleep(0.05)  # past the kernel's timestamp granularity: any ctime a reader sets is a new one

        for p in paths:
            _read(p.resolve().as_uri() + suffix)

        assert [file_state(p).fingerprint for p in paths] == before
    finally:
        writer.close()
