"""The sync of one table: SQLite snapshot in, one PostgreSQL transaction out, a result back.

A caller (the Dagster assets, a benchmark, a test) gets a :class:`TableSyncResult` with
every count it needs; nothing here logs, and nothing needs to be parsed out of logs.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import psycopg2
import psycopg2.extensions

from . import change_detection, cursor, relations, rewrites, row_digests, verify
from .bookkeeping import table_oid
from .catalog import TableEntry, read_entry
from .change_detection import BatchDigests, Batching
from .column_types import ColumnRetype, ColumnTypes, pinned_misfit, resolve_pins
from .errors import (
    OrphanDeletionRefused,
    SchemaMismatchError,
    SourceFileGoneError,
    StaleSnapshotError,
    SyncError,
    ValueMismatchError,
)
from .indexes import BLOCKING as BLOCKING_INDEXES
from .indexes import IndexResult, drop_our_indexes, mirror_indexes, our_indexes
from .keys import key_sources, merging_key_columns
from .naming import EXACT, PgNames
from .pg_target import KEY_SOURCES, KEYS, SQLITE_KEY, STAGE, PgTable, new_table_name
from .reader import ProgressCallback, TableReader
from .relations import ForeignKeyResult
from .scope import Scope
from .selection import column_excluded
from .sqlite_source import SqliteSnapshot, TableInfo
from .sync_state import LastSync, SyncState, shape_of
from .types import PgType

MODE_INCREMENTAL = "incremental"
MODE_FULL_REFRESH = "full_refresh"
MODE_CURSOR = "cursor"
DEFAULT_BATCH_SIZE = 10_000
# For this transaction's statements over the stage only. work_mem (the server default is 4MB): the
# keyless multiset comparison hashes whole rows; the MERGE hashes only the target's keys.
# random_page_cost (default 4, a spinning disk's): a stage of a few changed rows is then merged by
# probing the target's key index (0.11 s for 10,000 rows of a million) instead of walking all of it
# (0.61 s); a big stage is still one hash or merge join.
MERGE_SETTINGS = {"work_mem": "256MB", "random_page_cost": "1.1"}
MAX_BATCH_SIZE = 1_000_000
# A merge of fewer rows than the target's / this counts its inserts before, by index probes.
_FEW_ROWS_SENT = 8
MIN_SERVER_VERSION = 150000
_TYPES_SAVEPOINT = "_sps_types"  # rolled back to when a column's type must move (column_types.py)


@dataclass(frozen=True)
class SyncOptions:
    full_refresh: bool = False
    delete_orphans: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    lock_timeout_s: float = 300.0
    # Table name -> a column the application bumps on every write (updated_at-like): such a
    # table reads only rows at or past the watermark of its last sync. See README, cursor mode.
    cursor_columns: Mapping[str, str] = field(default_factory=dict)
    # Fail on a value that does not fit its column's declared mapping, instead of widening the column.
    strict_types: bool = False
    # "table.column" (SQLite names) -> a PostgreSQL type the column keeps whatever its values.
    column_types: Mapping[str, str] = field(default_factory=dict)
    # Where the sync keeps its bookkeeping (PG_STATE_SCHEMA), apart from the mirrored tables;
    # created on first use. The default is bookkeeping.DEFAULT_STATE_SCHEMA.
    state_schema: str = "sqlite_pg_sync"
    # Tables reloaded in full on every sync, whatever ``full_refresh`` says (see for_table).
    full_refresh_tables: frozenset[str] = frozenset()
    # "table.column" globs (SYNC_EXCLUDE_COLUMNS, matched as selection.Selection matches them). The
    # caller leaves those columns out of the tables it passes; a table many files share drops the
    # ones it still has, so no file's values stay (see _drop_excluded_columns).
    exclude_columns: tuple[str, ...] = ()
    # Compare every row with what PostgreSQL holds and repair what differs (verify.py), not only what
    # changed in SQLite; and the tables verified so whatever ``verify`` says (see for_table).
    verify: bool = False
    verify_tables: frozenset[str] = frozenset()
    # How SQLite's names become PostgreSQL's (SYNC_PG_NAMES, naming.py): kept, or lowercased.
    pg_names: PgNames = EXACT
    # Columns declared as dates, times, timestamps, JSON or UUIDs take that type while every value reads
    # exactly as it (column_types.py, inferred.py); else text, as without it.
    infer_types: bool = False
    # SQLite's indexes mirrored after the load (indexes.py); foreign keys as NOT VALID constraints (relations.py).
    indexes: bool = True
    foreign_keys: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and 0 < self.batch_size <= MAX_BATCH_SIZE):
            raise ValueError(
                f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE:,} (rows per COPY batch), "
                f"got {self.batch_size!r}"
            )

    @property
    def mode(self) -> str:
        return MODE_FULL_REFRESH if self.full_refresh else MODE_INCREMENTAL

    def for_table(self, table: str) -> SyncOptions:
        """The options one table's sync takes: ``full_refresh`` for a table in ``full_refresh_tables``,
        ``verify`` for one in ``verify_tables``."""
        options = replace(self, full_refresh=True) if table in self.full_refresh_tables else self
        return replace(options, verify=True) if table in self.verify_tables else options


@dataclass(frozen=True)
class TableSyncResult:
    """What one table's sync did, in numbers (the asset metadata is built from these)."""

    table: str
    pg_table: str
    mode: str
    sqlite_rows: int
    pg_rows_before: int
    pg_rows_after: int
    rows_processed: int
    rows_inserted: int
    rows_updated: int
    rows_deleted: int
    rows_unchanged: int
    table_bytes_before: int
    table_bytes_after: int
    batch_size: int
    duration_s: float
    table_created: bool
    columns_added: tuple[str, ...] = ()
    read_path: str = "exact"  # "arrow" (all in C) or "exact" (Python encoders); see reader.py
    copy_format: str = "text"  # of the last COPY of the table's rows: "text" or "binary" (copy_format.py)
    rows_skipped: int = 0  # rows read in batches unchanged since the last sync, so not sent
    cursor_column: str | None = None
    watermark_before: object = None  # None: every row was read
    watermark_after: object = None
    arrow_refused: str = ""  # why the Arrow path handed the table to the exact path, if it did
    warnings: tuple[str, ...] = ()  # what the user should know although the sync succeeded
    # Columns whose PostgreSQL type is not their declared mapping, or whose values were changed
    # to fit (see column_types.py), and those whose type moved in this very sync.
    columns_retyped: tuple[ColumnRetype, ...] = ()
    columns_widened: tuple[str, ...] = ()
    pg_types: Mapping[str, str] = field(default_factory=dict)  # SQLite column -> its PostgreSQL type now
    # Many files: the other files whose rows of this table wait for a rewrite by their own sync, file ->
    # why (rewrites.py); the caller syncs them next (the Dagster layer does).
    pending_rewrites: Mapping[str, str] = field(default_factory=dict)
    # A verify run (verify.py): whether the table was compared with SQLite row by row, the rows compared,
    # the rows the comparison found different, missing or extra and rewrote, and up to 10 of their keys.
    verified: bool = False
    rows_verified: int = 0
    rows_repaired: int = 0
    repaired_keys: tuple[str, ...] = ()
    # SQLite's indexes and what PostgreSQL has for each (indexes.py); the foreign keys from and to the
    # table, with their constraints when SYNC_FOREIGN_KEYS made them (relations.py).
    indexes: tuple[IndexResult, ...] = ()
    foreign_keys: tuple[ForeignKeyResult, ...] = ()

    @property
    def rows_changed(self) -> int:
        return self.rows_inserted + self.rows_updated + self.rows_deleted

    @property
    def table_bytes_delta(self) -> int:
        return self.table_bytes_after - self.table_bytes_before


