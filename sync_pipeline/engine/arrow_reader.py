"""The fast read path: SQLite rows to COPY data entirely in C (ADBC's SQLite driver and Arrow).

Reading and encoding in Python costs about 5 s per million rows of the demo's big table, more
than the whole ``sqlite3 | psql`` floor; ADBC reads the same rows into Arrow batches and Arrow
compute functions escape and join them into COPY's text format in about 2 s. (Arrow's CSV
writer is a little faster, but PostgreSQL parses CSV about 25% slower than text.) Where the
column types allow, the child sends COPY's binary format instead, which the server parses
faster still (copy_format.py).

The Arrow work happens in a child process (:mod:`.arrow_child`, :func:`.adbc_sqlite.copy_data`),
because the driver's SQLite library must not share this process with ``sqlite3``'s; this
module builds the query and reads the child's COPY data, as bytes, without importing pyarrow.

Arrow columns have one type each, SQLite values do not, so this path is taken only where it
provably sends exactly what the exact encoders in :mod:`.types` would:

* the driver infers each column's Arrow type from the first batch and fails on a later value of
  another storage class; the child accepts only the Arrow types listed in
  ``adbc_sqlite._ACCEPTED`` for each PostgreSQL type;
* the conversions the driver does make silently (a real or a blob in a text column, an integer
  too large for a double, a blob at all) are caught by a guard expression evaluated by SQLite in
  the same scan, one flag per row;
* a value PostgreSQL refuses (a NUL byte, invalid UTF-8, a boolean that is not 0 or 1) fails the
  COPY, which the caller rolls back to a savepoint.

In each of these cases the caller reads the table again through the exact path, which either
loads it or names the table, column and row key of the value that cannot be stored.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping

from . import inferred
from .arrow_child import ArrowUnfit
from .change_detection import Batching, order_by
from .copy_format import BINARY, TEXT, BinaryRows, CopyFormat
from .sqlite_source import Since, SqliteSnapshot, TableInfo, quote_sqlite_identifier
from .types import Affinity, affinity

__all__ = ["ArrowUnfit", "arrow_chunks"]

_MAX_EXACT_DOUBLE_INT = 2**53


def _guard(table: TableInfo) -> str:
    """A SQLite expression that is 1 for a row the driver would convert silently.

    SQLite evaluates it for every row: about 0.1 s per million rows for each ``typeof()``, so a check
    SQLite's own storage rules make needless is left out. A TEXT-affinity column stores numbers as
    text, so only a blob can be there; a REAL-affinity column reads every number as a real, so no
    integer is (both unless the column is a STRICT table's ANY, which keeps values as given). The
    blob checks share one ``min(typeof(...))``: 'blob' sorts before every other type's name.
    """
    conditions, blobs = [], []
    for column in table.columns:
        q = quote_sqlite_identifier(column.name)
        kind = column.pg_type.name
        stored = affinity(column.declared_type) if column.declared_type.strip().upper() != "ANY" else None
        if kind == "text" or kind in inferred.INFERRED:
            if stored is Affinity.TEXT:
                blobs.append(f"typeof({q})")
            elif kind == "text":
                # SQLite's own text for a real may differ from the exact encoder's; a blob is not text.
                conditions.append(f"typeof({q}) IN ('real', 'blob')")
            else:
                # Text only; its shape is checked in the batches sent (adbc_sqlite.py, inferred.ARROW_PATTERNS).
                conditions.append(f"typeof({q}) IN ('integer', 'real', 'blob')")
        elif kind == "double precision" and stored is not Affinity.REAL:
            conditions.append(
                f"(({q} > {_MAX_EXACT_DOUBLE_INT} OR {q} < -{_MAX_EXACT_DOUBLE_INT}) AND typeof({q}) = 'integer')"
            )
        elif kind == "bytea":
            conditions.append(f"{q} IS NOT NULL")
    if blobs:
        conditions.append(f"min({', '.join(blobs)}) = 'blob'" if len(blobs) > 1 else f"{blobs[0]} = 'blob'")
    return " OR ".join(conditions) or "0"


def arrow_chunks(
    snapshot: SqliteSnapshot,
    table: TableInfo,
    batching: Batching,
    since: Since | None = None,
    skip: Mapping[int, str] | None = None,
    fmt: CopyFormat = TEXT,
) -> Generator[tuple[bytes | BinaryRows | None, int, str, int], None, None]:
    """The table as (COPY data in ``fmt``, rows, digest, batch id) chunks cut as ``batching`` says, or
    :class:`ArrowUnfit`; the data is None for a chunk whose digest is ``skip``'s for its id (the
    child kept it)."""
    arrow = snapshot.arrow
    if arrow is None:
        raise ArrowUnfit("the snapshot has no Arrow reader")
    columns = ", ".join(quote_sqlite_identifier(c) for c in table.column_names)
    query = f"SELECT {columns}, ({_guard(table)}) FROM {quote_sqlite_identifier(table.name)}"
    params: tuple[object, ...] = ()
    if since is not None:
        query += since.where()
        params = (since.watermark,)
    query += order_by(table, batching)
    pg_types = [c.pg_type.name for c in table.columns]
    yield from arrow.query(
        query, params, pg_types, batching.batch_rows, skip or {}, batching.key_index, batching.shift, fmt is BINARY
    )
