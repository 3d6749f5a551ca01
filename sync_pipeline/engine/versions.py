"""Snapshot numbers: so that no sync writes an older SQLite state over a newer one.

Two runs can hold snapshots of one file taken at different times and reach a table in either
order: run A's snapshot waits behind a lock while run B, started later, syncs a newer state;
a retry of A then writes its older rows over B's. Locks alone cannot order them, since A took
its snapshot before B.

So each snapshot gets a number when it is taken: under a transaction-level advisory lock of
the target schema, ``nextval`` of a sequence in it, then the SQLite read transactions begin,
then the lock is released. Snapshots are therefore numbered in the order they were taken, and a
later snapshot never sees less of the file than an earlier one (SQLite has a single writer and
a read transaction sees every commit made before it began). Each table's sync stores the number
it read with its rows (``_sps_sync_state.snapshot_version``, same transaction) and refuses,
loudly and writing nothing, to sync from a snapshot older than the stored one.

A sequence rather than a clock or a transaction id: it survives dump and restore of the
database and is immune to clock steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2.extensions
from psycopg2 import sql

from .errors import TargetError

SEQUENCE = "_sps_snapshots"


class SnapshotClock:
    """Numbers the snapshots read for one PostgreSQL schema; pass it as ``SqliteSnapshot(clock=...)``."""

    def __init__(self, connect: Callable[[], psycopg2.extensions.connection], schema: str) -> None:
        self.connect = connect
        self.schema = schema

    @contextmanager
    def __call__(self) -> Iterator[int]:
        """Yield the next number, holding the schema's snapshot lock until the block ends."""
        conn = self.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    raise TargetError(f"PostgreSQL schema {self.schema!r} does not exist; create it or set PG_SCHEMA")
                lock = f"sqlite_pg_sync:snapshots:{self.schema}"
                cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock,))
                sequence = sql.Identifier(self.schema, SEQUENCE)
                cur.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(sequence))
                cur.execute("SELECT nextval(%s::regclass)", (sequence.as_string(cur),))
                yield int(cur.fetchone()[0])
        finally:
            conn.close()
