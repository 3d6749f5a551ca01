"""Cheaper event writes on Dagster's local (SQLite) event storage while a sync records many tables.

Dagster's SQLite event storage (1.13) writes every event on connections of its own: a new
SQLAlchemy engine and a new SQLite connection per transaction (``NullPool``), closed after the
commit. An asset event is two to four such transactions (the run's database, then the cross-run
index: the event again, the asset's row, the check's execution row, and a connection just to ask
whether the checks table exists). Two costs of each transaction are the file system's, not
Python's, and both are cut here, only for the files of Dagster's event shards and only while a
sync records (the :func:`hold_event_shards` scope):

* **The checkpoint at every close.** The databases are in WAL mode, and in WAL mode the
  connection that closes last checkpoints the log into the database (fsyncs) and deletes it; the
  next connection rebuilds the WAL index. Measured on this machine: 4.0 ms per
  connect-insert-commit-close alone, 1.2 ms while another connection to the file stays open. So
  one idle connection is held open to each shard: Dagster's connections are then never the last
  one. The WAL is still checkpointed as SQLite does it by itself (every 1000 pages, by the
  committing connection, which an idle connection does not block), and once more when the holder
  closes. The holder never reads inside a transaction it keeps open and never writes, so it
  cannot block Dagster or any other reader or writer.
* **The fsync at every commit.** SQLite's default ``synchronous=FULL`` syncs the WAL at each
  commit. A listener on SQLAlchemy's public ``connect`` event sets ``PRAGMA synchronous=NORMAL``
  on each new connection to a shard file that is in WAL mode: the WAL is then synced only when it
  is checkpointed. In WAL mode this cannot corrupt the database (SQLite's documentation); what it
  gives up is durability of the last commits on a power loss or an operating-system crash (not a
  process crash): the newest events of the run may be missing from the history after such a
  crash. The sync's data in PostgreSQL is not affected. A connection in another journal mode is
  left as it is (``NORMAL`` is only corruption-safe with WAL).

The listener is on SQLAlchemy's ``Engine`` class (Dagster creates an engine per transaction, so
there is no engine to listen on), added when the scope starts and removed when it ends; a
connection to any other file (another SQLite database, Dagster's run storage) is left alone. It
also holds, lazily, a shard first opened during the scope: the run's own database, which Dagster
creates with the run's first event (the planned events, when this process creates the run).

Any other storage (PostgreSQL in ``deploy/``, in-memory in tests) has no such files: nothing is
held or tuned. Dagster's storage classes are not imported (they live in ``dagster._core``); a
storage is recognised by the one method used here, ``path_for_shard``, which maps a shard to its
file, and its shards by being ``.db`` files in that file's folder.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from dagster import DagsterInstance
from sqlalchemy import event
from sqlalchemy.engine import Engine

INDEX_SHARD = "index"  # the cross-run shard of Dagster's SQLite event storage (asset and check events)
SYNCHRONOUS = "NORMAL"  # SQLite's PRAGMA synchronous on shard connections during the scope
SYNCHRONOUS_LEVEL = 1  # what ``PRAGMA synchronous`` reads back for NORMAL


def shard_paths(instance: DagsterInstance, run_id: str | None) -> list[str]:
    """The files of the run's shard (``run_id`` None: no run yet) and of the index shard, if the
    instance stores events in SQLite files (else none)."""
    storage = instance.event_log_storage
    path_for_shard = getattr(storage, "path_for_shard", None)
    if path_for_shard is None:
        return []
    paths = [path_for_shard(shard) for shard in (run_id, INDEX_SHARD) if shard is not None]
    return [p for p in paths if isinstance(p, str) and os.path.isfile(p)]


def _shard_folder(instance: DagsterInstance) -> str | None:
    """The folder of the instance's event shards, or None when its events are not SQLite files."""
    path_for_shard = getattr(instance.event_log_storage, "path_for_shard", None)
    if path_for_shard is None:
        return None
    index = path_for_shard(INDEX_SHARD)
    return os.path.realpath(os.path.dirname(index)) if isinstance(index, str) else None


