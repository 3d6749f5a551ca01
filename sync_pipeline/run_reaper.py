"""Fail sync runs whose processes all died, so they stop holding the pool ``sqlite_pg_sync``.

With ``granularity: run`` a run holds the pool while its status is STARTING, STARTED or CANCELING.
What Dagster 1.13 does by itself, with the ``DefaultRunLauncher`` that ``dagster dev`` uses:

- The code server that started a run's worker process checks it every 0.5 s; if the worker
  died (``kill -9``, the OOM killer) the code server marks the run FAILURE, and the next queued
  sync starts. Nothing to add for that case.
- A worker that died *together with its code server* (``dagster dev`` killed with ``kill -9``,
  a crash of the machine) is noticed by nobody: the run stays STARTED forever and every later
  sync waits QUEUED behind it. Run monitoring does not help: the ``DefaultRunLauncher`` cannot
  check a run worker's health, so the monitoring daemon only applies timeouts.

``fail_runs_whose_processes_died`` covers that second case. It looks at this project's
in-progress runs (those in the pool), finds the processes that did their work (the run worker
and the step processes, from the pids Dagster records in the run's events) and, when every one
of them is gone, reports the run failed through the public ``DagsterInstance`` API. A FAILURE
run no longer counts against the pool, so Dagster dequeues the next sync itself.

A pid means something only in the PID namespace it was taken in, on the boot it was taken in.
A missing pid is proof of death only when the run's processes were in *our* namespace, so a run
is judged only when its tag ``sync_pipeline/process_space`` equals ``process_space()`` here (the
boot id plus the inode of the PID namespace). A hostname proves nothing: a cron sidecar in the
code server's pod or a ``docker run --network host`` container has the same hostname and other
pids, and so does another machine sharing the instance whose ``dagster dev`` reaches its own
code server through a Unix socket or localhost. Every other run is left to Dagster (the code
server's own watch, run monitoring timeouts) or to whoever can see its processes. Where the tag
comes from:

- ``python -m sync_pipeline sync`` executes its runs in its own process, so it tags them with
  ``process_space_tags()`` when it creates them. Its older tag ``sync_pipeline/cli_host`` (a
  hostname) is ignored here: a run that carries only that one is left alone.
- Runs launched through a code server (the Materialize button, the sensor, GraphQL) are created
  by a process that is not the one running them, and Dagster's run worker cannot be tagged by
  this project. The reaper stamps such a run itself, at a pass where it can *prove* that a live
  process of the run is ours: a recorded pid that exists here, in our PID namespace, started
  shortly before the event that recorded it (``PROOF_WINDOW_S``), with an ancestor that serves
  the run's ``.dagster/grpc_info`` endpoint (its command line names the Unix socket, or it
  listens on the TCP port). Another namespace's pid that happens to exist here fails one of
  these checks. The stamp is what remains after ``dagster dev`` dies with ``kill -9``. The
  sensor calls the reaper on every tick (so, while it is on, a run that lived through one tick
  is stamped), and so do ``python -m sync_pipeline.instance`` and the headless command while it
  waits for the pool. A run whose processes all died before any pass saw them (or that ran where
  nothing of it is visible) cannot be proven dead here and is left to Dagster's run monitoring.
  Tagging such runs when they are requested instead would be wrong as soon as the instance's run
  launcher starts them elsewhere (Docker, Kubernetes): only a process that sees the run's own
  process can vouch for its namespace.

Without a readable ``/proc`` (not Linux) ``process_space()`` is None and no run is ever judged.
A pid reused by a newer process, or held by a process of another namespace, does not count as
the run's process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from .assets import POOL

GRPC_INFO_TAG = ".dagster/grpc_info"  # set by the DefaultRunLauncher: where it reached the code server
# Set by `python -m sync_pipeline sync` (its machine's hostname). Kept for old runs and readers; never
# enough to judge a run: another PID namespace (a sidecar container) has the same hostname.
CLI_HOST_TAG = "sync_pipeline/cli_host"
# The process space (boot id and PID namespace) the run's processes run in: see process_space().
PROCESS_SPACE_TAG = "sync_pipeline/process_space"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# Statuses in which a run holds its pool (Dagster's ACTIVE_RUN_STATUSES).
HOLDING_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
# Events written by the processes doing a run's work, each carrying the writer's pid.
WORKER_EVENTS = {DagsterEventType.RUN_START, DagsterEventType.STEP_WORKER_STARTED, DagsterEventType.STEP_START}
STARTED_PROCESS = "Started process for run"  # the run worker's first engine event, metadata "pid"
CLOCK_SLACK_S = 1.0  # process start times and event timestamps come from different clocks' rounding
# A process proves it is the run's only if it started at most this long before the event naming its pid
# (a run worker loads the code, then writes RUN_START; a step process writes STEP_START at once).
PROOF_WINDOW_S = 300.0


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    pids: tuple[int, ...]
    message: str


def _pid_namespace(pid: int | str) -> int:
    """Inode of the PID namespace of ``pid`` ("self" for this process); OSError when unreadable."""
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def process_space() -> str | None:
    """``"<boot id>:<PID namespace inode>"`` of this process, or None when /proc cannot tell.

    Two processes with the same value see the same pids: the boot id tells machines (and reboots)
    apart, the namespace inode tells containers on one kernel apart. The hostname is not part of
    it: it adds nothing the two do not prove, and containers sharing the host's PID namespace
    may have a hostname of their own.
    """
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as f:
            boot_id = f.read().strip()
        namespace = _pid_namespace("self")
    except OSError:
        return None
    return f"{boot_id}:{namespace}" if boot_id else None


def process_space_tags() -> dict[str, str]:
    """Tags for a run whose processes will run in this process's PID namespace ({} when unknown).

    Only for runs executed here (``execute_in_process``) or by a child of this process: a run
    handed to another launcher (Docker, Kubernetes) runs elsewhere and must not carry them.
    """
    space = process_space()
    return {PROCESS_SPACE_TAG: space} if space else {}


def code_server_may_be_local(tags: Mapping[str, str]) -> bool:
    """Whether the run's code server was reached through a Unix socket or an address of this machine.

    Necessary, not sufficient, to judge the run: another container or machine reaches *its* code
    server the same way. ``_stamp_if_provably_ours`` still has to find the serving process here.
    """
    info = _grpc_info(tags)
    if info is None:
        return False
    if info.get("socket"):
        return True
    host = str(info.get("host") or "")
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    local = {a.address.split("%")[0] for addresses in psutil.net_if_addrs().values() for a in addresses}
    return address.is_loopback or str(address) in local


def _grpc_info(tags: Mapping[str, str]) -> dict[str, object] | None:
    raw = tags.get(GRPC_INFO_TAG)
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def run_process_pids(instance: DagsterInstance, run_id: str) -> dict[int, float]:
    """pid -> when it first showed up, for the processes that worked on the run."""
    pids: dict[int, float] = {}
    records = instance.get_records_for_run(
        run_id, of_type={DagsterEventType.ENGINE_EVENT, *WORKER_EVENTS}, ascending=True
    ).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        pid: int | None = None
        if event.event_type in WORKER_EVENTS:
            pid = event.pid
        elif (entry.message or "").startswith(STARTED_PROCESS) and event.engine_event_data:
            value = event.engine_event_data.metadata.get("pid")
            pid = int(value.value) if value is not None else None
        if pid is not None:
            pids.setdefault(pid, entry.timestamp)
    return pids


def process_is_alive(pid: int, seen_at: float) -> bool:
    """Whether ``pid`` is still the process of our PID namespace that wrote an event at ``seen_at``.

    Zombies are dead; so is a process that started later (the pid was reused) or that lives in
    another PID namespace (a container started from here: not the process that took the pid here).
    When the process exists but cannot be inspected, it counts as alive: in doubt the run lives.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if process.create_time() > seen_at + CLOCK_SLACK_S:
            return False
        return _pid_namespace(pid) == _pid_namespace("self")
    except psutil.NoSuchProcess:
        return False
    except FileNotFoundError:
        return False  # it exited between the two looks
    except (psutil.AccessDenied, OSError):
        return True


