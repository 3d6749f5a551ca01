"""One multi-asset for all tables: one Launchpad config block, one result per table.

Like dagster-sling and dagster-dlt, a single op syncs the selected tables and yields each
table's materialization and check evaluations the moment that table commits, so the catalog shows progress
table by table, and a table that fails does not hide the ones that succeeded. All tables of
a run read one SQLite snapshot, so tables that refer to each other stay consistent, even when
``parallel_tables`` workers sync several at once. The one exception: a table retried (after a
lost connection, or because another run already synced it from a newer snapshot) is read again
from a fresh snapshot, so that no retry writes an older state over a newer one.
"""

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetOut,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    PartitionsDefinition,
    RetryPolicy,
    TableColumn,
    TableMetadataValue,
    TableRecord,
    TableSchema,
    multi_asset,
)

from .config import SyncConfig
from .engine import (
    ColumnRetype,
    Progress,
    SourceUnavailableError,
    SqliteSnapshot,
    StaleSnapshotError,
    SyncError,
    SyncOptions,
    TableInfo,
    TableSyncResult,
    TargetError,
    redact,
    retyped_columns,
    row_counts,
    sync_table,
)
from .engine.naming import EXACT, PgNames
from .engine.selection import Selection
from .engine.summary import mode_line, run_summary, size_line, table_line
from .engine.versions import SnapshotClock
from .event_store import hold_event_shards
from .resources import PostgresTarget, SQLiteSource, TargetUnavailableError
from .translator import (
    MIRROR_CHECK,
    ROW_COUNT_CHECK,
    TYPES_CHECK,
    SqliteTableTranslator,
    column_schema,
    foreign_keys_table,
    output_name,
    specs_by_table,
)

POOL = "sqlite_pg_sync"
OP_NAME = "sqlite_tables"  # the multi-asset op: run config goes under ops.sqlite_tables.config
PROGRESS_EVERY_S = 5.0
# Up to this many tables in a run, the run log has a line per table as it starts and as it ends
# (the seed script's log). Beyond, each line is an event written to Dagster's storage, and the
# summary block at the end already lists every table: one line saying so instead (issue 16).
LOG_EACH_TABLE_UP_TO = 20
RETRY_DELAYS_S = (1.0, 3.0, 10.0)


# What the op yields: per table synced, its materialization and its checks' evaluations as events
# (see evaluation_of); a check selected without its asset, as a check result.
Recorded = AssetMaterialization | AssetCheckEvaluation | AssetCheckResult

# The numbers of a sync, named as TableSyncResult names them (DESIGN.md section 2).
SYNC_NUMBERS = (
    "sqlite_rows",
    "pg_rows_before",
    "pg_rows_after",
    "rows_processed",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_unchanged",
    "rows_changed",
    "table_bytes_before",
    "table_bytes_after",
    "table_bytes_delta",
    "batch_size",
    # Verify runs (engine/verify.py): rows compared with PostgreSQL and rows repaired; 0 on other runs,
    # so the catalog plots drift over time.
    "rows_verified",
    "rows_repaired",
)


def materialization_metadata(result: TableSyncResult, table: TableInfo, names: PgNames = EXACT) -> dict[str, Any]:
    """DESIGN.md section 2: numbers stay numbers so the catalog plots them. ``names``: the run's naming
    mode, whose PostgreSQL column names the column schema shows."""
    return {
        "dagster/row_count": result.pg_rows_after,
        "dagster/table_name": result.pg_table,
        "dagster/column_schema": column_schema(table, result.pg_types, names),
        "mode": result.mode,
        **{name: getattr(result, name) for name in SYNC_NUMBERS},
        "table_size": size_line(result),
        "duration_s": round(result.duration_s, 3),
        "read_path": result.read_path + (f" ({result.arrow_refused})" if result.arrow_refused else ""),
        # Rows in batches byte-identical to the last sync's, which were compared but not sent.
        "rows_skipped": result.rows_skipped,
        **_cursor_metadata(result),
        **({"warnings": "\n".join(result.warnings)} if result.warnings else {}),
        "columns_retyped": retyped_table(result.columns_retyped),
        "indexes": indexes_table(result),
        "foreign_keys": foreign_keys_table(result.foreign_keys),
        **({"repaired_keys": "\n".join(result.repaired_keys)} if result.repaired_keys else {}),
    }