class EventShards:
    """What one :func:`hold_event_shards` scope did: the shard files it holds open, and how many of
    Dagster's connections to them it set to ``synchronous=NORMAL``.

    Thread-safe: Dagster writes events from the op's thread and, for log lines, from the sync
    workers' threads, and each new connection runs :meth:`on_connect` in the thread that opens it.
    """

    def __init__(self, folder: str | None, stack: ExitStack) -> None:
        self.folder = folder
        self._stack = stack
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._shards: dict[str, str | None] = {}  # a database's name as SQLite reports it -> shard path or None
        self._wal: set[str] = set()  # shards seen in WAL mode
        self.tuned = 0

    @property
    def held(self) -> frozenset[str]:
        """The real paths of the shard files held open."""
        with self._lock:
            return frozenset(self._held)

    def hold(self, path: str) -> bool:
        """Keep an idle connection open to ``path`` until the scope ends; False if it cannot be.

        Opening one runs a single read (which maps the WAL index and registers the connection), then
        leaves no transaction open. A shard that cannot be opened is simply not held: that costs
        only speed, and Dagster's own write to it will report any real problem.
        """
        real = os.path.realpath(path)
        with self._lock:
            if real in self._held:
                return True
            try:
                conn = sqlite3.connect(real, timeout=1.0, isolation_level=None, check_same_thread=False)
            except sqlite3.Error:
                return False
            self._stack.callback(conn.close)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            except sqlite3.Error:
                return False
            self._held.add(real)
            return True

    def on_connect(self, dbapi_connection: Any, _connection_record: Any) -> None:
        """SQLAlchemy's ``connect`` event, for every new DBAPI connection in this process while the
        scope lasts: a connection to one of the shard files in WAL mode gets ``synchronous=NORMAL``,
        and its file a holder. Anything else is left untouched."""
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        shard = self._shard_of(dbapi_connection)
        if shard is None:
            return
        if shard not in self._wal:  # once in WAL mode, a database stays in it (the mode is in its header)
            (mode,) = dbapi_connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":  # a shard Dagster is creating: not yet in WAL mode
                return
            self._wal.add(shard)
        dbapi_connection.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        with self._lock:
            self.tuned += 1
        self.hold(shard)

    def _shard_of(self, dbapi_connection: sqlite3.Connection) -> str | None:
        """The real path of the connection's main database if it is one of the shard files, else None.
        Paths are resolved once each: Dagster opens the same few files thousands of times."""
        names = [row[2] for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main"]
        if not names or not names[0]:  # an in-memory or temporary database
            return None
        name = names[0]
        if name not in self._shards:
            real = os.path.realpath(name)
            self._shards[name] = real if real.endswith(".db") and os.path.dirname(real) == self.folder else None
        return self._shards[name]


@contextmanager
def hold_event_shards(instance: DagsterInstance, run_id: str | None) -> Iterator[EventShards]:
    """While it lasts, Dagster's writes to the instance's SQLite event shards skip the checkpoint at
    each close and the fsync at each commit (module docstring); yields what it did.

    ``run_id`` None: the index shard only, up front, for a caller about to create a run (Dagster
    writes an event per asset and per check to it, and to the run's shard, before the run starts;
    the run's shard is held as soon as Dagster has created it).
    """
    folder = _shard_folder(instance)
    with ExitStack() as stack:
        shards = EventShards(folder, stack)
        for path in shard_paths(instance, run_id):
            shards.hold(path)
        if folder is None:
            yield shards
            return
        event.listen(Engine, "connect", shards.on_connect)
        try:
            yield shards
        finally:  # before the holders close, so that no connection opened meanwhile adds one
            event.remove(Engine, "connect", shards.on_connect)
