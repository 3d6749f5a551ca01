"""A digest of every row of a batch, so that a batch that changed resends only its changed rows.

Batch digests (change_detection.py) leave out the batches that did not change. A scattered
update (1% of the rows, anywhere) changes nearly every batch, though, and resending whole
batches then costs as much as the first load. So for each batch a sync sends, it also keeps a
64-bit hash of each row as COPY sent it (xxh3): its text line (about 0.13 µs a line), or its
binary tuple (0.27 µs a row, cutting the tuples apart included; copy_format.py). When that
batch changes later, only the rows whose hash is not among the batch's last hashes are sent:
every other row is, byte for byte, a row PostgreSQL has held since that sync committed.

**Exact.** A line (or tuple) carries the row's key and every value, and keys are unique, so a
changed or new row's line is a line the batch never had. It is left out only if its 64-bit hash
equals one of the batch's last hashes: about ``rows_in_batch / 2**64`` (2e-16 for 4,096 rows)
per changed row. The last hashes of a batch are used only if they were taken of the very batch
the last sync recorded (their stored batch digest is the one the state row holds for that id,
tagged with the format the rows were hashed in: hashes of text lines are never compared with
binary tuples, so a change of format sends each changed batch whole once), and the state row
describes only the mirror it was written for (sync_state.py); otherwise the
batch is sent whole, as before.

**Where they live.** ``<state schema>._sps_row_digests``: one row per batch (``batch_id``, the
batch ``digest`` the hashes were taken of, ``hashes``: 8 bytes a row), written in the sync's own
transaction, only for the batches it sent, and deleted for the batches that are gone. About
8 MB for a million rows.

**What they cost.** They are read before the COPY (one query) and held in memory while it runs,
8 bytes a row: so only for tables of more than :data:`MIN_BATCHES` batches and at most
:data:`MAX_ROWS` rows. A smaller table is cheap to resend, and its sync saves the round trips; a larger one keeps
batch digests only, so the syncing process stays within its memory budget (32 MB at most here).

**Orphans.** A batch sent in part no longer stages all its keys, so ``delete_orphans`` then reads
the keys of the changed batches from SQLite (see ``sync._merge_by_key``).
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import psycopg2.extensions
import xxhash
from psycopg2 import sql

from . import copy_format
from .bookkeeping import ROW_DIGESTS_TABLE, ensure_row_digests_table, relation_exists
from .change_detection import TARGET_ROWS, Batching
from .copy_format import BinaryRows
from .types import TEXT

# Below: a table of one or two batches, cheap to resend whole; its sync saves the round trips.
MIN_BATCHES = 2
MAX_ROWS = 4_000_000  # above: 8 bytes a row held during the sync would pass 32 MB

_hash = xxhash.xxh3_64_intdigest
_FETCH_BATCHES = 16  # batches of hashes per fetch when loading (about 0.5 MB)


def applies(rows: int, batching: Batching) -> bool:
    """Whether a table of ``rows`` rows, read in ``batching``'s batches, keeps row digests (see the
    module docstring)."""
    per_batch = min(TARGET_ROWS, batching.batch_rows) if batching.by_key else batching.batch_rows
    return MIN_BATCHES * per_batch < rows <= MAX_ROWS


@dataclass
class RowDigests:
    """One table's row hashes: the last sync's (``before``, by batch id: (batch digest, hashes), each
    dropped once its batch was read) and those of the batches this read sent (``taken``), which
    :meth:`save` stores. So the sync holds about 8 bytes a row, not 16."""

    before: dict[int, tuple[str, bytes]]
    taken: dict[int, tuple[str, bytes]] = field(default_factory=dict)
    held_back: int = 0  # rows of changed batches not sent: their lines are the last sync's

    def __post_init__(self) -> None:
        self.kept_ids = frozenset(self.before)  # the batches that have hashes kept: those gone are dropped

    def restart(self) -> None:
        """A new read of the table (the Arrow path handed it to the exact path): forget what was taken.
        Hashes already dropped from ``before`` are not needed again: their batches are sent whole."""
        self.taken = {}
        self.held_back = 0

    def changed_lines(
        self, batch_id: int, last_digest: str | None, digest: str, data: bytes | BinaryRows
    ) -> tuple[bytes, int]:
        """The COPY rows of batch ``batch_id`` (``data``: text lines, or binary tuples; digest ``digest``)
        that PostgreSQL may not hold, and how many. ``last_digest``: the batch's digest at the last sync
        (None: none kept, or kept for another read), whose row hashes, if kept, tell the rows it has."""
        if isinstance(data, BinaryRows):
            whole, lines, end, fmt = data.data, data.rows(), b"", copy_format.BINARY
        else:
            whole, lines, end, fmt = data, data.split(b"\n"), b"\n", copy_format.TEXT
            lines.pop()  # the text ends with a newline
        hashes = array("Q", map(_hash, lines))
        self.taken[batch_id] = (fmt.digest_tag + digest, hashes.tobytes())
        kept = self.before.pop(batch_id, None)
        if last_digest is None or kept is None or kept[0] != fmt.digest_tag + last_digest:
            return whole, len(lines)
        # Set operations in C; the order of the rows sent does not matter to the merge.
        by_hash = dict(zip(hashes, lines, strict=True))
        if len(by_hash) != len(lines):  # two rows of one hash (equal rows, or a collision): send them all
            return whole, len(lines)
        held = array("Q")
        held.frombytes(kept[1])
        changed = [by_hash[h] for h in by_hash.keys() - set(held)]
        self.held_back += len(lines) - len(changed)
        if not changed:
            return b"", 0
        return end.join(changed) + end, len(changed)


def load(
    cur: psycopg2.extensions.cursor, state_schema: str, target_schema: str, table: str, source_file: str
) -> RowDigests:
    """The row hashes kept by the table's last syncs (none if the table for them does not exist yet),
    fetched a few batches at a time: the result of one fetch would hold them twice, as hex."""
    if not relation_exists(cur, state_schema, ROW_DIGESTS_TABLE):
        return RowDigests({})
    before: dict[int, tuple[str, bytes]] = {}
    with cur.connection.cursor(name="_sps_row_digests") as rows:
        rows.itersize = _FETCH_BATCHES
        rows.execute(
            sql.SQL(
                "SELECT batch_id, digest, hashes FROM {} "
                "WHERE target_schema = %s AND table_name = %s AND source_file = %s"
            ).format(sql.Identifier(state_schema, ROW_DIGESTS_TABLE)),
            (target_schema, table, source_file),
        )
        for batch_id, digest, hashes in rows:
            before[int(batch_id)] = (digest, bytes(hashes))
    return RowDigests(before)


def save(
    cur: psycopg2.extensions.cursor,
    state_schema: str,
    target_schema: str,
    table: str,
    source_file: str,
    digests: RowDigests,
    batch_ids: Iterable[int],
) -> None:
    """Keep the hashes of the batches this sync sent, and drop those of the batches gone (not among
    ``batch_ids``, the batches read). Nothing is written when nothing was sent or gone. The rows go
    through COPY a batch at a time, so they are never all in memory as text."""
    gone = digests.kept_ids - set(batch_ids)
    if not digests.taken and not gone:
        return
    ensure_row_digests_table(cur, state_schema)
    ident = sql.Identifier(state_schema, ROW_DIGESTS_TABLE)
    cur.execute(
        sql.SQL(
            "DELETE FROM {} WHERE target_schema = %s AND table_name = %s AND source_file = %s "
            "AND batch_id = ANY(%s::bigint[])"
        ).format(ident),
        (target_schema, table, source_file, sorted(set(digests.taken) | gone)),
    )
    if digests.taken:
        names = "\t".join(TEXT.encode(name) for name in (target_schema, table, source_file))
        lines = (
            f"{names}\t{batch_id}\t{digest}\t\\\\x{hashes.hex()}\n".encode()
            for batch_id, (digest, hashes) in digests.taken.items()
        )
        statement = sql.SQL("COPY {} (target_schema, table_name, source_file, batch_id, digest, hashes) FROM STDIN")
        cur.copy_expert(statement.format(ident).as_string(cur), LineStream(lines))


class LineStream(io.RawIOBase):
    """The file object COPY reads: one line at a time from a generator."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self.lines = lines

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return next(self.lines, b"")
