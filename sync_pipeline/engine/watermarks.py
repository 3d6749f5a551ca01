"""Cursor watermarks, kept in PostgreSQL next to the data they describe.

A table synced in cursor mode stores the highest cursor value of the snapshot it loaded in
``<schema>._sps_watermarks``, written in the same transaction as the rows: either both commit
or neither does, so a watermark never claims rows PostgreSQL does not have.
"""

from __future__ import annotations

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

WATERMARKS_TABLE = "_sps_watermarks"


class Watermarks:
    def __init__(self, cur: psycopg2.extensions.cursor, schema: str) -> None:
        self.cur = cur
        self.ident = sql.Identifier(schema, WATERMARKS_TABLE)
        self.schema = schema

    def get(self, table: str, column: str) -> object | None:
        """The stored watermark, or None if there is none for this table and cursor column."""
        self.cur.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (self.schema, WATERMARKS_TABLE)
        )
        if self.cur.fetchone() is None:
            return None
        self.cur.execute(
            sql.SQL("SELECT watermark FROM {} WHERE table_name = %s AND cursor_column = %s").format(self.ident),
            (table, column),
        )
        row = self.cur.fetchone()
        return None if row is None else row[0]

    def put(self, table: str, column: str, watermark: object) -> None:
        # Serialised per schema: two tables' first syncs must not both try to create the table.
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{self.schema}",))
        self.cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, cursor_column text NOT NULL, "
                "watermark jsonb NOT NULL, synced_at timestamptz NOT NULL DEFAULT now())"
            ).format(self.ident)
        )
        self.cur.execute(
            sql.SQL(
                "INSERT INTO {} (table_name, cursor_column, watermark) VALUES (%s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET cursor_column = EXCLUDED.cursor_column, "
                "watermark = EXCLUDED.watermark, synced_at = now()"
            ).format(self.ident),
            (table, column, Json(watermark)),
        )
