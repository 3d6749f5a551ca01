"""Verify and repair: compare what PostgreSQL holds with every row of the SQLite snapshot, and rewrite
what differs, in the sync's own transaction.

Why: a plain sync trusts PostgreSQL. Batch digests and row digests (change_detection.py,
row_digests.py) resend only what changed *in SQLite* since the last sync, and orphans are searched
only in the key ranges that changed, on the rule that PostgreSQL still holds what the last sync
wrote. An edit made to the mirror by anyone else (an UPDATE, a DELETE, an INSERT) breaks that rule
and stays, and the row count may well still match. A verify run (``SyncOptions.verify``) does not
trust PostgreSQL.

**One read** (:func:`merge_verified`): a table with a primary key whose batches are key ranges
(change_detection.py), synced in full (no cursor) into a table that exists. The sync reads every row
into the stage, with no batch left out (it still takes each batch's digest, for the next plain sync),
and the stage is compared with the sync's rows of the target (its :class:`~.scope.Scope`: one file's
rows when many files share the table) in one full join by key, values compared by
``column_types.identity`` as the merge compares them. The rows that differ, are missing or are extra
go into a temporary table, and only those are written (UPDATE, INSERT, DELETE by key): what the merge
and ``delete_orphans`` would have written, in one join instead of three. Each of them is then told
apart by its key's batch (:class:`ChangedRanges`):

- in a batch whose digest differs from the last sync's, or that is new or gone: SQLite changed there,
  so it is SQLite's change (inserted, updated, deleted, as a plain sync counts it);
- in a batch whose digest is the last sync's: SQLite did not change those rows, so PostgreSQL no longer
  holds what the last sync left: drift, counted in ``rows_repaired``. An extra row counts so only when
  the last sync left PostgreSQL exact (``BatchDigests.exact``); else it may be an orphan that sync kept
  (``delete_orphans`` off), deleted as SQLite's deletion, as a plain sync with ``delete_orphans`` does.
- when the last sync's digests say nothing of this read (none, another read path or batching): every
  difference is SQLite's change, as today's plain sync resending every row counts it; none is repaired.

The attribution is by batch: a row drifted in a batch SQLite also changed is counted as SQLite's.

**Two reads** (:func:`verify_and_repair`), for the other tables (no key, batches by position, a cursor):

1. The normal sync runs first, as always, so SQLite's own changes are counted as ever (inserted,
   updated, deleted). For a table with a primary key it runs with ``delete_orphans`` (see
   :func:`normal_pass_deletes_orphans`): a verified mirror holds no orphans, and the normal pass tells
   SQLite's deletions apart from rows inserted out of band.
2. Then every SQLite row is in the stage (the normal pass's own stage when it already holds every row,
   else a second full read into it), and the stage is compared with the sync's rows of the target:

   - with a primary key, in the full join by key above, every difference counted as repaired;
   - without one, as multisets (``PgTable.multiset_differences``): the normal pass already appended
     the rows PostgreSQL lacked, so what is left are rows SQLite lacks; the table's rows are then
     rewritten from the stage (``PgTable.reload_from``).

The rows repaired come with up to :data:`MAX_EXAMPLE_KEYS` keys for the run log and the
``mirror_matches_sqlite`` check. The digests the sync records describe SQLite's snapshot, which
PostgreSQL now equals, so the next plain sync may trust PostgreSQL again.

A table the sync has just created or rebuilt from the full read (``full_refresh``) equals the read by
construction: it is verified without a second look.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg2 import sql

from .column_types import compared_columns, identity
from .errors import OrphanDeletionRefused
from .pg_target import STAGE, PgTable
from .scope import SOURCE_FILE_COLUMN
from .sqlite_source import ColumnInfo, TableInfo

MAX_EXAMPLE_KEYS = 10
DRIFT = sql.Identifier("_sps_drift")
_MISSING, _DIFFERS, _EXTRA = "missing", "differs", "extra"


@dataclass(frozen=True)
class ChangedRanges:
    """Where SQLite changed since the last sync, when its batches are key ranges (change_detection.py):
    batch *n* holds the keys ``[n << shift, (n + 1) << shift)``; ``batch_ids`` are the batches whose digest
    differs from the last sync's, or that are new or gone, the only ranges where SQLite changed."""

    key: str  # the PostgreSQL column of the key the batches are cut by
    shift: int
    batch_ids: frozenset[int]
    exact: bool  # the last sync left no orphan: an extra row in an unchanged range came since


