"""Which tables and columns of a SQLite file are mirrored at all.

Tables are chosen by glob patterns on their SQLite names (``SYNC_TABLES``, ``SYNC_EXCLUDE_TABLES``);
columns are left out by ``table.column`` globs (``SYNC_EXCLUDE_COLUMNS``), for personal data
that must not leave the file. A left-out column is never read from SQLite. A key column cannot
be left out: the rows would lose their identity, so that is refused by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .sqlite_source import TableInfo


class SelectionError(ValueError):
    """A selection that cannot be applied (it would leave out a key column)."""


def parse_globs(raw: str) -> tuple[str, ...]:
    """``"a*, b"`` -> ``("a*", "b")``; empty items are ignored."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def column_excluded(globs: Iterable[str], table: str, column: str) -> bool:
    """Whether a ``table.column`` glob of ``globs`` (``SYNC_EXCLUDE_COLUMNS``) leaves the column out.
    The one matcher: the engine drops from a table many files share the columns it matches."""
    return any(fnmatch.fnmatchcase(f"{table}.{column}", g) for g in globs)


@dataclass(frozen=True)
class Selection:
    tables: tuple[str, ...] = ()  # globs of tables to mirror; empty: every table
    exclude_tables: tuple[str, ...] = ()
    exclude_columns: tuple[str, ...] = ()  # "table.column" globs

    def includes(self, table: str) -> bool:
        if self.tables and not any(fnmatch.fnmatchcase(table, g) for g in self.tables):
            return False
        return not any(fnmatch.fnmatchcase(table, g) for g in self.exclude_tables)

    def columns_of(self, table: TableInfo) -> TableInfo:
        """The table with the excluded columns left out."""
        if not self.exclude_columns:
            return table
        dropped = {c.name for c in table.columns if column_excluded(self.exclude_columns, table.name, c.name)}
        keys = dropped & set(table.primary_key)
        if keys:
            raise SelectionError(
                f"SYNC_EXCLUDE_COLUMNS leaves out {', '.join(sorted(keys))} of table {table.name!r}, part of its "
                "primary key; a row without its key cannot be synced: exclude the table instead"
            )
        if not dropped:
            return table
        if len(dropped) == len(table.columns):
            raise SelectionError(f"SYNC_EXCLUDE_COLUMNS leaves no column of table {table.name!r}: exclude the table")
        return replace(table, columns=tuple(c for c in table.columns if c.name not in dropped))

    def apply(self, tables: Iterable[TableInfo]) -> list[TableInfo]:
        return [self.columns_of(t) for t in tables if self.includes(t.name)]
