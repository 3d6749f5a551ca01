"""Snapshot numbers: so that no sync writes an older SQLite state over a newer one.

Two runs can hold snapshots of one file taken at different times and reach a table in either
order: run A's snapshot waits behind a lock while run B, started later, syncs a newer state;
a retry of A then writes its older rows over B's. Locks alone cannot order them, since A took
its snapshot before B.

So each snapshot gets a number when it is taken: under a transaction-level advisory lock of
the target schema, ``nextval`` of the target schema's sequence in the state schema
(``<state schema>._sps_snapshots_<digest>``, see :mod:`.bookkeeping`), then the SQLite read
transactions begin, then the lock is released. Snapshots are therefore numbered in the order they
were taken, and a later snapshot never sees less of the file than an earlier one (SQLite has a
single writer and a read transaction sees every commit made before it began). Each table's sync
moves the table's own version sequence up to the number it read (see ``SyncState.save``) and
refuses, loudly and writing nothing, to sync from a snapshot older than that.

One sequence per target schema, not one for the whole state schema: numbers are only ever
compared within one target schema, and every ``nextval`` of a schema's sequence happens under
that schema's lock, so carrying the old layout's number over (a ``setval``, see
``bookkeeping.migrate``) can never move it below a number already handed out.

A sequence rather than a clock or a transaction id: it survives dump and restore of the
database and is immune to clock steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2.extensions
from psycopg2 import sql

from .bookkeeping import (
    DEFAULT_STATE_SCHEMA,
    check_apart,
    ensure_sequence,
    ensure_state_schema,
    migrate,
    snapshot_lock,
    snapshot_sequence,
    snapshots_about,
)
from .errors import TargetError


class SnapshotClock:
    """Numbers the snapshots read for one PostgreSQL schema; pass it as ``SqliteSnapshot(clock=...)``.

    ``state_schema`` is where the numbers are kept (``PG_STATE_SCHEMA``); it is created on first use.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg2.extensions.connection],
        schema: str,
        state_schema: str = DEFAULT_STATE_SCHEMA,
    ) -> None:
        self.connect = connect
        self.schema = schema
        self.state_schema = state_schema

    @contextmanager
    def __call__(self) -> Iterator[int]:
        """Yield the next number, holding the schema's snapshot lock until the block ends."""
        check_apart(self.schema, self.state_schema)
        conn = self.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
                if cur.fetchone() is None:
                    raise TargetError(f"PostgreSQL schema {self.schema!r} does not exist; create it or set PG_SCHEMA")
                snapshot_lock(cur, self.schema)
                # The old layout's number first, so the next one is past every number handed out.
                migrate(cur, self.schema, self.state_schema)
                ensure_state_schema(cur, self.state_schema)
                name = snapshot_sequence(self.schema)
                ensure_sequence(cur, self.state_schema, name, snapshots_about(self.schema))
                sequence = sql.Identifier(self.state_schema, name)
                cur.execute("SELECT nextval(%s::regclass)", (sequence.as_string(cur),))
                yield int(cur.fetchone()[0])
        finally:
            conn.close()
