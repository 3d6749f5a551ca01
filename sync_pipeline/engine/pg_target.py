"""The PostgreSQL side of one table's sync: DDL, staging, the merge, sizes and counts.

Every identifier that came from the SQLite file goes through ``psycopg2.sql.Identifier`` and
every value travels as a parameter or as COPY data. All statements run on the cursor the
caller gives, inside the caller's transaction, so one table's sync commits or rolls back as
a whole.

The merge writes only what changed. ``INSERT ... ON CONFLICT DO UPDATE ... WHERE IS DISTINCT
FROM`` would write nothing either, but it locks every conflicting row, which dirties every
page of the table (437 MB of WAL measured for a no-change sync of 1M rows). Here, an
``UPDATE ... FROM staging`` touches only rows whose values differ, and an ``INSERT ...
WHERE NOT EXISTS`` adds only keys the target lacks. Both run once over the whole stage (one
hash join each). Concurrent syncs of the same table are kept apart by a transaction-level
advisory lock, so the INSERT needs no ON CONFLICT clause.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import IO

import psycopg2.extensions
from psycopg2 import sql

from .column_types import compared_columns, identity, using
from .copy_format import BINARY_TYPES, TEXT, CopyFormat, for_arrow
from .errors import UnsupportedTableError
from .naming import EXACT, PgNames
from .scope import SOURCE_FILE_COLUMN, Scope
from .sqlite_source import ColumnInfo, TableInfo
from .types import PgType

STAGE = sql.Identifier("_sps_stage")
KEYS = sql.Identifier("_sps_keys")
KEY_SOURCES = sql.Identifier("_sps_key_sources")  # keys beside the SQLite keys they came from
SQLITE_KEY = "_sps_sqlite_key"


def _short_name(prefix: str, table: str, suffix: str = "") -> str:
    """A name derived from ``table`` that fits PostgreSQL's 63 bytes and stays unique per table."""
    digest = hashlib.sha1(table.encode()).hexdigest()[:10]
    return f"{prefix}{digest}{suffix}"


def new_table_name(table: str) -> str:
    """The name a full refresh builds the new table under, beside the live one."""
    return _short_name("_sps_new_", table)


# Index builds (the primary key after a first load's COPY, SQLite's indexes: indexes.py) sort every key in
# maintenance_work_mem (the server default is 64MB): with 256MB a million-row bigint index builds in memory, with
# PostgreSQL's parallel workers, in half the time (0.39 s against 0.76 s here).
INDEX_BUILD_SETTINGS = {"maintenance_work_mem": "256MB"}

# A table this transaction created and filled (a first load, a rebuild) is analyzed before the commit, so that no
# query ever meets it without statistics. Its rows still count as changes after the commit (PostgreSQL adds the
# transaction's inserts to the table's counters when it ends, after that ANALYZE), so where autovacuum runs and
# those counts call for an analyze, autovacuum analyzes the whole table again within autovacuum_naptime (1 min by
# default): the sync's own ANALYZE then only has to hold until then, and samples 3,000 rows (statistics target 10)
# instead of 30,000 (0.03 s against 0.35 s for 1M rows here). A table ANALYZE would read whole anyway, a server
# without autovacuum, or one whose own statistics target is as small, gets the full ANALYZE.
STOPGAP_STATISTICS_TARGET = 10
_STOPGAP_APPLIES = sql.SQL(
    "SELECT current_setting('default_statistics_target'), "
    "current_setting('autovacuum')::bool AND current_setting('track_counts')::bool "
    "AND current_setting('default_statistics_target')::int > %(stopgap)s "
    "AND %(rows)s > 300 * current_setting('default_statistics_target')::int "
    "AND %(rows)s > current_setting('autovacuum_analyze_threshold')::float8 "
    "+ current_setting('autovacuum_analyze_scale_factor')::float8 * %(rows)s"
)


