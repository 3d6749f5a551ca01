"""The bookkeeping schema: what the sync remembers about the tables it mirrors, kept apart from them.

The mirrored schema (``PG_SCHEMA``) holds exactly the SQLite tables. Everything else the sync
keeps lives in a schema of its own (``PG_STATE_SCHEMA``, default ``sqlite_pg_sync``), created on
first use, which several target schemas may share:

* ``_sps_table_state``: one row per (target schema, table), what its last sync left behind
  (see :mod:`.sync_state`);
* ``_sps_row_digests``: per (target schema, table, batch), a hash of each row of the batch as the
  last sync that sent it read it (see :mod:`.row_digests`), created when first needed;
* ``_sps_pending_rewrites``: per (target schema, table, file), a file of many sharing the table whose
  rows another file's sync changed by widening a column's type, to be rewritten from SQLite by its
  next sync (see :mod:`.rewrites`), created when first needed;
* ``_sps_snapshots_<digest>``, one per target schema: numbers the SQLite snapshots read for it
  (see :mod:`.versions`);
* ``_sps_version_<digest>``, one per (target schema, table): the newest snapshot number a sync
  of that table has used (see :mod:`.sync_state`).

Sequence names are digests because a schema name and a table name together can be far longer
than PostgreSQL's 63 bytes; each sequence carries a ``COMMENT`` saying what it numbers.

Before, ``_sps_sync_state`` and ``_sps_snapshots`` lived in the target schema itself.
:func:`migrate` moves them here, once, under the target schema's snapshot lock.

Lock order, the same everywhere so that no two transactions wait on each other in a cycle:
the per-table lock (a sync), then the target schema's snapshot lock (the clock, a migration),
then the state schema's lock (creating the schema and its table). No transaction takes an
earlier one of these after a later one.
"""

from __future__ import annotations

import hashlib
import json

import psycopg2.extensions
from psycopg2 import sql

from .errors import TargetError
from .naming import EXACT, PgNames

DEFAULT_STATE_SCHEMA = "sqlite_pg_sync"
STATE_TABLE = "_sps_table_state"
ROW_DIGESTS_TABLE = "_sps_row_digests"
PENDING_REWRITES_TABLE = "_sps_pending_rewrites"
# The layout before issue 10, in the target schema itself.
OLD_STATE_TABLE = "_sps_sync_state"
OLD_SEQUENCE = "_sps_snapshots"

_CREATE_STATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS {} ("
    "target_schema text NOT NULL, "
    "table_name text NOT NULL, "  # the SQLite name
    "source_file text NOT NULL DEFAULT '', "  # the file's key when many files share the table (scope.py)
    "table_oid oid, "  # the mirror this row describes; another table of that name is not described by it
    "shape text, "
    "cursor_column text, "
    "watermark jsonb, "
    "batches jsonb, "
    "changed_at timestamptz NOT NULL DEFAULT now(), "  # when this row last changed, not the last sync
    "PRIMARY KEY (target_schema, table_name, source_file))"
)


_CREATE_ROW_DIGESTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {} ("
    "target_schema text NOT NULL, "
    "table_name text NOT NULL, "
    "source_file text NOT NULL DEFAULT '', "
    "batch_id bigint NOT NULL, "
    "digest text NOT NULL, "  # the batch digest the row hashes were taken of
    "hashes bytea NOT NULL, "  # a 64-bit hash of each row's COPY line
    "PRIMARY KEY (target_schema, table_name, source_file, batch_id))"
)


# Columns named target_schema and source_file, as in every table here: a removed file's bookkeeping
# is deleted from each table that has both (scope.delete_source_file).
_CREATE_PENDING_REWRITES_TABLE = (
    "CREATE TABLE IF NOT EXISTS {} ("
    "target_schema text NOT NULL, "
    "table_name text NOT NULL, "  # the SQLite name
    "source_file text NOT NULL, "  # the file whose rows are to be rewritten
    "reason text NOT NULL, "  # which column widened, to what, in which file's sync
    "marked_at timestamptz NOT NULL DEFAULT now(), "
    "PRIMARY KEY (target_schema, table_name, source_file))"
)


