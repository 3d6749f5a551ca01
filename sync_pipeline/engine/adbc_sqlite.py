"""ADBC's SQLite driver and Arrow compute: SQLite rows to COPY text, all in C. Arrow child only.

This module is imported by the Arrow child process (:mod:`.arrow_child`) and nowhere else:
the driver bundles its own SQLite library, and two SQLite libraries must never have the same
file open in one process (closing a file in one drops the POSIX locks the other relies on).
The syncing process itself therefore never imports pyarrow or the driver.

The DB-API wrapper (``adbc_driver_sqlite.dbapi``) imports pandas and pyarrow.dataset on the
way, 50 MB of resident memory a sync never uses; this uses the statement API directly.

:func:`copy_data` is the Arrow half of the fast read path described in :mod:`.arrow_reader`:
it sends a batch as COPY text, or, for a table of the types of ``copy_format.BINARY_TYPES``, as
the tuples of COPY's binary format (encoded by ``pgpq``, in Rust) with each row's size. It
refuses (:class:`ArrowUnfit`) any column whose inferred Arrow type is not one of ``_ACCEPTED``
for its PostgreSQL type, and any batch whose guard column (the query's last) flags a row.
"""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_manager
import adbc_driver_sqlite
import pgpq
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from .arrow_child import ArrowUnfit
from .copy_format import BINARY_TYPES
from .inferred import ARROW_PATTERNS, INFERRED

Error = adbc_driver_manager.Error

# A read transaction can meet SQLITE_BUSY while another connection recovers the WAL index.
BUSY_TIMEOUT_MS = 5000


def arrow_literal(value: object) -> pa.Array:
    """A one-element Arrow array of an int, float, str or bytes, built from its bytes.

    ``pa.array([value])`` would do, but converting any Python object makes pyarrow import
    pandas (40 MB of resident memory) to ask whether the object is a pandas one.
    """
    if isinstance(value, int):
        return pa.Array.from_buffers(pa.int64(), 1, [None, pa.py_buffer(struct.pack("<q", value))])
    if isinstance(value, float):
        return pa.Array.from_buffers(pa.float64(), 1, [None, pa.py_buffer(struct.pack("<d", value))])
    data = value.encode() if isinstance(value, str) else value
    if not isinstance(data, bytes):
        raise TypeError(f"no Arrow literal for {type(value).__name__}")
    kind = pa.string() if isinstance(value, str) else pa.binary()
    offsets = pa.py_buffer(struct.pack("<ii", 0, len(data)))
    return pa.Array.from_buffers(kind, 1, [None, offsets, pa.py_buffer(data)])


class ArrowConnection:
    """One read-only ADBC connection; :meth:`begin` starts (or restarts) its read transaction."""

    def __init__(self, database: adbc_driver_manager.AdbcDatabase, conn: adbc_driver_manager.AdbcConnection) -> None:
        self._database = database
        self._conn = conn
        self._in_transaction = False

    @classmethod
    def open(cls, path: Path) -> ArrowConnection:
        """Open read-only; no transaction yet (see :meth:`begin`)."""
        database = adbc_driver_sqlite.connect(path.resolve().as_uri() + "?mode=ro")
        try:
            arrow = cls(database, adbc_driver_manager.AdbcConnection(database))
        except Error:
            database.close()
            raise
        try:
            arrow.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # reads nothing from the file
        except Error:
            arrow.close()
            raise
        return arrow

    def begin(self) -> None:
        """End any read transaction and start a new one; its snapshot is taken by the first read,
        which happens here, so the snapshot is fixed when this returns."""
        if self._in_transaction:
            self.execute("ROLLBACK")
            self._in_transaction = False
        self.execute("BEGIN")
        self._in_transaction = True
        with self.query("SELECT count(*) FROM sqlite_schema") as reader:
            reader.read_all()

    def execute(self, statement: str) -> None:
        with adbc_driver_manager.AdbcStatement(self._conn) as stmt:
            stmt.set_sql_query(statement)
            stmt.execute_update()

    @contextmanager
    def query(
        self, query: str, params: tuple[object, ...] = (), batch_rows: int | None = None
    ) -> Iterator[pa.RecordBatchReader]:
        """The result as a stream of record batches, for as long as the block lasts."""
        with adbc_driver_manager.AdbcStatement(self._conn) as stmt:
            stmt.set_sql_query(query)
            if batch_rows is not None:
                stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            if params:
                columns = [arrow_literal(p) for p in params]
                stmt.bind(pa.RecordBatch.from_arrays(columns, names=[str(i) for i in range(len(params))]))
            handle, _ = stmt.execute_query()
            reader = pa.RecordBatchReader._import_from_c(handle.address)
            try:
                yield reader
            finally:
                reader.close()

    def close(self) -> None:
        self._conn.close()
        self._database.close()