class PgTable:
    """One SQLite table's mirror in PostgreSQL, driven through one cursor.

    ``table`` describes it with SQLite's names (for messages and the reader), ``pg`` with the
    names it has in PostgreSQL (naming.py); every statement here uses ``pg``. With a shared
    ``scope`` (many files into one table, see scope.py), ``pg`` leads with ``_source_file``, and
    every statement reads, compares, deletes and counts only the scope's rows.
    """

    def __init__(
        self,
        cur: psycopg2.extensions.cursor,
        schema: str,
        table: TableInfo,
        notes: Mapping[str, str] | None = None,
        scope: Scope | None = None,
        names: PgNames = EXACT,
    ) -> None:
        self.cur = cur
        self.schema = schema
        self.table = table
        self.notes = notes or {}  # SQLite column -> why its type is what it is, for its COMMENT
        self.scope = scope or Scope()
        self.names = names  # how SQLite's names become PostgreSQL's (naming.py): kept, or lowercased
        named = names.table(table)
        # SQLite column name -> its PostgreSQL column (name and type).
        self._pg_columns = dict(zip(table.column_names, named.columns, strict=True))
        if self.scope.shared:
            if SOURCE_FILE_COLUMN in named.column_names:
                raise UnsupportedTableError(
                    table.name,
                    f"a column named {SOURCE_FILE_COLUMN!r} cannot be synced from many files (it holds the file)",
                )
            lead = self.scope.column()
            named = replace(
                named,
                columns=(lead, *named.columns),
                primary_key=(lead.name, *named.primary_key) if named.primary_key else (),
            )
        self.pg = named
        self.ident = sql.Identifier(schema, self.pg.name)
        self.columns = sql.SQL(", ").join(sql.Identifier(c) for c in self.pg.column_names)
        # What COPY sends: SQLite's columns only (the scope's column comes from its DEFAULT).
        self.copy_columns = sql.SQL(", ").join(sql.Identifier(c.name) for c in self._pg_columns.values())

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.pg.name}"

    # --- state -------------------------------------------------------------------------

    def schema_exists(self) -> bool:
        self.cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,))
        return self.cur.fetchone() is not None

    def oid(self) -> int | None:
        self.cur.execute(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (self.schema, self.pg.name),
        )
        row = self.cur.fetchone()
        return int(row[0]) if row else None

    def row_count(self) -> int:
        """The rows of the scope (all of them for a table of one file)."""
        self.cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self.ident, self.scope.where()))
        return int(self.cur.fetchone()[0])

    def count_and_size(self) -> tuple[int, int]:
        """(:meth:`row_count`, :meth:`total_bytes`) of a table that exists, in one round trip."""
        self.cur.execute(
            sql.SQL("SELECT (SELECT count(*) FROM {} WHERE {}), pg_total_relation_size({}::regclass)").format(
                self.ident, self.scope.where(), sql.Literal(self.ident.as_string(self.cur))
            )
        )
        rows, size = self.cur.fetchone()
        return int(rows), int(size)

    def total_bytes(self) -> int:
        oid = self.oid()
        if oid is None:
            return 0
        self.cur.execute("SELECT pg_total_relation_size(%s::oid)", (oid,))
        return int(self.cur.fetchone()[0])

    def columns_in_pg(self) -> list[tuple[str, str]]:
        self.cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (self.oid(),),
        )
        return [(name, typ) for name, typ in self.cur.fetchall()]

    def catalog(self, known: Sequence[tuple[str, str, str | None]] | None = None) -> dict[str, tuple[str, str | None]]:
        """SQLite column name -> (the PostgreSQL type its column has, its COMMENT), in one query, or
        from ``known`` (``TableEntry.columns``, read under the sync's lock); columns PostgreSQL lacks
        are left out."""
        if known is None:
            self.cur.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
                "FROM pg_attribute a WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped",
                (self.oid(),),
            )
            known = self.cur.fetchall()
        found = {name: (typ, comment) for name, typ, comment in known}
        return {name: found[p.name] for name, p in self._pg_columns.items() if p.name in found}

    def pg_column(self, column: str) -> ColumnInfo:
        """The PostgreSQL column (name and type) of SQLite column ``column``."""
        return self._pg_columns[column]

    def holds(self, column: str) -> tuple[bool, bool]:
        """(whether the column, by SQLite name, holds any value; whether its values are all within
        2^53, which is what a bigint column must be to become double precision exactly)."""
        pg = self._pg_columns[column]
        ident = sql.Identifier(pg.name)
        within = sql.SQL("true")
        if pg.pg_type.name == "bigint":
            within = sql.SQL(
                "(SELECT coalesce(bool_and({c} BETWEEN -9007199254740992 AND 9007199254740992), true) FROM {t})"
            ).format(c=ident, t=self.ident)
        self.cur.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {t} WHERE {c} IS NOT NULL), {w}").format(
                t=self.ident, c=ident, w=within
            )
        )
        holds, within_double = self.cur.fetchone()
        return bool(holds), bool(within_double)

    def primary_key_in_pg(self) -> tuple[str, ...]:
        self.cur.execute(
            "SELECT a.attname FROM pg_index i "
            "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s::oid AND i.indisprimary ORDER BY k.ord",
            (self.oid(),),
        )
        return tuple(r[0] for r in self.cur.fetchall())

    def dependent_views(self) -> list[str]:
        self.cur.execute(
            "SELECT DISTINCT vn.nspname || '.' || v.relname FROM pg_depend d "
            "JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class "
            "JOIN pg_namespace vn ON vn.oid = v.relnamespace "
            "WHERE d.refobjid = %s::oid AND d.classid = 'pg_rewrite'::regclass AND v.oid <> d.refobjid "
            "ORDER BY 1",
            (self.oid(),),
        )
        return [r[0] for r in self.cur.fetchall()]

    # --- locking -----------------------------------------------------------------------

    def _wait_for(self, statement: sql.Composable, params: tuple[object, ...], timeout_s: float) -> bool:
        """Run a statement that waits for a lock, giving up after ``timeout_s``; False on timeout.

        The timeout is set inside a savepoint: on timeout, rolling back to it also restores
        the session's own ``lock_timeout``; on success the previous value is put back. Any
        other error (a statement_timeout, a dropped connection) propagates as it is.
        """
        self.cur.execute("SELECT current_setting('lock_timeout')")
        previous = self.cur.fetchone()[0]
        self.cur.execute("SAVEPOINT _sps_wait")
        self.cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(timeout_s * 1000))}ms",))
        try:
            # No parameters, no placeholders: a '%' in a SQLite name must not read as one.
            self.cur.execute(statement, params or None)
        except psycopg2.errors.LockNotAvailable:
            self.cur.execute("ROLLBACK TO SAVEPOINT _sps_wait")
            return False
        self.cur.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
        self.cur.execute("RELEASE SAVEPOINT _sps_wait")
        return True

    def lock(self, timeout_s: float) -> bool:
        """Wait (up to ``timeout_s``) for the per-table advisory lock; False on timeout.

        The lock is transaction-scoped, so it is released by the commit or rollback that
        ends this table's sync, even if the process dies.
        """
        key = self.scope.lock_key(self.qualified_name)
        # Free in the usual case: taken in one round trip, without the timeout's savepoint dance.
        self.cur.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,))
        if self.cur.fetchone()[0]:
            return True
        return self._wait_for(sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"), (key,), timeout_s)

    def lock_for_ddl(self) -> None:
        """For a shared table: the lock a whole-table sync takes, so that two files' syncs never
        both create the table, or add or widen one column; held until the transaction ends. The
        caller reads the catalog again after it, since another file may have done it meanwhile."""
        self.cur.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (Scope().lock_key(self.qualified_name),)
        )

    def lock_exclusively(self, timeout_s: float) -> bool:
        """ACCESS EXCLUSIVE on the target, for the swap of a full refresh; False on timeout.

        Waiting is bounded: a reader idle in a transaction must not make the swap, and
        every reader queued behind it, wait forever.
        """
        return self._wait_for(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self.ident), (), timeout_s)

    # --- DDL ---------------------------------------------------------------------------

    def create(self, name: str | None = None) -> sql.Identifier:
        """Create the table (no key yet: the key is built after the bulk load, which is faster),
        with a COMMENT naming the SQLite origin of the table and of each column."""
        ident = sql.Identifier(self.schema, name or self.pg.name)
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}{}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.pg_type.name),
                sql.SQL(" NOT NULL" if c.not_null or c.pk_position else ""),
                sql.SQL(" ") + self.scope.default()
                if c.name == SOURCE_FILE_COLUMN and self.scope.shared
                else sql.SQL(""),
            )
            for c in self.pg.columns
        )
        self.cur.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, columns))
        comments = [
            sql.SQL("COMMENT ON TABLE {} IS {}").format(ident, sql.Literal(f"SQLite table {self.table.name!r}"))
        ]
        comments += [self._column_comment(ident, c.name) for c in self.table.columns]
        if self.scope.shared:
            comments.append(
                sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                    ident,
                    sql.Identifier(SOURCE_FILE_COLUMN),
                    sql.Literal("the SQLite file the row comes from (its partition key in Dagster)"),
                )
            )
        self.cur.execute(sql.SQL("; ").join(comments))
        return ident

    def comment_text(self, column: str) -> str:
        """The COMMENT of a column (by SQLite name): its origin, and why its type is what it is."""
        index = self.table.column_names.index(column)
        declared = self.table.columns[index].declared_type or "no type"
        text = f"SQLite column {self.table.name!r}.{column!r}, declared {declared!r}"
        if column in self.notes:
            text += f"; {self.notes[column]}"
        return text

    def _column_comment(self, ident: sql.Identifier, column: str) -> sql.Composable:
        return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            ident, sql.Identifier(self._pg_columns[column].name), sql.Literal(self.comment_text(column))
        )

    def free_key_name(self) -> str:
        """A name for the primary key that no relation of the schema has.

        Not PostgreSQL's ``<table>_pkey``: the key's index shares the namespace of tables,
        and a SQLite file may well have a table called ``t_pkey`` beside ``t``.
        """
        for attempt in range(100):
            name = _short_name("_sps_pk_", self.table.name, f"_{attempt}" if attempt else "")
            self.cur.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (self.schema, name),
            )
            if self.cur.fetchone() is None:
                return name
        raise RuntimeError(f"no free primary key name for {self.qualified_name}")

    def add_column(self, name: str, timeout_s: float) -> bool:
        """Add a nullable column (``name`` as in SQLite) with its COMMENT; False if readers kept the
        table busy for ``timeout_s``."""
        column = self._pg_columns[name]
        statement = sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            self.ident, sql.Identifier(column.name), sql.SQL(column.pg_type.name)
        )
        if not self._wait_for(statement, (), timeout_s):
            return False
        self.cur.execute(self._column_comment(self.ident, name))
        return True

    def alter_types(self, changes: Mapping[str, tuple[PgType, bool]], timeout_s: float) -> bool:
        """Change column types (by SQLite name: new type, whether the column holds values) in one
        ALTER TABLE, so the table is rewritten once. False if readers kept the table busy for ``timeout_s``.

        Readers block from here to the commit and then see the new table; a reader's snapshot
        taken before the rewrite would see it empty (PostgreSQL's documented exception for
        rewriting ALTERs), which only REPEATABLE READ readers that began before can meet.
        """
        clauses = []
        for column, (new, holds) in changes.items():
            pg = self._pg_columns[column]
            ident = sql.Identifier(pg.name)
            expression = using(ident, pg.pg_type.name, new) if holds else sql.SQL("NULL")
            clauses.append(sql.SQL("ALTER COLUMN {} TYPE {} USING {}").format(ident, sql.SQL(new.name), expression))
        return self._wait_for(
            sql.SQL("ALTER TABLE {} ").format(self.ident) + sql.SQL(", ").join(clauses), (), timeout_s
        )

    def drop_columns(self, names: Sequence[str], timeout_s: float) -> bool:
        """Drop these columns (PostgreSQL names), their COMMENTs with them, in one ALTER TABLE (no
        rewrite: PostgreSQL only marks them dropped). False if readers kept the table busy for ``timeout_s``."""
        clauses = sql.SQL(", ").join(sql.SQL("DROP COLUMN {}").format(sql.Identifier(n)) for n in names)
        return self._wait_for(sql.SQL("ALTER TABLE {} ").format(self.ident) + clauses, (), timeout_s)

    def clear_columns(self, names: Sequence[str]) -> int:
        """Set these columns (PostgreSQL names) to NULL in the scope's rows that hold a value in one;
        the rows changed."""
        self.cur.execute(
            sql.SQL("UPDATE {} SET {} WHERE {} AND ({})").format(
                self.ident,
                sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(n)) for n in names),
                self.scope.where(),
                sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(n)) for n in names),
            )
        )
        return self.cur.rowcount

    def comment_columns(self, columns: list[str], current: Mapping[str, str | None] | None = None) -> None:
        """Write the COMMENT of these columns (by SQLite name) again, with their :attr:`notes`; with
        ``current`` (PostgreSQL column name -> its COMMENT now), only those whose text differs, so a
        sync that changed nothing runs no DDL."""
        if current is not None:
            columns = [c for c in columns if current.get(self._pg_columns[c].name) != self.comment_text(c)]
        if columns:
            self.cur.execute(sql.SQL("; ").join(self._column_comment(self.ident, c) for c in columns))

    def add_primary_key(self, ident: sql.Identifier, constraint: str) -> None:
        if not self.pg.primary_key:
            return
        self.for_index_builds()
        self.cur.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                ident, sql.Identifier(constraint), sql.SQL(", ").join(sql.Identifier(k) for k in self.pg.primary_key)
            )
        )

    def for_index_builds(self) -> None:
        """:data:`INDEX_BUILD_SETTINGS` for the rest of this transaction (index builds only read them)."""
        self.cur.execute(
            sql.SQL("SELECT {}").format(
                sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in INDEX_BUILD_SETTINGS)
            ),
            [v for pair in INDEX_BUILD_SETTINGS.items() for v in pair],
        )

    def analyze_loaded(self, ident: sql.Identifier, rows: int) -> None:
        """ANALYZE a table this transaction created and filled with ``rows`` rows: a sample of
        :data:`STOPGAP_STATISTICS_TARGET` where autovacuum will analyze it whole after the commit."""
        self.cur.execute(_STOPGAP_APPLIES, {"rows": rows, "stopgap": STOPGAP_STATISTICS_TARGET})
        target, stopgap = self.cur.fetchone()
        set_target = "SELECT set_config('default_statistics_target', %s, true)"
        if stopgap:
            self.cur.execute(set_target, (str(STOPGAP_STATISTICS_TARGET),))
        self.cur.execute(sql.SQL("ANALYZE {}").format(ident))
        if stopgap:
            self.cur.execute(set_target, (target,))  # the rest of the transaction as it was

    def replace_with(self, new_name: str) -> None:
        """Swap a fully loaded table in under the target's name, within this transaction.

        Used only when the shape changed. Readers block from the DROP to the commit; a
        blocked reader re-resolves the name after the lock and sees the new table.
        """
        self.cur.execute(sql.SQL("DROP TABLE {}").format(self.ident))
        self.cur.execute(
            sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(self.schema, new_name), sql.Identifier(self.pg.name)
            )
        )

    def reload_from(self, source: sql.Identifier) -> None:
        """Replace every row in place: MVCC-safe, so no reader, at any isolation level,
        sees the table empty, and views, grants and indexes on it stay as they are."""
        self.cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(self.ident, self.scope.where()))
        self.cur.execute(
            sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s}").format(t=self.ident, c=self.columns, s=source)
        )

    def drop_if_exists(self, name: str) -> None:
        self.cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.schema, name)))

    # --- data --------------------------------------------------------------------------

    def copy_into(self, ident: sql.Identifier, data: IO[bytes], fmt: CopyFormat = TEXT) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN {}").format(ident, self.copy_columns, sql.SQL(fmt.option))
        self.cur.copy_expert(statement.as_string(self.cur), data)

    def arrow_copy_format(self, ident: sql.Identifier) -> CopyFormat:
        """The format of the Arrow path's COPY into ``ident``: binary only where the catalog's types of the
        columns it writes are the type model's (copy_format.py). The stage and the key stage are made from
        the mirror, so theirs are the mirror's."""
        relation = self.ident if ident in (STAGE, KEYS) else ident
        columns = list(self._pg_columns.values())
        if not all(c.pg_type.name in BINARY_TYPES for c in columns):
            return TEXT  # no need to ask
        self.cur.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM unnest(%s::text[]) WITH ORDINALITY AS c(name, n) "
            "LEFT JOIN pg_attribute a ON a.attrelid = %s::regclass AND a.attname = c.name AND NOT a.attisdropped "
            "ORDER BY c.n",
            ([c.name for c in columns], relation.as_string(self.cur)),
        )
        return for_arrow([c.pg_type.name for c in columns], [typ for (typ,) in self.cur.fetchall()])

    def savepoint(self, name: str = "_sps_attempt") -> None:
        self.cur.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(name)))

    def rollback_to_savepoint(self, name: str = "_sps_attempt") -> None:
        """Undo what was written since :meth:`savepoint`; the transaction goes on."""
        self.cur.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(name)))

    def release_savepoint(self, name: str = "_sps_attempt") -> None:
        self.cur.execute(sql.SQL("RELEASE SAVEPOINT {}").format(sql.Identifier(name)))

    def create_stage(self, settings: Mapping[str, str]) -> None:
        """The stage, and ``settings`` for the rest of this transaction (the statements over the
        stage), in one round trip."""
        calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in settings)
        self.cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP; SELECT {}").format(
                STAGE, self.ident, calls
            ),
            [v for pair in settings.items() for v in pair],
        )

    def create_key_stage(self, ident: sql.Identifier = KEYS) -> None:
        keys = sql.SQL(", ").join(map(sql.Identifier, self.pg.primary_key))
        self.cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                ident, keys, self.ident
            )
        )
        if self.scope.shared:
            self.cur.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET {}").format(
                    ident, sql.Identifier(SOURCE_FILE_COLUMN), self.scope.default()
                )
            )

    def copy_key_sources(self, lines: IO[bytes]) -> None:
        """The table's keys into :data:`KEY_SOURCES`, each beside the SQLite key it came from (as text,
        the last field of each line): for naming the SQLite keys that became one PostgreSQL key."""
        self.create_key_stage(KEY_SOURCES)
        self.cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} text").format(KEY_SOURCES, sql.Identifier(SQLITE_KEY)))
        statement = sql.SQL("COPY {} ({}, {}) FROM STDIN").format(
            KEY_SOURCES, self.copy_columns, sql.Identifier(SQLITE_KEY)
        )
        self.cur.copy_expert(statement.as_string(self.cur), lines)

    def _key_match(self, left: str, right: str) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{}.{} = {}.{}").format(
                sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(k)
            )
            for k in self.pg.primary_key
        )

    def new_keys_in_stage(self) -> int:
        """The staged rows whose key the target does not hold yet: the rows a merge will insert.
        For a stage much smaller than the target, one index probe each (counting the target after
        the merge would read all of it)."""
        self.cur.execute(
            sql.SQL(
                "SELECT count(*) FROM {stage} AS s WHERE NOT EXISTS (SELECT 1 FROM {target} AS t WHERE {match})"
            ).format(stage=STAGE, target=self.ident, match=self._key_match("t", "s"))
        )
        return int(self.cur.fetchone()[0])

    def merge_from_stage(self) -> int:
        """Insert the staged rows with new keys and rewrite only those whose values differ: read back
        differently, by column_types.identity (``=`` says -0.0 = 0.0 and '1 day' = '24 hours').

        One MERGE is one join of stage and target; an UPDATE and an INSERT ... NOT EXISTS
        were two, and took 2.7 s against 1.5 s for a million unchanged rows. Returns the rows
        inserted plus the rows updated (PostgreSQL 15 reports no split; the caller derives it).
        """
        others = compared_columns(self.pg.columns, self.pg.primary_key)  # a key column too, where = is coarse

        def row(alias: str) -> sql.Composable:
            # By identity, not by =: -0.0 after 0.0, or '24 hours' after '1 day', is a change.
            return sql.SQL(", ").join(
                identity(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c.name)), c.pg_type.name)
                for c in others
            )

        update = sql.SQL("")
        if others:
            update = sql.SQL("WHEN MATCHED AND ({t_row}) IS DISTINCT FROM ({s_row}) THEN UPDATE SET {assign} ").format(
                t_row=row("t"),
                s_row=row("s"),
                assign=sql.SQL(", ").join(
                    sql.SQL("{} = s.{}").format(sql.Identifier(c.name), sql.Identifier(c.name)) for c in others
                ),
            )
        self.cur.execute(
            sql.SQL(
                "MERGE INTO {target} AS t USING {stage} AS s ON {match} {update}"
                "WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
            ).format(
                target=self.ident,
                stage=STAGE,
                match=self._key_match("t", "s"),
                update=update,
                columns=self.columns,
                values=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in self.pg.column_names),
            )
        )
        return self.cur.rowcount

    def duplicate_key_in(
        self, stage: sql.Identifier, sources: str | None = None
    ) -> tuple[tuple[str, ...], list[str]] | None:
        """A key that two staged rows share, if any (distinct SQLite keys that became equal), by the
        key's own ``=`` (the primary key's), as text, its columns those of SQLite's key. With
        ``sources`` (a text column of ``stage``), also what that column holds in those rows."""
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in self.pg.primary_key)
        shown = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(self._pg_columns[k].name)) for k in self.table.primary_key
        )
        also = sql.SQL("array_agg({})").format(sql.Identifier(sources)) if sources else sql.SQL("NULL")
        self.cur.execute(
            sql.SQL("SELECT {a}, {shown} FROM {s} GROUP BY {k} HAVING count(*) > 1 LIMIT 1").format(
                a=also, shown=shown, k=keys, s=stage
            )
        )
        row = self.cur.fetchone()
        return None if row is None else (tuple(row[1:]), list(row[0] or []))

    def delete_orphans(self, keys: sql.Identifier) -> int:
        """Delete target rows whose key is not in ``keys`` (a stage): an anti-join in PostgreSQL."""
        self.cur.execute(
            sql.SQL(
                "DELETE FROM {target} AS t WHERE {mine} AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {match})"
            ).format(target=self.ident, mine=self.scope.where("t"), stage=keys, match=self._key_match("t", "s"))
        )
        return self.cur.rowcount

    def delete_orphans_in(self, keys: sql.Identifier, key: str, shift: int, batch_ids: Collection[int]) -> int:
        """:meth:`delete_orphans`, searching only the key ranges of ``batch_ids`` (batch *n* holds the
        keys ``[n << shift, (n + 1) << shift)``, see change_detection.py): the orphans' only place
        when the last sync left the table exact. Each range is an index range scan of the key."""
        column = sql.Identifier(self._pg_columns[key].name)
        self.cur.execute(
            sql.SQL(
                "DELETE FROM {target} AS t USING unnest(%s::bigint[]) AS r(id) "
                "WHERE {mine} AND t.{key} BETWEEN (r.id << %s) AND (r.id << %s) + ((1::bigint << %s) - 1) "
                "AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {match})"
            ).format(
                target=self.ident, mine=self.scope.where("t"), key=column, stage=keys, match=self._key_match("t", "s")
            ),
            (sorted(batch_ids), shift, shift, shift),
        )
        return self.cur.rowcount

    def _multiset_row(self) -> tuple[list[sql.Composable], list[int]]:
        """What a keyless table's rows are compared by, and where in it the table's columns are.

        Every column, and beside each whose ``=`` is coarser than identity its identity expression
        (column_types.identity), so two rows are the same only when they read back the same (-0.0 is
        not 0.0), while the real columns stay there for the INSERT to take. EXCEPT needs each column's
        own ``=`` all the same: a keyless table cannot hold a type without one (json, xml, point;
        jsonb and text can be pinned instead)."""
        items: list[sql.Composable] = []
        positions = []
        for c in self.pg.columns:
            column = sql.Identifier(c.name)
            positions.append(len(items))
            items.append(column)
            compared = identity(column, c.pg_type.name)
            if compared is not column:
                items.append(compared)
        return items, positions

    def multiset_differences(self) -> tuple[int, int]:
        """For a keyless table: (staged rows missing from target, target rows missing from stage)."""
        counts = []
        mine = self.scope.where()
        row = sql.SQL(", ").join(self._multiset_row()[0])
        for left, right in ((STAGE, self.ident), (self.ident, STAGE)):
            self.cur.execute(
                sql.SQL(
                    "SELECT count(*) FROM "
                    "(SELECT {c} FROM {l} WHERE {mine} EXCEPT ALL SELECT {c} FROM {r} WHERE {mine}) AS d"
                ).format(c=row, l=left, r=right, mine=mine)
            )
            counts.append(int(self.cur.fetchone()[0]))
        return counts[0], counts[1]

    def append_missing_from_stage(self) -> None:
        items, positions = self._multiset_row()
        # The difference's columns get names of ours (d0, d1, ...): an identity expression's own name
        # ("text", "float8send") could be a SQLite column's.
        self.cur.execute(
            sql.SQL(
                "INSERT INTO {t} ({c}) SELECT {picked} FROM "
                "(SELECT {m} FROM {s} EXCEPT ALL SELECT {m} FROM {t} WHERE {mine}) AS d ({names})"
            ).format(
                t=self.ident,
                c=self.columns,
                picked=sql.SQL(", ").join(sql.Identifier(f"d{i}") for i in positions),
                m=sql.SQL(", ").join(items),
                s=STAGE,
                mine=self.scope.where(),
                names=sql.SQL(", ").join(sql.Identifier(f"d{i}") for i in range(len(items))),
            )
        )