def _digest(*parts: str, size: int) -> str:
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=size).hexdigest()


def snapshot_sequence(target_schema: str) -> str:
    """The sequence numbering the snapshots read for ``target_schema`` (31 bytes)."""
    return f"_sps_snapshots_{_digest(target_schema, size=8)}"


def version_sequence(target_schema: str, table: str, source_file: str = "") -> str:
    """The sequence holding the newest snapshot number a sync of ``target_schema``'s ``table``
    (its SQLite name), of the file ``source_file`` when many share it, has used (45 bytes)."""
    parts = (target_schema, table, source_file) if source_file else (target_schema, table)
    return f"_sps_version_{_digest(*parts, size=16)}"


def check_apart(target_schema: str, state_schema: str) -> None:
    """Refuse a state schema that is the target schema: the mirror must hold only SQLite's tables,
    and a SQLite table could be called like the state table."""
    if not state_schema:
        raise TargetError("the state schema (PG_STATE_SCHEMA) must not be empty")
    if state_schema == target_schema:
        raise TargetError(
            f"the state schema (PG_STATE_SCHEMA) must differ from the target schema (PG_SCHEMA), "
            f"both are {target_schema!r}: the target schema holds only the SQLite tables"
        )


def _lock(cur: psycopg2.extensions.cursor, key: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


def snapshot_lock(cur: psycopg2.extensions.cursor, target_schema: str) -> None:
    """The target schema's snapshot lock, held until the transaction ends: snapshots are numbered
    under it, and the old layout is migrated under it (the key is the one the old layout used, so
    a sync still running the old code waits for a migration too)."""
    _lock(cur, f"sqlite_pg_sync:snapshots:{target_schema}")


def relation_exists(cur: psycopg2.extensions.cursor, schema: str, name: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    return cur.fetchone() is not None


def ensure_state_schema(cur: psycopg2.extensions.cursor, state_schema: str) -> None:
    """Create the state schema and its table if they are missing.

    Checked first without a lock, so that a sync finding them costs one catalog lookup and no
    lock. Creating takes the state schema's advisory lock and checks again: two first syncs
    (of two tables, or two target schemas sharing the state schema) would otherwise both run
    ``CREATE SCHEMA IF NOT EXISTS``, and the second can fail on the catalog's unique index. The
    schema is created only when it is missing: ``CREATE SCHEMA`` needs the database's CREATE
    privilege even with ``IF NOT EXISTS``, and a DBA may have created it for a role without it.
    """
    if relation_exists(cur, state_schema, STATE_TABLE):
        return
    _lock(cur, f"sqlite_pg_sync:state-schema:{state_schema}")
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (state_schema,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(state_schema)))
    cur.execute(sql.SQL(_CREATE_STATE_TABLE).format(sql.Identifier(state_schema, STATE_TABLE)))


def ensure_row_digests_table(cur: psycopg2.extensions.cursor, state_schema: str) -> None:
    """Create ``_sps_row_digests`` if missing, under the state schema's lock (as the state table)."""
    if relation_exists(cur, state_schema, ROW_DIGESTS_TABLE):
        return
    _lock(cur, f"sqlite_pg_sync:state-schema:{state_schema}")
    cur.execute(sql.SQL(_CREATE_ROW_DIGESTS_TABLE).format(sql.Identifier(state_schema, ROW_DIGESTS_TABLE)))


def ensure_pending_rewrites_table(cur: psycopg2.extensions.cursor, state_schema: str) -> None:
    """Create the state schema if missing, then ``_sps_pending_rewrites`` if missing, under the
    state schema's lock (as the state table)."""
    ensure_state_schema(cur, state_schema)
    if relation_exists(cur, state_schema, PENDING_REWRITES_TABLE):
        return
    _lock(cur, f"sqlite_pg_sync:state-schema:{state_schema}")
    cur.execute(sql.SQL(_CREATE_PENDING_REWRITES_TABLE).format(sql.Identifier(state_schema, PENDING_REWRITES_TABLE)))


def sequence_value(cur: psycopg2.extensions.cursor, schema: str, name: str) -> int | None:
    """The sequence's last value; None when it does not exist or was never set."""
    cur.execute("SELECT last_value FROM pg_sequences WHERE schemaname = %s AND sequencename = %s", (schema, name))
    row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def ensure_sequence(cur: psycopg2.extensions.cursor, schema: str, name: str, about: str) -> None:
    """Create the sequence if missing. The caller holds the lock that serialises every creator
    of this very sequence (the snapshot lock, or the per-table lock)."""
    if relation_exists(cur, schema, name):
        return
    ident = sql.Identifier(schema, name)
    cur.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS bigint").format(ident))
    cur.execute(sql.SQL("COMMENT ON SEQUENCE {} IS {}").format(ident, sql.Literal(about)))


def raise_sequence(cur: psycopg2.extensions.cursor, schema: str, name: str, value: int, about: str) -> None:
    """Move the sequence up to ``value`` (creating it if missing); never down.

    Read, then ``setval``: the caller holds the lock under which every writer of this sequence
    writes it, so nothing moves it in between. Nothing is written when it is already there.
    """
    ensure_sequence(cur, schema, name, about)
    current = sequence_value(cur, schema, name)
    if current is None or value > current:
        set_sequence(cur, schema, name, value)


def set_sequence(cur: psycopg2.extensions.cursor, schema: str, name: str, value: int) -> None:
    """``setval``; the caller read the value under the lock every writer of the sequence holds."""
    cur.execute("SELECT setval(%s::regclass, %s)", (sql.Identifier(schema, name).as_string(cur), value))


def version_about(target_schema: str, table: str, source_file: str = "", names: PgNames = EXACT) -> str:
    of_file = f" from file {source_file}" if source_file else ""
    return f"sqlite-pg-sync: newest SQLite snapshot number synced into {target_schema}.{names.name(table)}{of_file}"


def snapshots_about(target_schema: str) -> str:
    return f"sqlite-pg-sync: numbers the SQLite snapshots read for schema {target_schema}"


def table_oid(cur: psycopg2.extensions.cursor, target_schema: str, table: str, names: PgNames = EXACT) -> int | None:
    """The OID of the mirror of SQLite table ``table`` in ``target_schema``, None when there is none."""
    cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (target_schema, names.name(table)),
    )
    row = cur.fetchone()
    return None if row is None else int(row[0])


