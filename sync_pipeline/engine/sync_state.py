"""What the last sync of each table left behind, kept in PostgreSQL next to the data it describes.

``<schema>._sps_sync_state`` holds, per table: the number of the SQLite snapshot it was synced
from (see :mod:`.versions`), the shape of the table then, the cursor-mode watermark and the
digests of the batches the last full read sent. All of it is written in the same transaction as
the rows: either everything commits or nothing does, so the state never describes rows
PostgreSQL does not have.

The watermark keeps SQLite's storage class with its value (``{"class": "real", "value":
"1.7000000001234568e+18"}``): as a bare ``jsonb`` number, a large real came back as an integer
above the stored double, and ties at the watermark were no longer read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

from .sqlite_source import TableInfo

STATE_TABLE = "_sps_sync_state"
# Added after the first layout; a state table from before gets them on its next save.
_LATER_COLUMNS = {"shape": "text", "snapshot_version": "bigint"}


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


@dataclass(frozen=True)
class LastSync:
    """One table's row of the state table."""

    shape: str | None  # shape_of() the table when it was synced; None in rows from before shapes
    snapshot_version: int | None
    cursor_column: str | None
    watermark: object  # an int, float or str exactly as SQLite held it; None: none stored
    digests: BatchDigests | None


def shape_of(table: TableInfo, schema_version: int) -> str:
    """A digest of what decides the PostgreSQL rows: columns, their types, the key, and the file's
    schema version (SQLite's schema cookie, which every schema change moves on).

    A watermark or batch digests recorded under another shape say nothing about this one: a
    column added with a DEFAULT gives every old row a value, though no row's cursor moved. The
    cookie is there for changes that leave the columns as they were: a column dropped and added
    again under the same name and type also gives every row a new value.
    """
    described = [[c.name, c.declared_type, c.pg_type.name, c.not_null, c.pk_position] for c in table.columns]
    return hashlib.blake2b(json.dumps([described, schema_version]).encode(), digest_size=16).hexdigest()


_CLASSES = {int: "integer", float: "real", str: "text"}
_PARSE = {"integer": int, "real": float, "text": str}


def _tagged(watermark: int | float | str) -> dict[str, str]:
    value = repr(watermark) if type(watermark) is float else str(watermark)
    return {"class": _CLASSES[type(watermark)], "value": value}


def _untagged(stored: object) -> object:
    """The watermark as SQLite held it; None for anything else (a layout from before classes)."""
    if isinstance(stored, dict) and stored.get("class") in _PARSE and isinstance(stored.get("value"), str):
        return _PARSE[stored["class"]](stored["value"])
    return None


class SyncState:
    def __init__(self, cur: psycopg2.extensions.cursor, schema: str) -> None:
        self.cur = cur
        self.schema = schema
        self.ident = sql.Identifier(schema, STATE_TABLE)

    def _exists(self) -> bool:
        self.cur.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (self.schema, STATE_TABLE))
        return self.cur.fetchone() is not None

    def load(self, table: str) -> LastSync | None:
        """The table's state, or None if it was never synced (with state)."""
        if not self._exists():
            return None
        # to_jsonb reads the row whichever columns this state table has.
        self.cur.execute(
            sql.SQL("SELECT to_jsonb(s) FROM {} AS s WHERE table_name = %s").format(self.ident),
            (table,),
        )
        found = self.cur.fetchone()
        if found is None:
            return None
        row = found[0]
        batches = row.get("batches")
        return LastSync(
            shape=row.get("shape"),
            snapshot_version=row.get("snapshot_version"),
            cursor_column=row.get("cursor_column"),
            watermark=_untagged(row.get("watermark")),
            digests=None
            if batches is None
            else BatchDigests(batches["read_path"], batches["batch_size"], tuple(batches["digests"])),
        )

    def _ensure_table(self) -> None:
        # Serialised per schema: two tables' first syncs must not both try to create the table.
        self.cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{self.schema}",))
        self.cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_name text PRIMARY KEY, cursor_column text, watermark jsonb, "
                "batches jsonb, synced_at timestamptz NOT NULL DEFAULT now(), shape text, snapshot_version bigint)"
            ).format(self.ident)
        )
        self.cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (self.ident.as_string(self.cur),),
        )
        have = {r[0] for r in self.cur.fetchall()}
        for name, kind in _LATER_COLUMNS.items():
            if name not in have:  # once per state table: ALTER locks it for the rest of the transaction
                self.cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(self.ident, sql.Identifier(name), sql.SQL(kind))
                )

    def save(
        self,
        table: TableInfo,
        shape: str,
        snapshot_version: int | None,
        cursor: tuple[str, int | float | str] | None = None,
        digests: BatchDigests | None = None,
    ) -> None:
        """Replace the table's state with what this sync read."""
        self._ensure_table()
        batches = (
            None
            if digests is None
            else Json(
                {"read_path": digests.read_path, "batch_size": digests.batch_size, "digests": list(digests.digests)}
            )
        )
        self.cur.execute(
            sql.SQL(
                "INSERT INTO {} (table_name, cursor_column, watermark, batches, shape, snapshot_version) "
                "VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET cursor_column = EXCLUDED.cursor_column, "
                "watermark = EXCLUDED.watermark, batches = EXCLUDED.batches, shape = EXCLUDED.shape, "
                "snapshot_version = greatest({}.snapshot_version, EXCLUDED.snapshot_version), synced_at = now()"
            ).format(self.ident, self.ident),
            (
                table.name,
                None if cursor is None else cursor[0],
                None if cursor is None else Json(_tagged(cursor[1])),
                batches,
                shape,
                snapshot_version,
            ),
        )
