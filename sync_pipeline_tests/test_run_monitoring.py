"""A sync run whose processes die (kill -9, the OOM killer) must not hold the pool forever.

Against the real ``dagster dev``: a first sync run is held mid-sync by a lock the test keeps on
the target table, a second sync waits QUEUED behind it in the pool ``sqlite_pg_sync``, then the
first run's processes are killed with SIGKILL. The first run must end FAILURE, and the queued
sync must start and complete once the table is free.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg2
import psycopg2.extensions
import pytest
from dagster import (
    AssetKey,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    asset,
    define_asset_job,
)
from dagster_graphql import DagsterGraphQLClient
from psycopg2 import sql

from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline.dev_server import dagster_dev as dagster_dev_process
from sync_pipeline.dev_server import wait_for
from sync_pipeline.run_reaper import (
    CLI_HOST_TAG,
    GRPC_INFO_TAG,
    PROCESS_SPACE_TAG,
    code_server_may_be_local,
    fail_runs_whose_processes_died,
    process_space,
)

from .conftest import pg_rows, sqlite_rows, sync_all

TABLE = "experiments"
DEQUEUE_INTERVAL_S = 5  # QueuedRunCoordinator's default dequeue_interval_seconds
ENDED = ("SUCCESS", "FAILURE", "CANCELED")


@dataclass
class Project:
    home: Path
    sqlite_path: Path
    pg_dsn: str
    env: dict[str, str]
    log: Path

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))


@pytest.fixture
def project(tmp_path: Path, pg_dsn: str, schema: str) -> Project:
    """A DAGSTER_HOME with the repo's dagster.yaml, and a target already synced once."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (PROJECT_ROOT / "dagster.yaml").read_text().replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}")
    )
    sqlite_path = generate(tmp_path / "experiments.sqlite", rows=300, seed=5)
    sync_all(sqlite_path, pg_dsn, schema)
    with closing(sqlite3.connect(sqlite_path)) as source, source:  # something left for the queued sync to do
        source.execute("UPDATE experiments SET notes = 'synced after the crash' WHERE experiment_id = 1")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SQLITE_PATH": str(sqlite_path),
        "PG_CONN_STR": pg_dsn,
        "PG_SCHEMA": schema,
        "SYNC_SENSOR": "off",
    }
    subprocess.run([sys.executable, "-m", "sync_pipeline.instance"], env=env, cwd=PROJECT_ROOT, check=True)
    return Project(home, sqlite_path, pg_dsn, env, tmp_path / "dagster-dev.log")


@pytest.fixture
def held_table(pg_dsn: str, schema: str) -> Iterator[psycopg2.extensions.connection]:
    """A session holding the target table: a sync of it waits at its first statement on it.

    ``rollback()`` lets the table go.
    """
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(schema, TABLE)))
        yield conn
    finally:
        conn.close()


@contextmanager
def dagster_dev(project: Project) -> Iterator[tuple[subprocess.Popen, DagsterGraphQLClient]]:
    """``dagster dev`` in a process group of its own, until the block ends (or the test kills it)."""
    # In the test's folder, not the checkout: dagster dev reads .env from its working directory.
    with dagster_dev_process(project.home.parent, project.env, project.log) as (process, port):
        yield process, DagsterGraphQLClient("127.0.0.1", port_number=port)


def status(client: DagsterGraphQLClient, run_id: str) -> str:
    return client.get_run_status(run_id).value