@dataclass(frozen=True)
class Changes:
    """SQLite's own changes since the last sync that a one-read verify wrote (see the module docstring)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class Verified:
    """What the verification pass of one table found and rewrote."""

    rows_verified: int  # SQLite rows compared with PostgreSQL
    inserted: int = 0  # rows PostgreSQL lacked
    updated: int = 0  # rows whose values differed
    deleted: int = 0  # rows PostgreSQL had that SQLite lacks
    keys: tuple[str, ...] = ()  # up to MAX_EXAMPLE_KEYS of the rows repaired, as text ("id=7")

    @property
    def rows_repaired(self) -> int:
        return self.inserted + self.updated + self.deleted


def normal_pass_deletes_orphans(table: TableInfo) -> bool:
    """The ``delete_orphans`` the normal pass of a verify run takes.

    With a key: on, since the verified mirror must hold no orphan anyway, and the normal pass counts
    SQLite's own deletions (found in the key ranges that changed) as deleted, leaving only rows added
    out of band to the repair. Without a key: off, since the normal pass would then rewrite the table on
    any extra row and count it as SQLite's; it appends what PostgreSQL lacks, and the repair removes
    the rest (a keyless row has no identity: an extra row cannot be told from one SQLite deleted).
    """
    return bool(table.primary_key)


def stage_exists(target: PgTable) -> bool:
    """Whether this transaction has a stage (the normal pass made one)."""
    target.cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"pg_temp.{STAGE.strings[0]}",))
    return bool(target.cur.fetchone()[0])


def drop_stage(target: PgTable) -> None:
    """Drop the normal pass's stage, which holds only the rows it sent, before every row is staged."""
    target.cur.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(STAGE))


def verify_and_repair(
    target: PgTable, sqlite_rows: int, stage_every_row: Callable[[], None] | None, built_from_read: bool
) -> Verified:
    """Make the sync's rows of ``target`` equal the stage (every SQLite row), counting what was written.

    ``stage_every_row``: fills the stage with every SQLite row (None: the stage holds them already).
    ``built_from_read``: the sync created or rebuilt the table from its full read; nothing to compare.
    """
    if built_from_read:
        return Verified(rows_verified=sqlite_rows)
    if stage_every_row is not None:
        stage_every_row()
    if target.pg.primary_key:
        return _repair_by_key(target, sqlite_rows, sql.SQL("false"))[1]
    return _repair_multiset(target, sqlite_rows)


def merge_verified(target: PgTable, sqlite_rows: int, changed: ChangedRanges | None) -> tuple[Changes, Verified]:
    """The one-read verify of a keyed table whose stage holds every SQLite row: write every difference,
    and tell SQLite's changes (in ``changed``'s ranges) from drift (the rest, repaired). ``changed`` None:
    the last sync's digests say nothing of this read, so every difference is SQLite's change."""
    if changed is None:
        return _repair_by_key(target, sqlite_rows, sql.SQL("true"))
    key = sql.SQL("coalesce(s.{k}, t.{k})").format(k=sql.Identifier(changed.key))
    by_sqlite: sql.Composable = sql.SQL("({key} >> {shift}) = ANY({ids}::bigint[])").format(
        key=key, shift=sql.Literal(changed.shift), ids=sql.Literal(sorted(changed.batch_ids))
    )
    if not changed.exact:  # an extra row may be an orphan the last sync kept: SQLite deleted it
        by_sqlite = sql.SQL("(s.{k} IS NULL OR {changed})").format(
            k=sql.Identifier(target.pg.primary_key[0]), changed=by_sqlite
        )
    return _repair_by_key(target, sqlite_rows, by_sqlite)


