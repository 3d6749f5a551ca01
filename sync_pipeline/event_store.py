"""Cheaper event writes on Dagster's local (SQLite) event storage while a sync records many tables.

Dagster's SQLite event storage opens a new connection for every event it writes (``NullPool``)
and closes it after the commit. Its databases are in WAL mode, and in WAL mode the connection
that closes last checkpoints the log into the database and deletes it: one more fsync and file
rewrite per event, and the next connection rebuilds the WAL index. Measured on this machine: 4.0
ms per connect-insert-commit-close alone, 1.2 ms while another connection to the same file stays
open. A sync of 1000 tables records about 10,000 events, each one to three such transactions.

So, while the op records its results (and the headless command creates its run),
:func:`hold_event_shards` keeps one idle connection open
to the run's database and to the cross-run index: Dagster's connections are then never the last
one, so their close is cheap; the WAL is still checkpointed as SQLite does it by itself (every
1000 pages, by the committing connection, which an idle connection does not block), and once
more when the holder closes. The holder never reads inside a transaction it keeps open and
never writes, so it cannot block Dagster or any other reader or writer.

Any other storage (PostgreSQL in ``deploy/``, in-memory in tests) has no such files: nothing is
held. Dagster's storage classes are not imported (they live in ``dagster._core``); a storage is
recognised by the one method used here, ``path_for_shard``, which maps a shard to its file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from dagster import DagsterInstance

INDEX_SHARD = "index"  # the cross-run shard of Dagster's SQLite event storage (asset and check events)


def shard_paths(instance: DagsterInstance, run_id: str | None) -> list[str]:
    """The files of the run's shard (``run_id`` None: no run yet) and of the index shard, if the
    instance stores events in SQLite files (else none)."""
    storage = instance.event_log_storage
    path_for_shard = getattr(storage, "path_for_shard", None)
    if path_for_shard is None:
        return []
    paths = [path_for_shard(shard) for shard in (run_id, INDEX_SHARD) if shard is not None]
    return [p for p in paths if isinstance(p, str) and os.path.isfile(p)]


@contextmanager
def hold_event_shards(instance: DagsterInstance, run_id: str | None) -> Iterator[int]:
    """Keep an idle connection open to each SQLite shard the run writes events to; yields how many.

    ``run_id`` None: the index shard only, for a caller about to create a run (Dagster writes an
    event per asset and per check to it, and to the run's shard, before the run starts).

    Opening one runs a single read (which maps the WAL index and registers the connection), then
    leaves no transaction open. A shard that cannot be opened is simply not held: that costs only
    speed, and Dagster's own write to it will report any real problem.
    """
    with ExitStack() as stack:
        held = 0
        for path in shard_paths(instance, run_id):
            try:
                conn = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                continue
            stack.callback(conn.close)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            except sqlite3.Error:
                continue
            held += 1
        yield held
