"""A read-only ADBC connection to a SQLite file, through the driver manager's low-level API.

The DB-API wrapper (``adbc_driver_sqlite.dbapi``) imports pandas and pyarrow.dataset on the
way, 50 MB of resident memory a sync never uses; this uses the statement API directly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa

Error = adbc_driver_manager.Error


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
    """One ADBC connection, held in a read transaction from :meth:`open` until :meth:`close`."""

    def __init__(self, database: adbc_driver_manager.AdbcDatabase, conn: adbc_driver_manager.AdbcConnection) -> None:
        self._database = database
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> ArrowConnection:
        """Open read-only and start the read transaction (its snapshot starts at the first read)."""
        database = adbc_driver_sqlite.connect(path.resolve().as_uri() + "?mode=ro")
        try:
            arrow = cls(database, adbc_driver_manager.AdbcConnection(database))
        except Error:
            database.close()
            raise
        try:
            arrow.execute("BEGIN")
            with arrow.query("SELECT count(*) FROM sqlite_schema") as reader:
                reader.read_all()
        except Error:
            arrow.close()
            raise
        return arrow

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
