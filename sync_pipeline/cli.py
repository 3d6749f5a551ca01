"""``python -m sync_pipeline sync``: a Dagster materialization of the selected tables, from a shell.

It builds the definitions of the project's own instance (``defs/sqlite_pg_sync``, see defs_builder.py:
the other instances of ``sync_pipeline.definitions:defs`` are never synced here), selects the table
assets whose SQLite table name matches ``--tables``, and executes them in this process against the
project's instance (the one ``dagster dev`` records in: ``DAGSTER_HOME``, else the repo's
``dagster.yaml``), so every run and materialization shows in the catalog's history.

- Exit codes (DESIGN.md section 8): 0 every table synced and every check passed; 1 a table (or the
  run) failed, or the definitions could not load; 2 bad arguments, reported before any database is
  touched; 3 every table synced but an asset check failed (each failed check is printed on stderr,
  so cron mails it: a WARN check does not fail the run, and would otherwise be seen only in the UI).
- One sync at a time: the run executes here, not through the run queue, so before each run the
  command waits while the pool ``sqlite_pg_sync`` is full of active runs (as the daemon would), and
  its own run counts against the pool while it runs, so the daemon holds queued runs back.
  Between that check and the run's start (about a second) a dequeued run can still start; the
  engine's per-table advisory locks keep the two apart in that window.
- Partitions (multi-file mode): when the selected assets are partitioned, their keys come from
  the instance and ``--files`` (a glob) selects some; contiguous keys go in one run when the
  assets' backfill policy allows runs over many partitions, else one run per partition.
- Output: on a terminal, live lines per table (start, rows done of total and rows/s, done); when
  piped, only the summary (stdout) and errors (stderr).
"""

from __future__ import annotations

import fnmatch
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg2
from dagster import (
    AssetKey,
    AssetsDefinition,
    DagsterError,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    DynamicPartitionsDefinition,
    ExecuteInProcessResult,
    LoggerDefinition,
    PartitionsDefinition,
    RunsFilter,
)
from pydantic import ValidationError

from .assets import OP_NAME, POOL, SYNC_NUMBERS, repaired_line
from .config import SETTINGS_TAG
from .engine import SyncOptions, TableSyncResult, prestart_arrow_reader, redact
from .engine.fingerprint import file_state
from .engine.summary import mode_line, run_summary, table_line
from .event_store import hold_event_shards
from .partitions import SQLITE_FILES, is_many, survey
from .removed_files import reconcile, removed_at, synced_since_removal
from .resources import TargetUnavailableError, read_now
from .run_reaper import CLI_HOST_TAG, HOLDING_STATUSES, fail_runs_whose_processes_died, process_space_tags

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CHECK_FAILED = 0, 1, 2, 3
SINGLE_FILE_ERROR = "SQLITE_PATH names a single file; --files needs a directory or glob"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
LIVE_PREFIXES = ("📥", "…", "⟳", "✓")  # the op's per-table lines (assets.py): start, progress, retry, done
POOL_POLL_S = 1.0
LOGGER_NAME = "sync_cli"


class UsageError(Exception):
    """Bad arguments: exit 2, nothing touched."""


@dataclass(frozen=True)
class SyncRequest:
    full_refresh: bool = False
    delete_orphans: bool = False
    batch_size: int | None = None
    tables: str | None = None  # glob on SQLite table names
    files: str | None = None  # glob on partition keys (multi-file mode)
    verify: bool = False  # compare every row with PostgreSQL and repair what differs (engine/verify.py)

    def config_overrides(self) -> dict[str, Any]:
        """Only the flags given: the rest keep the run config's defaults (FULL_REFRESH... env)."""
        overrides: dict[str, Any] = {}
        if self.full_refresh:
            overrides["full_refresh"] = True
        if self.delete_orphans:
            overrides["delete_orphans"] = True
        if self.verify:
            overrides["verify"] = True
        if self.batch_size is not None:
            overrides["batch_size"] = self.batch_size
        return overrides

    def run_config(self) -> dict[str, Any]:
        # Dagster starts only the loggers the run config names, and then none of its console one.
        return {"ops": {OP_NAME: {"config": self.config_overrides()}}, "loggers": {LOGGER_NAME: {}}}

    def options(self) -> SyncOptions:
        """The run's options as the op will see them, validated the way the op validates them."""
        try:
            from .config import SyncConfig  # its defaults read FULL_REFRESH, BATCH_SIZE... (ValueError)

            return SyncConfig(**self.config_overrides()).to_options()
        except ValidationError as exc:  # a ValueError too: first
            raise UsageError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None


