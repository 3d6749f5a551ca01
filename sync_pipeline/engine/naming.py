"""PostgreSQL names for SQLite names: the same name, unless it is too long for PostgreSQL.

SQLite names have no length limit; PostgreSQL cuts identifiers at 63 bytes, silently, so two
long names that share their first 63 bytes would become one. A name over 63 bytes is therefore
shortened deterministically: as many of its leading bytes as fit (cut on a character boundary),
``_``, and 8 hex digits of a BLAKE2b digest of the whole name. Every mirrored table and column
also carries a ``COMMENT`` with its SQLite name (see ``PgTable.create``), so ``\\d+`` shows where a
shortened one came from. Two names of one table that still meet are refused by name.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from .errors import UnsupportedTableError
from .sqlite_source import TableInfo

PG_MAX_IDENTIFIER_BYTES = 63
_DIGEST_HEX = 8


def pg_name(name: str) -> str:
    raw = name.encode()
    if len(raw) <= PG_MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.blake2b(raw, digest_size=_DIGEST_HEX // 2).hexdigest()
    head = raw[: PG_MAX_IDENTIFIER_BYTES - _DIGEST_HEX - 1].decode("utf-8", "ignore")
    return f"{head}_{digest}"


def pg_table(table: TableInfo) -> TableInfo:
    """The table with PostgreSQL names for itself, its columns and its key."""
    names = [pg_name(c.name) for c in table.columns]
    seen: dict[str, str] = {}
    for column, name in zip(table.columns, names, strict=True):
        if name in seen:
            raise UnsupportedTableError(
                table.name,
                f"columns {seen[name]!r} and {column.name!r} would both be {name!r} in PostgreSQL "
                f"(names over {PG_MAX_IDENTIFIER_BYTES} bytes are shortened); rename one in SQLite",
            )
        seen[name] = column.name
    return replace(
        table,
        name=pg_name(table.name),
        columns=tuple(replace(c, name=n) for c, n in zip(table.columns, names, strict=True)),
        primary_key=tuple(pg_name(k) for k in table.primary_key),
    )
