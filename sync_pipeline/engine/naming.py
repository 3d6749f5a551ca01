"""PostgreSQL names for SQLite names: the same name (or its lowercase), unless it is too long for PostgreSQL.

How names are spelled is one small object, :class:`PgNames`, taken by whatever builds a PostgreSQL name
(``PgTable``, the bookkeeping's OID lookup, the translator): ``exact`` (the default) keeps SQLite's
spelling, ``lower`` (``SYNC_PG_NAMES=lower``) lowercases tables and columns so that an analyst can write
``select count(*) from track`` unquoted. Lowercasing is ``str.lower()``, Unicode-aware (``Größe`` is
``größe``), not ``str.casefold()``: casefold is for comparing, and changes letters beyond their case
(``ß`` -> ``ss``, ``ﬁ`` -> ``fi``), so ``Größe`` would become ``grösse``, a name nobody wrote; ``lower()``
leaves a name already in lowercase as it is. (PostgreSQL itself folds only ASCII letters of an unquoted
name in a UTF-8 database: ``größe`` works unquoted, ``GRÖSSE`` does not.)

SQLite names have no length limit; PostgreSQL cuts identifiers at 63 bytes, silently, so two
long names that share their first 63 bytes would become one. A name over 63 bytes is therefore
shortened deterministically: as many of its leading bytes as fit (cut on a character boundary),
``_``, and 8 hex digits of a BLAKE2b digest of the whole name (lowercased first in ``lower`` mode). Every
mirrored table and column also carries a ``COMMENT`` with its SQLite name (see ``PgTable.create``), so
``\\d+`` shows where a shortened or lowercased one came from. Two names of one table that still meet are
refused by name (two tables: translator.specs_by_table, at load time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import UnsupportedTableError
from .sqlite_source import TableInfo

PG_MAX_IDENTIFIER_BYTES = 63
_DIGEST_HEX = 8
MODES = ("exact", "lower")


def pg_name(name: str) -> str:
    """``name`` as PostgreSQL can hold it: itself, or shortened when over 63 bytes."""
    raw = name.encode()
    if len(raw) <= PG_MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.blake2b(raw, digest_size=_DIGEST_HEX // 2).hexdigest()
    head = raw[: PG_MAX_IDENTIFIER_BYTES - _DIGEST_HEX - 1].decode("utf-8", "ignore")
    return f"{head}_{digest}"


@dataclass(frozen=True)
class PgNames:
    """The naming mode (``SYNC_PG_NAMES``): SQLite names kept as they are, or lowercased."""

    lower: bool = False

    @classmethod
    def parse(cls, mode: str) -> PgNames:
        """``exact`` or ``lower`` (any case, surrounding spaces ignored); anything else is refused."""
        value = mode.strip().lower()
        if value not in MODES:
            raise ValueError(f"SYNC_PG_NAMES must be 'exact' or 'lower', got {mode!r}")
        return cls(lower=value == "lower")

    @property
    def mode(self) -> str:
        return "lower" if self.lower else "exact"

    def name(self, name: str) -> str:
        """The PostgreSQL name of the SQLite table or column ``name``."""
        return pg_name(name.lower() if self.lower else name)

    def why(self) -> str:
        """Why two names can meet, for the error that refuses them."""
        if self.lower:
            return f"SYNC_PG_NAMES=lower lowercases names, and names over {PG_MAX_IDENTIFIER_BYTES} bytes are shortened"
        return f"names over {PG_MAX_IDENTIFIER_BYTES} bytes are shortened"

    def owners(self, names: Iterable[str]) -> dict[str, str]:
        """PostgreSQL name -> the SQLite name it stands for; ValueError naming both SQLite names when two
        meet (the caller says what they are: tables)."""
        seen: dict[str, str] = {}
        for name in names:
            mirror = self.name(name)
            if mirror in seen:
                raise ValueError(f"{seen[mirror]!r} and {name!r} would both be {mirror!r} in PostgreSQL ({self.why()})")
            seen[mirror] = name
        return seen

    def table(self, table: TableInfo) -> TableInfo:
        """The table with PostgreSQL names for itself, its columns and its key."""
        names = [self.name(c.name) for c in table.columns]
        seen: dict[str, str] = {}
        for column, name in zip(table.columns, names, strict=True):
            if name in seen:
                raise UnsupportedTableError(
                    table.name,
                    f"columns {seen[name]!r} and {column.name!r} would both be {name!r} in PostgreSQL "
                    f"({self.why()}); rename one in SQLite",
                )
            seen[name] = column.name
        return replace(
            table,
            name=self.name(table.name),
            columns=tuple(replace(c, name=n) for c, n in zip(table.columns, names, strict=True)),
            primary_key=tuple(self.name(k) for k in table.primary_key),
        )

    def other(self) -> PgNames:
        """The other mode: where a mirror made before the mode changed would be."""
        return PgNames(lower=not self.lower)


EXACT = PgNames()
LOWER = PgNames(lower=True)


def pg_table(table: TableInfo) -> TableInfo:
    """The table with PostgreSQL names for itself, its columns and its key (``exact`` mode)."""
    return EXACT.table(table)
