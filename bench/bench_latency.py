"""Benchmark: commit in SQLite to row visible in PostgreSQL, through a real ``dagster dev`` and its sensor.

    .venv/bin/python bench/bench_latency.py [--commits 7] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Starts ``dagster dev`` as the Quick start does (the project's ``workspace.yaml`` and ``dagster.yaml``, no
sensor or queue setting changed), on a fresh demo file and a Dagster home and PostgreSQL schemas of its own
(bench/workspace.py; the project's ``state/`` is not touched). The target is ``--dsn``, else ``PG_BENCH_DSN``
or ``PG_CONN_STR``, else the embedded PostgreSQL. Once the sensor's start-up sync is done it:

1. commits ``--commits`` rows to ``experiments``, one at a time, each with a unique marker in ``notes``, after
   a random pause (``--min-pause``..``--max-pause`` s, so commits land anywhere in the sensor's tick cycle),
   and polls PostgreSQL with a real client every 50 ms until the marker is there: commit -> visible;
2. launches ``--idle-runs`` runs of every table with nothing changed, through GraphQL and the run queue, as
   the sensor's runs go, and compares each run's wall time (RUN_START -> RUN_SUCCESS, and queued -> success)
   with the engine's own time (the sum of the tables' ``duration_s``);
3. leaves the file alone for ``--idle-s`` seconds and measures the sensor's own cost: the CPU time of the
   daemon and of the code server (where sensor ticks run), and, with ``strace`` when it is installed, the
   ``stat``/``open`` calls on the SQLite files per tick.

Processes on this machine start with SIGINT/SIGTERM ignored: ``dagster dev`` is started with both reset, in
a session of its own, and stopped by process group.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg2
from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClient
from psycopg2 import sql
from workspace import Workspace, workspace

from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline.sensor import SENSOR_NAME

TABLES = ("experiments", "narrative_results", "source_narratives")
RUN_EVENTS = (
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_DEQUEUED,
    DagsterEventType.RUN_STARTING,
    DagsterEventType.RUN_START,
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_FAILURE,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_signals_new_session() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


def _wait_for(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def dagster_dev(env: dict[str, str], log_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """``dagster dev`` from the project root, in a process group of its own, until the block ends; yields the
    process and its port once the code location is loaded."""
    port = _free_port()
    dagster = str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("a") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_reset_signals_new_session,
        )  # fmt: skip
    status = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"

    def loaded() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"dagster dev exited: {log_path.read_text()[-3000:]}")
        try:
            entries = _graphql(port, status)["data"]["workspaceOrError"]["locationEntries"]
        except OSError:
            return False
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    try:
        _wait_for(loaded, 180, "the code location to load", every_s=1)
        yield process, port
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also ends processes orphaned in the group
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass


def _visible(dsn: str, schema: str, marker: str) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            query = sql.SQL("SELECT 1 FROM {}.experiments WHERE notes = %s").format(sql.Identifier(schema))
            cur.execute(query, (marker,))
            return cur.fetchone() is not None
    finally:
        conn.close()


def _table_exists(dsn: str, schema: str) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".experiments',))
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


@dataclass(frozen=True)
class RunTimes:
    run_id: str
    reason: str
    created: float  # the run was written (QUEUED): the sensor's request or the GraphQL launch
    events: dict[str, float]  # event type -> timestamp
    engine_s: float  # sum of the tables' duration_s

    @property
    def start_to_end(self) -> float:
        return self.events["RUN_SUCCESS"] - self.events["RUN_START"]

    @property
    def created_to_end(self) -> float:
        return self.events["RUN_SUCCESS"] - self.created

    @property
    def to_starting(self) -> float:
        """Submitted and taken from the queue: created -> RUN_STARTING (the launcher asks the code server)."""
        return self.events["RUN_STARTING"] - self.created

    @property
    def worker_start(self) -> float:
        """RUN_STARTING -> RUN_START: the run worker process starts and loads the code."""
        return self.events["RUN_START"] - self.events["RUN_STARTING"]


def _run_times(instance: DagsterInstance, run_id: str) -> RunTimes:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None
    events: dict[str, float] = {}
    for r in instance.get_records_for_run(run_id, of_type=set(RUN_EVENTS)).records:
        event = r.event_log_entry.dagster_event
        assert event is not None
        events.setdefault(event.event_type.name, r.event_log_entry.timestamp)  # RUN_START, not PIPELINE_START
    engine = 0.0
    for r in instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records:
        materialization = r.event_log_entry.asset_materialization
        assert materialization is not None
        engine += float(materialization.metadata["duration_s"].value)  # type: ignore[arg-type]
    reason = record.dagster_run.tags.get("sync_reason", "launched")
    return RunTimes(run_id, reason, record.create_timestamp.timestamp(), events, engine)


def _runs_after(instance: DagsterInstance, since: float) -> list[str]:
    runs = instance.get_run_records(RunsFilter(created_after=datetime.fromtimestamp(since, UTC)))
    return [r.dagster_run.run_id for r in sorted(runs, key=lambda r: r.create_timestamp)]


def _wait_idle(instance: DagsterInstance) -> None:
    """Until no run is queued or in progress."""
    busy = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
            DagsterRunStatus.STARTED]  # fmt: skip
    _wait_for(lambda: not instance.get_runs(RunsFilter(statuses=busy)), 120, "runs to finish")


def commits(ws: Workspace, dsn: str, db: Path, home: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    rng = random.Random(args.seed)
    writer = sqlite3.connect(db, isolation_level=None)  # held open, as an application would: commits stay in -wal
    results = []
    try:
        for i in range(args.commits):
            time.sleep(rng.uniform(args.min_pause, args.max_pause))
            marker = f"latency-{uuid.uuid4().hex[:12]}"
            writer.execute(
                "INSERT INTO experiments (name, notes, updated_at) VALUES (?, ?, datetime('now'))",
                (f"bench {i}", marker),
            )
            committed = time.time()
            _wait_for(lambda m=marker: _visible(dsn, ws.schema, m), 120, f"marker {marker}", every_s=0.05)
            visible = time.time()
            with DagsterInstance.from_config(str(home)) as instance:
                _wait_idle(instance)  # the row is visible at the sync's commit, a little before the run ends
                runs = [_run_times(instance, r) for r in _runs_after(instance, committed - 0.5)]
            for r in runs:
                print(
                    f"  run {r.run_id[:8]} {r.reason}: created {r.created - committed:+.2f} s, "
                    + ", ".join(f"{k} {v - committed:+.2f}" for k, v in sorted(r.events.items(), key=lambda kv: kv[1]))
                )
            sensor_runs = [r for r in runs if r.reason != "launched" and "RUN_SUCCESS" in r.events]
            row: dict[str, float] = {"commit": i + 1, "latency_s": visible - committed}
            if sensor_runs:
                run = sensor_runs[0]
                row.update(
                    to_request=run.created - committed,
                    to_starting=run.to_starting,
                    worker_start=run.worker_start,
                    run_s=run.start_to_end,
                    engine_s=run.engine_s,
                )
            results.append(row)
            print(f"commit {i + 1}: visible after {row['latency_s']:.2f} s", flush=True)
    finally:
        writer.close()
    return results


def idle_runs(port: int, home: Path, count: int) -> list[RunTimes]:
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    times = []
    for _ in range(count):
        run_id = client.submit_job_execution("__ASSET_JOB", asset_selection=[AssetKey([t]) for t in TABLES])
        _wait_for(lambda r=run_id: client.get_run_status(r).value in ("SUCCESS", "FAILURE", "CANCELED"), 120,
                  f"run {run_id}", every_s=0.2)  # fmt: skip
        if client.get_run_status(run_id) != DagsterRunStatus.SUCCESS:
            raise SystemExit(f"run {run_id} did not succeed")
        with DagsterInstance.from_config(str(home)) as instance:
            times.append(_run_times(instance, run_id))
    return times


def _dev_processes(root: int) -> dict[str, list[psutil.Process]]:
    """``dagster dev``'s descendants by role: the daemon, the code server that loads the code (sensor ticks run
    there), the code server proxy in front of it, and the webserver."""
    found: dict[str, list[psutil.Process]] = {}
    for p in psutil.Process(root).children(recursive=True):
        cmd = " ".join(p.cmdline())
        if "dagster._daemon" in cmd:
            role = "daemon"
        elif "api grpc" in cmd:
            role = "code server"
        elif "code-server" in cmd:
            role = "code server proxy"
        elif "dagster_webserver" in cmd:
            role = "webserver"
        else:
            continue
        found.setdefault(role, []).append(p)
    return found


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def cpu_share(root: int, idle_s: float) -> dict[str, float]:
    """Percent of one core each role of ``dagster dev`` used over ``idle_s`` seconds."""
    processes = _dev_processes(root)
    before = {role: _cpu(ps) for role, ps in processes.items()}
    started = time.monotonic()
    time.sleep(idle_s)
    elapsed = time.monotonic() - started
    return {role: 100 * (_cpu(ps) - before[role]) / elapsed for role, ps in processes.items()}


def file_calls(root: int, db: Path, window_s: float) -> dict[str, int] | None:
    """System calls naming the SQLite file or its -wal/-journal in the code server over ``window_s``, by kind
    (``strace``, when installed; it slows the traced process, so CPU is measured apart)."""
    if not shutil.which("strace"):
        return None
    out = db.parent / "strace.txt"
    pids = [str(p.pid) for p in _dev_processes(root).get("code server", [])]
    trace = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=%file", "-o", str(out), *[a for pid in pids for a in ("-p", pid)]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_reset_signals_new_session,
    )  # fmt: skip
    time.sleep(window_s)
    os.killpg(trace.pid, signal.SIGTERM)
    trace.wait(10)
    lines = [line for line in out.read_text().splitlines() if str(db) in line]
    kinds = {kind: sum(1 for line in lines if f"{kind}(" in line) for kind in ("newfstatat", "statx", "openat")}
    return {"all": len(lines), **kinds}


def _ticks(home: Path, since: float) -> int:
    with DagsterInstance.from_config(str(home)) as instance:
        states = [s for s in instance.all_instigator_state() if s.name == SENSOR_NAME]
        return sum(len(instance.get_ticks(s.instigator_origin_id, s.selector_id, after=since)) for s in states)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=7)
    parser.add_argument("--min-pause", type=float, default=2.0)
    parser.add_argument("--max-pause", type=float, default=12.0)
    parser.add_argument("--idle-runs", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=60.0, help="CPU window, with the sensor and without")
    parser.add_argument("--trace-s", type=float, default=30.0, help="strace window for the file calls")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--dsn", default=os.environ.get("PG_BENCH_DSN") or os.environ.get("PG_CONN_STR"))
    args = parser.parse_args()
    if not args.dsn:
        from sync_pipeline.embedded_pg import embedded_dsn

        args.dsn = embedded_dsn()

    with workspace(args.dsn, "latency") as ws:
        db = generate(ws.work / "demo.sqlite")  # the demo's default size
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "DAGSTER_"))}
        env.update(ws.env(args.dsn), SQLITE_PATH=str(db))
        log = ws.work / "dagster-dev.log"
        try:
            with dagster_dev(env, log) as (process, port):
                loaded = time.time()
                _wait_for(lambda: _table_exists(args.dsn, ws.schema), 120, "the sensor's start-up sync")
                print(f"start-up sync visible {time.time() - loaded:.1f} s after the code location loaded")
                with DagsterInstance.from_config(str(ws.home)) as instance:
                    _wait_idle(instance)
                latencies = commits(ws, args.dsn, db, ws.home, args)
                with DagsterInstance.from_config(str(ws.home)) as instance:
                    _wait_idle(instance)
                runs = idle_runs(port, ws.home, args.idle_runs)
                time.sleep(5)
                since = time.time()
                cpu = cpu_share(process.pid, args.idle_s)
                ticks = _ticks(ws.home, since)
                since = time.time()
                calls = file_calls(process.pid, db, args.trace_s)
                traced_ticks = _ticks(ws.home, since)
            off = {**env, "SYNC_SENSOR": "off"}  # the same dagster dev without the sensor: what the sensor adds
            with dagster_dev(off, log) as (process, _):
                time.sleep(10)  # past the start-up work
                cpu_off = cpu_share(process.pid, args.idle_s)
        except BaseException:
            print(log.read_text()[-5000:], file=sys.stderr)
            raise
        _report(args, latencies, runs, (cpu, ticks, cpu_off), (calls, traced_ticks))


def _report(
    args: argparse.Namespace,
    latencies: list[dict[str, float]],
    runs: list[RunTimes],
    cpu: tuple[dict[str, float], int, dict[str, float]],
    calls: tuple[dict[str, int] | None, int],
) -> None:
    values = [r["latency_s"] for r in latencies]
    print(f"\n{args.commits} commits, pauses {args.min_pause:g}-{args.max_pause:g} s (seed {args.seed})")
    print("| commit | commit -> visible s | commit -> run requested | requested -> RUN_STARTING | "
          "RUN_STARTING -> RUN_START | RUN_START -> SUCCESS | engine s |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for r in latencies:
        print(
            f"| {r['commit']:.0f} | {r['latency_s']:.2f} | {r.get('to_request', float('nan')):.2f} | "
            f"{r.get('to_starting', float('nan')):.2f} | {r.get('worker_start', float('nan')):.2f} | "
            f"{r.get('run_s', float('nan')):.2f} | {r.get('engine_s', float('nan')):.2f} |"
        )
    print(f"commit -> visible: median {statistics.median(values):.2f} s, max {max(values):.2f} s, "
          f"min {min(values):.2f} s")  # fmt: skip
    print("\nno-change runs launched through GraphQL and the queue (as the sensor's are):")
    print(
        "| run | launched -> SUCCESS s | launched -> RUN_STARTING | RUN_STARTING -> RUN_START | RUN_START -> SUCCESS s "
        "| engine s | RUN_START -> SUCCESS minus engine s |\n|---|---|---|---|---|---|---|"
    )
    for r in runs:
        print(
            f"| {r.run_id[:8]} | {r.created_to_end:.2f} | {r.to_starting:.2f} | {r.worker_start:.2f} | "
            f"{r.start_to_end:.2f} | {r.engine_s:.2f} | {r.start_to_end - r.engine_s:.2f} |"
        )
    if runs:
        over = statistics.median(r.start_to_end - r.engine_s for r in runs)
        print(f"a run adds (median, RUN_START -> SUCCESS minus engine): {over:.2f} s")
        over_q = statistics.median(r.created_to_end - r.engine_s for r in runs)
        print(f"a run adds (median, queued -> SUCCESS minus engine, process start included): {over_q:.2f} s")
    with_sensor, ticks, without = cpu
    print(f"\nthe file left alone {args.idle_s:g} s: {ticks} sensor ticks; CPU, % of one core, with the sensor / "
          "SYNC_SENSOR=off:")  # fmt: skip
    for role in sorted(set(with_sensor) | set(without)):
        print(f"  {role}: {with_sensor.get(role, float('nan')):.2f} / {without.get(role, float('nan')):.2f}")
    counted, traced_ticks = calls
    if counted is not None and traced_ticks:
        print(f"  calls on the SQLite files in the code server, {args.trace_s:g} s, {traced_ticks} ticks: {counted}, "
              f"{counted['all'] / traced_ticks:.1f} per tick")  # fmt: skip


if __name__ == "__main__":
    main()
