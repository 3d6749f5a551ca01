"""The file-change sensor's decisions, on real SQLite files, one tick at a time."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
import shutil
import sqlite3
import threading
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
from sync_pipeline.demo import PROJECT_ROOT
from sync_pipeline.engine.fingerprint import file_state
from sync_pipeline.instance import prepare_dev_instance
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.sensor import MAX_WAIT_TICKS, Settle, build_sensor

# A tick watches a change settle for quiet_s; tests use a fifth of the default, and no listening, to stay fast.
FAST = Settle(listen_s=0, quiet_s=0.1, budget_s=0.6, poll_s=0.02)


class Ticker:
    """Calls the sensor as the daemon would, carrying the cursor from tick to tick.

    Its clock is the real one plus ``offset``, so a test can jump minutes ahead; the runs the
    sensor asks for are recorded in a real instance, and move through real run events, with
    ``launch``, ``fail`` and ``succeed``.
    """

    def __init__(self, path: Path, settle: Settle = FAST) -> None:
        self.offset = timedelta(0)
        self.sensor = build_sensor(AssetSelection.all(), clock=self.now, settle=settle)
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
    """The first tick: the file is quiet, so it syncs once."""
    ticker.tick()
    assert len(ticker.run_keys) == 1


class CommitBurst(threading.Thread):
    """A writer committing ``commits`` rows to ``path``, one every ``every_s``, on a connection and thread of
    its own; ``join`` re-raises whatever the writer hit, so a broken writer fails the test."""

    def __init__(self, path: Path, commits: int, every_s: float) -> None:
        super().__init__()
        self.path, self.commits, self.every_s = path, commits, every_s
        self.error: sqlite3.Error | None = None
        self.first = threading.Event()  # set once the first row is committed: the burst has begun
        self.start()

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            conn.execute("PRAGMA synchronous=OFF")  # no fsync: a slow disk must not add pauses the sensor would see
            try:
                for i in range(self.commits):
                    conn.execute("INSERT INTO t (v) VALUES (?)", (f"burst {i}",))
                    self.first.set()
                    time.sleep(self.every_s)
            finally:
                conn.close()
        except sqlite3.Error as exc:  # handed to the test thread by join()
            self.error = exc
        finally:
            self.first.set()  # a writer that failed wakes the test too: join() then raises

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def test_a_missing_file_is_a_skip_with_a_reason(tmp_path):
    ticker = Ticker(tmp_path / "nope.sqlite")
    assert "does not exist" in ticker.skip_message(ticker.tick())
    assert ticker.run_keys == []


def test_first_ticks_sync_once_then_an_unchanged_file_requests_nothing(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)

    first = ticker.tick()  # quiet for FAST.quiet_s within this tick: synced at once, no extra tick
    assert isinstance(first, SensorResult) and len(first.run_requests) == 1
    assert first.run_requests[0].tags["sync_reason"] == "changed"
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
    ticker.tick()  # one tick is enough: the tick itself waits for the file to be quiet
    assert len(ticker.run_keys) == 2
    assert ticker.run_keys[0] != ticker.run_keys[1]
    ticker.tick()
    assert len(ticker.run_keys) == 2  # and only one run for it


def test_a_commit_to_the_main_file_in_rollback_journal_mode_is_seen(tmp_path):
    path = tmp_path / "r.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    ticker = Ticker(path)
    settle(ticker)

    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO t VALUES (1)")

    ticker.tick()
    assert len(ticker.run_keys) == 2


def test_a_burst_of_commits_gives_one_run_once_the_file_is_quiet(wal_db):
    path, writer = wal_db
    ticker = Ticker(path)
    settle(ticker)

    # Commits closer together than the quiet time, with the tick starting in the middle of the burst.
    burst = CommitBurst(path, commits=8, every_s=FAST.quiet_s / 4)
    try:
        # Not before the first commit: a thread that starts late on a busy machine would find the file unchanged.
        assert burst.first.wait(10)
        during = ticker.tick()
    finally:
        burst.join()
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 8
    after = file_state(path).fingerprint

    assert isinstance(during, SensorResult) and len(during.run_requests) == 1
    assert during.run_requests[0].tags["sqlite_fingerprint"] == after  # the state after the whole burst
    for _ in range(3):
        ticker.tick()
    assert len(ticker.run_keys) == 2  # the start-up sync and one for the whole burst


def test_a_change_quiet_since_the_last_tick_is_requested_without_watching(wal_db):
    """A change the previous tick saw still moving, and unchanged since, has been quiet for a whole tick."""
    path, _ = wal_db
    ticker = Ticker(path, settle=Settle(quiet_s=30, budget_s=0.3, poll_s=0.05))  # a quiet time no tick reaches
    ticker.tick()  # the file never stays quiet for 30 s within 0.3 s: remembered, not requested
    assert ticker.run_keys == []

    started = time.monotonic()
    second = ticker.tick()

    assert isinstance(second, SensorResult) and second.run_requests[0].tags["sync_reason"] == "changed"
    assert time.monotonic() - started < 0.3  # decided from the cursor, without the watch


def test_a_tick_watches_a_change_for_at_most_its_budget(wal_db):
    path, _ = wal_db
    budget = Settle(quiet_s=0.2, budget_s=0.5, poll_s=0.02)
    ticker = Ticker(path, settle=budget)
    settle(ticker)

    writer_thread = CommitBurst(path, commits=60, every_s=0.02)  # never quiet for 0.2 s, for over 1 s
    try:
        assert writer_thread.first.wait(10)
        started = time.monotonic()
        first = ticker.tick()
        took = time.monotonic() - started
    finally:
        writer_thread.join()

    assert "kept changing while this tick watched it" in ticker.skip_message(first)
    assert budget.budget_s <= took < budget.budget_s + 2  # bounded, far below Dagster's 60 s tick timeout
    assert len(ticker.run_keys) == 1


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
        assert "write is in progress" in ticker.skip_message(ticker.tick())  # live for the whole watch
        assert len(ticker.run_keys) == 1
    finally:
        writer.execute("COMMIT")
        writer.close()
    ticker.tick()
    assert len(ticker.run_keys) == 2


def test_a_commit_while_the_tick_listens_is_requested_in_that_same_tick(wal_db):
    path, _ = wal_db
    listening = Settle(listen_s=5, quiet_s=0.1, budget_s=1, poll_s=0.02)
    ticker = Ticker(path, settle=listening)
    settle(ticker)
    ticker.succeed()
    commit = threading.Timer(0.5, lambda: CommitBurst(path, commits=1, every_s=0).join())
    commit.start()
    try:
        started = time.monotonic()
        result = ticker.tick()
        took = time.monotonic() - started
    finally:
        commit.join()

    assert isinstance(result, SensorResult) and len(result.run_requests) == 1
    assert result.run_requests[0].tags["sqlite_fingerprint"] == file_state(path).fingerprint  # after the commit
    assert took < listening.listen_s  # it did not listen on after hearing the commit


def test_a_tick_with_nothing_to_do_listens_for_its_listen_time_then_ends(wal_db):
    path, _ = wal_db
    listening = Settle(listen_s=0.5, quiet_s=0.1, budget_s=1, poll_s=0.02)
    ticker = Ticker(path, settle=listening)
    settle(ticker)
    ticker.succeed()

    started = time.monotonic()
    result = ticker.tick()
    took = time.monotonic() - started

    assert "has not changed since the last successful sync" in ticker.skip_message(result)
    assert listening.listen_s <= took < listening.listen_s + 2
    assert len(ticker.run_keys) == 1


def test_a_write_in_progress_that_commits_during_the_watch_is_synced_in_the_same_tick(tmp_path):
    path = tmp_path / "j.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    ticker = Ticker(path, settle=Settle(quiet_s=0.1, budget_s=3, poll_s=0.02))
    settle(ticker)
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    assert file_state(path).writing
    commit = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    commit.start()
    try:
        result = ticker.tick()
    finally:
        commit.join()
        writer.close()

    assert isinstance(result, SensorResult) and len(result.run_requests) == 1
    assert result.run_requests[0].tags["sqlite_fingerprint"] == file_state(path).fingerprint  # after the commit


def test_every_tick_makes_sure_the_pool_limit_exists(wal_db):
    path, _ = wal_db
    ticker = Ticker(path)
    ticker.tick()
    limits = {p.name: p.limit for p in ticker.instance.event_log_storage.get_pool_limits()}
    assert limits[POOL] == 1


def test_a_writer_that_never_pauses_still_gets_a_sync_after_a_few_ticks(wal_db):
    path, _ = wal_db
    ticker = Ticker(path, settle=Settle(quiet_s=0.2, budget_s=0.3, poll_s=0.02))
    settle(ticker)

    constant = CommitBurst(path, commits=80, every_s=0.02)  # never quiet for 0.2 s, for about 2 s
    results = []
    try:
        assert constant.first.wait(10)
        for _ in range(MAX_WAIT_TICKS):
            time.sleep(0.1)  # the time between two ticks: commits land in it too
            results.append(ticker.tick())
    finally:
        constant.join()

    assert all(not isinstance(r, SensorResult) or not r.run_requests for r in results[:-1])
    last = results[-1]
    assert isinstance(last, SensorResult) and len(last.run_requests) == 1
    assert last.run_requests[0].tags["sync_reason"] == "still changing"
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

    assert len(ticker.run_keys) == 1  # the start-up sync: the persistent journal held it back at no tick


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


@pytest.fixture
def dev_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml (storage moved into it), as `dagster dev` sees it."""
    home = tmp_path / "home"
    home.mkdir()
    config = (PROJECT_ROOT / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(config.replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("SQLITE_PATH", raising=False)
    return home


def _pool_limit(home: Path) -> int | None:
    with DagsterInstance.from_config(str(home)) as instance:
        return {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}.get(POOL)


def test_loading_the_code_under_dagster_dev_sets_the_pool_limit_before_any_run(dev_home, monkeypatch):
    """The Quick start has no separate step for the limit: the code server building the sensor sets it."""
    monkeypatch.delenv("DAGSTER_IS_DEV_CLI", raising=False)
    build_sensor(AssetSelection.all())
    assert _pool_limit(dev_home) is None  # not under dagster dev: loading the code touches no instance

    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")  # what `dagster dev` sets for itself and its children
    build_sensor(AssetSelection.all())

    assert _pool_limit(dev_home) == 1


def _prepare_in_child(queue: multiprocessing.queues.Queue) -> None:
    queue.put(prepare_dev_instance())


def test_a_run_worker_loading_the_code_does_not_open_the_instance_again(dev_home, monkeypatch):
    """The code server starts each run's worker as a multiprocessing child; it must not pay for this."""
    monkeypatch.setenv("DAGSTER_IS_DEV_CLI", "1")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_prepare_in_child, args=(queue,))
    child.start()
    child.join(30)

    assert queue.get(timeout=5) is False
    assert _pool_limit(dev_home) is None
