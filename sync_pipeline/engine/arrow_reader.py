"""The fast read path: SQLite rows to COPY text entirely in C (ADBC's SQLite driver and Arrow).

Reading and encoding in Python costs about 5 s per million rows of the demo's big table, more
than the whole ``sqlite3 | psql`` floor; ADBC reads the same rows into Arrow batches and Arrow
compute functions escape and join them into COPY's text format in about 2 s. (Arrow's CSV
writer is a little faster, but PostgreSQL parses CSV about 25% slower than text.)

Arrow columns have one type each, SQLite values do not, so this path is taken only where it
provably sends exactly what the exact encoders in :mod:`.types` would:

* the driver infers each column's Arrow type from the first batch and fails on a later value of
  another storage class; :func:`text_chunks` accepts only the Arrow types listed in
  ``_ACCEPTED`` for each PostgreSQL type;
* the conversions the driver does make silently (a real or a blob in a text column, an integer
  too large for a double, a blob at all) are caught by a guard expression evaluated by SQLite in
  the same scan, one flag per row;
* a value PostgreSQL refuses (a NUL byte, invalid UTF-8, a boolean that is not 0 or 1) fails the
  COPY, which the caller rolls back to a savepoint.

In each of these cases the caller reads the table again through the exact path, which either
loads it or names the table, column and row key of the value that cannot be stored.
"""

from __future__ import annotations

from collections.abc import Generator

import pyarrow as pa
import pyarrow.compute as pc

from .adbc_sqlite import Error as ArrowError
from .adbc_sqlite import arrow_literal
from .sqlite_source import Since, SqliteSnapshot, TableInfo, quote_sqlite_identifier

_MAX_EXACT_DOUBLE_INT = 2**53

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


class ArrowUnfit(Exception):
    """This table holds values the Arrow path cannot send exactly; the exact path must read it."""


def _guard(table: TableInfo) -> str:
    """A SQLite expression that is 1 for a row the driver would convert silently."""
    conditions = []
    for column in table.columns:
        q = quote_sqlite_identifier(column.name)
        kind = column.pg_type.name
        if kind == "text":
            # SQLite's own text for a real may differ from the exact encoder's; a blob is not text.
            conditions.append(f"typeof({q}) IN ('real', 'blob')")
        elif kind == "double precision":
            conditions.append(
                f"(typeof({q}) = 'integer' AND ({q} > {_MAX_EXACT_DOUBLE_INT} OR {q} < -{_MAX_EXACT_DOUBLE_INT}))"
            )
        elif kind == "bytea":
            conditions.append(f"{q} IS NOT NULL")
    return " OR ".join(conditions) or "0"


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


def text_chunks(
    snapshot: SqliteSnapshot, table: TableInfo, batch_size: int, since: Since | None = None
) -> Generator[tuple[pa.Buffer, int], None, None]:
    """The table as COPY text chunks of up to ``batch_size`` rows, or :class:`ArrowUnfit`."""
    arrow = snapshot.arrow
    if arrow is None:
        raise ArrowUnfit("the snapshot has no Arrow reader")
    columns = ", ".join(quote_sqlite_identifier(c) for c in table.column_names)
    query = f"SELECT {columns}, ({_guard(table)}) FROM {quote_sqlite_identifier(table.name)}"
    params: tuple[object, ...] = ()
    if since is not None:
        query += since.where()
        params = (since.watermark,)
    width = len(table.columns)
    try:
        with arrow.query(query, params, batch_rows=batch_size) as batches:
            for column, field in zip(table.columns, batches.schema, strict=False):
                if field.type not in _ACCEPTED[column.pg_type.name]:
                    raise ArrowUnfit(f"column {column.name!r} reads as Arrow {field.type}")
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
    except (ArrowError, pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        # A later value of another storage class than the first batch's (pyarrow raises OSError).
        raise ArrowUnfit(f"the Arrow reader stopped: {exc}") from None
