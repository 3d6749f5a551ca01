"""ADBC's SQLite driver and Arrow compute: SQLite rows to COPY text, all in C. Arrow child only.

This module is imported by the Arrow child process (:mod:`.arrow_child`) and nowhere else:
the driver bundles its own SQLite library, and two SQLite libraries must never have the same
file open in one process (closing a file in one drops the POSIX locks the other relies on).
The syncing process itself therefore never imports pyarrow or the driver.

The DB-API wrapper (``adbc_driver_sqlite.dbapi``) imports pandas and pyarrow.dataset on the
way, 50 MB of resident memory a sync never uses; this uses the statement API directly.

:func:`copy_text` is the Arrow half of the fast read path described in :mod:`.arrow_reader`:
it refuses (:class:`ArrowUnfit`) any column whose inferred Arrow type is not one of
``_ACCEPTED`` for its PostgreSQL type, and any batch whose guard column (the query's last)
flags a row.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa
import pyarrow.compute as pc

from .arrow_child import ArrowUnfit

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


def copy_text(
    arrow: ArrowConnection, query: str, params: tuple[object, ...], pg_types: list[str], batch_rows: int
) -> Generator[tuple[pa.Buffer, int], None, None]:
    """COPY text chunks of up to ``batch_rows`` rows of ``query``, or :class:`ArrowUnfit`.

    ``query`` selects one column per entry of ``pg_types`` (PostgreSQL type names), then the
    guard: 1 for a row the driver would convert silently.
    """
    width = len(pg_types)
    try:
        with arrow.query(query, params, batch_rows=batch_rows) as batches:
            for pg_type, field in zip(pg_types, batches.schema, strict=False):
                if field.type not in _ACCEPTED.get(pg_type, ()):  # a pinned type of no mapping: exact path
                    raise ArrowUnfit(f"column {field.name!r} reads as Arrow {field.type}")
            for batch in batches:
                if pc.max(batch.column(width)).as_py():
                    raise ArrowUnfit("a value needs the exact encoder")
                fields = [_text(batch.column(i)) for i in range(width)]
                # The last field gets the line end first: one join of the whole batch, not two.
                fields[-1] = pc.binary_join_element_wise(fields[-1], _EMPTY, _NEWLINE, options=_NULL_AS_COPY_NULL)
                lines = pc.binary_join_element_wise(*fields, _TAB, options=_NULL_AS_COPY_NULL)
                # The lines lie end to end in the result's data buffer: no copy, no Python strings.
                size = pc.sum(pc.binary_length(lines)).as_py() or 0
                yield lines.buffers()[2][:size], batch.num_rows
    except (Error, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        # A later value of another storage class than the first batch's (pyarrow raises OSError).
        raise ArrowUnfit(f"the Arrow reader stopped: {exc}") from None