def retyped_table(retyped: Sequence[ColumnRetype]) -> TableMetadataValue:
    """``columns_retyped`` as a table the catalog shows (empty when every column is as declared)."""
    return MetadataValue.table(
        records=[
            TableRecord(
                {
                    "column": r.column,
                    "declared": r.declared or "(none)",
                    "declared_maps_to": r.mapped,
                    "pg_type": r.pg_type,
                    "why": r.why,
                    "example_key": r.example_key or "",
                    "values_changed": r.values_changed,
                }
            )
            for r in retyped
        ],
        schema=RETYPED_SCHEMA,
    )


def schema_notes(result: TableSyncResult) -> list[str]:
    """One line per index or foreign key that PostgreSQL does not have as SQLite has it, saying why."""
    notes = [f"index {i.sqlite_name!r}: {i.note}" for i in result.indexes if i.note]
    notes += [
        f"foreign key of {f.table!r} ({', '.join(f.columns)}) -> {f.ref_table!r}: {f.note}"
        for f in result.foreign_keys
        if f.note
    ]
    return notes


def indexes_table(result: TableSyncResult) -> TableMetadataValue:
    """``indexes``: each SQLite index of the table and PostgreSQL's counterpart, or why it has none."""
    return MetadataValue.table(
        records=[
            TableRecord(
                {
                    "sqlite_index": i.sqlite_name,
                    "pg_index": i.pg_name or "",
                    "columns": ", ".join(i.columns),
                    "where": i.where,
                    "unique": i.unique,
                    "note": i.note,
                }
            )
            for i in result.indexes
        ],
        schema=INDEXES_SCHEMA,
    )


INDEXES_SCHEMA = TableSchema(
    columns=[
        TableColumn("sqlite_index", "string"),
        TableColumn("pg_index", "string", description="its PostgreSQL counterpart; empty: skipped (see note)"),
        TableColumn("columns", "string", description="as PostgreSQL indexes them"),
        TableColumn("where", "string", description="a partial index's condition"),
        TableColumn("unique", "bool", description="whether PostgreSQL enforces uniqueness"),
        TableColumn("note", "string"),
    ]
)


RETYPED_SCHEMA = TableSchema(
    columns=[
        TableColumn("column", "string", description="SQLite column"),
        TableColumn("declared", "string", description="its declared SQLite type"),
        TableColumn("declared_maps_to", "string", description="the PostgreSQL type the declaration maps to"),
        TableColumn("pg_type", "string", description="the PostgreSQL type the column has"),
        TableColumn("why", "string"),
        TableColumn("example_key", "string", description="a row whose value does not fit the declared mapping"),
        TableColumn("values_changed", "int", description="values stored changed to fit (see README)"),
    ]
)


def retyped_line(table: str, retyped: ColumnRetype, now: bool) -> str:
    """One run-log line per retyped column, so the run log alone says what the catalog says."""
    example = f"; e.g. row {retyped.example_key}" if retyped.example_key else ""
    verb = "widened now to" if now else "is"
    return (
        f"⚠ {table}: column {retyped.column!r} (declared {retyped.declared or 'without a type'!r}, maps to "
        f"{retyped.mapped}) {verb} {retyped.pg_type} in PostgreSQL: {retyped.why}{example}"
    )


def _cursor_metadata(result: TableSyncResult) -> dict[str, Any]:
    """Cursor mode in the catalog: the column, and the watermarks as SQLite values shown as text."""
    if result.cursor_column is None:
        return {}
    return {
        "cursor_column": result.cursor_column,
        "watermark_before": "(none: every row read)"
        if result.watermark_before is None
        else repr(result.watermark_before),
        "watermark_after": "(none)" if result.watermark_after is None else repr(result.watermark_after),
    }