@dataclass
class _Counts:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    merged_rows: int | None = None  # the target's row count right after the merge, when it was taken


@contextmanager
def _named_errors(table: str, conn: psycopg2.extensions.connection) -> Iterator[None]:
    """Turn driver errors into a :class:`SyncError` that names the table (and, from
    PostgreSQL's detail, the key or column involved)."""
    try:
        yield
    except SyncError:
        raise
    except psycopg2.Error as exc:
        if conn.closed:
            raise SyncError(table, f"lost the PostgreSQL connection: {str(exc).strip()}", transient=True) from exc
        raise SyncError(table, _describe_pg_error(exc)) from exc
    except sqlite3.Error as exc:
        raise SyncError(table, f"SQLite error while reading: {exc}") from exc


def _describe_pg_error(exc: psycopg2.Error) -> str:
    if isinstance(exc, psycopg2.errors.UniqueViolation):
        return f"two rows share a primary key in PostgreSQL: {_pg_error_text(exc)}"
    if isinstance(exc, psycopg2.errors.NotNullViolation):
        return f"a primary key or NOT NULL column holds NULL in SQLite: {_pg_error_text(exc)}"
    return f"PostgreSQL error: {_pg_error_text(exc)}"


def _pg_error_text(exc: psycopg2.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(diag.message_detail)
    return " ".join(parts)


def row_counts(
    snapshot: SqliteSnapshot,
    conn: psycopg2.extensions.connection,
    table: TableInfo,
    schema: str,
    source_file: str | None = None,
    names: PgNames = EXACT,
) -> tuple[int, int | None]:
    """(SQLite rows in the snapshot, PostgreSQL rows of the file or None when the table is missing), read-only."""
    with _named_errors(table.name, conn):
        _use_utf8(conn)  # the table's name travels in the statement
        sqlite_rows = snapshot.count(table)
        with conn, conn.cursor() as cur:
            target = PgTable(cur, schema, table, scope=Scope(source_file), names=names)
            return sqlite_rows, (target.row_count() if target.oid() is not None else None)


def retyped_columns(
    snapshot: SqliteSnapshot,
    conn: psycopg2.extensions.connection,
    table: TableInfo,
    schema: str,
    options: SyncOptions,
    source_file: str | None = None,
) -> tuple[ColumnRetype, ...] | None:
    """What ``TableSyncResult.columns_retyped`` would say now, read-only; None when the table is missing."""
    with _named_errors(table.name, conn):
        _use_utf8(conn)
        with conn, conn.cursor() as cur:
            target = PgTable(cur, schema, table, scope=Scope(source_file), names=options.pg_names)
            if target.oid() is None:
                return None
            pins = resolve_pins(cur, table, options.column_types)
            types = ColumnTypes(table, options.strict_types, pins, options.infer_types)
            return types.report(snapshot, types.start(target.catalog()))


def sync_table(
    snapshot: SqliteSnapshot,
    conn: psycopg2.extensions.connection,
    table: TableInfo,
    schema: str,
    options: SyncOptions,
    on_progress: ProgressCallback | None = None,
    source_file: str | None = None,
) -> TableSyncResult:
    """Make ``schema.<table>`` in PostgreSQL equal to the table in the SQLite snapshot.

    Everything happens in one PostgreSQL transaction: on any error it is rolled back and
    PostgreSQL is exactly as it was, and the error (a :class:`SyncError`) names the table.
    ``source_file``: the snapshot is one of many files sharing the table (see scope.py); the
    sync then owns, reads and counts only the rows of that file.

    The steps: :func:`_prepare` (under the table's lock, everything known before writing),
    :func:`_load_widening` (plan the read, load it, and again with wider types if a value does
    not fit; through :func:`_load_unblocked`, again without our indexes and constraints if they refuse
    it), :func:`_mirror_schema` (SQLite's indexes and foreign keys), :func:`_record` (comments, counts,
    the state the next sync starts from), and :func:`_result`.
    """
    scope = Scope(source_file)
    if conn.server_version < MIN_SERVER_VERSION:
        raise SyncError(
            table.name, f"PostgreSQL 15 or newer is needed (for MERGE); this server is {conn.server_version // 10000}"
        )
    cursor_column = options.cursor_columns.get(table.name)
    if cursor_column is not None:
        _check_cursor(table, cursor_column)
    started = time.perf_counter()
    with _named_errors(table.name, conn):
        _use_utf8(conn)
        total = snapshot.count(table)
        with conn, conn.cursor() as cur:
            ready = _prepare(snapshot, cur, table, schema, options, scope)
            loaded = _load_unblocked(snapshot, ready, total, cursor_column, on_progress)
            mirrored = _mirror_schema(snapshot, ready, loaded.target)
            recorded = _record(snapshot, ready, loaded, total, cursor_column, mirrored.ddl)
    return _result(ready, loaded, recorded, mirrored, total, cursor_column, time.perf_counter() - started)


@dataclass
class _Prepared:
    """What a sync settles under the table's lock before it reads a row, kept for the steps after it
    so that none of them asks PostgreSQL again (``entry`` was read in two round trips, catalog.py)."""

    cur: psycopg2.extensions.cursor
    table: TableInfo
    schema: str
    scope: Scope
    options: SyncOptions  # a shared file due for a rewrite syncs with full_refresh (rewrites.py)
    entry: TableEntry
    existed: bool
    fresh: bool  # built from nothing by this sync (new, or a full refresh of a table of one file)
    types: ColumnTypes
    typed: TableInfo  # the table with the PostgreSQL types its columns have at the start
    added: list[str]  # columns added by following SQLite's ALTER TABLE ADD COLUMN
    state: SyncState
    rows_before: int
    bytes_before: int
    # The mirror as the other naming mode spelled it, which a full refresh replaces (_mirror_named_otherwise).
    renamed: PgTable | None = None


@dataclass
class _Read:
    """How one attempt reads the table: the last sync it starts from, which rows (the cursor plan),
    how many, and the reader (cut into batches, with the row hashes to hold back unchanged lines)."""

    shape: str
    last: LastSync | None
    plan: cursor.CursorPlan
    to_read: int
    reader: TableReader


@dataclass
class _Loaded:
    """What the load wrote, with the types it finally took (a widening retry may have moved them)."""

    target: PgTable
    typed: TableInfo
    read: _Read
    counts: _Counts
    checked: verify.Verified | None  # None: not a verify run


@dataclass
class _Recorded:
    rows_after: int
    bytes_after: int
    pending: Mapping[str, str]
    retyped: tuple[ColumnRetype, ...]


def _prepare(
    snapshot: SqliteSnapshot,
    cur: psycopg2.extensions.cursor,
    table: TableInfo,
    schema: str,
    options: SyncOptions,
    scope: Scope,
) -> _Prepared:
    """Lock the table (or the file's rows of it), read what is known about it, and bring its shape to
    SQLite's: nothing another sync could change is read before the lock."""
    target = PgTable(cur, schema, table, scope=scope, names=options.pg_names)
    if not target.lock(options.lock_timeout_s):
        raise SyncError(
            table.name,
            f"another sync of {target.qualified_name} held its lock for {options.lock_timeout_s:g} s; "
            "try again when it has finished",
        )
    scope.enter(cur)
    _refuse_gone_file(snapshot, table, scope)
    # Everything known before writing, in two round trips, under the lock (catalog.py).
    entry = read_entry(cur, schema, options.state_schema, table.name, target.pg.name, scope)
    if not entry.schema_exists:
        raise SyncError(table.name, f"PostgreSQL schema {schema!r} does not exist; create it or set PG_SCHEMA")
    existed = entry.oid is not None
    if scope.shared and not existed:
        target.lock_for_ddl()  # two files' first syncs: one creates the table, the other merges
        entry = read_entry(cur, schema, options.state_schema, table.name, target.pg.name, scope)
        existed = entry.oid is not None
    if scope.shared and existed:
        entry, options = _prepare_shared(target, entry, options)
    renamed = None if existed else _mirror_named_otherwise(target, entry, options)
    # A shared table keeps its types (other files' values are in it): full_refresh reloads in place.
    fresh = not existed or (options.full_refresh and not scope.shared)
    types = ColumnTypes(
        table, options.strict_types, resolve_pins(cur, table, options.column_types), options.infer_types
    )
    types.fix_input_settings(cur)
    typed = types.start(None if fresh else target.catalog(entry.columns))
    added = (
        []
        if fresh
        else _evolve_shape(
            PgTable(cur, schema, typed, scope=scope, names=options.pg_names),
            options,
            (entry.columns_in_pg(), entry.primary_key),
        )
    )
    state = SyncState(cur, schema, options.state_schema, scope.state_key(), known=entry, names=options.pg_names)
    return _Prepared(
        cur=cur,
        table=table,
        schema=schema,
        scope=scope,
        options=options,
        entry=entry,
        existed=existed,
        fresh=fresh,
        types=types,
        typed=typed,
        added=added,
        state=state,
        rows_before=entry.rows,
        bytes_before=entry.total_bytes,
        renamed=renamed,
    )


def _plan_read(
    snapshot: SqliteSnapshot,
    ready: _Prepared,
    target: PgTable,
    total: int,
    cursor_column: str | None,
    on_progress: ProgressCallback | None,
) -> _Read:
    """Which rows this attempt reads (past the watermark, or all), and where its batches end so that a
    change resends little (change_detection.py); with the row hashes a batch that changed compares its
    lines with (row_digests.py)."""
    options, typed = ready.options, target.table
    shape = shape_of(typed, snapshot.schema_version())
    last = _last_sync(ready.state, snapshot, target, shape)
    plan = cursor.CursorPlan(None, None)
    if cursor_column is not None:
        plan = cursor.plan(snapshot, typed, cursor_column, last, not ready.rows_before or options.full_refresh)
    since = plan.since
    to_read = total if since is None else snapshot.count(typed, since)
    batching = Batching(options.batch_size)
    hashes = None  # of each row of each batch, where kept (row_digests.py)
    if since is None:  # a full read: cut it so that a change resends little (change_detection.py)
        key = change_detection.key_column(typed)
        span = None if key is None else snapshot.key_span(typed, typed.columns[key].name)
        previous = last.digests if last is not None else None
        batching = change_detection.plan(typed, options.batch_size, total, span, previous)
        if cursor_column is None and ready.table.primary_key and row_digests.applies(total, batching):
            hashes = row_digests.load(
                ready.cur, options.state_schema, ready.schema, ready.table.name, ready.scope.state_key()
            )
    reader = TableReader(snapshot, typed, options.batch_size, to_read, on_progress, since, batching, hashes)
    return _Read(shape, last, plan, to_read, reader)


def _load_widening(
    snapshot: SqliteSnapshot,
    ready: _Prepared,
    total: int,
    cursor_column: str | None,
    on_progress: ProgressCallback | None,
) -> _Loaded:
    """Read and write the rows (and verify them, on a verify run), inside a savepoint: a value that
    does not fit its column's type rolls the attempt back, the column widens (column_types.py), and
    the read starts again. Once, unless a value does not fit."""
    typed = ready.typed
    while True:
        target = PgTable(ready.cur, ready.schema, typed, ready.types.notes(typed), ready.scope, ready.options.pg_names)
        read = _plan_read(snapshot, ready, target, total, cursor_column, on_progress)
        target.savepoint(_TYPES_SAVEPOINT)
        try:
            rows_before = ready.rows_before if ready.existed else None
            counts, checked = _load_and_verify(target, read.reader, ready.options, rows_before, total, read.last)
        except ValueMismatchError as misfit:
            target.rollback_to_savepoint(_TYPES_SAVEPOINT)
            typed = _widened(snapshot, ready, target, misfit)
            continue
        except psycopg2.DataError as exc:
            misfit = pinned_misfit(snapshot, typed, target.pg.column_names, ready.types.pins, exc)
            if misfit is None:
                raise
            raise misfit from None
        target.release_savepoint(_TYPES_SAVEPOINT)
        return _Loaded(target, typed, read, counts, checked)


def _load_unblocked(
    snapshot: SqliteSnapshot,
    ready: _Prepared,
    total: int,
    cursor_column: str | None,
    on_progress: ProgressCallback | None,
) -> _Loaded:
    """:func:`_load_widening`, and again without our indexes and foreign-key constraints when one of them
    refuses what it writes: a foreign key cannot be enforced between tables that commit apart
    (relations.py), a unique index may meet values PostgreSQL finds equal, a widened column no longer
    fits an index's condition. The attempt is rolled back to its savepoint, ours are dropped (whatever the
    settings say: they are ours), and :func:`_mirror_schema` makes again those the settings ask for."""
    try:
        return _load_widening(snapshot, ready, total, cursor_column, on_progress)
    except (*relations.BLOCKING, *BLOCKING_INDEXES) as exc:
        if not ready.existed:
            raise
        target = PgTable(ready.cur, ready.schema, ready.typed, scope=ready.scope, names=ready.options.pg_names)
        target.rollback_to_savepoint(_TYPES_SAVEPOINT)  # the attempt's (see _load_widening)
        ours = set(our_indexes(ready.cur, target)) | {name for _, name in relations.ours(ready.cur, target)}
        named = exc.diag.constraint_name
        if not ours or (named is not None and named not in ours):
            raise
        drop_our_indexes(ready.cur, target, ready.options.lock_timeout_s)
        relations.drop_ours(ready.cur, target, ready.options.lock_timeout_s)
    return _load_widening(snapshot, ready, total, cursor_column, on_progress)


@dataclass(frozen=True)
class _Mirrored:
    """SQLite's indexes and foreign keys as PostgreSQL has them after this sync, and whether it ran DDL."""

    indexes: tuple[IndexResult, ...] = ()
    foreign_keys: tuple[ForeignKeyResult, ...] = ()
    ddl: bool = False


def _mirror_schema(snapshot: SqliteSnapshot, ready: _Prepared, target: PgTable) -> _Mirrored:
    """After the rows (an index built after the COPY costs less than one kept up during it): SQLite's
    indexes (indexes.py) and foreign keys (relations.py) in step, in this transaction. Nothing new: a
    query each, no DDL."""
    options = ready.options
    found = mirror_indexes(snapshot.conn, target, options.lock_timeout_s) if options.indexes else None
    if options.foreign_keys and not ready.scope.shared:
        links, linked = relations.mirror_foreign_keys(
            snapshot.conn, target, snapshot.table, options.exclude_columns, options.lock_timeout_s
        )
    else:
        note = "" if not options.foreign_keys else "no constraint on a table many files share"
        links = tuple(
            ForeignKeyResult(ready.table.name, fk.columns, fk.ref_table, fk.ref_columns, None, note)
            for fk in relations.synced_foreign_keys(ready.table)
        )
        linked = False
    return _Mirrored(found.indexes if found else (), links, bool(found and found.ddl) or linked)


def _widened(snapshot: SqliteSnapshot, ready: _Prepared, target: PgTable, misfit: ValueMismatchError) -> TableInfo:
    """The table with the types the next attempt takes: another file's widening when it came first
    (a shared table), else this one's, the existing table's columns altered to match."""
    typed = target.table
    if ready.scope.shared and not ready.fresh:
        target.lock_for_ddl()
        catalog = target.catalog()
        if {n: t for n, (t, _) in catalog.items()} != {c.name: c.pg_type.name for c in typed.columns}:
            # Another file's sync widened a column meanwhile: start again from its types.
            return ready.types.start(catalog)
    changes = ready.types.widen(snapshot, typed, misfit, None if ready.fresh else target.holds)
    typed = replace(
        typed, columns=tuple(replace(c, pg_type=changes.get(c.name, (c.pg_type,))[0]) for c in typed.columns)
    )
    if not ready.fresh:
        _alter_types(
            PgTable(ready.cur, ready.schema, target.table, ready.types.notes(typed), ready.scope, target.names),
            changes,
            ready.options,
        )
    return typed


def _record(
    snapshot: SqliteSnapshot, ready: _Prepared, loaded: _Loaded, total: int, cursor_column: str | None, ddl: bool
) -> _Recorded:
    """After the rows: the columns a file lacks, the column comments, the counts after, and the state
    the next sync starts from (watermark, batch digests, row hashes, rewrites due)."""
    cur, options, entry, types = ready.cur, ready.options, ready.entry, ready.types
    table, target, counts, checked = ready.table, loaded.target, loaded.counts, loaded.checked
    reader = loaded.read.reader
    counts.updated += _clear_lacked_columns(target, entry, options, loaded.read.last)
    if ready.renamed is not None:  # replaced by the mirror under this mode's name, in the same transaction
        ready.renamed.drop_if_exists(ready.renamed.pg.name)
    same_mirror = ready.existed and not ready.fresh  # not created or swapped by this sync: `entry` describes it
    # Says why in \d+, and marks repaired columns; only comments that differ are written.
    target.comment_columns(
        list(types.reasons), {name: comment for name, _, comment in entry.columns} if same_mirror else None
    )
    if reader.rows_read != loaded.read.to_read:
        raise SyncError(
            table.name, f"read {reader.rows_read} rows but the snapshot has {loaded.read.to_read}; nothing written"
        )
    watermark = loaded.read.plan.watermark
    repaired = bool(checked and checked.rows_repaired)
    unchanged = (
        same_mirror
        and not ready.added
        and not types.widened
        and counts.inserted == counts.updated == counts.deleted == 0
        and not repaired
        and not ddl  # an index built: the size moved
    )
    # The count after the merge less the rows deleted since (a repair wrote more: counted again below).
    if counts.merged_rows is not None and not repaired:
        rows_after, bytes_after = counts.merged_rows - counts.deleted, target.total_bytes()
    elif unchanged:  # nothing written: as read under the lock at the start
        rows_after, bytes_after = ready.rows_before, ready.bytes_before
    else:
        rows_after, bytes_after = target.count_and_size()
    ready.state.save(
        table,
        loaded.read.shape,
        snapshot.version,
        cursor=None if cursor_column is None or watermark is None else (cursor_column, watermark),
        # A full read: the next incremental sync can leave out the batches still the same.
        # Every SQLite key is in PostgreSQL now, so equal counts mean no orphan was kept.
        digests=BatchDigests(reader.read_path, reader.batching.describe(), reader.digests, exact=rows_after == total)
        if cursor_column is None and table.primary_key
        else None,
        same_mirror=same_mirror,
    )
    state_key = ready.scope.state_key()
    if reader.row_digests is not None:
        row_digests.save(
            cur, options.state_schema, ready.schema, table.name, state_key, reader.row_digests, reader.digests
        )
    if rewrites.rewrite_due(ready.scope, entry.pending_rewrites):
        rewrites.done(cur, options.state_schema, ready.schema, table.name, ready.scope)
    pending = rewrites.others(
        cur, options.state_schema, ready.schema, table.name, ready.scope, entry.pending_rewrites, bool(types.widened)
    )
    return _Recorded(rows_after, bytes_after, pending, types.report(snapshot, loaded.typed))


def _result(
    ready: _Prepared,
    loaded: _Loaded,
    recorded: _Recorded,
    mirrored: _Mirrored,
    total: int,
    cursor_column: str | None,
    duration_s: float,
) -> TableSyncResult:
    """The numbers of the sync, as the caller reads them."""
    options, counts, checked, reader, plan = (
        ready.options,
        loaded.counts,
        loaded.checked,
        loaded.read.reader,
        loaded.read.plan,
    )
    return TableSyncResult(
        table=ready.table.name,
        pg_table=loaded.target.qualified_name,
        mode=MODE_CURSOR if cursor_column is not None and not options.full_refresh else options.mode,
        sqlite_rows=total,
        pg_rows_before=ready.rows_before,
        pg_rows_after=recorded.rows_after,
        rows_processed=reader.rows_read,
        rows_inserted=counts.inserted,
        rows_updated=counts.updated,
        rows_deleted=counts.deleted,
        rows_unchanged=max(0, reader.rows_read - counts.inserted - counts.updated),
        table_bytes_before=ready.bytes_before,
        table_bytes_after=recorded.bytes_after,
        batch_size=options.batch_size,
        duration_s=duration_s,
        table_created=not ready.existed,
        columns_added=tuple(ready.added),
        read_path=reader.read_path,
        copy_format=reader.copy_format,
        rows_skipped=reader.rows_skipped,
        arrow_refused=reader.arrow_refused,
        cursor_column=cursor_column,
        watermark_before=None if plan.since is None else plan.since.watermark,
        watermark_after=plan.watermark,
        warnings=(plan.warning,) if plan.warning else (),
        columns_retyped=recorded.retyped,
        columns_widened=tuple(ready.types.widened),
        pg_types={c.name: c.pg_type.name for c in loaded.typed.columns},
        pending_rewrites=recorded.pending,
        verified=checked is not None,
        rows_verified=checked.rows_verified if checked else 0,
        rows_repaired=checked.rows_repaired if checked else 0,
        repaired_keys=checked.keys if checked else (),
        indexes=mirrored.indexes,
        foreign_keys=mirrored.foreign_keys,
    )


def _load_and_verify(
    target: PgTable,
    reader: TableReader,
    options: SyncOptions,
    rows_before: int | None,
    sqlite_rows: int,
    last: LastSync | None,
) -> tuple[_Counts, verify.Verified | None]:
    """The load, and on a verify run the verification: in the same read where the batches are key ranges
    of an existing keyed table read in full, else after the load (verify.py)."""
    if options.verify and _verifies_in_one_read(reader, options, rows_before):
        return _merge_verified(target, reader, rows_before, sqlite_rows, last)
    counts = _load(target, reader, _normal_pass(options, target.table), rows_before, sqlite_rows, last)
    checked = _verify(target, reader, options, sqlite_rows, rows_before is not None) if options.verify else None
    return counts, checked


def _verifies_in_one_read(reader: TableReader, options: SyncOptions, rows_before: int | None) -> bool:
    """Whether a verify run's own read can verify the table: an existing table with a key, read in full
    and cut by key, so that each row's batch, changed since the last sync or not, is known from its key
    in PostgreSQL (see verify.py). A table built by this sync needs no comparison at all."""
    return (
        rows_before is not None
        and not options.full_refresh
        and bool(reader.table.primary_key)
        and reader.since is None
        and reader.batching.by_key
    )


def _merge_verified(
    target: PgTable, reader: TableReader, rows_before: int, sqlite_rows: int, last: LastSync | None
) -> tuple[_Counts, verify.Verified]:
    """A verify run in one read: every row into the stage (no batch left out, each still digested for
    the next plain sync), compared with the target once, every difference written; SQLite's changes
    are counted as the merge counts them, the rest as repaired (verify.merge_verified)."""
    _refuse_merged_keys(target, reader)
    _stage_all(target, reader)
    changes, checked = verify.merge_verified(target, sqlite_rows, _sqlite_changed(target, reader, last))
    counts = _Counts(inserted=changes.inserted, updated=changes.updated, deleted=changes.deleted)
    if changes.inserted or changes.updated or changes.deleted:  # keys are unique: each insert is a new row
        counts.merged_rows = rows_before + changes.inserted
    return counts, checked


def _sqlite_changed(target: PgTable, reader: TableReader, last: LastSync | None) -> verify.ChangedRanges | None:
    """The key ranges where SQLite changed since the last sync (digests differ, or new or gone), when
    the last sync's digests describe a read like this one; None when they say nothing of it."""
    previous = last.digests if last is not None else None
    if previous is None or not previous.matches(reader.read_path, reader.batching):
        return None
    now, before = reader.digests, previous.digests
    changed = {i for i, digest in now.items() if before.get(i) != digest} | (before.keys() - now.keys())
    key = reader.table.columns[reader.batching.key_index].name  # type: ignore[index]
    return verify.ChangedRanges(target.pg_column(key).name, reader.batching.shift, frozenset(changed), previous.exact)


def _load(
    target: PgTable,
    reader: TableReader,
    options: SyncOptions,
    rows_before: int | None,
    sqlite_rows: int,
    last: LastSync | None,
) -> _Counts:
    """Write the rows ``reader`` reads; ``rows_before`` None: the table does not exist yet."""
    if options.full_refresh or rows_before is None:
        return _load_fresh(target, reader, options, rows_before)
    if target.table.primary_key:
        previous = last.digests if last is not None and reader.since is None else None
        return _merge_by_key(target, reader, options, rows_before, sqlite_rows, previous)
    return _merge_keyless(target, reader, options, rows_before)


def _normal_pass(options: SyncOptions, table: TableInfo) -> SyncOptions:
    """The options of the normal pass: a verify run's decides ``delete_orphans`` itself (verify.py)."""
    if not options.verify:
        return options
    return replace(options, delete_orphans=verify.normal_pass_deletes_orphans(table))


def _verify(target: PgTable, reader: TableReader, options: SyncOptions, total: int, existed: bool) -> verify.Verified:
    """The verification pass of a verify run, after the normal one, in its transaction (verify.py); it
    reads every row again only when the normal pass's stage does not hold them all."""
    built = options.full_refresh or not existed
    holds_all = reader.since is None and reader.rows_sent == total and verify.stage_exists(target)

    def stage_every_row() -> None:
        verify.drop_stage(target)
        again = TableReader(reader.snapshot, target.table, options.batch_size, total, reader.on_progress)
        _stage_all(target, again)
        if again.rows_read != total:
            raise SyncError(
                target.table.name, f"read {again.rows_read} rows but the snapshot has {total}; nothing written"
            )

    return verify.verify_and_repair(target, total, None if holds_all else stage_every_row, built)


def _alter_types(target: PgTable, changes: Mapping[str, tuple[PgType, bool]], options: SyncOptions) -> None:
    _column_ddl(
        target,
        list(changes),
        "must widen to hold SQLite's values",
        "widened",
        lambda: target.alter_types(changes, options.lock_timeout_s),
        options.lock_timeout_s,
        hint=" (or pin the types with column_types)",
    )
    rewrites.mark_others(target, changes, options.state_schema)


def _column_ddl(
    target: PgTable,
    columns: list[str],
    why: str,
    done: str,
    run: Callable[[], bool],
    timeout_s: float,
    hint: str = "",
) -> None:
    """A change of columns that rewrites or reshapes the table: refused while views depend on it (PostgreSQL
    would refuse, or drop them), and given up, changing nothing, when other sessions keep the table busy."""
    names = ", ".join(map(repr, columns))
    views = target.dependent_views()
    if views:
        raise SyncError(
            target.table.name,
            f"columns {names} of {target.qualified_name} {why}, but views depend on the table: {', '.join(views)}. "
            f"Drop them, sync, and create them again{hint}",
        )
    if not run():
        raise SyncError(
            target.table.name,
            f"other sessions kept {target.qualified_name} in use for {timeout_s:g} s, so columns {names} could not "
            f"be {done}; nothing changed (look for sessions idle in transaction)",
        )


def _mirror_named_otherwise(target: PgTable, entry: TableEntry, options: SyncOptions) -> PgTable | None:
    """The mirror a sync under the other ``SYNC_PG_NAMES`` mode made of this table (``Track`` where it is now
    ``track``), found by the OID its bookkeeping row recorded; None when there is none. Syncing into the new
    name beside it would leave a stale copy that readers keep querying, so a plain sync refuses, and a full
    refresh (of a table of one file) builds the new one and drops the old one in the same transaction.
    Asked only when the mirror under the current name is missing (a first load)."""
    other = options.pg_names.other()
    old_name = other.name(target.table.name)
    if entry.state is None or entry.state.table_oid is None or old_name == target.pg.name:
        return None
    if table_oid(target.cur, target.schema, target.table.name, other) != entry.state.table_oid:
        return None
    old = PgTable(target.cur, target.schema, target.table, scope=target.scope, names=other)
    modes = f"SYNC_PG_NAMES={other.mode}, and is {target.qualified_name} with SYNC_PG_NAMES={options.pg_names.mode}"
    if target.scope.shared or not options.full_refresh:
        remedy = (
            "the files sharing it cannot move one by one: drop it and sync every file again"
            if target.scope.shared
            else f"run with full_refresh to build {target.qualified_name} and drop {old.qualified_name}"
        )
        raise SchemaMismatchError(
            target.table.name,
            f"the mirror is {old.qualified_name}, made with {modes}; {remedy}, or set "
            f"SYNC_PG_NAMES={other.mode} again. Nothing written",
        )
    views = old.dependent_views()
    if views:
        raise SyncError(
            target.table.name,
            f"the mirror is {old.qualified_name}, made with {modes}: moving it means dropping it, but views "
            f"depend on it: {', '.join(views)}. Drop them, refresh, and create them again",
        )
    return old


def _refuse_gone_file(snapshot: SqliteSnapshot, table: TableInfo, scope: Scope) -> None:
    """One of many files, checked under its (table, file) lock: a removal's deletion of the file's rows
    (``scope.delete_source_file``) takes that lock too, so a sync that finds the file still there
    commits before that deletion, and one that comes after it must not write the gone file's rows
    back from its older snapshot: nothing would ever remove them."""
    if scope.shared and not snapshot.path.exists():
        raise SourceFileGoneError(
            table.name,
            f"file {str(snapshot.path)!r} (partition {scope.source_file!r}) was removed during the sync; "
            "nothing written for it",
        )


def _prepare_shared(target: PgTable, entry: TableEntry, options: SyncOptions) -> tuple[TableEntry, SyncOptions]:
    """What a sync of one of many files settles before it reads, under its lock: the columns the
    exclusion names go from the shared table, and a file marked for a rewrite reloads its rows in
    place (rewrites.py). Returns the entry without the dropped columns, and the options to sync with."""
    entry = _drop_excluded_columns(target, entry, options)
    if rewrites.rewrite_due(target.scope, entry.pending_rewrites):
        options = replace(options, full_refresh=True)
    return entry, options


def _drop_excluded_columns(target: PgTable, entry: TableEntry, options: SyncOptions) -> TableEntry:
    """Drop from a shared table the columns ``exclude_columns`` matches that this file's table does not
    carry (the caller left them out): configuration is the same for every file, so every file's values
    go at once, under the table's DDL lock. Matched by their PostgreSQL names, which are the SQLite
    ones but for names over 63 bytes (naming.py). One file of one table, by contrast, fails as a
    changed shape asking for full_refresh, as ever: that keeps a column nobody asked to drop. With
    SYNC_PG_NAMES=lower the PostgreSQL names are lowercase, so the globs (SQLite names) are matched lowercased."""
    lower = target.names.lower
    globs = [g.lower() for g in options.exclude_columns] if lower else options.exclude_columns
    table = target.table.name.lower() if lower else target.table.name

    def excluded(columns: list[tuple[str, str]]) -> list[str]:
        return [
            name for name, _ in columns if name not in target.pg.column_names and column_excluded(globs, table, name)
        ]

    gone = excluded(entry.columns_in_pg()) if options.exclude_columns else []
    if not gone:
        return entry
    target.lock_for_ddl()
    still = excluded(target.columns_in_pg())  # another file's sync may have dropped them meanwhile
    if still:
        _column_ddl(
            target,
            still,
            "are excluded (SYNC_EXCLUDE_COLUMNS) and must be dropped",
            "dropped",
            lambda: target.drop_columns(still, options.lock_timeout_s),
            options.lock_timeout_s,
        )
    return replace(entry, columns=tuple(c for c in entry.columns if c[0] not in gone))


def _clear_lacked_columns(target: PgTable, entry: TableEntry, options: SyncOptions, last: LastSync | None) -> int:
    """A shared table holds the union of the files' columns; a column this file lacks (dropped from it)
    is NULL for its rows, as for a file that never had it. Set so in the sync that first sees the file
    without it: the first whose shape differs from the last sync's (``last`` None), so a sync that
    changed nothing scans nothing more. A full reload (``reload_from``) leaves them NULL already."""
    if not target.scope.shared or not entry.rows or last is not None or options.full_refresh:
        return 0
    lacked = [name for name, _ in entry.columns_in_pg() if name not in target.pg.column_names]
    return target.clear_columns(lacked) if lacked else 0


def _use_utf8(conn: psycopg2.extensions.connection) -> None:
    """Both read paths send UTF-8 through COPY, and names travel in statements; a session in
    another client encoding (a role's or database's ``client_encoding`` setting,
    ``PGCLIENTENCODING``) would store text mis-decoded and look for tables that do not exist."""
    if conn.encoding != "UTF8":
        conn.set_client_encoding("UTF8")


def _last_sync(state: SyncState, snapshot: SqliteSnapshot, target: PgTable, shape: str) -> LastSync | None:
    """The table's stored state, if it still describes the table; refuses an older snapshot."""
    last = state.load(target.table.name)
    if last is None:
        return None
    if None not in (snapshot.version, last.snapshot_version) and last.snapshot_version > snapshot.version:
        raise StaleSnapshotError(
            target.table.name,
            f"another run already synced {target.qualified_name} from a newer SQLite snapshot "
            f"(#{last.snapshot_version}) than this run's (#{snapshot.version}); nothing written, "
            "PostgreSQL keeps the newer state",
        )
    # Watermark and digests taken under another shape say nothing about this one.
    return last if last.shape == shape else None


def _check_cursor(table: TableInfo, column: str) -> None:
    if column not in table.column_names:
        raise SyncError(table.name, f"cursor column {column!r} is not a column of the table")
    if not table.primary_key:
        raise SyncError(table.name, "cursor mode needs a primary key to merge the rows it reads")


def _expected_columns(target: PgTable) -> list[tuple[str, str]]:
    return [(c.name, c.pg_type.name) for c in target.pg.columns]


def _shape_problem(target: PgTable, actual: list[tuple[str, str]], key: tuple[str, ...]) -> str | None:
    """Why a PostgreSQL table with these columns and key no longer has the shape SQLite maps to.

    A table shared by many files holds the union of their columns, in the order they came: it
    must have each of this file's columns with its type and the same key, in any order.
    """
    expected = _expected_columns(target)
    if target.scope.shared:
        have = dict(actual)
        differences = [f"{name!r} is missing in PostgreSQL" for name, _ in expected if name not in have]
        differences += [
            f"{name!r} is {have[name]} in PostgreSQL but {typ} in this file"
            for name, typ in expected
            if name in have and have[name] != typ
        ]
        if differences:
            return f"columns of {target.qualified_name} differ: " + "; ".join(differences)
        actual = expected
    if actual != expected:
        pg_types, sqlite_types = dict(actual), dict(expected)
        differences = [f"{name!r} is gone from SQLite" for name in pg_types if name not in sqlite_types]
        differences += [f"{name!r} is new in SQLite" for name in sqlite_types if name not in pg_types]
        differences += [
            f"{name!r} is {pg_types[name]} in PostgreSQL but maps to {typ} now"
            for name, typ in expected
            if name in pg_types and pg_types[name] != typ
        ]
        return f"columns of {target.qualified_name} differ: " + "; ".join(differences or ["their order changed"])
    if key != target.pg.primary_key:
        return f"PostgreSQL primary key {list(key)} differs from SQLite's {list(target.pg.primary_key)}"
    return None


def _evolve_shape(
    target: PgTable, options: SyncOptions, in_pg: tuple[list[tuple[str, str]], tuple[str, ...]] | None = None
) -> list[str]:
    """Follow SQLite's ``ALTER TABLE ADD COLUMN`` in this transaction; refuse any other change.

    SQLite appends an added column, so the PostgreSQL columns are then a prefix of SQLite's
    with the same types; the new ones are added as nullable columns (a metadata-only change)
    and the merge fills them. A dropped, renamed or retyped column, or a new key, needs
    ``full_refresh``; so does a column added to a table without a primary key, whose rows
    have no identity to carry the new values to. Returns the names of the columns added.
    """
    expected = _expected_columns(target)
    # ``in_pg``: the columns and key as read_entry() read them under the lock, at the start of this sync.
    actual, key = in_pg if in_pg is not None else (target.columns_in_pg(), target.primary_key_in_pg())
    if target.scope.shared:
        return _union_columns(target, actual, key, options)
    added = list(target.table.column_names[len(actual) :])  # SQLite's names
    if added and target.pg.primary_key and actual == expected[: len(actual)] and key == target.pg.primary_key:
        for name in added:
            if not target.add_column(name, options.lock_timeout_s):
                raise SyncError(
                    target.table.name,
                    f"other sessions kept {target.qualified_name} in use for {options.lock_timeout_s:g} s, so "
                    f"column {name!r} could not be added; nothing changed (look for sessions idle in transaction)",
                )
        actual = expected
    problem = _shape_problem(target, actual, key)
    if problem:
        raise SchemaMismatchError(target.table.name, f"{problem}; run with full_refresh to rebuild it")
    return added


def _union_columns(
    target: PgTable, actual: list[tuple[str, str]], key: tuple[str, ...], options: SyncOptions
) -> list[str]:
    """A table shared by many files holds the union of their columns: add this file's columns it
    lacks (under the table's DDL lock, checking again, since another file may be adding them
    too). Files must agree on the key. Returns the names of the columns added."""
    have = {name for name, _ in actual}
    missing = [c for c, p in zip(target.table.column_names, target.pg.columns[1:], strict=True) if p.name not in have]
    added = []
    if missing:
        target.lock_for_ddl()
        have = {name for name, _ in target.columns_in_pg()}
        for column, pg in zip(target.table.column_names, target.pg.columns[1:], strict=True):
            if pg.name in have:
                continue
            if not target.add_column(column, options.lock_timeout_s):
                raise SyncError(
                    target.table.name,
                    f"other sessions kept {target.qualified_name} in use for {options.lock_timeout_s:g} s, so "
                    f"column {column!r} could not be added; nothing changed (look for sessions idle in transaction)",
                )
            added.append(column)
        actual = target.columns_in_pg()
    problem = _shape_problem(target, actual, key)
    if problem:
        raise SchemaMismatchError(
            target.table.name, f"{problem}; the files sharing this table must agree on its key and column types"
        )
    return added


def _create_and_load(target: PgTable, reader: TableReader, name: str | None = None) -> None:
    """A new table: COPY straight in, then the key (faster than loading into an index), then statistics
    (pg_target.STOPGAP_STATISTICS_TARGET)."""
    ident = target.create(name)
    reader.copy_into(target, ident)
    target.add_primary_key(ident, target.free_key_name())
    target.analyze_loaded(ident, reader.rows_read)


def _load_fresh(target: PgTable, reader: TableReader, options: SyncOptions, rows_before: int | None) -> _Counts:
    """Build the table from nothing (``rows_before`` None: it does not exist yet) or rebuild it.

    When the shape is unchanged the rows are replaced in place (DELETE + INSERT from the
    stage), which is MVCC-safe: readers at any isolation level see the old rows or the new
    ones, and views, grants and indexes stay. When the shape changed, a new table is built
    beside the old one and swapped in; views that depend on the old one make it refuse.
    """
    table = target.table
    if rows_before is None:
        _create_and_load(target, reader)
        # Created in this transaction: it holds what was read (0.1-0.2 s of count(*) per 1M rows saved).
        return _Counts(inserted=reader.rows_read, merged_rows=reader.rows_read)
    problem = _shape_problem(target, target.columns_in_pg(), target.primary_key_in_pg())
    if problem is not None and target.scope.shared:
        raise SchemaMismatchError(table.name, f"{problem}; a table shared by many files is never rebuilt")
    if problem is None:
        _stage_all(target, reader)
        target.reload_from(STAGE)
        return _Counts(inserted=reader.rows_read, deleted=rows_before)
    views = target.dependent_views()
    if views:
        raise SyncError(
            table.name,
            f"the new schema means dropping {target.qualified_name}, but views depend on it: "
            f"{', '.join(views)}. Drop them, refresh, and create them again",
        )
    name = new_table_name(table.name)
    target.drop_if_exists(name)
    _create_and_load(target, reader, name)
    if not target.lock_exclusively(options.lock_timeout_s):
        raise SyncError(
            table.name,
            f"other sessions kept {target.qualified_name} in use for {options.lock_timeout_s:g} s, so the rebuilt "
            "table could not be swapped in; nothing changed (look for sessions idle in transaction)",
        )
    target.replace_with(name)
    return _Counts(inserted=reader.rows_read, deleted=rows_before, merged_rows=reader.rows_read + rows_before)


def _merge_by_key(
    target: PgTable,
    reader: TableReader,
    options: SyncOptions,
    rows_before: int,
    sqlite_rows: int,
    previous: BatchDigests | None,
) -> _Counts:
    counts = _Counts()
    if rows_before == 0:
        # An empty target has nothing to compare against: no staging round needed.
        reader.copy_into(target, target.ident)
        counts.inserted = reader.rows_read
        counts.merged_rows = counts.inserted  # the scope held none: no count(*) of what was just loaded
        return counts
    all_keys_staged = _refuse_merged_keys(target, reader)
    staged = _stage_all(target, reader, previous)
    if reader.rows_sent:  # nothing sent: nothing past the watermark, or no batch changed
        # A few changed rows: count their new keys by index probes; else count the target after the merge.
        few = reader.rows_sent * _FEW_ROWS_SENT < rows_before
        new_keys = target.new_keys_in_stage() if few else None
        merged = target.merge_from_stage()
        # Keys are unique in the target, so the rows it gained are the rows inserted.
        counts.merged_rows = rows_before + new_keys if new_keys is not None else target.row_count()
        counts.inserted = counts.merged_rows - rows_before
        counts.updated = merged - counts.inserted
    if options.delete_orphans:
        _refuse_empty_source(target, sqlite_rows, rows_before)
        # Every SQLite key is now in the target and keys are unique on both sides, so any
        # target row beyond SQLite's count is an orphan. None: skip the scan.
        if rows_before + counts.inserted > sqlite_rows:
            if not staged:  # nothing was sent: the searches below compare against an empty stage
                target.create_stage(MERGE_SETTINGS)
            if reader.since is None and not reader.rows_skipped:
                counts.deleted = target.delete_orphans(STAGE)  # the stage holds every key
            elif (changed := _changed_key_ranges(reader, previous)) is not None:
                # Orphans lie only in the key ranges of the batches sent, whose keys are all staged,
                # unless a batch was sent in part (row_digests.py): then its keys are read apart.
                key = reader.table.columns[reader.batching.key_index].name  # type: ignore[index]
                held_back = reader.row_digests is not None and reader.row_digests.held_back > 0
                if held_back and not all_keys_staged:
                    _stage_keys(target, reader, changed)
                stage = KEYS if held_back else STAGE
                counts.deleted = target.delete_orphans_in(stage, key, reader.batching.shift, changed)
            else:
                # Only changed rows were staged: compare against every SQLite key.
                if not all_keys_staged:
                    _stage_keys(target, reader)
                counts.deleted = target.delete_orphans(KEYS)
    return counts


def _changed_key_ranges(reader: TableReader, previous: BatchDigests | None) -> set[int] | None:
    """The ids of the batches that differ from the last sync's, or are gone, when batches are key
    ranges and the last sync left PostgreSQL exact: then no other key range can hold an orphan
    (change_detection.py). None when that is not known: every key must be compared."""
    if (
        reader.since is not None
        or not reader.batching.by_key
        or previous is None
        or not previous.exact
        or not previous.matches(reader.read_path, reader.batching)
    ):
        return None
    now, before = reader.digests, previous.digests
    return {i for i, digest in now.items() if before.get(i) != digest} | (before.keys() - now.keys())


def _stage_keys(target: PgTable, reader: TableReader, batch_ids: set[int] | None = None) -> None:
    """The SQLite keys of the table (keys only) into the temporary table ``KEYS``: every key, or those
    of the key ranges ``batch_ids`` (an integer key, see change_detection.py; a range scan each)."""
    keys = _keys_only(reader.table)
    stage = PgTable(target.cur, target.schema, keys, scope=target.scope, names=target.names)
    target.create_key_stage()
    if batch_ids is None:
        TableReader(reader.snapshot, keys, reader.batch_size, 0, None).copy_into(stage, KEYS)
        return
    (key,) = keys.column_names
    found = reader.snapshot.keys_in_ranges(reader.table, key, reader.batching.shift, batch_ids)
    stage.copy_into(KEYS, io.BytesIO("".join(f"{k}\n" for k in found).encode()))


def _keys_only(table: TableInfo) -> TableInfo:
    """The table as its key columns alone, for reading and staging only its keys."""
    return replace(table, columns=tuple(c for c in table.columns if c.pk_position))


def _stage_all(target: PgTable, reader: TableReader, skip: BatchDigests | None = None) -> bool:
    """COPY every batch into one temporary staging table, so each merge statement runs once.

    Merging batch by batch would hash (or scan) the whole target once per batch, which is
    quadratic in the table size; one statement over the full stage is one hash join.
    The stage is a temp table: not WAL-logged, dropped at commit. It is not analyzed: the
    planner's estimate from its size already picks the join (see ``MERGE_SETTINGS``), and ANALYZE
    cost 0.3 s of a 5 s no-change sync of a million rows.

    With ``skip``, a table with nothing to send gets no stage (returns False): an unchanged table
    then costs no DDL and no COPY (in a file of 1000 tables, 1000 temporary tables created and
    dropped in the catalog at every sync). Without it the stage is always made, empty or not.
    """
    if reader.copy_into(target, STAGE, skip, prepare=lambda: target.create_stage(MERGE_SETTINGS)):
        return True
    if skip is None:  # nothing read: the callers still compare against the (empty) stage
        target.create_stage(MERGE_SETTINGS)
        return True
    return False


def _merge_keyless(target: PgTable, reader: TableReader, options: SyncOptions, rows_before: int) -> _Counts:
    """A table without a primary key has no row identity: compare it as a multiset of rows.

    New rows (by value, duplicates counted) are appended. With ``delete_orphans`` the rows
    PostgreSQL has beyond SQLite's are removed too, by rewriting the table, and only when
    the two differ. A changed row counts as one deleted and one inserted.
    """
    _stage_all(target, reader)
    missing, extra = target.multiset_differences()
    if options.delete_orphans and extra:
        _refuse_empty_source(target, reader.rows_read, rows_before)
        target.reload_from(STAGE)
        return _Counts(inserted=missing, deleted=extra)
    if missing:
        target.append_missing_from_stage()
    return _Counts(inserted=missing)


def _refuse_merged_keys(target: PgTable, reader: TableReader) -> bool:
    """Fail, naming both SQLite keys, when two of them become one PostgreSQL key (``7`` and ``'7'``).

    Checked over every key of the table (see keys.py), only for tables with a key column whose
    conversion can merge values. The load paths that write into an empty table hit the primary key
    itself, which fails naming the PostgreSQL key. True when every key is now in ``KEYS``.
    """
    table = target.table
    if not merging_key_columns(reader.snapshot, table):
        return False
    _stage_keys(target, reader)
    duplicate = target.duplicate_key_in(KEYS)
    if duplicate is not None:
        # Only now, and slowly, which SQLite keys those were: every key again, beside its SQLite value.
        keys = _keys_only(table)
        sources = PgTable(target.cur, target.schema, keys, scope=target.scope, names=target.names)
        sources.copy_key_sources(row_digests.LineStream(key_sources(reader.snapshot, keys)))
        pg_key, sqlite_keys = target.duplicate_key_in(KEY_SOURCES, SQLITE_KEY) or duplicate
        key = ", ".join(f"{k}={v!r}" for k, v in zip(table.primary_key, pg_key, strict=True))
        raise SyncError(
            table.name,
            f"two SQLite rows have the key ({key}) once converted to PostgreSQL: {' and '.join(sorted(sqlite_keys))}; "
            "make the key values distinct in SQLite",
        )
    return True


def _refuse_empty_source(target: PgTable, sqlite_rows: int, rows_before: int) -> None:
    if sqlite_rows == 0 and rows_before > 0:
        raise OrphanDeletionRefused(
            target.table.name,
            f"SQLite returned no rows but {target.qualified_name} has {rows_before}; refusing to delete them all "
            "(run with full_refresh if emptying it is intended)",
        )
