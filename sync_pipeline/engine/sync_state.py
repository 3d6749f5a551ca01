"""What the last sync of each table left behind, kept in PostgreSQL next to the data it describes.

``<schema>._sps_sync_state`` holds, per table, the cursor-mode watermark and the digests of the
batches the last full read sent. Both are written in the same transaction as the rows: either
everything commits or nothing does, so the state never describes rows PostgreSQL does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

STATE_TABLE = "_sps_sync_state"


@dataclass(frozen=True)
class BatchDigests:
    """Digests of the COPY text of each batch of a full read, in read order.

    They only say something about a later read made the same way: same read path (the two
    paths write some numbers differently) and same batch size (same batch boundaries).
    """

    read_path: str
    batch_size: int
    digests: tuple[str, ...]

    def matches(self, read_path: str, batch_size: int) -> bool:
        return (self.read_path, self.batch_size) == (read_path, batch_size)


class SyncState:
    def __init__(self, cur: psycopg2.extensions.cursor, schema: str) -> None:
        self.cur = cur
        self.schema = schema
        self.ident = sql.Identifier(schema, STATE_TABLE)

    def _row(self, table: str) -> tuple[str | None, object, object] | None:
        self.cur.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (self.schema, STATE_TABLE))
        if self.cur.fetchone() is None:
            return None
        self.cur.execute(
            sql.SQL("SELECT cursor_column, watermark, batches FROM {} WHERE table_name = %s").format(self.ident),
            (table,),
        )
        return self.cur.fetchone()

    def watermark(self, table: str, column: str) -> object | None:
        """The stored watermark, or None if there is none for this table and cursor column."""
        row = self._row(table)
        return None if row is None or row[0] != column else row[1]

    def batch_digests(self, table: str) -> BatchDigests | None:
        row = self._row(table)
        if row is None or row[2] is None:
            return None
        stored = row[2]
        return BatchDigests(stored["read_path"], stored["batch_size"], tuple(stored["digests"]))  # type: ignore[index]

    def save(self, table: str, cursor: tuple[str, object] | None = None, digests: BatchDigests | None = None) -> None:
        """Replace the table's state: the (cursor column, watermark) and the batch digests, or none."""
        # Serialised per schema: two tables' first syncs must not both try to create the table.
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{self.schema}",))
        self.cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, cursor_column text, watermark jsonb, "
                "batches jsonb, synced_at timestamptz NOT NULL DEFAULT now())"
            ).format(self.ident)
        )
        batches = (
            None
            if digests is None
            else Json(
                {"read_path": digests.read_path, "batch_size": digests.batch_size, "digests": list(digests.digests)}
            )
        )
        self.cur.execute(
            sql.SQL(
                "INSERT INTO {} (table_name, cursor_column, watermark, batches) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET cursor_column = EXCLUDED.cursor_column, "
                "watermark = EXCLUDED.watermark, batches = EXCLUDED.batches, synced_at = now()"
            ).format(self.ident),
            (table, None if cursor is None else cursor[0], None if cursor is None else Json(cursor[1]), batches),
        )