def _not_synced_yet(key: AssetKey, check_name: str, metadata: dict[str, Any] | None = None) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=key,
        check_name=check_name,
        passed=False,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
        description="the PostgreSQL table does not exist yet: materialize the asset",
    )


def types_check(key: AssetKey, retyped: Sequence[ColumnRetype] | None) -> AssetCheckResult:
    """Fails (WARN) while a column's type is not its declared mapping or its values were changed."""
    if retyped is None:
        return _not_synced_yet(key, TYPES_CHECK)
    return AssetCheckResult(
        asset_key=key,
        check_name=TYPES_CHECK,
        passed=not retyped,
        severity=AssetCheckSeverity.WARN,
        metadata={"columns_retyped": retyped_table(retyped), "columns_retyped_count": len(retyped)},
        description=None
        if not retyped
        else "columns whose values do not fit their declared type: "
        + "; ".join(f"{r.column} ({r.declared or 'no type'} -> {r.pg_type})" for r in retyped),
    )


def row_count_check(key: AssetKey, sqlite_rows: int, pg_rows: int | None) -> AssetCheckResult:
    """PostgreSQL rows against the rows of the SQLite snapshot the sync read."""
    if pg_rows is None:
        return _not_synced_yet(key, ROW_COUNT_CHECK, {"sqlite_rows": sqlite_rows})
    difference = pg_rows - sqlite_rows
    return AssetCheckResult(
        asset_key=key,
        check_name=ROW_COUNT_CHECK,
        passed=difference == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"sqlite_rows": sqlite_rows, "pg_rows": pg_rows, "difference": difference},
        description=None
        if difference == 0
        else f"PostgreSQL {pg_rows:,} rows, SQLite {sqlite_rows:,} ({difference:+,})"
        + ("; run with delete_orphans to remove rows deleted in SQLite" if difference > 0 else ""),
    )


def mirror_check(key: AssetKey, result: TableSyncResult) -> AssetCheckResult:
    """A verify run's finding (engine/verify.py): passes when PostgreSQL already held every SQLite row as
    it is, fails (WARN) when rows had to be repaired, naming a few, so the catalog shows drift over time."""
    repaired = result.rows_repaired
    return AssetCheckResult(
        asset_key=key,
        check_name=MIRROR_CHECK,
        passed=repaired == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "rows_verified": result.rows_verified,
            "rows_repaired": repaired,
            "repaired_keys": "\n".join(result.repaired_keys),
        },
        description=None if repaired == 0 else repaired_line(result),
    )


def repaired_line(result: TableSyncResult) -> str:
    """What a verify run repaired, in one line (the run log and the check say the same)."""
    examples = f": {'; '.join(result.repaired_keys)}" if result.repaired_keys else " (no primary key to name them)"
    more = " ..." if result.repaired_keys and result.rows_repaired > len(result.repaired_keys) else ""
    return (
        f"{result.rows_repaired:,} of {result.rows_verified:,} rows differed from SQLite in PostgreSQL (changed, "
        f"deleted or inserted there by someone else) and were repaired{examples}{more}"
    )


def evaluation_of(key: AssetKey, result: AssetCheckResult) -> AssetCheckEvaluation:
    """The check's evaluation event itself, recorded as it is, for a check of a table this run synced.

    Why not ``MaterializeResult(check_results=...)``: Dagster turns each check result into an
    output of its own (one more event written) and looks the check up among all of the op's
    checks, and each materialization output among all of its outputs, per result: three event
    writes and two scans of every key per table, quadratic in the table count (issue 16). The
    evaluation carries no link to the materialization; Dagster's catalog then relates check and
    materialization by run, and both are of this run, so the check counts as current.
    """
    if result.check_name is None:
        raise ValueError(f"a check result of {key.to_user_string()} without the check's name")
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=result.check_name,
        passed=result.passed,
        metadata=result.metadata,
        severity=result.severity,
        description=result.description,
        blocking=False,
    )


