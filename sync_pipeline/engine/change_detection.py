"""How a full read is cut into batches, and the batch digests a later full read compares with.

A full-scan sync reads every row, but sends PostgreSQL only the batches whose digest differs
from the last sync's: PostgreSQL has had the others' rows since that sync committed. What a
change costs therefore depends on how many batches it touches, which depends on where the
batch boundaries lie:

* **By key** (:attr:`Batching.shift` set): a table whose key is its rowid (``INTEGER PRIMARY KEY``)
  is read in key order (free: it is stored so) and cut where ``key >> shift`` changes: batch *n*
  holds the rows whose key lies in ``[n << shift, (n + 1) << shift)``. A boundary depends on the
  key alone, never on the rows before it, so a row inserted or deleted in the middle changes the
  digest of its own batch and no other, and an append touches only the last batch or new ones.
  ``shift`` is chosen from the key span and the row count (about :data:`TARGET_ROWS` rows a
  batch) and kept while that stays near the target. Keys are unique integers, so a batch never
  holds more than ``2**shift`` rows; keys too sparse for a small ``shift`` are read by position.

  Batch ids are key ranges PostgreSQL can compute too, which makes ``delete_orphans`` cheap:
  when the last sync left PostgreSQL equal to SQLite (:attr:`BatchDigests.exact`), an orphan can
  only lie in a batch whose digest changed or which is gone, and every key of such a batch was
  just staged; so only those key ranges are searched (see ``PgTable.delete_orphans_in``).

* **By position** (any other table): batch *n* is rows ``[n * batch_size, (n + 1) * batch_size)``
  in SQLite's order. A row inserted or deleted shifts every later boundary, and orphans are found
  by staging every key. Exact all the same, only slower when rows move.

A scattered update (1% of the rows anywhere) still changes nearly every batch: of a changed
batch, only the rows whose hash is new are sent (row_digests.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .sqlite_source import TableInfo, quote_sqlite_identifier

TARGET_ROWS = 4096  # rows per batch read by key: small enough that a change resends little
# The most rows a batch read by key may hold, in targets: no range spans more than this many keys. It
# also keeps (n << shift) + 2**shift - 1 far inside a bigint in PostgreSQL for every n.
_MAX_SPREAD = 8
# Keep the last shift while its batches hold, on average, 1/16 to 4 times the target rows: a new
# shift changes every batch, and the average is only an estimate (one far-off key skews it).
_KEEP_BELOW, _KEEP_ABOVE = 16.0, 4.0


@dataclass(frozen=True)
class Batching:
    """Where a full read's batch boundaries lie (see the module docstring)."""

    batch_rows: int  # rows per batch by position; by key, rows per read from SQLite
    key_index: int | None = None  # the key's column in the read, when batches are key ranges
    shift: int = 0

    @property
    def by_key(self) -> bool:
        return self.key_index is not None

    def describe(self) -> dict[str, int | None]:
        return {"batch_size": self.batch_rows, "key_shift": self.shift if self.by_key else None}


@dataclass(frozen=True)
class BatchDigests:
    """The digests of each batch of the last full read, by batch id (see the module docstring).

    They only say something about a later read made the same way: same read path (the two
    paths write some numbers differently) and same batching (same boundaries). ``exact``: that
    sync left PostgreSQL holding exactly the rows SQLite had (no orphan kept).
    """

    read_path: str
    batching: Mapping[str, int | None]  # Batching.describe() of the read
    digests: Mapping[int, str] = field(default_factory=dict)
    exact: bool = False

    def matches(self, read_path: str, batching: Batching) -> bool:
        return self.read_path == read_path and dict(self.batching) == batching.describe()

    def to_json(self) -> dict[str, object]:
        return {
            "read_path": self.read_path,
            **self.batching,
            "exact": self.exact,
            "digests": {str(k): v for k, v in self.digests.items()},
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, object]) -> BatchDigests:
        """Also reads the layout from before batches by key (a list, by position; never exact)."""
        digests = stored["digests"]
        by_id = dict(enumerate(digests)) if isinstance(digests, list) else {int(k): v for k, v in digests.items()}  # type: ignore[attr-defined]
        batching = {"batch_size": stored["batch_size"], "key_shift": stored.get("key_shift")}
        return cls(str(stored["read_path"]), batching, by_id, bool(stored.get("exact", False)))  # type: ignore[arg-type]


def key_column(table: TableInfo) -> int | None:
    """The key column, if batches can be key ranges: a rowid alias (``INTEGER PRIMARY KEY``, see
    ``TableInfo.rowid_key``), so every value is an integer, the table is stored in its order, and a
    range of ``2**shift`` keys holds at most ``2**shift`` rows; mirrored as ``bigint``."""
    if not table.rowid_key:
        return None
    (index,) = table.key_indexes
    return index if table.columns[index].pg_type.name == "bigint" else None


def plan(
    table: TableInfo, batch_rows: int, rows: int, key_span: tuple[int, int] | None, last: BatchDigests | None
) -> Batching:
    """The batching of this read: by key where :func:`key_column` allows, keeping the last shift
    while it still gives batches near :data:`TARGET_ROWS` (a new shift changes every batch)."""
    index = key_column(table)
    if index is None:
        return Batching(batch_rows)
    target = min(TARGET_ROWS, batch_rows)
    span = 1 if key_span is None else key_span[1] - key_span[0] + 1
    previous = None if last is None else last.batching.get("key_shift")
    if isinstance(previous, int) and last is not None and last.batching.get("batch_size") == batch_rows:
        per_batch = rows * 2**previous / span if rows else target
        if target / _KEEP_BELOW <= per_batch <= target * _KEEP_ABOVE and 2**previous <= target * _MAX_SPREAD:
            return Batching(batch_rows, index, previous)
    # Rounded down: on dense keys a batch holds at most ``target`` rows, the rows a read takes at once.
    shift = 0 if rows == 0 else math.floor(math.log2(max(1.0, span * target / rows)))
    if 2**shift > target * _MAX_SPREAD:
        # Keys this sparse (or one far-off key, or clusters far apart) would make ranges either tiny or,
        # where the keys crowd, huge: a range of 2**shift keys may hold that many rows. By position then.
        return Batching(batch_rows)
    return Batching(batch_rows, index, shift)


def order_by(table: TableInfo, batching: Batching) -> str:
    """The ORDER BY of a read cut by key (free: the table is stored in that order); else none."""
    if batching.key_index is None:
        return ""
    return f" ORDER BY {quote_sqlite_identifier(table.columns[batching.key_index].name)}"


def numbered(
    batches: Iterable[list[tuple[object, ...]]], batching: Batching
) -> Iterator[tuple[int, list[tuple[object, ...]]]]:
    """(batch id, rows) of rows read in batches: by position, or regrouped by key range."""
    if batching.key_index is None:
        yield from enumerate(batches)
        return
    index, shift = batching.key_index, batching.shift
    pending: list[tuple[object, ...]] = []
    pending_id = 0
    for batch in batches:
        for row in batch:
            batch_id = row[index] >> shift  # type: ignore[operator]
            if pending and batch_id != pending_id:
                yield pending_id, pending
                pending = []
            pending.append(row)
            pending_id = batch_id
    if pending:
        yield pending_id, pending