def _repair_multiset(target: PgTable, sqlite_rows: int) -> Verified:
    missing, extra = target.multiset_differences()
    if not (missing or extra):
        return Verified(rows_verified=sqlite_rows)
    _refuse_empty_source(target, sqlite_rows)
    target.reload_from(STAGE)
    return Verified(rows_verified=sqlite_rows, inserted=missing, deleted=extra)


def _refuse_empty_source(target: PgTable, sqlite_rows: int) -> None:
    """As ``delete_orphans`` refuses: an empty read never empties a table that has rows."""
    if sqlite_rows == 0:
        raise OrphanDeletionRefused(
            target.table.name,
            f"SQLite returned no rows but {target.qualified_name} has some; refusing to delete them all "
            "(run with full_refresh if emptying it is intended)",
        )


def _repair_by_key(target: PgTable, sqlite_rows: int, by_sqlite: sql.Composable) -> tuple[Changes, Verified]:
    """Write every row of the stage that differs from, is missing from or is extra in the target, and
    count them: as SQLite's changes where ``by_sqlite`` (over ``s``, the stage, and ``t``, the target)
    holds, else as repaired (with example keys)."""
    pg = target.pg
    key = [c for c in pg.columns if c.name in pg.primary_key]
    others = compared_columns(pg.columns, pg.primary_key)  # a key column too, where = is coarse (0.0, -0.0)
    first_key = sql.Identifier(pg.primary_key[0])
    # The drift table's columns have names of ours (kind, d0, d1...): a SQLite column may be called "kind".
    names = {c.name: sql.Identifier(f"d{i}") for i, c in enumerate(pg.columns)}

    def column(alias: str, name: str) -> sql.Composable:
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name))

    def row(alias: str) -> sql.Composable:
        return sql.SQL(", ").join(identity(column(alias, c.name), c.pg_type.name) for c in others)

    values = [
        sql.SQL("coalesce(s.{k}, t.{k})").format(k=sql.Identifier(c.name))
        if c.name in pg.primary_key
        else column("s", c.name)
        for c in pg.columns
    ]
    differs = sql.SQL(" OR ({}) IS DISTINCT FROM ({})").format(row("t"), row("s")) if others else sql.SQL("")
    statement = sql.SQL(
        "CREATE TEMP TABLE {drift} (kind, by_sqlite, {names}) ON COMMIT DROP AS "
        "SELECT CASE WHEN t.{k} IS NULL THEN {missing} WHEN s.{k} IS NULL THEN {extra} ELSE {differs_kind} END, "
        "{by_sqlite}, {values} FROM {stage} AS s FULL JOIN (SELECT * FROM {target} WHERE {mine}) AS t ON {match} "
        "WHERE t.{k} IS NULL OR s.{k} IS NULL{differs}"
    ).format(
        drift=DRIFT,
        names=sql.SQL(", ").join(names[c.name] for c in pg.columns),
        k=first_key,
        missing=sql.Literal(_MISSING),
        extra=sql.Literal(_EXTRA),
        differs_kind=sql.Literal(_DIFFERS),
        by_sqlite=by_sqlite,
        values=sql.SQL(", ").join(values),
        stage=STAGE,
        target=target.ident,
        mine=target.scope.where(),
        match=_match(key, "t", "s"),
        differs=differs,
    )
    with _in_key_order(target):
        target.cur.execute(statement)
    target.cur.execute(sql.SQL("SELECT kind, by_sqlite, count(*) FROM {} GROUP BY kind, by_sqlite").format(DRIFT))
    counted = {(str(kind), bool(ours)): int(n) for kind, ours, n in target.cur.fetchall()}
    found = {kind: counted.get((kind, False), 0) + counted.get((kind, True), 0) for kind, _ in counted}
    if not found:
        return Changes(), Verified(rows_verified=sqlite_rows)
    repaired = {kind: counted.get((kind, False), 0) for kind in found}
    examples = _example_keys(target, names) if any(repaired.values()) else ()
    drift_key = sql.SQL(" AND ").join(sql.SQL("t.{} = d.{}").format(sql.Identifier(c.name), names[c.name]) for c in key)
    if found.get(_EXTRA):
        _refuse_empty_source(target, sqlite_rows)
        target.cur.execute(
            sql.SQL("DELETE FROM {t} AS t USING {d} AS d WHERE d.kind = {kind} AND {mine} AND {match}").format(
                t=target.ident, d=DRIFT, kind=sql.Literal(_EXTRA), mine=target.scope.where("t"), match=drift_key
            )
        )
    if found.get(_DIFFERS):
        target.cur.execute(
            sql.SQL("UPDATE {t} AS t SET {assign} FROM {d} AS d WHERE d.kind = {kind} AND {mine} AND {match}").format(
                t=target.ident,
                assign=sql.SQL(", ").join(
                    sql.SQL("{} = d.{}").format(sql.Identifier(c.name), names[c.name]) for c in others
                ),
                d=DRIFT,
                kind=sql.Literal(_DIFFERS),
                mine=target.scope.where("t"),
                match=drift_key,
            )
        )
    if found.get(_MISSING):
        target.cur.execute(
            sql.SQL("INSERT INTO {t} ({columns}) SELECT {values} FROM {d} WHERE kind = {kind}").format(
                t=target.ident,
                columns=target.columns,
                values=sql.SQL(", ").join(names[c.name] for c in pg.columns),
                d=DRIFT,
                kind=sql.Literal(_MISSING),
            )
        )
    changes = Changes(
        inserted=found.get(_MISSING, 0) - repaired.get(_MISSING, 0),
        updated=found.get(_DIFFERS, 0) - repaired.get(_DIFFERS, 0),
        deleted=found.get(_EXTRA, 0) - repaired.get(_EXTRA, 0),
    )
    return changes, Verified(
        rows_verified=sqlite_rows,
        inserted=repaired.get(_MISSING, 0),
        updated=repaired.get(_DIFFERS, 0),
        deleted=repaired.get(_EXTRA, 0),
        keys=examples,
    )