def migrate(cur: psycopg2.extensions.cursor, target_schema: str, state_schema: str) -> None:
    """Move the old layout (``<target>._sps_sync_state``, ``<target>._sps_snapshots``) into the
    state schema, in the caller's transaction; a no-op (one catalog lookup) once it is gone.

    Exactly once: the work happens under the target schema's snapshot lock, after checking
    again that the old objects are still there, and the copy and the drops commit together. A
    second first sync waits on the lock, then finds nothing to move. Numbers never go backwards:
    each table's ``snapshot_version`` moves into its version sequence, and the old snapshot
    sequence's value (and the highest version, should that sequence be gone) into the target
    schema's snapshot sequence, so every snapshot numbered from now on is newer than any synced.

    Each row is matched with the mirror it described when it was in the same schema: its OID is
    recorded, so watermark and digests carry over. A row already in the state table for the same
    table (an older deployment kept syncing into the old layout after a migration) leaves no
    watermark or digests: neither copy can be trusted to describe PostgreSQL's rows, and without
    them the next sync reads every row, which is always right.
    """
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname IN (%s, %s)",
        (target_schema, OLD_STATE_TABLE, OLD_SEQUENCE),
    )
    if not cur.fetchall():
        return
    snapshot_lock(cur, target_schema)
    ensure_state_schema(cur, state_schema)
    highest = 0
    if relation_exists(cur, target_schema, OLD_STATE_TABLE):
        highest = _move_state_rows(cur, target_schema, state_schema)
    if relation_exists(cur, target_schema, OLD_SEQUENCE):
        old = sql.Identifier(target_schema, OLD_SEQUENCE)
        cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(old))
        last_value, is_called = cur.fetchone()
        if is_called:
            highest = max(highest, int(last_value))
        cur.execute(sql.SQL("DROP SEQUENCE {}").format(old))
    if highest:
        name = snapshot_sequence(target_schema)
        raise_sequence(cur, state_schema, name, highest, snapshots_about(target_schema))


