"""What one table's sync needs to know from PostgreSQL before it writes, in two round trips.

A sync used to ask for each fact on its own (the table's OID, asked again by every helper, its
columns, key, size, row count, the state table, the old layout, the version sequence, the state
row): about 25 round trips before an unchanged table's sync could tell it had nothing to do,
which made a file of 1000 small tables cost 25 s in the engine alone (issue 16). Here the
catalog facts come in one statement and the row count with the bookkeeping row in a second (its
relations must exist for the statement to be parsed, which the first one says).

Read in the sync's own transaction, after its per-table lock: syncs of one table are serialised
by that lock, so nothing read here can be changed by another sync before this one commits. Read
any earlier (for every table up front, say), the facts could be those from before another run's
sync of the table, and checking them under the lock would cost the same round trip as reading
them. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from .bookkeeping import OLD_SEQUENCE, OLD_STATE_TABLE, PENDING_REWRITES_TABLE, STATE_TABLE, version_sequence
from .rewrites import pending_in_entry
from .scope import Scope


@dataclass(frozen=True)
class StateRow:
    """The table's row of ``_sps_table_state`` as stored (jsonb already parsed)."""

    table_oid: int | None
    shape: str | None
    cursor_column: str | None
    watermark: Any
    batches: Any


@dataclass(frozen=True)
class TableEntry:
    """One table's catalog, size, row count and bookkeeping, as read at one moment under its lock."""

    table: str  # the SQLite name
    schema_exists: bool
    oid: int | None  # None: the mirror does not exist
    columns: tuple[tuple[str, str, str | None], ...]  # (PostgreSQL name, type, COMMENT), in column order
    primary_key: tuple[str, ...]  # PostgreSQL names, in key order
    total_bytes: int  # pg_total_relation_size, 0 when missing
    rows: int  # the scope's rows, 0 when missing
    state_table_exists: bool
    old_layout: bool  # the bookkeeping layout before issue 10 is still in the target schema
    version_sequence_exists: bool
    version: int | None  # the table's version sequence's value; None: missing or never set
    state: StateRow | None  # None: no row (or no state table)
    # Files of many sharing the table whose rows wait for a rewrite (rewrites.py), file -> why;
    # read only for a sync of one of them (a shared scope).
    pending_rewrites: dict[str, str]

    def columns_in_pg(self) -> list[tuple[str, str]]:
        return [(name, typ) for name, typ, _ in self.columns]


_CATALOG = """
SELECT n.oid IS NOT NULL, c.oid,
  (SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, a.atttypmod),
                                    col_description(a.attrelid, a.attnum)) ORDER BY a.attnum)
     FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT array_agg(a.attname::text ORDER BY k.ord)
     FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = c.oid AND i.indisprimary),
  CASE WHEN c.oid IS NULL THEN 0 ELSE pg_total_relation_size(c.oid) END,
  EXISTS (SELECT 1 FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
           WHERE sn.nspname = %(state_schema)s AND s.relname = %(state_table)s),
  EXISTS (SELECT 1 FROM pg_class o WHERE o.relnamespace = n.oid AND o.relname IN (%(old_table)s, %(old_sequence)s)),
  EXISTS (SELECT 1 FROM pg_class q JOIN pg_namespace qn ON qn.oid = q.relnamespace
           WHERE qn.nspname = %(state_schema)s AND q.relname = %(sequence)s),
  (SELECT last_value FROM pg_sequences WHERE schemaname = %(state_schema)s AND sequencename = %(sequence)s),
  EXISTS (SELECT 1 FROM pg_class p JOIN pg_namespace pn ON pn.oid = p.relnamespace
           WHERE pn.nspname = %(state_schema)s AND p.relname = %(pending_table)s)
FROM (SELECT 1) AS one
LEFT JOIN pg_namespace n ON n.nspname = %(schema)s
LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
"""


def read_entry(
    cur: psycopg2.extensions.cursor,
    schema: str,
    state_schema: str,
    table: str,
    pg_table: str,
    scope: Scope,
) -> TableEntry:
    """The entry of SQLite table ``table`` (mirrored as ``schema.pg_table``): two statements."""
    cur.execute(
        _CATALOG,
        {
            "schema": schema,
            "table": pg_table,
            "state_schema": state_schema,
            "state_table": STATE_TABLE,
            "old_table": OLD_STATE_TABLE,
            "old_sequence": OLD_SEQUENCE,
            "sequence": version_sequence(schema, table, scope.state_key()),
            "pending_table": PENDING_REWRITES_TABLE,
        },
    )
    schema_exists, oid, columns, key, total_bytes, state_table, old_layout, sequence_exists, version, marks_table = (
        cur.fetchone()
    )
    parts: list[sql.Composable] = [
        sql.SQL("0")
        if oid is None
        else sql.SQL("(SELECT count(*) FROM {} WHERE {})").format(sql.Identifier(schema, pg_table), scope.where())
    ]
    parts.append(
        sql.SQL(
            "(SELECT json_build_array(table_oid, shape, cursor_column, watermark, batches) FROM {} "
            "WHERE target_schema = {} AND table_name = {} AND source_file = {})"
        ).format(
            sql.Identifier(state_schema, STATE_TABLE),
            sql.Literal(schema),
            sql.Literal(table),
            sql.Literal(scope.state_key()),
        )
        if state_table
        else sql.SQL("NULL::json")
    )
    shared_marks = scope.shared and marks_table  # the marks matter to a sync of one of many files only
    parts.append(pending_in_entry(state_schema, schema, table) if shared_marks else sql.SQL("NULL::json"))
    # Values as literals, no parameters: a '%' in a file's name must not read as a placeholder.
    cur.execute(sql.SQL("SELECT ") + sql.SQL(", ").join(parts))
    rows, state, pending = cur.fetchone()
    return TableEntry(
        table=table,
        schema_exists=bool(schema_exists),
        oid=None if oid is None else int(oid),
        columns=tuple((name, typ, comment) for name, typ, comment in columns or ()),
        primary_key=tuple(key or ()),
        total_bytes=int(total_bytes),
        rows=int(rows),
        state_table_exists=bool(state_table),
        old_layout=bool(old_layout),
        version_sequence_exists=bool(sequence_exists),
        version=None if version is None else int(version),
        state=None if state is None else StateRow(None if state[0] is None else int(state[0]), *state[1:]),
        pending_rewrites=dict(pending or {}),
    )