class _ChecksRecordedAsEvaluations(logging.Filter):
    """Drops Dagster's line "op '...' did not yield or return expected outputs {...}" when it names only
    the op's check outputs.

    Why: the checks are recorded as evaluation events (see :func:`evaluation_of`), not yielded as
    outputs, so Dagster logs every check of every run as "not yielded" (22 names for a small file), right
    after the checks it lists passed. A line naming any other output is kept. ``mirror_matches_sqlite`` is
    evaluated on verify runs only; Dagster shows it as skipped on other runs, which is the truth.
    """

    _LINE = re.compile(r"did not yield or return expected outputs \{(?P<names>[^}]*)\}")

    def __init__(self, check_outputs: set[str]) -> None:
        super().__init__()
        self.check_outputs = check_outputs

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._LINE.search(str(record.msg))
        if found is None:
            return True
        names = {name.strip().strip("'\"") for name in found.group("names").split(",")}
        return not names <= self.check_outputs


class _ProgressLog:
    """Logs 'rows done of total, rows/s' for long tables, at most every few seconds."""

    def __init__(self, context: AssetExecutionContext) -> None:
        self.context = context
        self.last = time.monotonic()

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.read_done:
            if progress.elapsed_s >= PROGRESS_EVERY_S:  # a table long enough to have shown progress
                self.context.log.info(
                    f"… {progress.table}: {progress.rows_done:,} rows read in {progress.elapsed_s:.1f} s; "
                    "PostgreSQL is writing them"
                )
            return
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        share = progress.rows_done / progress.rows_total if progress.rows_total else 1.0
        self.context.log.info(
            f"… {progress.table}: {progress.rows_done:,} of {progress.rows_total:,} rows ({share:.0%}), "
            f"{progress.rows_per_s:,.0f} rows/s"
        )


def build_sync_assets(
    tables: Sequence[TableInfo],
    translator: SqliteTableTranslator | None = None,
    name: str = OP_NAME,
    selection: Selection | None = None,
    partitions_def: PartitionsDefinition | None = None,
    *,
    pool: str = POOL,
    config_class: type[SyncConfig] = SyncConfig,
    resource_keys: tuple[str, str] = ("sqlite", "postgres"),
    op_tags: Mapping[str, str] | None = None,
    retry_policy: RetryPolicy | None = None,
) -> AssetsDefinition:
    """The multi-asset syncing ``tables`` (as read from the file when definitions load, ``selection``
    applied); each run reads the tables again from its snapshot, through the same ``selection``.

    ``partitions_def`` (many files, see partitions.py): each run syncs one partition, the file of
    its key, into tables shared by every file; a backfill makes one run per file, and the pool's
    limit says how many run at once.

    The keyword arguments are what differs between two instances side by side (the component,
    components/): the pool, the run config's defaults (a ``SyncConfig`` subclass, see
    ``config.sync_config_class``), the keys of the SQLite and PostgreSQL resources, op tags and
    a retry policy.
    """
    translator = translator or SqliteTableTranslator()
    selection = selection or Selection()
    specs = specs_by_table(tables, translator)
    table_by_key = {spec.key: table_name for table_name, spec in specs.items()}
    check_specs = [spec for t in tables for spec in translator.get_check_specs(t)]
    sqlite_key, postgres_key = resource_keys

    @multi_asset(
        name=name,
        # Outputs named by output_name(), not by Dagster from the key: a table called `config`
        # or `class` keeps its key, where an output of that name would stop the code location.
        outs={output_name(spec.key): AssetOut.from_spec(spec, is_required=False) for spec in specs.values()},
        check_specs=check_specs,
        can_subset=True,
        pool=pool,
        required_resource_keys={sqlite_key, postgres_key},
        op_tags=op_tags,
        retry_policy=retry_policy,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.multi_run(1) if partitions_def is not None else None,
        description="Sync the selected SQLite tables into PostgreSQL, each in one transaction.",
    )
    def _sync(context: AssetExecutionContext, config: config_class) -> Iterator[Recorded]:
        context.log.addFilter(_ChecksRecordedAsEvaluations(set(context.assets_def.node_check_specs_by_output_name)))
        sqlite: SQLiteSource = getattr(context.resources, sqlite_key)
        postgres: PostgresTarget = getattr(context.resources, postgres_key)
        selected = [table_by_key[k] for k in sorted(context.selected_asset_keys) if k in table_by_key]
        checks = set(context.selected_asset_check_keys)
        checks_alone = [
            table_by_key[k] for k in sorted({c.asset_key for c in checks} - set(context.selected_asset_keys))
        ]
        with hold_event_shards(context.instance, context.run.run_id):
            yield from _run(
                context,
                # The exclusion too: a table many files share drops the columns it leaves out (engine).
                replace(
                    config.to_options(), state_schema=postgres.state_schema, exclude_columns=selection.exclude_columns
                ),
                sqlite,
                postgres,
                translator,
                selected,
                checks,
                checks_alone,
                selection,
                config.parallel_tables,
                context.partition_key if context.has_partition_key else None,
            )

    return _sync


