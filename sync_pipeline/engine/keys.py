"""Primary keys that SQLite keeps apart but PostgreSQL could merge once converted.

A key column mapped to ``text`` without TEXT affinity (a typeless column, say) can hold the
integer ``7`` and the text ``'7'``: two keys in SQLite, one in PostgreSQL. Within one storage
class the conversion is one to one, and integers and reals never meet (a real's text always has
a ``.``, an exponent or ``inf``), so only a column holding text beside numbers can merge keys, or
a column whose type repairs values (two texts that differ only in invalid bytes, or a blob and the
text of its ``\\x`` hex digits, become one).
Such a table has every key checked, not only the rows a sync happens to send: a row below the
cursor watermark, or in a batch skipped as unchanged, would otherwise be overwritten unnoticed.
"""

from __future__ import annotations

from .sqlite_source import SqliteSnapshot, TableInfo, quote_sqlite_identifier
from .types import TEXT, Affinity, affinity


def mixed_key_columns(snapshot: SqliteSnapshot, table: TableInfo) -> list[str]:
    """The key columns mapped to text that hold text beside numbers in this snapshot, and those whose
    type repairs values (``types.REPAIRED_TEXT``: two invalid UTF-8 texts, or a blob and the text of
    its hex digits, can become one value), whatever they hold."""
    mixed = []
    source = quote_sqlite_identifier(table.name)
    for column in table.columns:
        if column.pk_position and column.pg_type.repairs:
            mixed.append(column.name)
            continue
        if (
            not column.pk_position
            or column.pg_type.name != TEXT.name
            or affinity(column.declared_type) is Affinity.TEXT
        ):
            continue
        q = quote_sqlite_identifier(column.name)
        (both,) = snapshot.conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {source} WHERE typeof({q}) = 'text') "
            f"AND EXISTS (SELECT 1 FROM {source} WHERE typeof({q}) IN ('integer', 'real'))"
        ).fetchone()
        if both:
            mixed.append(column.name)
    return mixed
