"""One table's rows, from the SQLite snapshot into one PostgreSQL COPY, with the two overlapping.

A producer thread reads and encodes a batch while the main thread streams the previous batch
to PostgreSQL, so the server parses and stores rows while the next ones are prepared (SQLite,
Arrow and libpq release the GIL while they work). A bounded queue keeps memory at a few
batches whatever the table size. The whole table goes through a single COPY statement; an
error on either side stops both and surfaces as itself.

Rows are read by the Arrow path (:mod:`.arrow_reader`, all in C, in a child process whose
COPY data, text or binary (copy_format.py), arrives here as bytes) where it is exact, and by
the exact path (sqlite3 and the encoders of :mod:`.types`) otherwise: the Arrow COPY runs
inside a savepoint, and anything it cannot send exactly rolls it back and hands the table
to the exact path, which loads it or names the value that cannot be stored.
"""

from __future__ import annotations

import hashlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from .arrow_reader import ArrowUnfit, arrow_chunks
from .change_detection import BatchDigests, Batching, numbered, order_by
from .copy_format import TEXT, BinaryRows, CopyFormat
from .errors import ValueMismatchError
from .pg_target import PgTable
from .row_digests import RowDigests
from .sqlite_source import Since, SqliteSnapshot, TableInfo
from .types import ValueRejected, batch_encoder

QUEUED_BATCHES = 2
# How long a COPY waits for its first row before it starts (see _QueueStream.has_rows).
PEEK_S = 1.0
READ_ARROW = "arrow"
READ_EXACT = "exact"

# (COPY data, rows in it, its digest when the reader took it already, its batch id). The data is None for
# a batch the Arrow child found unchanged (its digest is the last sync's): it never crossed the pipe.
Chunks = Generator[tuple[str | bytes | BinaryRows | None, int, str | None, int], None, None]


@dataclass(frozen=True)
class Progress:
    table: str
    rows_done: int
    rows_total: int
    elapsed_s: float
    # Every row is read and in PostgreSQL's COPY: what follows (the merge, the key build, a verify's join)
    # reports no progress of its own, so a long table says so rather than going quiet.
    read_done: bool = False

    @property
    def rows_per_s(self) -> float:
        return self.rows_done / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