class _Target:
    """The PostgreSQL connection of a run, re-opened when it is lost mid-sync.

    A lost connection (server restart, network, terminated backend) rolled the table's
    transaction back, so the same table is synced again on a new connection, after a pause,
    up to ``len(RETRY_DELAYS_S)`` times. A table that another run already synced from a newer
    snapshot is retried at once. Either retry reads the table from a fresh snapshot: the run's
    own may be older than what PostgreSQL has by then. Other errors are not retried: they would
    fail again.
    """

    def __init__(
        self,
        context: AssetExecutionContext,
        sqlite: SQLiteSource,
        postgres: PostgresTarget,
        clock: SnapshotClock,
        selection: Selection,
        source_file: str | None = None,
    ) -> None:
        self.context = context
        self.sqlite = sqlite
        self.source_file = source_file  # the partition's file key, when many files share the tables
        self.selection = selection
        self.postgres = postgres
        self.clock = clock
        self.conn = postgres.connect()

    def close(self) -> None:
        self.conn.close()

    def sync(self, snapshot: SqliteSnapshot, table: TableInfo, options: SyncOptions) -> TableSyncResult:
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
            try:
                if self.conn.closed:
                    self.conn = self.postgres.connect()
                if attempt == 1:
                    return self._sync(snapshot, table, options)
                with self.sqlite.snapshot(clock=self.clock, key=self.source_file) as fresh:
                    return self._sync(fresh, self.selection.columns_of(fresh.table(table.name)), options)
            except (SyncError, TargetUnavailableError) as exc:
                stale = isinstance(exc, StaleSnapshotError)
                transient = stale or isinstance(exc, TargetUnavailableError) or exc.transient
                if not transient or delay is None:
                    raise
                pause = 0.0 if stale else delay
                self.context.log.warning(
                    f"⟳ {redact(str(exc), self.postgres.conn_str)}; reading {table.name} again from a fresh "
                    f"SQLite snapshot in {pause:g} s (attempt {attempt + 1} of {len(RETRY_DELAYS_S) + 1})"
                )
                time.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _sync(
        self, snapshot: SqliteSnapshot, table: TableInfo, options: SyncOptions, source_file: str | None = None
    ) -> TableSyncResult:
        return sync_table(
            snapshot,
            self.conn,
            table,
            self.postgres.pg_schema,
            options,
            on_progress=_ProgressLog(self.context),
            source_file=source_file or self.source_file,
        )

    def complete_rewrites(self, result: TableSyncResult, options: SyncOptions) -> None:
        """Sync the table for each other file whose rows wait for a rewrite (``result.pending_rewrites``:
        this sync widened a column they hold values in, or a run that did so died before this step), each
        from its own file, now: an unchanged file would not be synced again (its fingerprint stays), and
        its rows would keep PostgreSQL's cast of its values. Logged only: this run materializes its own
        partition. A file that cannot be synced now keeps its mark, for the next sync of the table."""
        for key, why in sorted(result.pending_rewrites.items()):
            try:
                with self.sqlite.snapshot(clock=self.clock, key=key) as snapshot:
                    table = self.selection.columns_of(snapshot.table(result.table))
                    self._sync(snapshot, table, options, source_file=key)
            except (SyncError, SourceUnavailableError, TargetUnavailableError) as exc:
                self.context.log.warning(
                    f"⚠ {result.table}: the rows of file {key!r} wait for a rewrite ({why}), not done now: "
                    f"{redact(str(exc), self.postgres.conn_str)}; the next sync of the table tries again"
                )
                continue
            self.context.log.info(f"↻ {result.table}: rewrote the rows of file {key!r} after {why}")