# --- Arrow batches to COPY text ------------------------------------------------------------

# Arrow types the driver may infer for a column, per PostgreSQL type. int64 is also what it
# infers for a column that is NULL throughout the first batch; a later value of another storage
# class then fails the read.
_ACCEPTED: dict[str, frozenset[pa.DataType]] = {
    "bigint": frozenset({pa.int64()}),
    "numeric": frozenset({pa.int64()}),  # a double would need Python's shortest decimal text
    "boolean": frozenset({pa.int64()}),  # PostgreSQL reads 0 and 1, and refuses anything else
    "double precision": frozenset({pa.float64(), pa.int64()}),
    "text": frozenset({pa.string(), pa.large_string(), pa.int64()}),
    "bytea": frozenset({pa.int64()}),  # all NULL so far; the guard sends any blob to the exact path
}
# SYNC_INFER_TYPES (inferred.py): text, which arrow_reader's guard has checked reads exactly as the type.
_ACCEPTED.update(dict.fromkeys(INFERRED, frozenset({pa.string(), pa.large_string(), pa.int64()})))

_NULL_AS_COPY_NULL = pc.JoinOptions(null_handling="replace", null_replacement="\\N")
_TAB, _NEWLINE, _EMPTY = (arrow_literal(text)[0] for text in ("\t", "\n", ""))
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))  # backslash first


def _text(column: pa.Array) -> pa.Array:
    """One column as COPY text fields: escaped strings, or the decimal text of numbers."""
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        return pc.cast(column, pa.string())  # int64 as digits; float64 as its shortest exact decimal
    data = column.buffers()[2]
    # Searching the raw bytes is 40x faster than Arrow's match_substring (0.06 s against 2.4 s
    # for the four characters over a million rows); most batches need no escape at all.
    raw = b"" if data is None else data.to_pybytes()
    for char, escaped in _ESCAPES:
        if char.encode() in raw:
            column = pc.replace_substring(column, char, escaped)
    return column


# Part of every batch digest: a change to how batches become COPY text must change their digests.
_DIGEST_VERSION = b"sqlite-pg-sync arrow batch digest 3"


def _content(column: pa.Array) -> Iterator[memoryview]:
    """The bytes that say what ``column`` holds, and nothing else: a buffer's padding, a validity
    bitmap without nulls, or a value slot under a null may hold anything (they did, between two
    reads of one file), so they are left out or normalised."""
    if column.null_count:
        yield from _content(pc.indices_nonzero(pc.is_null(column)))  # where the NULLs are
        column = pc.fill_null(column, _FILL[str(column.type)])
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        size = 8 if pa.types.is_large_string(column.type) else 4
        offsets = memoryview(column.buffers()[1])[column.offset * size : (column.offset + len(column) + 1) * size]
        first = int.from_bytes(offsets[:size], "little", signed=True)
        last = int.from_bytes(offsets[-size:], "little", signed=True)
        # The lengths, not the offsets: a slice's offsets start wherever the slice does.
        lengths = pc.binary_length(column)
        yield memoryview(lengths.buffers()[1])[lengths.offset * size : (lengths.offset + len(lengths)) * size]
        data = column.buffers()[2]
        yield memoryview(data)[first:last] if data is not None else memoryview(b"")
        return
    width = column.type.bit_width // 8
    data = column.buffers()[1]
    yield memoryview(data)[column.offset * width : (column.offset + len(column)) * width]