def pid_of(project: Project, run_id: str, event_type: DagsterEventType) -> int | None:
    """The pid of the process that wrote the run's first event of this type."""
    with project.instance() as instance:
        records = instance.get_records_for_run(run_id, of_type=event_type, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event else None


def sessions_waiting_for_a_lock(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def a_blocked_sync_and_a_queued_one(project: Project, client: DagsterGraphQLClient) -> tuple[str, str]:
    selection = [AssetKey(TABLE)]
    first = client.submit_job_execution("__ASSET_JOB", asset_selection=selection, run_config={})
    wait_for(lambda: status(client, first) == "STARTED", 60, "the first run to start")
    wait_for(lambda: sessions_waiting_for_a_lock(project.pg_dsn) == 1, 60, "the first run to wait for the table")
    second = client.submit_job_execution("__ASSET_JOB", asset_selection=selection, run_config={})
    time.sleep(DEQUEUE_INTERVAL_S + 2)  # at least one pass of the daemon's run queue
    assert status(client, second) == "QUEUED", "the pool let a second sync start"
    return first, second


def kill_9(project: Project, pid: int) -> None:
    process = psutil.Process(pid)
    assert process.environ().get("DAGSTER_HOME") == str(project.home), f"pid {pid} is not this test's"
    process.kill()
    process.wait(10)


def the_queued_sync_completes(project: Project, client: DagsterGraphQLClient, run_id: str, held_table) -> None:
    wait_for(lambda: status(client, run_id) in ("STARTING", "STARTED"), 30, "the queued sync to start")
    held_table.rollback()  # let the table go
    wait_for(lambda: status(client, run_id) in ENDED, 60, "the queued sync to end")
    assert status(client, run_id) == "SUCCESS"


def failure_messages(project: Project, run_id: str) -> list[str]:
    with project.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE
        return [r.event_log_entry.message or "" for r in instance.get_records_for_run(run_id).records]


@pytest.mark.parametrize(
    ("killed", "event_type"),
    [
        # The run worker, which the code server that started it watches. With the default
        # multiprocess executor the step process it started lives on and finishes its table
        # (serialised with the next sync by the table's advisory lock).
        ("run worker", DagsterEventType.RUN_START),
        # The process running the step (the multiprocess executor's child, which the run worker
        # watches): where the OOM killer strikes, since it holds the rows. With the in-process
        # executor both are the same process.
        ("step process", DagsterEventType.STEP_START),
    ],
    ids=["run worker", "step process"],
)
def test_a_run_killed_with_kill_9_frees_the_pool_slot_and_the_queued_sync_runs(
    project: Project, held_table, schema: str, killed: str, event_type: DagsterEventType
):
    with dagster_dev(project) as (_, client):
        first, second = a_blocked_sync_and_a_queued_one(project, client)

        kill_9(project, int(wait_for(lambda: pid_of(project, first, event_type), 10, f"the {killed}'s pid")))

        wait_for(lambda: status(client, first) in ENDED, 30, "the killed run to end")
        assert status(client, first) == "FAILURE"
        the_queued_sync_completes(project, client, second, held_table)
    messages = failure_messages(project, first)
    assert any("was terminated by signal 9 (SIGKILL)" in m for m in messages), messages
    assert pg_rows(project.pg_dsn, schema, TABLE) == sqlite_rows(project.sqlite_path, TABLE)


def test_a_run_whose_processes_died_with_dagster_dev_is_failed_by_the_reaper_and_the_queued_sync_runs(
    project: Project, held_table, schema: str
):
    with dagster_dev(project) as (process, client):
        first, second = a_blocked_sync_and_a_queued_one(project, client)
        with project.instance() as instance:
            assert fail_runs_whose_processes_died(instance) == [], "the reaper failed a live run"
        os.killpg(process.pid, signal.SIGKILL)  # code server, run worker, step process, all at once
        process.wait(10)

    with project.instance() as instance:
        # Nobody reports it: the run would stay STARTED and hold the pool for ever.
        assert instance.get_run_by_id(first).status == DagsterRunStatus.STARTED
        failed = wait_for(lambda: fail_runs_whose_processes_died(instance), 10, "the reaper to see dead processes")
    assert [f.run_id for f in failed] == [first]
    with dagster_dev(project) as (_, client):
        the_queued_sync_completes(project, client, second, held_table)
    messages = failure_messages(project, first)
    assert any("marked failed to free the pool 'sqlite_pg_sync'" in m for m in messages), messages
    assert pg_rows(project.pg_dsn, schema, TABLE) == sqlite_rows(project.sqlite_path, TABLE)


@pytest.mark.parametrize(
    ("grpc_info", "judged"),
    [
        ('{"host": "localhost", "socket": "/tmp/tmpabc"}', True),  # as dagster dev launches
        ('{"host": "127.0.0.1", "port": 4000}', True),
        ('{"host": "192.0.2.7", "port": 4000}', False),  # a code server elsewhere: its pids mean nothing here
        (None, False),  # executed in the process that created it: no host recorded
    ],
)
def test_the_reaper_looks_for_the_code_server_only_on_this_machine(grpc_info: str | None, judged: bool):
    tags = {} if grpc_info is None else {GRPC_INFO_TAG: grpc_info}
    assert code_server_may_be_local(tags) is judged


# Unit level, against a real (ephemeral) instance: which runs the reaper may judge by their pids.


@asset(pool="sqlite_pg_sync")
def _pooled() -> None:
    """An asset in the sync pool, so its runs count against it as the sync's do."""


_POOLED_JOB = Definitions(assets=[_pooled], jobs=[define_asset_job("pooled")]).resolve_job_def("pooled")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def a_started_run(instance: DagsterInstance, tags: dict[str, str], pid: int) -> DagsterRun:
    """A STARTED run in the pool whose RUN_START was written by ``pid`` (now)."""
    run = instance.create_run_for_job(_POOLED_JOB, status=DagsterRunStatus.STARTING, tags=tags)
    start = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name, pid=pid)
    instance.report_dagster_event(start, run.run_id)
    return run


def a_dead_pid() -> int:
    """The pid of a process of ours that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(10)
    return process.pid


def status_of(instance: DagsterInstance, run: DagsterRun) -> DagsterRunStatus:
    current = instance.get_run_by_id(run.run_id)
    assert current is not None
    return current.status


@pytest.mark.skipif(process_space() is None, reason="needs Linux /proc")
def test_a_run_of_another_pid_namespace_with_the_same_hostname_is_not_judged(instance: DagsterInstance):
    # A headless sync in a sidecar container: same hostname, pids of its own namespace.
    boot_id = process_space().split(":")[0]
    tags = {CLI_HOST_TAG: socket.gethostname(), PROCESS_SPACE_TAG: f"{boot_id}:1"}
    run = a_started_run(instance, tags, a_dead_pid())
    assert fail_runs_whose_processes_died(instance) == []
    assert status_of(instance, run) == DagsterRunStatus.STARTED


@pytest.mark.skipif(process_space() is None, reason="needs Linux /proc")
def test_a_run_with_only_the_old_hostname_tag_is_not_judged(instance: DagsterInstance):
    run = a_started_run(instance, {CLI_HOST_TAG: socket.gethostname()}, a_dead_pid())
    assert fail_runs_whose_processes_died(instance) == []
    assert status_of(instance, run) == DagsterRunStatus.STARTED


@pytest.mark.skipif(process_space() is None, reason="needs Linux /proc")
def test_a_run_of_our_process_space_whose_processes_died_is_failed(instance: DagsterInstance):
    live = a_started_run(instance, {PROCESS_SPACE_TAG: process_space()}, os.getpid())
    dead = a_started_run(instance, {PROCESS_SPACE_TAG: process_space()}, a_dead_pid())
    assert [f.run_id for f in fail_runs_whose_processes_died(instance)] == [dead.run_id]
    assert status_of(instance, dead) == DagsterRunStatus.FAILURE
    assert status_of(instance, live) == DagsterRunStatus.STARTED


@contextmanager
def a_code_server_and_its_worker(socket_path: str) -> Iterator[int]:
    """A process naming ``socket_path`` in its command line (as ``dagster api grpc --socket`` does)
    and a child of it, whose pid is yielded; both are killed at the end."""
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"
    server = subprocess.Popen([sys.executable, "-c", code, "--socket", socket_path])
    try:
        worker = wait_for(lambda: next(iter(psutil.Process(server.pid).children()), None), 10, "the worker")
        yield worker.pid
    finally:
        for process in [*psutil.Process(server.pid).children(), psutil.Process(server.pid)]:
            process.kill()
        server.wait(10)


@pytest.mark.skipif(process_space() is None, reason="needs Linux /proc")
@pytest.mark.parametrize("served_here", [True, False], ids=["our code server", "a socket nobody here serves"])
def test_a_code_server_run_is_judged_only_once_its_live_worker_was_proven_ours(
    instance: DagsterInstance, tmp_path: Path, served_here: bool
):
    socket_path = str(tmp_path / "grpc.sock")
    with a_code_server_and_its_worker(socket_path) as worker:
        named = socket_path if served_here else str(tmp_path / "elsewhere.sock")
        run = a_started_run(instance, {GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": named})}, worker)
        assert fail_runs_whose_processes_died(instance) == []  # alive: only stamped, when provable
        stamped = instance.get_run_by_id(run.run_id)
        assert stamped is not None and stamped.tags.get(PROCESS_SPACE_TAG) == (process_space() if served_here else None)
    # Code server and worker gone, as after `kill -9` of dagster dev.
    failed = fail_runs_whose_processes_died(instance)
    assert [f.run_id for f in failed] == ([run.run_id] if served_here else [])