def _serves(process: psutil.Process, info: Mapping[str, object]) -> bool:
    """Whether ``process`` is the code server named by a run's grpc info (its socket or port)."""
    path, port = info.get("socket"), info.get("port")
    try:
        if path:
            args = process.cmdline()
            return str(path) in args or f"--socket={path}" in args
        if port:
            return any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == int(str(port))
                for c in process.net_connections(kind="tcp")
            )
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    return False


def _provably_ours(pid: int, seen_at: float, info: Mapping[str, object]) -> bool:
    """Whether ``pid`` is, beyond a coincidence of numbers, a live process of the run in our namespace."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if not seen_at - PROOF_WINDOW_S <= process.create_time() <= seen_at + CLOCK_SLACK_S:
            return False
        if _pid_namespace(pid) != _pid_namespace("self"):
            return False
        return any(_serves(parent, info) for parent in process.parents())
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return False


def _stamp_if_provably_ours(instance: DagsterInstance, run: DagsterRun, pids: Mapping[int, float], space: str) -> bool:
    """Tag a code-server run with our process space once one of its live processes is proven ours.

    After that, its pids can be judged here even when its code server died with it.
    """
    info = _grpc_info(run.tags)
    if info is None or not code_server_may_be_local(run.tags):
        return False
    if not any(_provably_ours(pid, seen_at, info) for pid, seen_at in pids.items()):
        return False
    instance.add_run_tags(run.run_id, {PROCESS_SPACE_TAG: space})
    return True


def fail_runs_whose_processes_died(instance: DagsterInstance, pool: str = POOL) -> Sequence[FailedRun]:
    """Report FAILURE for each run in ``pool`` provably of this process space whose processes are all gone.

    Also stamps the live code-server runs it can prove are ours (see the module docstring).
    """
    space = process_space()
    if space is None:
        return []  # no way to tell our pids from another namespace's: judge nothing
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=list(HOLDING_STATUSES))):
        run = record.dagster_run
        if not _in_pool(run, pool):
            continue
        pids = run_process_pids(instance, run.run_id)
        if not pids:
            continue  # no process recorded yet (still launching)
        tagged = run.tags.get(PROCESS_SPACE_TAG)
        if tagged is None:
            _stamp_if_provably_ours(instance, run, pids, space)
            continue  # stamped only when a process is alive; else nothing here proves its pids ours
        if tagged != space or _any_alive(pids.items()):
            continue  # pids of another namespace or boot mean nothing here; or one is still working
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in HOLDING_STATUSES:
            continue  # it ended meanwhile
        listed = ", ".join(str(p) for p in sorted(pids))
        message = (
            f"Every process of this run (pid {listed}) on {socket.gethostname()} (process space {space}) is "
            f"gone and none reported the end of the run, so it is marked failed to free the pool {pool!r}."
        )
        instance.report_engine_event(message, current)
        instance.report_run_failed(current, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            # Pool slots claimed per step (granularity "op") are rows of their own; with
            # granularity "run" there are none and the FAILURE status alone frees the pool.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(FailedRun(run.run_id, tuple(sorted(pids)), message))
    return failed


def _any_alive(pids: Iterable[tuple[int, float]]) -> bool:
    return any(process_is_alive(pid, seen_at) for pid, seen_at in pids)


def _in_pool(run: DagsterRun, pool: str) -> bool:
    concurrency = run.run_op_concurrency
    return concurrency is not None and pool in (concurrency.all_pools or ())
