"""Files whose rows another file's sync changed, kept until their own sync rewrites them.

Many files share one PostgreSQL table (scope.py). When one file's values make a column widen
(column_types.py), ``ALTER COLUMN ... TYPE ... USING`` converts every file's values with
PostgreSQL's cast. For a column of reals that is not the engine's own text of them: a double
``100.0`` cast to text is ``'100'`` where the engine writes ``'100.0'`` (``repr``), a numeric
``1e+292`` is 293 digits. The syncing file's rows are rewritten by its own merge, in the same
transaction; the other files' are not, and a file that does not change is never synced again (its
fingerprint is unchanged), so its rows would stay different from what it holds for good.

So the widening transaction marks each other file holding values in such a column in
``<state schema>._sps_pending_rewrites`` and drops those files' batch and row digests for the
table, so that nothing of theirs can be skipped as unchanged. A file's next sync of the table,
finding its mark under its lock (read with the rest of :func:`.catalog.read_entry`), reloads the
file's rows in place from its SQLite file (the full-refresh path) and deletes the mark in the same
transaction. The Dagster layer runs those syncs right after the sync that widened, or that found
marks left by a run that died in between; a file gone meanwhile keeps its mark.

Marking is durable (a row, committed with the ALTER) rather than done at once in the widening
transaction: that would read every other file under the one lock, and a file that cannot be read
then would fail a sync that did nothing wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg2.extensions
from psycopg2 import sql

from .bookkeeping import (
    PENDING_REWRITES_TABLE,
    ROW_DIGESTS_TABLE,
    STATE_TABLE,
    ensure_pending_rewrites_table,
    relation_exists,
)
from .column_types import cast_keeps_values
from .pg_target import PgTable
from .scope import SOURCE_FILE_COLUMN, Scope
from .types import PgType


def pending_in_entry(state_schema: str, schema: str, table: str) -> sql.Composable:
    """The expression :func:`.catalog.read_entry` selects: the table's marks, file -> reason, as json
    (NULL when there are none)."""
    return sql.SQL(
        "(SELECT json_object_agg(source_file, reason) FROM {} WHERE target_schema = {} AND table_name = {})"
    ).format(sql.Identifier(state_schema, PENDING_REWRITES_TABLE), sql.Literal(schema), sql.Literal(table))


def mark_others(target: PgTable, changes: Mapping[str, tuple[PgType, bool]], state_schema: str) -> None:
    """After ``target``'s columns ``changes`` (SQLite name -> (new type, whether it held values), as
    ``PgTable.alter_types`` took them) were widened: mark every other file holding a value in one
    whose cast does not keep the engine's values, and drop those files' digests of the table."""
    scope = target.scope
    changed = {
        column: (target.pg_column(column).pg_type.name, new)
        for column, (new, holds) in changes.items()
        if holds and not cast_keeps_values(target.pg_column(column).pg_type.name, new)
    }
    if not scope.shared or not changed:
        return
    cur = target.cur
    ensure_pending_rewrites_table(cur, state_schema)
    widened = ", ".join(f"{column!r} ({old} to {new.name})" for column, (old, new) in changed.items())
    reason = f"column{'s' if len(changed) > 1 else ''} {widened} widened by the sync of file {scope.source_file!r}"
    pending = sql.Identifier(state_schema, PENDING_REWRITES_TABLE)
    ours = sql.SQL("target_schema = {} AND table_name = {}").format(
        sql.Literal(target.schema), sql.Literal(target.table.name)
    )
    statements = [
        sql.SQL(
            "INSERT INTO {pending} (target_schema, table_name, source_file, reason) "
            "SELECT DISTINCT {schema}, {table}, {file}, {reason} FROM {target} "
            "WHERE {file} <> {this} AND ({held}) ON CONFLICT DO NOTHING"
        ).format(
            pending=pending,
            schema=sql.Literal(target.schema),
            table=sql.Literal(target.table.name),
            file=sql.Identifier(SOURCE_FILE_COLUMN),
            reason=sql.Literal(reason),
            target=target.ident,
            this=sql.Literal(scope.source_file),
            held=sql.SQL(" OR ").join(
                sql.SQL("{} IS NOT NULL").format(sql.Identifier(target.pg_column(c).name)) for c in changed
            ),
        )
    ]
    marked = sql.SQL("source_file IN (SELECT source_file FROM {} WHERE {})").format(pending, ours)
    if relation_exists(cur, state_schema, STATE_TABLE):
        statements.append(
            sql.SQL("UPDATE {} SET batches = NULL, changed_at = now() WHERE {} AND batches IS NOT NULL AND {}").format(
                sql.Identifier(state_schema, STATE_TABLE), ours, marked
            )
        )
    if relation_exists(cur, state_schema, ROW_DIGESTS_TABLE):
        statements.append(
            sql.SQL("DELETE FROM {} WHERE {} AND {}").format(
                sql.Identifier(state_schema, ROW_DIGESTS_TABLE), ours, marked
            )
        )
    cur.execute(sql.SQL("; ").join(statements))


def rewrite_due(scope: Scope, pending: Mapping[str, str]) -> bool:
    """Whether this sync must reload its file's rows: ``pending`` (read under its lock) marks its file."""
    return scope.source_file is not None and scope.source_file in pending


def done(cur: psycopg2.extensions.cursor, state_schema: str, schema: str, table: str, scope: Scope) -> None:
    """Delete this file's mark, in the transaction that rewrote its rows."""
    cur.execute(
        sql.SQL("DELETE FROM {} WHERE target_schema = %s AND table_name = %s AND source_file = %s").format(
            sql.Identifier(state_schema, PENDING_REWRITES_TABLE)
        ),
        (schema, table, scope.source_file),
    )


def others(
    cur: psycopg2.extensions.cursor,
    state_schema: str,
    schema: str,
    table: str,
    scope: Scope,
    known: Mapping[str, str],
    widened: bool,
) -> dict[str, str]:
    """The other files marked for ``table`` as this sync ends, file -> reason: those read under its
    lock (``known``), read again only when this sync widened a column (and so may have marked some)."""
    if not scope.shared:
        return {}
    marks = dict(known)
    if widened and relation_exists(cur, state_schema, PENDING_REWRITES_TABLE):
        cur.execute(
            sql.SQL("SELECT source_file, reason FROM {} WHERE target_schema = %s AND table_name = %s").format(
                sql.Identifier(state_schema, PENDING_REWRITES_TABLE)
            ),
            (schema, table),
        )
        marks = dict(cur.fetchall())
    marks.pop(scope.source_file or "", None)
    return marks


def pending_rewrites(
    conn: psycopg2.extensions.connection, schema: str, state_schema: str, table_name: str
) -> list[str]:
    """The files whose rows of ``schema``'s table ``table_name`` (its SQLite name) wait for a rewrite
    by their next sync, in order; read-only."""
    with conn, conn.cursor() as cur:
        if not relation_exists(cur, state_schema, PENDING_REWRITES_TABLE):
            return []
        cur.execute(
            sql.SQL(
                "SELECT source_file FROM {} WHERE target_schema = %s AND table_name = %s ORDER BY source_file"
            ).format(sql.Identifier(state_schema, PENDING_REWRITES_TABLE)),
            (schema, table_name),
        )
        return [file for (file,) in cur.fetchall()]