_FILL = {"int64": arrow_literal(0)[0], "double": arrow_literal(0.0)[0], "string": arrow_literal("")[0]}
_FILL["large_string"] = _FILL["string"]


def batch_digest(batch: pa.RecordBatch, width: int) -> str:
    """A digest of what a batch's first ``width`` columns hold, as Arrow holds it (see :func:`_content`).

    Equal digests mean equal values, so equal COPY text: an unchanged batch is recognised without
    building its text (about a third of the child's work on a no-change sync of 1M rows). The
    column types are part of it, and a version: a change to how batches become text must change it.
    """
    # xxh3-128: 0.05 s of CPU for the 400 MB of 1M bench rows, against 0.29 s for SHA-256 (version 2);
    # a change of content is what it must see, not an adversary, and 128 bits leave no accidental collision.
    digest = xxhash.xxh3_128(_DIGEST_VERSION)
    for column in batch.columns[:width]:
        digest.update(f"|{column.type}|{len(column)}|".encode())
        for part in _content(column):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
    return digest.hexdigest()[:32]


@contextmanager
def _read_ahead(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[Iterator[pa.RecordBatch]]:
    """``batches``, read by a thread of their own while the caller digests and encodes the last ones.

    SQLite's stepping (in the driver) and the digests and Arrow kernels all release the GIL, so on
    two cores reading overlaps the rest: a no-change scan of 1M rows fell from about 2.2 to 1.6 s.
    The thread has stopped when the block ends, so the statement can be closed after it.
    """
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            put(exc)

    def taken() -> Iterator[pa.RecordBatch]:
        while (item := ready.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    thread = threading.Thread(target=read, name="sqlite-read-ahead", daemon=True)
    thread.start()
    try:
        yield taken()
    finally:
        stop.set()
        thread.join()


_DONE = object()


def _by_key(batches: Iterator[pa.RecordBatch], key_index: int, shift: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows regrouped into batches of one key range each (``key >> shift``), in key order:
    a range may span the driver's batches, which are cut by row count."""
    pending: list[pa.RecordBatch] = []
    pending_id = 0
    for batch in batches:
        rows = batch.num_rows
        if not rows:
            continue
        ids = pc.shift_right(batch.column(key_index), shift)
        starts = [0]
        if rows > 1:
            changed = pc.indices_nonzero(pc.not_equal(ids.slice(1), ids.slice(0, rows - 1)))
            starts += [i + 1 for i in changed.to_pylist()]
        for start, end in zip(starts, [*starts[1:], rows], strict=True):
            batch_id = ids[start].as_py()
            if pending and batch_id != pending_id:
                if batch_id < pending_id:
                    raise ArrowUnfit("the rows did not come in key order")
                yield pending_id, pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending = []
            pending.append(batch.slice(start, end - start))
            pending_id = batch_id
    if pending:
        yield pending_id, pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _shaped(column: pa.Array, pattern: str | None) -> bool:
    """Whether every value of an inferred column (inferred.py) has the shape ``pattern`` (None: none has)."""
    if column.null_count == len(column):
        return True
    if pattern is None or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    return bool(pc.all(pc.match_substring_regex(column, pattern)).as_py())


def copy_data(
    arrow: ArrowConnection,
    query: str,
    params: tuple[object, ...],
    pg_types: list[str],
    batch_rows: int,
    skip: Mapping[int, str],
    key_index: int | None = None,
    shift: int = 0,
    binary: bool = False,
) -> Generator[tuple[pa.Buffer | None, int, str, int, pa.Buffer | None], None, None]:
    """(COPY data, rows, digest, batch id, row sizes) chunks of ``query``, or :class:`ArrowUnfit`.

    ``query`` selects one column per entry of ``pg_types`` (PostgreSQL type names), then the
    guard: 1 for a row the driver would convert silently. Batches are ``batch_rows`` rows by
    position, or with ``key_index`` the key ranges ``key >> shift`` of that column (the query
    reads in key order; see change_detection.py). A batch whose digest (:func:`batch_digest`)
    is ``skip``'s for its id (the last sync's) comes without data: it is not built at all.
    The data is COPY text (row sizes None: a newline ends each row), or with ``binary`` the binary
    format's tuples, without its header and trailer, and each row's size (int64).
    """
    width = len(pg_types)
    try:
        with arrow.query(query, params, batch_rows=batch_rows) as batches:
            for pg_type, field in zip(pg_types, batches.schema, strict=False):
                if field.type not in _ACCEPTED.get(pg_type, ()):  # a pinned type of no mapping: exact path
                    raise ArrowUnfit(f"column {field.name!r} reads as Arrow {field.type}")
            with _read_ahead(iter(batches)) as read:
                grouped = enumerate(read) if key_index is None else _by_key(read, key_index, shift)
                checks = {i: ARROW_PATTERNS[t] for i, t in enumerate(pg_types) if t in ARROW_PATTERNS}
                encode = _BinaryTuples(pg_types) if binary else _text_lines
                yield from _encoded(grouped, width, skip, checks, encode)
    except (Error, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        # A later value of another storage class than the first batch's (pyarrow raises OSError).
        raise ArrowUnfit(f"the Arrow reader stopped: {exc}") from None


Encode = Callable[[pa.RecordBatch, int], tuple[pa.Buffer, "pa.Buffer | None"]]


def _encoded(
    grouped: Iterator[tuple[int, pa.RecordBatch]],
    width: int,
    skip: Mapping[int, str],
    checks: Mapping[int, str | None],
    encode: Encode,
) -> Generator[tuple[pa.Buffer | None, int, str, int, pa.Buffer | None], None, None]:
    for batch_id, batch in grouped:
        if pc.max(batch.column(width)).as_py():
            raise ArrowUnfit("a value needs the exact encoder")
        digest = batch_digest(batch, width)
        if skip.get(batch_id) == digest:
            yield None, batch.num_rows, digest, batch_id, None
            continue
        for i, pattern in checks.items():
            if not _shaped(batch.column(i), pattern):
                raise ArrowUnfit(f"a value of column {batch.schema.field(i).name!r} needs the exact encoder")
        data, sizes = encode(batch, width)
        yield data, batch.num_rows, digest, batch_id, sizes


def _text_lines(batch: pa.RecordBatch, width: int) -> tuple[pa.Buffer, None]:
    """The batch as COPY text lines, end to end."""
    fields = [_text(batch.column(i)) for i in range(width)]
    # The last field gets the line end first: one join of the whole batch, not two.
    fields[-1] = pc.binary_join_element_wise(fields[-1], _EMPTY, _NEWLINE, options=_NULL_AS_COPY_NULL)
    lines = pc.binary_join_element_wise(*fields, _TAB, options=_NULL_AS_COPY_NULL)
    # The lines lie end to end in the result's data buffer: no copy, no Python strings.
    size = pc.sum(pc.binary_length(lines)).as_py() or 0
    return lines.buffers()[2][:size], None


# The Arrow type each PostgreSQL type of copy_format.BINARY_TYPES is sent as, and its width in the
# binary format (None: as long as the value).
_BINARY: dict[str, tuple[pa.DataType, int | None]] = {
    "bigint": (pa.int64(), 8),
    "double precision": (pa.float64(), 8),
    "boolean": (pa.bool_(), 1),
    "text": (pa.string(), None),
    "bytea": (pa.binary(), None),
}


if set(_BINARY) != BINARY_TYPES:  # the parent chooses binary by that set: each of its types must be encoded here
    raise RuntimeError(f"binary COPY encodes {sorted(_BINARY)}, but copy_format.py sends {sorted(BINARY_TYPES)}")

_INT = {n: arrow_literal(n)[0] for n in (0, 1, 8)}  # Arrow scalars made from Python ints would import pandas


class _BinaryTuples:
    """Batches as COPY binary tuples, by ``pgpq``: the PostgreSQL server parses them in about 60% of the time
    text takes (1M rows of the bench's table: 1.9 s against 3.1 s), and they are built in less than half the time."""

    def __init__(self, pg_types: list[str]) -> None:
        self.pg_types = pg_types

    def __call__(self, batch: pa.RecordBatch, width: int) -> tuple[pa.Buffer, pa.Buffer]:
        columns = [self._as_sent(batch, i, pg_type) for i, pg_type in enumerate(self.pg_types)]
        sent = pa.RecordBatch.from_arrays(columns, names=[f"c{i}" for i in range(width)])
        # An encoder of its own per batch: one keeps up to 1 MB of tuples back until its next batch, and
        # only its finish() hands over the rest (then the 2-byte trailer, which is the parent's to send).
        encoder = pgpq.ArrowToPostgresBinaryEncoder(sent.schema)
        encoder.write_header()  # the stream's header is the parent's to send too (copy_format.BINARY)
        head, rest = encoder.write_batch(sent), encoder.finish()
        data = pa.py_buffer(head + rest[:-2] if len(rest) > 2 else head)
        sizes = self._row_sizes(columns)
        if (pc.sum(sizes).as_py() or 0) != data.size:
            raise ArrowUnfit("the binary COPY tuples are not the size their values say")
        return data, sizes.buffers()[1].slice(sizes.offset * 8, len(sizes) * 8)

    @staticmethod
    def _as_sent(batch: pa.RecordBatch, i: int, pg_type: str) -> pa.Array:
        column = batch.column(i)
        arrow_type, _ = _BINARY[pg_type]
        if column.type == arrow_type or (pg_type == "text" and pa.types.is_large_string(column.type)):
            return column
        if pg_type == "boolean":  # int64: PostgreSQL's text input takes 0 and 1 only, and so does this
            if column.null_count < len(column) and not (pc.min(column).as_py() >= 0 and pc.max(column).as_py() <= 1):
                raise ArrowUnfit(f"a value of column {batch.schema.field(i).name!r} is not a boolean (0 or 1)")
        elif pg_type == "bytea":  # int64 means NULL throughout: the guard sends any blob to the exact path
            return pa.nulls(len(column), arrow_type)
        return pc.cast(column, arrow_type)  # integers as decimal text, or as doubles (the guard: exactly)

    def _row_sizes(self, columns: list[pa.Array]) -> pa.Array:
        """Each row's size in the binary format: a 2-byte field count, then a 4-byte length and the
        value's bytes per field (a NULL has none). Fixed widths without NULLs add a constant: a few
        kernel calls a batch, not a few per column."""
        fixed = 2 + 4 * len(columns)
        parts = []
        for pg_type, column in zip(self.pg_types, columns, strict=True):
            _, width = _BINARY[pg_type]
            if width is None:
                size = pc.binary_length(column)
                parts.append(pc.fill_null(size, _INT[0]) if column.null_count else size)
            elif column.null_count:
                parts.append(pc.if_else(pc.is_valid(column), _INT[width], _INT[0]))
            else:
                fixed += width
        total = pa.repeat(arrow_literal(fixed)[0], len(columns[0]))
        for part in parts:
            total = pc.add(total, part)
        return total if total.type == pa.int64() else total.cast(pa.int64())
