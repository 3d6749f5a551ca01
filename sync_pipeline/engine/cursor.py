"""Cursor mode's one decision: which rows a sync must read, and which watermark it leaves.

A cursor read takes the rows whose cursor value is at or past the last watermark, compared
by SQLite with SQLite's ordering: NULL < numbers < text < blobs. That is only sound while the
column holds one kind of value. A text among numbers becomes the watermark, and every number
sorts below it, so a row whose cursor moves on among numbers would never be read again. So a
column holding numbers and text is not used as a cursor: every row is read, no watermark is
kept, and the result carries a warning naming the column, until it holds one kind. Blobs are
refused outright: no application bumps a blob.

A watermark from another shape of the table is not used either (see ``sync_state.shape_of``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SyncError
from .sqlite_source import Since, SqliteSnapshot, TableInfo, quote_sqlite_identifier
from .sync_state import LastSync


@dataclass(frozen=True)
class CursorPlan:
    since: Since | None  # None: read every row
    watermark: int | float | str | None  # to store after this sync; None: store none
    warning: str = ""


def _kind(value: object) -> str:
    return "text" if isinstance(value, str) else "number"


def _bound(snapshot: SqliteSnapshot, table: TableInfo, column: str, aggregate: str) -> object:
    # One aggregate per query, so SQLite answers from an index on the column when there is one.
    q = quote_sqlite_identifier(column)
    return snapshot.conn.execute(f"SELECT {aggregate}({q}) FROM {quote_sqlite_identifier(table.name)}").fetchone()[0]


def plan(snapshot: SqliteSnapshot, table: TableInfo, column: str, last: LastSync | None, read_all: bool) -> CursorPlan:
    """``last`` is the table's stored state if it still applies (same shape); ``read_all``
    when the sync must read every row anyway (first sync, empty target, full refresh)."""
    high = _bound(snapshot, table, column, "max")
    if high is None:  # every value NULL, or no rows: all are read, nothing to keep
        return CursorPlan(None, None)
    if isinstance(high, bytes):
        raise SyncError(table.name, f"cursor column {column!r} holds blobs; a cursor must be numbers or text")
    low = _bound(snapshot, table, column, "min")
    kinds = sorted({_kind(low), _kind(high)})
    if kinds == ["number", "text"]:
        return CursorPlan(
            None,
            None,
            f"cursor column {column!r} holds text beside numbers; SQLite orders every number below any text, so "
            "rows whose cursor moves among numbers would be missed past a text watermark: every row was read, "
            "and will be until the column holds only numbers or only text",
        )
    usable = (
        not read_all
        and last is not None
        and last.cursor_column == column
        and last.watermark is not None
        # A text watermark over a column that now holds numbers would pass over all of them.
        and [_kind(last.watermark)] == kinds
    )
    return CursorPlan(Since(column, last.watermark) if usable else None, high)  # type: ignore[union-attr]
