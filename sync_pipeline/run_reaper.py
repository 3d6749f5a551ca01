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

A pid says nothing about another machine's processes, so a run is judged only when it was
launched through a code server on this machine (its ``.dagster/grpc_info`` tag names a Unix
socket, a loopback address or this machine): so ``dagster dev`` launches every run. Runs
executed in the process that created them (``dagster asset materialize``) record no host and
are left alone, except ``python -m sync_pipeline sync`` runs, which name their machine in the tag
``sync_pipeline/cli_host`` (their RUN_START event carries the CLI process's pid).
A pid reused by a newer process does not count as the run's process.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from .assets import POOL

GRPC_INFO_TAG = ".dagster/grpc_info"  # set by the DefaultRunLauncher: where it reached the code server
CLI_HOST_TAG = "sync_pipeline/cli_host"  # set by `python -m sync_pipeline sync`: the machine its run executes on
# Statuses in which a run holds its pool (Dagster's ACTIVE_RUN_STATUSES).
HOLDING_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
# Events written by the processes doing a run's work, each carrying the writer's pid.
WORKER_EVENTS = {DagsterEventType.RUN_START, DagsterEventType.STEP_WORKER_STARTED, DagsterEventType.STEP_START}
STARTED_PROCESS = "Started process for run"  # the run worker's first engine event, metadata "pid"
CLOCK_SLACK_S = 1.0  # process start times and event timestamps come from different clocks' rounding


@dataclass(frozen=True)
class FailedRun:
    run_id: str
    pids: tuple[int, ...]
    message: str


def launched_on_this_host(tags: Mapping[str, str]) -> bool:
    """True when the run's code server, so its run worker, was on this machine (or the run is a
    ``python -m sync_pipeline sync`` run executing in a process on this machine)."""
    if tags.get(CLI_HOST_TAG) in (socket.gethostname(), socket.getfqdn()):
        return True
    raw = tags.get(GRPC_INFO_TAG)
    if not raw:
        return False
    try:
        info = json.loads(raw)
    except ValueError:
        return False
    if info.get("socket"):
        return True  # a Unix socket only reaches processes on the same machine
    host = str(info.get("host") or "")
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    local = {a.address.split("%")[0] for addresses in psutil.net_if_addrs().values() for a in addresses}
    return address.is_loopback or str(address) in local


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
    """Whether ``pid`` is still the process that wrote an event at ``seen_at`` (zombies are dead)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= seen_at + CLOCK_SLACK_S  # a later start: the pid was reused
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; when in doubt the run is alive


def fail_runs_whose_processes_died(instance: DagsterInstance, pool: str = POOL) -> Sequence[FailedRun]:
    """Report FAILURE for each run in ``pool`` launched on this machine whose processes are all gone."""
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=list(HOLDING_STATUSES))):
        run = record.dagster_run
        if not _in_pool(run, pool) or not launched_on_this_host(run.tags):
            continue
        pids = run_process_pids(instance, run.run_id)
        if not pids or any(process_is_alive(pid, seen_at) for pid, seen_at in pids.items()):
            continue  # no process recorded yet (still launching), or one is still working
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in HOLDING_STATUSES:
            continue  # it ended meanwhile
        listed = ", ".join(str(p) for p in sorted(pids))
        message = (
            f"Every process of this run (pid {listed}) on {socket.gethostname()} is gone and none reported "
            f"the end of the run, so it is marked failed to free the pool {pool!r}."
        )
        instance.report_engine_event(message, current)
        instance.report_run_failed(current, message)
        if instance.event_log_storage.supports_global_concurrency_limits:
            # Pool slots claimed per step (granularity "op") are rows of their own; with
            # granularity "run" there are none and the FAILURE status alone frees the pool.
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(FailedRun(run.run_id, tuple(sorted(pids)), message))
    return failed


def _in_pool(run: DagsterRun, pool: str) -> bool:
    concurrency = run.run_op_concurrency
    return concurrency is not None and pool in (concurrency.all_pools or ())
