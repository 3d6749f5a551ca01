"""What the last sync of each table left behind, kept in the state schema (see :mod:`.bookkeeping`).

``<state schema>._sps_table_state`` holds, per (target schema, table): the shape of the table
when it was last synced, the cursor-mode watermark, the digests of the batches the last full
read sent, and the OID of the mirror they describe. The row is written in the same transaction
as the rows, and only when something in it changed: either everything commits or nothing does,
so the state never describes rows PostgreSQL does not have, and a sync that changed nothing
writes no row anywhere. Since the state no longer lives beside the mirror, it applies only to
the very table it was written for (same OID): a mirror dropped and created again, or restored
from a dump of its schema, is not described by it, and its next sync reads every row.

The number of the newest SQLite snapshot a sync of the table has used (see :mod:`.versions`)
lives in a sequence of its own, ``<state schema>._sps_version_<digest>``, not in the row: a
no-change sync from a newer snapshot must still record that number (else an older snapshot,
which may hold a state that was later undone, could be written over it), and moving a sequence
is not a row write. Why that is safe although ``setval`` is not transactional: see
:meth:`SyncState.save`.

The watermark keeps SQLite's storage class with its value (``{"class": "real", "value":
"1.7000000001234568e+18"}``): as a bare ``jsonb`` number, a large real came back as an integer
above the stored double, and ties at the watermark were no longer read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import astuple, dataclass

import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

from .bookkeeping import (
    DEFAULT_STATE_SCHEMA,
    STATE_TABLE,
    check_apart,
    ensure_state_schema,
    migrate,
    raise_sequence,
    relation_exists,
    sequence_value,
    set_sequence,
    table_oid,
    version_about,
    version_sequence,
)
from .catalog import TableEntry
from .change_detection import BatchDigests
from .naming import EXACT, PgNames
from .sqlite_source import TableInfo

__all__ = ["BatchDigests", "LastSync", "SyncState", "shape_of"]


@dataclass(frozen=True)
class LastSync:
    """One table's row of the state table, and its snapshot number."""

    shape: str | None  # shape_of() the table when it was synced; None: no state that applies
    snapshot_version: int | None  # from the table's version sequence; None: never numbered
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
    """The state of the tables of ``schema``, kept in ``state_schema``, through one cursor.

    Used inside a table's sync transaction, after its per-table advisory lock was taken: syncs
    of one table are serialised by that lock, so reading then writing its row and its version
    sequence is race-free.
    """

    def __init__(
        self,
        cur: psycopg2.extensions.cursor,
        schema: str,
        state_schema: str = DEFAULT_STATE_SCHEMA,
        source_file: str = "",
        known: TableEntry | None = None,
        names: PgNames = EXACT,
    ) -> None:
        check_apart(schema, state_schema)
        # The table's bookkeeping as read_entry() read it under the sync's lock: its row, sequence
        # and OID then need no query of their own. Not with the old layout still to migrate.
        self.known = None if known is None or known.old_layout else known
        self.cur = cur
        self.schema = schema
        self.state_schema = state_schema
        self.names = names  # how the mirror's name is spelled (naming.py), for its OID
        self.source_file = source_file  # '' for a table of one file; else each file has its own state
        self.ident = sql.Identifier(state_schema, STATE_TABLE)

    def load(self, table: str) -> LastSync | None:
        """The table's state, or None if it was never synced (with state).

        When the stored row does not describe the current mirror (another OID, or none left),
        only the snapshot number is returned: the stale check still applies, the rest does not.
        The old layout, if still in the target schema, is moved into the state schema first.
        """
        known = self._known(table)
        if known is not None:
            version, current_oid = known.version, known.oid
            row = None if known.state is None else astuple(known.state)
        else:
            migrate(self.cur, self.schema, self.state_schema)
            version = sequence_value(
                self.cur, self.state_schema, version_sequence(self.schema, table, self.source_file)
            )
            row = None
            if relation_exists(self.cur, self.state_schema, STATE_TABLE):
                self.cur.execute(
                    sql.SQL(
                        "SELECT table_oid, shape, cursor_column, watermark, batches FROM {} "
                        "WHERE target_schema = %s AND table_name = %s AND source_file = %s"
                    ).format(self.ident),
                    (self.schema, table, self.source_file),
                )
                row = self.cur.fetchone()
        if row is None:
            return None if version is None else LastSync(None, version, None, None, None)
        oid, shape, cursor_column, watermark, batches = row
        if known is None:
            current_oid = table_oid(self.cur, self.schema, table, self.names)
        if oid is None or oid != current_oid:
            return LastSync(None, version, None, None, None)
        return LastSync(
            shape=shape,
            snapshot_version=version,
            cursor_column=cursor_column,
            watermark=_untagged(watermark),
            digests=None if batches is None else BatchDigests.from_json(batches),
        )

    def save(
        self,
        table: TableInfo,
        shape: str,
        snapshot_version: int | None,
        cursor: tuple[str, int | float | str] | None = None,
        digests: BatchDigests | None = None,
        same_mirror: bool = False,
    ) -> None:
        """Make the table's state what this sync read, writing its row only if that changed, and
        move its snapshot number up to ``snapshot_version`` (never down; None: leave it).

        The row: inserted if missing (``ON CONFLICT DO NOTHING`` inserts nothing and locks
        nothing when it is there), then updated only where it differs. ``ON CONFLICT DO UPDATE
        ... WHERE`` would lock, and so dirty, the row even when it changes nothing.

        The number: a ``setval`` of the table's version sequence, last, once everything else of
        the sync is done. ``setval`` is not transactional, so a sync that fails after it (its
        commit, or the counts after it, fail) leaves the number moved on although its rows were
        rolled back. That is safe: the number only ever decides which snapshots are refused, and
        a higher one refuses more. A snapshot older than the failed one is refused although
        PostgreSQL holds an even older state; the Dagster layer then reads the table again from
        a fresh snapshot, newer than the failed one, and syncs it: conservative, never wrong.
        The other way round cannot happen: a sync whose rows commit always moved the number
        first. The sequence is created in this transaction if missing; a rollback then removes
        it along with the row it came with.

        ``same_mirror``: the mirror is still the one ``known`` describes (not created or swapped
        by this sync), so the row, sequence and OID read under the lock stand in for their queries,
        and a row that would not change is not written at all (no statement, not only no tuple).
        """
        known = self._known(table.name) if same_mirror else None
        if known is None or not known.state_table_exists:
            ensure_state_schema(self.cur, self.state_schema)
        oid = table_oid(self.cur, self.schema, table.name, self.names) if known is None else known.oid
        watermark_value = None if cursor is None else _tagged(cursor[1])
        batches_value = None if digests is None else digests.to_json()
        cursor_column = None if cursor is None else cursor[0]
        stored = None if known is None else known.state
        if stored is None or (
            stored.table_oid,
            stored.shape,
            stored.cursor_column,
            stored.watermark,
            stored.batches,
        ) != (
            oid,
            shape,
            cursor_column,
            watermark_value,
            batches_value,
        ):
            self._write_row(table, oid, shape, cursor_column, watermark_value, batches_value)
        if snapshot_version is None:
            return
        name = version_sequence(self.schema, table.name, self.source_file)
        if known is not None and known.version_sequence_exists:
            # Read under the sync's lock, which every writer of this sequence holds: still current.
            if known.version is None or snapshot_version > known.version:
                set_sequence(self.cur, self.state_schema, name, snapshot_version)
            return
        raise_sequence(
            self.cur,
            self.state_schema,
            name,
            snapshot_version,
            version_about(self.schema, table.name, self.source_file, self.names),
        )

    def _known(self, table: str) -> TableEntry | None:
        return self.known if self.known is not None and self.known.table == table else None

    def _write_row(
        self,
        table: TableInfo,
        oid: int | None,
        shape: str,
        cursor_column: str | None,
        watermark_value: object,
        batches_value: object,
    ) -> None:
        """Insert the table's row if missing, then update it only where it differs (see :meth:`save`)."""
        watermark = None if watermark_value is None else Json(watermark_value)
        batches = None if batches_value is None else Json(batches_value)
        values = (oid, shape, cursor_column, watermark, batches)
        self.cur.execute(
            sql.SQL(
                "INSERT INTO {} (target_schema, table_name, source_file, table_oid, shape, cursor_column, watermark, "
                "batches) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb) "
                "ON CONFLICT (target_schema, table_name, source_file) DO NOTHING"
            ).format(self.ident),
            (self.schema, table.name, self.source_file, *values),
        )
        self.cur.execute(
            sql.SQL(
                "UPDATE {} SET table_oid = %s, shape = %s, cursor_column = %s, watermark = %s::jsonb, "
                "batches = %s::jsonb, changed_at = now() "
                "WHERE target_schema = %s AND table_name = %s AND source_file = %s "
                "AND (table_oid, shape, cursor_column, watermark, batches) "
                "IS DISTINCT FROM (%s::oid, %s::text, %s::text, %s::jsonb, %s::jsonb)"
            ).format(self.ident),
            (*values, self.schema, table.name, self.source_file, *values),
        )