@dataclass(frozen=True)
class Batch:
    """One run: no partition, one partition, or a contiguous range of partitions."""

    partitions: tuple[str, ...] = ()

    def label(self) -> str:
        if not self.partitions:
            return ""
        if len(self.partitions) == 1:
            return self.partitions[0]
        return f"{self.partitions[0]}...{self.partitions[-1]} ({len(self.partitions)} files)"

    def execute_args(self) -> dict[str, Any]:
        if len(self.partitions) == 1:
            return {"partition_key": self.partitions[0]}
        if self.partitions:
            return {"tags": {RANGE_START_TAG: self.partitions[0], RANGE_END_TAG: self.partitions[-1]}}
        return {}


def select_tables(defs: Definitions, pattern: str | None) -> dict[AssetKey, str]:
    """Asset key -> SQLite table name, for the table assets whose table matches ``pattern``: those of the
    project's own instance (op ``sqlite_tables``, the environment's), not of other component instances
    under defs/, whose run config and pool this command does not know (``dg launch`` runs those)."""
    tables = {
        spec.key: str(spec.metadata["sqlite_table"])
        for spec in defs.resolve_all_asset_specs()
        if "sqlite_table" in spec.metadata and defs.resolve_assets_def(spec.key).op.name == OP_NAME
    }
    chosen = {k: t for k, t in tables.items() if pattern is None or fnmatch.fnmatchcase(t, pattern)}
    if not chosen and (pattern is not None or tables):
        raise UsageError(f"no table matches --tables {pattern!r}; tables: {', '.join(sorted(tables.values()))}")
    return chosen  # empty: the source has no table (yet), nothing to sync


def plan_batches(
    assets: AssetsDefinition,
    instance: DagsterInstance,
    pattern: str | None,
    present: Mapping[str, object] | None = None,
) -> tuple[PartitionsDefinition | None, list[Batch]]:
    """The runs to launch: one unpartitioned run, or the selected partitions grouped into runs;
    ``present``: the partitions whose file is there now (a partition whose file is gone gets no run)."""
    partitions_def = assets.partitions_def
    if partitions_def is None:
        if pattern is not None:
            raise UsageError(SINGLE_FILE_ERROR)
        return None, [Batch()]
    keys = list(partitions_def.get_partition_keys(dynamic_partitions_store=instance))
    if present is not None:
        keys = [k for k in keys if k in present]
    chosen = {k for k in keys if pattern is None or fnmatch.fnmatchcase(k, pattern)}
    if not chosen and present is not None and pattern is None:
        return partitions_def, []  # no file in the folder now: nothing to sync, nothing failed
    if not chosen:
        known = f"{len(keys)} known" if keys else "none known to the instance yet"
        raise UsageError(f"no file (partition) matches --files {pattern or '*'!r} ({known})")
    policy = assets.backfill_policy
    # A run over a range of partitions needs a backfill policy that allows it; without one, Dagster
    # (and the op) expect one partition per run.
    per_run = 1 if policy is None else (policy.max_partitions_per_run or len(keys))
    batches: list[Batch] = []
    current: list[str] = []
    for key in keys:  # the definition's order: a run covers a contiguous range of it
        if key in chosen and len(current) < per_run:
            current.append(key)
            continue
        if current:
            batches.append(Batch(tuple(current)))
        current = [key] if key in chosen else []
    if current:
        batches.append(Batch(tuple(current)))
    return partitions_def, batches


def active_runs_in_pool(instance: DagsterInstance, pool: str = POOL) -> list[str]:
    records = instance.get_run_records(RunsFilter(statuses=list(HOLDING_STATUSES)))
    return [
        r.dagster_run.run_id
        for r in records
        if r.dagster_run.run_op_concurrency is not None and pool in (r.dagster_run.run_op_concurrency.all_pools or ())
    ]