@contextmanager
def _in_key_order(target: PgTable) -> Iterator[None]:
    """Join the stage and the target by walking both in key order (a merge join over two indexes), for
    the statement inside.

    Why: both hold about every row of the table. The planner's choice, a hash join, first builds a
    hash table of one side's whole rows (430 MB and 1.5-1.8 s for a million rows of the bench's table);
    the target's primary key already orders it, and an index on the stage costs 0.3 s (its rows arrive
    in key order), after which the merge join walks both in 0.85 s.
    """
    key = sql.SQL(", ").join(map(sql.Identifier, target.pg.primary_key))
    target.cur.execute(
        sql.SQL(
            "CREATE INDEX ON {} ({}); "
            "SELECT current_setting('enable_hashjoin'), set_config('enable_hashjoin', 'off', true)"
        ).format(STAGE, key)
    )
    was = target.cur.fetchone()[0]
    yield
    target.cur.execute("SELECT set_config('enable_hashjoin', %s, true)", (was,))


def _example_keys(target: PgTable, names: dict[str, sql.Identifier]) -> tuple[str, ...]:
    """Up to :data:`MAX_EXAMPLE_KEYS` keys of the rows repaired (not SQLite's changes), in key order."""
    key = [c for c in target.pg.columns if c.name in target.pg.primary_key]
    shown = [c for c in key if c.name != SOURCE_FILE_COLUMN or not target.scope.shared]
    target.cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE NOT by_sqlite ORDER BY {} LIMIT {}").format(
            sql.SQL(", ").join(sql.SQL("{}::text").format(names[c.name]) for c in shown),
            DRIFT,
            # Qualified: the bare name would be the ::text output column's, ordering 10 before 9.
            sql.SQL(", ").join(sql.SQL("{}.{}").format(DRIFT, names[c.name]) for c in shown),
            sql.Literal(MAX_EXAMPLE_KEYS),
        )
    )
    return tuple(
        ", ".join(f"{c.name}={value}" for c, value in zip(shown, values_, strict=True))
        for values_ in target.cur.fetchall()
    )


def _match(key: list[ColumnInfo], left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{l}.{k} = {r}.{k}").format(l=sql.Identifier(left), r=sql.Identifier(right), k=sql.Identifier(c.name))
        for c in key
    )
