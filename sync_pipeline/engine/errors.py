"""Errors the engine raises.

Every error names the table (and, where one is involved, the column and the row key) so a
user reading one line of a run log knows where to look. None of them ever carries a
connection string: callers pass messages through :func:`redact` first.
"""

from __future__ import annotations


class SyncError(Exception):
    """A sync of one table could not be completed; PostgreSQL was left as it was.

    ``transient`` is set when the PostgreSQL connection itself was lost (server restart,
    network, terminated backend): the same sync on a new connection may well succeed.
    """

    def __init__(self, table: str, message: str, transient: bool = False) -> None:
        super().__init__(f"table {table!r}: {message}")
        self.table = table
        self.transient = transient


class ValueMismatchError(SyncError):
    """A SQLite value cannot be stored in its PostgreSQL column without changing it."""

    def __init__(self, table: str, column: str, row_key: str, message: str) -> None:
        super().__init__(table, f"column {column!r}, row {row_key}: {message}")
        self.column = column
        self.row_key = row_key


class SchemaMismatchError(SyncError):
    """The PostgreSQL table no longer has the shape of the SQLite table."""


class SourceFileGoneError(SyncError):
    """The SQLite file of a sync (one of many sharing the table) was removed while the sync ran.

    Not transient: a removed file's rows are deleted by ``scope.delete_source_file`` when asked,
    and a sync that wrote them again from its older snapshot would bring them back for good.
    """


class OrphanDeletionRefused(SyncError):
    """Deleting orphans was refused because the source read looked empty."""


class UnsupportedTableError(SyncError):
    """The SQLite table cannot be mirrored (for instance an identifier PostgreSQL would cut)."""


class StaleSnapshotError(SyncError):
    """Another run already synced this table from a newer SQLite snapshot than this one.

    Nothing was written. Reading the table again from a fresh snapshot syncs it (the Dagster
    layer does so at once); a caller that holds only this snapshot should fail.
    """


class TargetError(Exception):
    """PostgreSQL cannot take any sync as configured (for instance the schema does not exist)."""
