"""The rows one sync owns in its PostgreSQL table: all of them, or those of one source file.

With one SQLite file, a mirrored table holds exactly that file's table. With many files (a
directory or a glob), each PostgreSQL table holds every file's rows, told apart by the column
``_source_file`` (the file's partition key), which leads the primary key. A sync of one file
must then read, compare, delete and count only that file's rows: every SQL builder of
:class:`~.pg_target.PgTable` takes its filter from here, so per-file isolation is this one idea.

The column is filled by a DEFAULT that reads a setting of the syncing transaction
(``SET LOCAL sqlite_pg_sync.source_file``), so COPY sends exactly the SQLite columns, in both
read paths, straight into the target or a stage alike. A row inserted by anyone else without
that setting fails loudly ("unrecognized configuration parameter") rather than landing in no file.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from .bookkeeping import forget
from .sqlite_source import ColumnInfo
from .types import TEXT

SOURCE_FILE_COLUMN = "_source_file"
SETTING = "sqlite_pg_sync.source_file"


@dataclass(frozen=True)
class Scope:
    """``source_file`` None: the whole table (one SQLite file, today's layout)."""

    source_file: str | None = None

    @property
    def shared(self) -> bool:
        return self.source_file is not None

    def column(self) -> ColumnInfo:
        """The leading column a shared table has, before the SQLite columns."""
        return ColumnInfo(name=SOURCE_FILE_COLUMN, declared_type="", not_null=True, pk_position=1, pg_type=TEXT)

    def default(self) -> sql.Composable:
        return sql.SQL("DEFAULT current_setting({})").format(sql.Literal(SETTING))

    def where(self, alias: str | None = None) -> sql.Composable:
        """A condition true for the rows this sync owns (``TRUE`` for a whole table)."""
        if self.source_file is None:
            return sql.SQL("TRUE")
        column = sql.Identifier(SOURCE_FILE_COLUMN)
        if alias is not None:
            column = sql.SQL("{}.{}").format(sql.Identifier(alias), column)
        return sql.SQL("{} = {}").format(column, sql.Literal(self.source_file))

    def enter(self, cur: psycopg2.extensions.cursor) -> None:
        """Set the transaction's file, which the column's DEFAULT reads (see the module docstring)."""
        if self.source_file is not None:
            cur.execute("SELECT set_config(%s, %s, true)", (SETTING, self.source_file))

    def lock_key(self, qualified_name: str) -> str:
        """Syncs of one (table, file) are serialised; two files of one table sync at the same time."""
        return f"sqlite_pg_sync:{qualified_name}" + ("" if self.source_file is None else f":{self.source_file}")

    def state_key(self) -> str:
        """The bookkeeping key part of the file ('' for a whole table)."""
        return self.source_file or ""


def delete_source_file(
    conn: psycopg2.extensions.connection,
    schema: str,
    source_file: str,
    state_schema: str,
    lock_timeout_s: float = 300.0,
) -> dict[str, int]:
    """Delete every row of ``source_file`` from the tables of ``schema`` that many files share, in one
    transaction (all of them or none); table -> rows deleted. For a file that is gone, when the user
    asked for its rows to go too (``SYNC_DELETE_REMOVED_FILES``). Each table's (table, file) lock is
    taken first, so a sync of that file still running finishes before. The file's bookkeeping goes
    too: digests of rows no longer there would let a file of that name, back later, skip its batches."""
    deleted: dict[str, int] = {}
    with conn, conn.cursor() as cur:
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_s * 1000)}ms",))
        cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (SOURCE_FILE_COLUMN, schema),
        )
        for (table,) in cur.fetchall():
            scope = Scope(source_file)
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (scope.lock_key(f"{schema}.{table}"),))
            cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(schema, table), scope.where()))
            deleted[table] = cur.rowcount
        forget(cur, schema, state_schema, source_file)
    return deleted