def pool_limit(instance: DagsterInstance, pool: str = POOL) -> int:
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    return int(limits.get(pool) or instance.global_op_concurrency_default_limit or 1)


def wait_for_pool(instance: DagsterInstance, say: Callable[[str], None], pool: str = POOL) -> None:
    """Wait while the pool is full of active runs (a dagster dev run, another CLI run)."""
    told: set[str] = set()
    while True:
        fail_runs_whose_processes_died(instance, pool)  # a run whose processes died holds the pool for ever
        active = active_runs_in_pool(instance, pool)
        if len(active) < pool_limit(instance, pool):
            return
        new = [r for r in active if r not in told]
        if new:
            say(f"waiting for run(s) {', '.join(new)} to finish (pool {pool}: one sync at a time)")
            told.update(new)
        time.sleep(POOL_POLL_S)


class RunLog(logging.Handler):
    """Receives the run's log records (a Dagster logger on the job): prints the op's per-table lines
    live when ``live``, and keeps the error lines for the end."""

    def __init__(self, out: TextIO, live: bool, prefix: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.out, self.live, self.prefix = out, live, prefix
        self.errors: list[str] = []
        self.done_live: set[str] = set()  # tables whose ✓ line was printed live: the end does not repeat it

    def start(self, prefix: str) -> None:
        """A new run: its lines get ``prefix``, and its errors are its own."""
        self.prefix, self.errors = prefix, []

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        if meta.get("dagster_event") is not None:
            return  # Dagster's own events (step started...), not the op's lines
        message = str(meta.get("orig_message", record.getMessage()))
        if record.levelno >= logging.ERROR:
            self.errors.append(message)
        elif self.live and message.startswith(LIVE_PREFIXES):
            self.out.write(f"{self.prefix}{message}\n")
            self.out.flush()
            if message.startswith("✓ ") and not self.prefix:  # a partition's table is labelled at the end
                self.done_live.add(message[2:].split(": ", 1)[0])


def _logger_def(handler: RunLog) -> LoggerDefinition:
    def make(_: Any) -> logging.Logger:
        logger = logging.Logger("sync_pipeline.cli", logging.DEBUG)  # not registered: no propagation
        logger.addHandler(handler)
        return logger

    return LoggerDefinition(make, description="python -m sync_pipeline sync: live lines and errors")


def table_results(
    result: ExecuteInProcessResult, tables: Mapping[AssetKey, str], label_partitions: bool
) -> list[TableSyncResult]:
    """The engine's numbers back from the materializations' metadata."""
    results = []
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        name = tables.get(materialization.asset_key)
        md = {k: v.value for k, v in materialization.metadata.items()}
        if name is None or "rows_changed" not in md:
            continue
        if label_partitions and materialization.partition:
            name = f"{name} [{materialization.partition}]"
        numbers = {k: int(md.get(k, 0)) for k in SYNC_NUMBERS if k not in ("rows_changed", "table_bytes_delta")}
        results.append(
            TableSyncResult(
                table=name,
                pg_table=str(md.get("dagster/table_name", "")),
                mode=str(md.get("mode", "")),
                duration_s=float(md.get("duration_s", 0.0)),
                table_created=False,
                cursor_column=str(md["cursor_column"]) if "cursor_column" in md else None,
                repaired_keys=tuple(str(md["repaired_keys"]).splitlines()) if md.get("repaired_keys") else (),
                **numbers,
            )
        )
    return results


def failure_message(result: ExecuteInProcessResult, errors: Sequence[str]) -> str:
    """The step's failure description (it names the tables, passwords masked), else the errors logged."""
    messages = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(data.user_failure_data.description)
        elif data.error is not None:
            messages.append(data.error.message.strip())
    return "\n".join(messages or errors or [f"run {result.run_id} failed"])


def failed_checks(result: ExecuteInProcessResult, tables: Mapping[AssetKey, str], label_partitions: bool) -> list[str]:
    """A ``⚠`` line per failed check evaluation of the run: table, check, and what it found (its description,
    else its numbers). The run succeeds when a WARN check fails; this is how a headless caller learns of it."""
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            continue
        name = tables.get(evaluation.asset_key, evaluation.asset_key.to_user_string())
        if label_partitions and evaluation.partition:
            name = f"{name} [{evaluation.partition}]"
        numbers = ", ".join(
            f"{k} {v.value:,}" for k, v in evaluation.metadata.items() if isinstance(v.value, (int, float))
        )
        lines.append(f"⚠ {name}: {evaluation.check_name} failed: {evaluation.description or numbers or 'no details'}")
    return lines


@contextmanager
def _instance() -> Iterator[DagsterInstance]:
    from .instance import ensure_pool_limit, max_concurrent_runs, project_instance

    limit, asked = max_concurrent_runs(is_many(os.environ.get("SQLITE_PATH", "")))
    with project_instance() as instance:
        ensure_pool_limit(instance, limit=limit, force=asked)  # the daemon enforces it for runs queued behind ours
        yield instance


FINGERPRINT_TAG = (
    "sqlite_fingerprint"  # the file's stat fingerprint when the run began (the sensor's runs carry it too)
)


def synced_already(
    instance: DagsterInstance,
    key: str,
    fingerprint: str | None,
    assets: Sequence[AssetKey],
    removed: float | None = None,
    settings: str | None = None,
) -> bool:
    """Whether the last successful run of partition ``key`` synced every one of ``assets`` from a file
    whose fingerprint (size, times, inode, and its -wal's) is still ``fingerprint``, after the file's last
    removal (``removed``, see removed_files.py) and under the same settings (``settings``, a digest: an
    exclusion added since must reach PostgreSQL): then PostgreSQL already holds what the file holds, and a
    sync would only read it to change nothing. The sensor decides the same way."""
    if fingerprint is None:
        return False
    records = instance.get_run_records(
        RunsFilter(tags={"dagster/partition": key}, statuses=[DagsterRunStatus.SUCCESS]), limit=1
    )
    if not records:
        return False
    run = records[0].dagster_run
    return (
        run.tags.get(FINGERPRINT_TAG) == fingerprint
        and set(assets) <= set(run.asset_selection or ())
        and synced_since_removal(records[0], removed)
        and (settings is None or run.tags.get(SETTINGS_TAG) == settings)
    )


def _follow_folder(
    defs: Definitions,
    instance: DagsterInstance,
    partitions_def: PartitionsDefinition,
    say: Callable[[str], None],
    err: TextIO,
) -> tuple[dict[str, Path] | None, dict[str, float]]:
    """Many files: the partitions follow the folder as the sensor makes them (removed_files.py), files
    that are not partitions are named on stderr; (key -> file of every file there now, key -> when its
    rows were last deleted as a removed file). None for the files when the definitions name no folder
    of files (every partition the instance knows is then synced)."""
    if not ({"sqlite", "postgres"} <= set(defs.resources or {})) or not isinstance(
        partitions_def, DynamicPartitionsDefinition
    ):
        return None, {}
    sqlite, postgres = read_now(defs.resources["sqlite"]), read_now(defs.resources["postgres"])
    if not is_many(sqlite.path):
        return None, {}
    folder = survey(sqlite.path)
    for refusal in folder.refusals():
        err.write(f"warning: not synced: {refusal}\n")
    name = partitions_def.name or ""
    changes = reconcile(instance, name, folder, postgres, say=say)
    if changes.kept:
        err.write(
            f"warning: gone from {sqlite.path}, rows kept (SYNC_DELETE_REMOVED_FILES=1 deletes them): "
            f"{', '.join(changes.kept)}\n"
        )
    return dict(folder.files), removed_at(instance, name, folder.files)


@dataclass
class _Plan:
    """What a sync will run: the tables, the runs, and (many files) the files there now and their removals."""

    tables: dict[AssetKey, str]
    keys: list[AssetKey]
    partitions_def: PartitionsDefinition | None
    batches: list[Batch]
    files: dict[str, Path] | None
    removed: dict[str, float]
    settings: str | None  # the digest of the settings the op was built with (config.settings_digest)


@dataclass
class _Outcome:
    """What the runs gave back: the tables' numbers, the failed checks, the failed runs, the files skipped."""

    results: list[TableSyncResult]
    checks_failed: list[str]
    failures: list[str]
    skipped: list[str]


def sync(
    request: SyncRequest,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    live: bool = False,
    defs: Definitions | None = None,
) -> int:
    """Run the sync; return the exit code. ``live``: print per-table lines as they happen.
    ``defs``: the project's own instance's (``defs_builder.project_definitions``) unless given (tests)."""
    try:
        options = request.options()  # bad flags fail here, before anything is loaded or touched
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    try:
        if defs is None:
            from .defs_builder import project_definitions

            defs = project_definitions()
    except Exception as exc:  # noqa: BLE001 - any load error is one line and exit 1
        err.write(f"error: cannot load sync_pipeline.definitions: {redact(str(exc), os.environ.get('PG_CONN_STR'))}\n")
        return EXIT_FAILED

    def say(line: str) -> None:
        if live:
            out.write(line + "\n")
            out.flush()

    try:
        tables = select_tables(defs, request.tables)  # before the instance is opened: bad arguments touch nothing
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    _prestart_reader(defs)
    with collecting_new_objects_only(), _instance() as instance:
        try:
            plan = _plan(defs, instance, tables, request, say, err)
        except UsageError as exc:
            err.write(f"error: {exc}\n")
            return EXIT_USAGE
        except (TargetUnavailableError, psycopg2.Error) as exc:  # deleting a removed file's rows
            err.write(f"error: {redact(str(exc).strip(), os.environ.get('PG_CONN_STR'))}\n")
            return EXIT_FAILED
        if plan is None:
            out.write(f"nothing to sync: no table in {os.environ.get('SQLITE_PATH') or 'the SQLite source'}\n")
            return EXIT_OK
        handler = RunLog(out, live)
        out.write(mode_line(options) + "\n")  # first: the lines of every table follow it (the seed's order)
        out.flush()
        outcome = _run_batches(defs, instance, request, options, plan, handler, say)
    return _report(plan, options, outcome, handler, out, err, say)


def _prestart_reader(defs: Definitions) -> None:
    """One file: its Arrow reader started now, while the instance opens and the runs are created, so that
    its start (0.13 s) is not the run's (engine.prestart_arrow_reader)."""
    if "sqlite" not in (defs.resources or {}):
        return
    try:
        path = read_now(defs.resources["sqlite"]).path
    except DagsterError:
        return  # a setting that cannot be read: the run reports it, as it would without this
    if not is_many(path):
        prestart_arrow_reader(Path(path))


@contextmanager
def collecting_new_objects_only() -> Iterator[None]:
    """From the instance's opening to the end of the runs: the garbage collector on, and blind to every
    object that exists now.

    Why: by then the process holds some 220,000 tracked objects (Dagster's modules, the definitions), next
    to no garbage among them (about a thousand objects), and each full collection walks them all (30-90 ms
    here, a few per run). ``python -m sync_pipeline sync`` imports and builds the definitions with the
    collector off (``__main__``), so this is also where it comes on: the instance's opening leaves garbage
    (Dagster's storage loads its migration scripts, some 100,000 objects), which the young collections then
    free. Afterwards the objects are collectable again (tests call :func:`sync` in one long process), unless
    the caller had frozen objects itself, and the collector is as it was.
    """
    enabled, frozen_before = gc.isenabled(), gc.get_freeze_count()
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
        if not enabled:
            gc.disable()


def _plan(
    defs: Definitions,
    instance: DagsterInstance,
    tables: dict[AssetKey, str],
    request: SyncRequest,
    say: Callable[[str], None],
    err: TextIO,
) -> _Plan | None:
    """The runs of this sync, the folder followed first (many files); None: the source has no table."""
    first = defs.resolve_assets_def(next(iter(tables))) if tables else None
    files: dict[str, Path] | None = None
    removed: dict[str, float] = {}
    partitioned = SQLITE_FILES if first is None else first.partitions_def  # no table: files may still have gone
    if partitioned is not None:
        files, removed = _follow_folder(defs, instance, partitioned, say, err)
    if first is None:
        return None
    partitions_def, batches = plan_batches(first, instance, request.files, present=files)
    keys = sorted(tables, key=lambda k: k.to_user_string())
    return _Plan(tables, keys, partitions_def, batches, files, removed, first.op.tags.get(SETTINGS_TAG))


def _run_batches(
    defs: Definitions,
    instance: DagsterInstance,
    request: SyncRequest,
    options: SyncOptions,
    plan: _Plan,
    handler: RunLog,
    say: Callable[[str], None],
) -> _Outcome:
    """One Dagster run per batch, in this process, each after the pool has room; a file unchanged since
    its last successful sync is skipped (never on a run asked to look at PostgreSQL or to clean it)."""
    outcome = _Outcome([], [], [], [])
    # One job for every run: resolving it costs about as much as a no-change sync of a small file.
    job = Definitions.merge(defs, Definitions(loggers={LOGGER_NAME: _logger_def(handler)}))
    job_def = job.resolve_implicit_job_def_def_for_assets(plan.keys)
    if job_def is None:
        raise RuntimeError("no job for the selected assets")  # not reachable: keys are assets of defs
    many = plan.partitions_def is not None
    for batch in plan.batches:
        handler.start(prefix=f"[{batch.label()}] " if batch.partitions else "")
        fingerprint = None
        if plan.files is not None and len(batch.partitions) == 1 and batch.partitions[0] in plan.files:
            key = batch.partitions[0]
            fingerprint = file_state(plan.files[key]).fingerprint
            # A verify run looks at PostgreSQL, which the file's fingerprint says nothing about.
            if not (request.full_refresh or request.delete_orphans or options.verify) and synced_already(
                instance, key, fingerprint, plan.keys, plan.removed.get(key), plan.settings
            ):
                outcome.skipped.append(key)
                continue
        wait_for_pool(instance, say)
        args = batch.execute_args()
        tags = {CLI_HOST_TAG: socket.gethostname(), **process_space_tags(), **args.pop("tags", {})}
        if fingerprint is not None:
            tags[FINGERPRINT_TAG] = fingerprint
        if plan.settings is not None:
            tags[SETTINGS_TAG] = plan.settings
        say(f"run for {batch.label() or 'every selected table'}: {', '.join(sorted(plan.tables.values()))}")
        with hold_event_shards(instance, None):  # the planned events of every table (event_store.py)
            result = job_def.execute_in_process(
                run_config=request.run_config(),
                instance=instance,
                asset_selection=plan.keys,
                raise_on_error=False,
                tags=tags,
                **args,
            )
        outcome.results += table_results(result, plan.tables, many)
        outcome.checks_failed += failed_checks(result, plan.tables, many)
        if not result.success:
            where = f" (files {batch.label()})" if batch.partitions else ""
            outcome.failures.append(f"✗ run {result.run_id} failed{where}: {failure_message(result, handler.errors)}")
    return outcome


def _report(
    plan: _Plan,
    options: SyncOptions,
    outcome: _Outcome,
    handler: RunLog,
    out: TextIO,
    err: TextIO,
    say: Callable[[str], None],
) -> int:
    """The seed's summary on stdout, failed checks and runs on stderr; the exit code."""
    if outcome.skipped:
        say(f"unchanged since their last successful sync, not synced again: {len(outcome.skipped)} files")
    done = {r.table for r in outcome.results}
    failed_tables = sorted(t for t in plan.tables.values() if plan.partitions_def is None and t not in done)
    ordered = sorted(outcome.results, key=lambda r: r.table)
    # One ✓ per table: those a terminal saw live (the op logs them, up to LOG_EACH_TABLE_UP_TO) are not repeated.
    out.writelines(table_line(r) + "\n" for r in ordered if r.table not in handler.done_live)
    out.writelines(f"⚠ {r.table}: {repaired_line(r)}\n" for r in ordered if r.rows_repaired)
    out.write(run_summary(outcome.results, options, failed=failed_tables) + "\n")
    out.flush()
    for line in (*outcome.checks_failed, *outcome.failures):
        err.write(line + "\n")
    err.flush()
    if outcome.failures:
        return EXIT_FAILED
    return EXIT_CHECK_FAILED if outcome.checks_failed else EXIT_OK
