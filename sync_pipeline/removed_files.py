"""Files that leave the folder, and come back: one rule for the sensor and the headless command.

A partition whose file is gone keeps its rows (and its partition, so its history stays), unless
``SYNC_DELETE_REMOVED_FILES=1``: then its rows and its bookkeeping go, in one transaction, and so does
its partition. The removal is recorded in the instance (its key-value store, beside the daemons'
cursors), with its time, because a file can come back later exactly as it was (an NFS mount that drops
and returns, a folder moved away and back): its fingerprint then says "synced already" while
PostgreSQL no longer has its rows. Every decision to skip a file as synced already (the sensor's
"unchanged since the last successful sync", the headless command's skip by fingerprint) first asks
:func:`synced_since_removal`: a run created before the removal does not count.

A sync of the file still running when the rows are deleted cannot write them back: the engine checks,
under each table's (table, file) lock, that the file is still there (engine/scope.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dagster import DagsterInstance, RunRecord

from .config import env_flag
from .engine.scope import delete_source_file
from .partitions import Folder, add_partitions
from .resources import PostgresTarget

_PREFIX = "sqlite_pg_sync/removed"


def _kv_key(partitions: str, key: str) -> str:
    return f"{_PREFIX}/{partitions}/{key}"


def removed_at(instance: DagsterInstance, partitions: str, keys: Iterable[str]) -> dict[str, float]:
    """When each of ``keys`` last had its rows deleted as a removed file (UNIX time); keys never removed are absent."""
    wanted = {_kv_key(partitions, key): key for key in keys}
    if not wanted:
        return {}
    values = instance.run_storage.get_cursor_values(set(wanted))
    return {wanted[k]: float(v) for k, v in values.items() if v}


def synced_since_removal(record: RunRecord, removed: float | None) -> bool:
    """Whether the run ``record`` can vouch for PostgreSQL's rows of its file: it began after the
    file's last removal (or the file was never removed)."""
    return removed is None or record.create_timestamp.timestamp() > removed


@dataclass(frozen=True)
class Reconciled:
    """What :func:`reconcile` did: the partitions it added, the gone files whose rows it deleted (key -> rows
    per table), and the gone files whose rows it kept."""

    added: list[str] = field(default_factory=list)
    deleted: dict[str, dict[str, int]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


def reconcile(
    instance: DagsterInstance,
    partitions: str,
    folder: Folder,
    postgres: PostgresTarget | None,
    say: Callable[[str], None] = lambda _line: None,
) -> Reconciled:
    """Make the partitions ``partitions`` follow the folder: a new file becomes a partition; a gone one
    keeps its rows, or with ``SYNC_DELETE_REMOVED_FILES=1`` (and ``postgres`` given) loses them, its
    bookkeeping and its partition (see the module docstring)."""
    known = instance.get_dynamic_partitions(partitions)
    added = add_partitions(instance, partitions, list(folder.files))
    gone = sorted(set(known) - set(folder.files))
    if not gone:
        return Reconciled(added=added)
    if not env_flag("SYNC_DELETE_REMOVED_FILES") or postgres is None:
        return Reconciled(added=added, kept=gone)
    deleted = delete_removed(instance, partitions, postgres, gone)
    for key, tables in deleted.items():
        say(f"{key}: file removed; deleted its rows ({sum(tables.values()):,} in {len(tables)} tables) and partition")
    return Reconciled(added=added, deleted=deleted)


def delete_removed(
    instance: DagsterInstance, partitions: str, postgres: PostgresTarget, keys: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Delete each removed file's rows and bookkeeping (one transaction per file), record the removal,
    then drop its partition: key -> rows deleted per table."""
    deleted: dict[str, dict[str, int]] = {}
    conn = postgres.connect()
    try:
        for key in keys:
            deleted[key] = delete_source_file(conn, postgres.pg_schema, key, postgres.state_schema)
            # Recorded after the delete commits: a run created in between may have synced nothing of it.
            instance.run_storage.set_cursor_values({_kv_key(partitions, key): repr(time.time())})
            instance.delete_dynamic_partition(partitions, key)
    finally:
        conn.close()
    return deleted
