"""The sync engine: SQLite reading, type mapping and PostgreSQL writing, with no Dagster in it."""

from .column_types import ColumnRetype
from .errors import (
    OrphanDeletionRefused,
    SchemaMismatchError,
    SourceFileGoneError,
    StaleSnapshotError,
    SyncError,
    TargetError,
    UnsupportedTableError,
    ValueMismatchError,
)
from .reader import Progress
from .rewrites import pending_rewrites
from .secrets import mask_dsn, redact
from .sqlite_source import (
    ColumnInfo,
    SourceUnavailableError,
    SqliteSnapshot,
    TableInfo,
    list_tables,
    prestart_arrow_reader,
)
from .sync import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MODE_FULL_REFRESH,
    MODE_INCREMENTAL,
    SyncOptions,
    TableSyncResult,
    retyped_columns,
    row_counts,
    sync_table,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "MODE_FULL_REFRESH",
    "MODE_INCREMENTAL",
    "ColumnInfo",
    "ColumnRetype",
    "OrphanDeletionRefused",
    "Progress",
    "SchemaMismatchError",
    "SourceFileGoneError",
    "SourceUnavailableError",
    "SqliteSnapshot",
    "StaleSnapshotError",
    "SyncError",
    "SyncOptions",
    "TableInfo",
    "TableSyncResult",
    "TargetError",
    "UnsupportedTableError",
    "ValueMismatchError",
    "list_tables",
    "mask_dsn",
    "pending_rewrites",
    "prestart_arrow_reader",
    "redact",
    "retyped_columns",
    "row_counts",
    "sync_table",
]