def _move_state_rows(cur: psycopg2.extensions.cursor, target_schema: str, state_schema: str) -> int:
    """Copy the old state table's rows (any of its layouts) and drop it; the highest version."""
    old = sql.Identifier(target_schema, OLD_STATE_TABLE)
    # to_jsonb reads the row whichever columns this layout has; jsonb travels as text, unparsed.
    cur.execute(
        sql.SQL(
            "SELECT r->>'table_name', r->>'cursor_column', (r->'watermark')::text, (r->'batches')::text, "
            "r->>'shape', (r->>'snapshot_version')::bigint, r->>'synced_at' "
            "FROM {} AS s CROSS JOIN LATERAL to_jsonb(s) AS r"
        ).format(old)
    )
    rows = cur.fetchall()
    highest = 0
    for table, cursor_column, watermark, batches, shape, version, synced_at in rows:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (target_schema, table_name, table_oid, shape, cursor_column, watermark, batches, "
                "changed_at) VALUES (%s, %s, %s, %s, %s, nullif(%s::jsonb, 'null'), nullif(%s::jsonb, 'null'), "
                "coalesce(%s::timestamptz, now())) "
                "ON CONFLICT (target_schema, table_name, source_file) DO UPDATE SET shape = NULL, "
                "cursor_column = NULL, watermark = NULL, batches = NULL, changed_at = now()"
            ).format(sql.Identifier(state_schema, STATE_TABLE)),
            (
                target_schema,
                table,
                table_oid(cur, target_schema, table),
                shape,
                cursor_column,
                watermark,
                batches,
                synced_at,
            ),
        )
        if version is not None:
            raise_sequence(
                cur,
                state_schema,
                version_sequence(target_schema, table),
                int(version),
                version_about(target_schema, table),
            )
            highest = max(highest, int(version))
    cur.execute(sql.SQL("DROP TABLE {}").format(old))
    return highest


def forget(
    cur: psycopg2.extensions.cursor,
    target_schema: str,
    state_schema: str = DEFAULT_STATE_SCHEMA,
    source_file: str | None = None,
) -> None:
    """Remove everything kept about ``target_schema`` (or only about its file ``source_file``, when many
    files share its tables) from the state schema: the rows of every bookkeeping table keyed by it (state,
    row digests, and any table added later with a ``target_schema`` column), the version sequences of its
    tables, and, for a whole schema, its snapshot sequence. For a target schema that is gone for good (the
    tests drop theirs) or a file removed for good; a mirror still in use would then be read in full by its
    next sync."""
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (state_schema,))
    if cur.fetchone() is None:
        return
    cur.execute(
        "SELECT c.relname, bool_or(a.attname = 'table_name') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') GROUP BY c.relname "
        "HAVING bool_or(a.attname = 'target_schema') AND bool_or(a.attname = 'source_file') ORDER BY 1",
        (state_schema,),
    )
    names_back = sql.SQL("RETURNING table_name, source_file")
    where, params = sql.SQL("target_schema = %s"), [target_schema]
    if source_file is not None:
        where, params = where + sql.SQL(" AND source_file = %s"), [target_schema, source_file]
    tables: set[tuple[str, str]] = set()
    for name, has_table_name in cur.fetchall():
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE {} {}").format(
                sql.Identifier(state_schema, name), where, names_back if has_table_name else sql.SQL("")
            ),
            params,
        )
        if has_table_name:
            tables.update(cur.fetchall())
    names = [version_sequence(target_schema, t, f) for t, f in sorted(tables)]
    if source_file is None:
        names.append(snapshot_sequence(target_schema))
    for name in names:
        cur.execute(sql.SQL("DROP SEQUENCE IF EXISTS {}").format(sql.Identifier(state_schema, name)))