_Done = tuple[str, TableInfo | None, TableSyncResult | BaseException]


class _Workers:
    """One thread per (snapshot reader, connection) pair, taking tables from a shared list.

    The per-table advisory lock in the engine still keeps two syncs of one table apart.
    Every outcome, an unexpected exception included, comes back on :attr:`done`.
    """

    def __init__(
        self,
        context: AssetExecutionContext,
        pairs: list[tuple[SqliteSnapshot, _Target]],
        tables: list[str],
        options: SyncOptions,
    ) -> None:
        self.context = context
        self.options = options
        self.log_each = len(tables) <= LOG_EACH_TABLE_UP_TO
        self.todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in tables:
            self.todo.put(name)
        self.done: queue.Queue[_Done] = queue.Queue()
        self.threads = [
            threading.Thread(target=self._work, args=pair, name=f"sync-worker-{number}", daemon=True)
            for number, pair in enumerate(pairs)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self, snapshot: SqliteSnapshot, target: _Target) -> None:
        while True:
            try:
                name = self.todo.get_nowait()
            except queue.Empty:
                return
            if self.log_each:
                self.context.log.info(f"📥 Syncing {name}...")
            table = None
            try:
                table = target.selection.columns_of(snapshot.table(name))
                result = target.sync(snapshot, table, self.options.for_table(name))
                target.complete_rewrites(result, self.options.for_table(name))
                self.done.put((name, table, result))
            except BaseException as exc:  # noqa: BLE001 - not swallowed: _run re-raises or reports it
                self.done.put((name, table, exc))

    def stop(self) -> None:
        """Let each worker finish the table it is on, start no other, and wait for them."""
        while True:
            try:
                self.todo.get_nowait()
            except queue.Empty:
                break
        for thread in self.threads:
            thread.join()