class TableReader:
    """SQLite rows of one table as COPY text, counted and reported as PostgreSQL takes them."""

    def __init__(
        self,
        snapshot: SqliteSnapshot,
        table: TableInfo,
        batch_size: int,
        total: int,
        on_progress: ProgressCallback | None,
        since: Since | None = None,
        batching: Batching | None = None,
        row_digests: RowDigests | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.table = table
        self.batch_size = batch_size
        self.batching = batching or Batching(batch_size)  # where batches end (change_detection.py)
        self.total = total
        self.on_progress = on_progress
        self.since = since  # read only the rows at or past a watermark; None: every row
        self.rows_sent = 0  # rows handed to PostgreSQL (the consumer thread counts them)
        self.rows_skipped = 0  # rows of batches unchanged since the last sync (the producer counts them)
        self.digests: dict[int, str] = {}  # of every batch read, sent or skipped, by batch id
        # The hashes of each row of the batches sent; when a batch changed, only its changed rows are sent.
        self.row_digests = row_digests
        self.read_path = READ_EXACT  # which path the last copy_into took
        self.copy_format = TEXT.name  # and in which format it sent the rows (copy_format.py)
        self.arrow_refused = ""  # why the Arrow path handed the table over, when it did
        self._rows_encoded = 0
        self._encode_rows = batch_encoder([c.pg_type for c in table.columns])
        self._started = time.perf_counter()

    # --- producer side (its own thread) ------------------------------------------------

    def _chunks(self) -> Chunks:
        order = order_by(self.table, self.batching)
        batches = self.snapshot.batches(self.table, self.batch_size, self.since, order)
        try:
            for batch_id, batch in numbered(batches, self.batching):
                yield self._encode(batch), len(batch), None, batch_id
                self._rows_encoded += len(batch)
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc):
                raise
            located = self.snapshot.find_invalid_utf8(self.table)
            if located is None:
                raise
            column, row, number = located
            raise ValueMismatchError(
                self.table.name,
                column,
                self.table.describe_key(row, number),
                "text is not valid UTF-8, which PostgreSQL text requires (store it as a BLOB in SQLite, or fix it)",
            ) from None
        finally:
            batches.close()  # now, while the snapshot is open: an error's traceback would keep it alive

    def _encode(self, batch: list[tuple[object, ...]]) -> str:
        try:
            lines = self._encode_rows(batch)
        except ValueRejected:
            raise self._locate_rejected(batch) from None
        lines.append("")
        return "\n".join(lines)

    def _locate_rejected(self, batch: list[tuple[object, ...]]) -> ValueMismatchError:
        for offset, row in enumerate(batch):
            for column, value in zip(self.table.columns, row, strict=True):
                try:
                    column.pg_type.encode(value)
                except ValueRejected as exc:
                    key = self.table.describe_key(row, self._rows_encoded + offset + 1)
                    declared = column.declared_type or "without a type"
                    reason = f"{exc} (declared {declared!r}, PostgreSQL {column.pg_type.name})"
                    return ValueMismatchError(self.table.name, column.name, key, reason)
        raise AssertionError("an encoder rejected a value it accepts on a second look")

    # --- consumer side (the caller's thread, inside COPY) -----------------------------------

    @property
    def rows_read(self) -> int:
        return self.rows_sent + self.rows_skipped

    def copy_into(
        self,
        target: PgTable,
        ident: sql.Identifier,
        skip: BatchDigests | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> bool:
        """COPY the table's rows into ``ident`` (the target or the stage), in one statement.

        With ``skip`` (the digests of the last sync's batches), a batch whose digest is the one
        its batch id had last time is not sent again: PostgreSQL has had exactly those rows
        since that sync committed. ``prepare`` (creating the stage) runs just before the COPY.
        When the read ends with no row to send (within :data:`PEEK_S`), neither runs, nor the Arrow
        path's savepoint: an unchanged table costs no round trip here. Returns whether the COPY ran.
        """
        sent = self._copy(target, ident, skip, prepare)
        if self.on_progress is not None:
            self.on_progress(self._progress(read_done=True))
        return sent

    def _copy(
        self,
        target: PgTable,
        ident: sql.Identifier,
        skip: BatchDigests | None,
        prepare: Callable[[], None] | None,
    ) -> bool:
        if self.snapshot.arrow is not None:
            began = False

            def begin() -> None:
                nonlocal began
                target.savepoint()
                began = True
                if prepare is not None:
                    prepare()

            try:
                fmt = target.arrow_copy_format(ident)
                unchanged = self._unchanged(skip, READ_ARROW)
                chunks = arrow_chunks(self.snapshot, self.table, self.batching, self.since, unchanged, fmt)
                sent = self._stream(target, ident, chunks, READ_ARROW, skip, begin, fmt)
            except (ArrowUnfit, psycopg2.DataError, psycopg2.IntegrityError) as exc:
                if began:
                    target.rollback_to_savepoint()
                self.arrow_refused = str(exc).splitlines()[0]
            else:
                if began:
                    target.release_savepoint()
                return sent
        return self._stream(target, ident, self._chunks(), READ_EXACT, skip, prepare)

    def _stream(
        self,
        target: PgTable,
        ident: sql.Identifier,
        chunks: Chunks,
        path: str,
        skip: BatchDigests | None,
        prepare: Callable[[], None] | None,
        fmt: CopyFormat = TEXT,
    ) -> bool:
        self.read_path, self.copy_format = path, fmt.name
        self.rows_sent = self.rows_skipped = 0
        self.digests = {}
        if self.row_digests is not None:
            self.row_digests.restart()
        stream = _QueueStream(self, chunks, self._unchanged(skip, path), fmt)
        producer = threading.Thread(target=stream.produce, name=f"sqlite-read-{self.table.name}", daemon=True)
        producer.start()
        try:
            if not stream.has_rows():  # nothing to send: no COPY, nor what only it needs
                return False
            if prepare is not None:
                prepare()
            target.copy_into(ident, stream, fmt)
        except psycopg2.errors.QueryCanceled:
            if stream.error is not None:
                raise stream.error from None  # psycopg2 wraps an error raised in read()
            raise
        finally:
            stream.stop(producer)
        if stream.error is not None:
            raise stream.error
        return True

    def _unchanged(self, skip: BatchDigests | None, path: str) -> Mapping[int, str]:
        """The last sync's batch digests, if they apply to a read by ``path`` cut the same way."""
        return skip.digests if skip is not None and skip.matches(path, self.batching) else {}

    def _took(self, rows: int) -> None:
        self.rows_sent += rows
        if self.on_progress is not None:
            self.on_progress(self._progress())

    def _progress(self, read_done: bool = False) -> Progress:
        return Progress(self.table.name, self.rows_read, self.total, time.perf_counter() - self._started, read_done)


class _QueueStream:
    """The file object psycopg2's ``copy_expert`` reads, fed by the producer thread."""

    def __init__(self, reader: TableReader, chunks: Chunks, unchanged: Mapping[int, str], fmt: CopyFormat) -> None:
        self.reader = reader
        self.chunks = chunks
        self.unchanged = unchanged
        self.fmt = fmt
        self._head = fmt.header  # before the first rows
        self.queue: queue.Queue[object] = queue.Queue(maxsize=QUEUED_BATCHES)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._done = False
        self._first: object = None  # the item :meth:`has_rows` took, for :meth:`read`

    def produce(self) -> None:
        try:
            for text, rows, taken, batch_id in self.chunks:
                data = text.encode() if isinstance(text, str) else text
                # The exact path's digest is of the COPY text (blake2b releases the GIL); the Arrow
                # child's, of its Arrow buffers. Digests are compared only within one read path.
                digest = taken or hashlib.blake2b(data, digest_size=16).hexdigest()  # type: ignore[arg-type,misc]
                if batch_id in self.reader.digests:  # two batches of one id: its digest would describe one
                    raise ArrowUnfit(f"batch {batch_id} came twice: the rows were not in key order")
                self.reader.digests[batch_id] = digest
                last = self.unchanged.get(batch_id)  # the batch's digest at the last sync, if it applies
                if last == digest:
                    self.reader.rows_skipped += rows
                    continue
                if data is None:  # the child kept a batch it took for unchanged: it must be so here too
                    raise ArrowUnfit(f"the Arrow reader skipped batch {batch_id}, which differs from the last sync's")
                if self.reader.row_digests is not None:  # only the rows PostgreSQL may not hold (row_digests.py)
                    data, changed = self.reader.row_digests.changed_lines(batch_id, last, digest, data)
                    self.reader.rows_skipped += rows - changed
                    rows = changed
                    if not rows:
                        continue
                elif isinstance(data, BinaryRows):
                    data = data.data
                if not self._put((data, rows)):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - not swallowed: the consumer thread re-raises it
            self._put(_Failed(exc))
        finally:
            # A generator left suspended would keep its SQLite statement open past the snapshot.
            self.chunks.close()

    def _put(self, item: object) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def has_rows(self) -> bool:
        """Whether rows may be sent: False only when the producer ended, with no row to send, within
        :data:`PEEK_S`. Its first item is kept for :meth:`read`; its error is raised.

        Bounded because the transaction is idle while this waits (a COPY under way is not): reading
        a big unchanged table can take minutes, longer than a server's
        ``idle_in_transaction_session_timeout`` may allow. Past the bound the COPY starts as always.
        """
        try:
            item = self._first = self.queue.get(timeout=PEEK_S)
        except queue.Empty:
            return True
        if isinstance(item, _Failed):
            self._done = True
            self.error = item.error
            raise item.error
        return item is not _END

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        item = self._first if self._first is not None else self.queue.get()
        self._first = None
        if item is _END:
            self._done = True
            tail, self._head = self._head + self.fmt.trailer, b""  # binary: a header even with no rows
            return tail
        if isinstance(item, _Failed):
            self._done = True
            self.error = item.error
            raise item.error
        data, rows = item  # type: ignore[misc]
        self.reader._took(rows)
        if self._head:
            data, self._head = self._head + data, b""
        return data

    def stop(self, producer: threading.Thread) -> None:
        self.stopping.set()
        while producer.is_alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
        producer.join()