def _run(
    context: AssetExecutionContext,
    options: SyncOptions,
    sqlite: SQLiteSource,
    postgres: PostgresTarget,
    translator: SqliteTableTranslator,
    selected: list[str],
    checked: set[AssetCheckKey],
    checks_alone: list[str],
    selection: Selection,
    parallel: int = 1,
    source_file: str | None = None,
) -> Iterator[Recorded]:
    """Sync ``selected`` tables, up to ``parallel`` at a time, then run the checks selected alone.

    Each worker thread has its own PostgreSQL connection and its own reader of the one SQLite
    snapshot; results are yielded here, in the op's thread, as tables finish. ``source_file``:
    the partition (one of many files); a table that file does not have is left out, saying so.
    """
    where = sqlite.path if source_file is None else f"{sqlite.file(source_file)} (partition {source_file})"
    context.log.info(f"SQLite source: {where}; PostgreSQL target: {postgres.describe()}")
    log_each = len(selected) <= LOG_EACH_TABLE_UP_TO
    if selected:
        context.log.info(mode_line(options))
    if not log_each:
        context.log.info(f"📥 Syncing {len(selected)} tables; each is in the summary at the end")
    results: list[TableSyncResult] = []
    failed: dict[str, str] = {}
    workers = max(1, min(parallel, len(selected)))
    clock = SnapshotClock(postgres.connect, postgres.pg_schema, postgres.state_schema)
    try:
        with sqlite.snapshot(readers=workers, clock=clock, key=source_file) as snapshot:
            if options.pg_names != translator.pg_names:  # run config's mode: its names were not checked at load
                try:
                    options.pg_names.owners(t.name for t in selection.apply(snapshot.tables()))
                except ValueError as exc:
                    description = f"SQLite tables {exc}; rename one in SQLite"
                    raise Failure(description=description, allow_retries=False) from None
            skipped = snapshot.skipped_tables()
            if skipped:
                context.log.info(f"Not synced (not tables of data): {', '.join(skipped)}")
            if source_file is not None:
                present = {t.name for t in snapshot.tables()}
                absent = [name for name in selected if name not in present]
                if absent:
                    context.log.info(f"Not in the file of partition {source_file}: {', '.join(absent)}")
                selected = [name for name in selected if name in present]
                checks_alone = [name for name in checks_alone if name in present]
            targets = [_Target(context, sqlite, postgres, clock, selection, source_file)]
            workers: _Workers | None = None
            try:
                targets += [_Target(context, sqlite, postgres, clock, selection, source_file) for _ in snapshot.views]
                readers = [snapshot, *snapshot.views]
                workers = _Workers(context, list(zip(readers, targets, strict=True)), selected, options)
                for _ in selected:
                    table_name, table, outcome = workers.done.get()
                    if isinstance(outcome, BaseException):
                        if not isinstance(outcome, (SyncError, SourceUnavailableError, TargetUnavailableError)):
                            raise outcome
                        failed[table_name] = redact(str(outcome), postgres.conn_str)
                        context.log.error(f"✗ {failed[table_name]}")
                        continue
                    results.append(outcome)
                    if log_each:
                        context.log.info(table_line(outcome))
                    for warning in outcome.warnings:
                        context.log.warning(f"⚠ {outcome.table}: {warning}")
                    for retyped in outcome.columns_retyped:
                        context.log.warning(
                            retyped_line(outcome.table, retyped, retyped.column in outcome.columns_widened)
                        )
                    if outcome.rows_repaired:
                        context.log.warning(f"⚠ {outcome.table}: {repaired_line(outcome)}")
                    for note in schema_notes(outcome):
                        context.log.info(f"· {outcome.table}: {note}")
                    key = translator.get_asset_key(table)
                    yield AssetMaterialization(
                        asset_key=key,
                        partition=source_file,
                        metadata={
                            **materialization_metadata(outcome, table, options.pg_names),
                            **({"source_file": source_file} if source_file is not None else {}),
                        },
                    )
                    for check_result in (
                        row_count_check(key, outcome.sqlite_rows, outcome.pg_rows_after),
                        types_check(key, outcome.columns_retyped),
                        # Only a verify run compared every row: on other runs the check keeps its last result.
                        *((mirror_check(key, outcome),) if outcome.verified else ()),
                    ):
                        if AssetCheckKey(key, check_result.check_name) in checked:
                            yield evaluation_of(key, check_result)
                for table_name in checks_alone:
                    table = selection.columns_of(snapshot.table(table_name))
                    key = translator.get_asset_key(table)
                    conn = targets[0].conn
                    if AssetCheckKey(key, ROW_COUNT_CHECK) in checked:
                        counts = row_counts(snapshot, conn, table, postgres.pg_schema, source_file, options.pg_names)
                        yield row_count_check(key, *counts)
                    if AssetCheckKey(key, TYPES_CHECK) in checked:
                        retyped = retyped_columns(snapshot, conn, table, postgres.pg_schema, options, source_file)
                        yield types_check(key, retyped)
            finally:
                if workers is not None:
                    workers.stop()  # before the connections close under a worker still syncing
                for target in targets:
                    target.close()
    except (SourceUnavailableError, TargetUnavailableError, TargetError, SyncError) as exc:
        raise Failure(description=redact(str(exc), postgres.conn_str), allow_retries=False) from None
    if selected:
        context.log.info("\n" + run_summary(results, options, failed=list(failed)))
    if failed:
        raise Failure(
            description=f"{len(failed)} of {len(selected)} tables failed to sync: {', '.join(failed)}. "
            "Each was rolled back and left as it was; the others were synced and recorded.\n"
            + "\n".join(failed.values()),
            metadata={"failed_tables": ", ".join(failed)},
        )
