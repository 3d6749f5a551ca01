"""Bookkeeping outside the mirror (issue 10): the target schema holds exactly the SQLite tables, the
sync's state lives in the state schema (``PG_STATE_SCHEMA``, default ``sqlite_pg_sync``), the old
layout in the target schema is migrated once, and a sync that changes nothing writes no row in any
table, while an older snapshot is still refused after it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from sync_pipeline.demo import mutate
from sync_pipeline.engine import (
    SqliteSnapshot,
    StaleSnapshotError,
    SyncOptions,
    TableSyncResult,
    TargetError,
    sync_table,
)
from sync_pipeline.engine.bookkeeping import (
    DEFAULT_STATE_SCHEMA,
    OLD_SEQUENCE,
    OLD_STATE_TABLE,
    STATE_TABLE,
    forget,
    sequence_value,
    snapshot_sequence,
    version_sequence,
)
from sync_pipeline.engine.versions import SnapshotClock

from .conftest import flush_stats, pg_rows, query, sqlite_rows

DEMO_TABLES = {"source_narratives", "experiments", "narrative_results"}
CURSORS = {t: "updated_at" for t in DEMO_TABLES}
BATCH = 500

# The state table as the code before issue 10 created it in the target schema (sync_state.py), and
# its first layout, from before `shape` and `snapshot_version` were added.
OLD_DDL = (
    "CREATE TABLE {} (table_name text PRIMARY KEY, cursor_column text, watermark jsonb, "
    "batches jsonb, synced_at timestamptz NOT NULL DEFAULT now(), shape text, snapshot_version bigint)"
)
FIRST_DDL = (
    "CREATE TABLE {} (table_name text PRIMARY KEY, cursor_column text, watermark jsonb, "
    "batches jsonb, synced_at timestamptz NOT NULL DEFAULT now())"
)


@pytest.fixture
def state_schema(pg_dsn: str) -> Iterator[str]:
    """A state schema of the test's own (not created: the sync creates it), dropped afterwards."""
    name = f"state_{uuid.uuid4().hex[:10]}"
    yield name
    query(pg_dsn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _clock(dsn: str, schema: str, state_schema: str = DEFAULT_STATE_SCHEMA) -> SnapshotClock:
    return SnapshotClock(lambda: psycopg2.connect(dsn), schema, state_schema)


def numbered_sync(
    path: Path, dsn: str, schema: str, state_schema: str = DEFAULT_STATE_SCHEMA, **options: object
) -> dict[str, TableSyncResult]:
    """Every table from one numbered snapshot (as a Dagster run reads), then the session's
    statistics published."""
    conn = psycopg2.connect(dsn)
    try:
        with SqliteSnapshot(path, arrow=False, clock=_clock(dsn, schema, state_schema)) as snapshot:
            opts = SyncOptions(state_schema=state_schema, batch_size=BATCH, **options)  # type: ignore[arg-type]
            results = {t.name: sync_table(snapshot, conn, t, schema, opts) for t in snapshot.tables()}
        flush_stats(conn)
        return results
    finally:
        conn.close()


def relations(dsn: str, schema: str) -> set[tuple[str, str]]:
    """(name, relkind) of everything in the schema but indexes (a primary key's index belongs to its table)."""
    return {
        (name, kind)
        for name, kind in query(
            dsn,
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind <> 'i'",
            (schema,),
        )
    }


def only_tables(names: set[str]) -> set[tuple[str, str]]:
    return {(name, "r") for name in names}


def state_rows(dsn: str, schema: str, state_schema: str = DEFAULT_STATE_SCHEMA) -> dict[str, dict[str, object]]:
    if not query(dsn, "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (state_schema, STATE_TABLE)):
        return {}
    rows = query(
        dsn,
        sql.SQL(
            "SELECT table_name, shape, cursor_column, watermark, batches, changed_at FROM {} WHERE target_schema = %s"
        ).format(sql.Identifier(state_schema, STATE_TABLE)),
        (schema,),
    )
    keys = ("shape", "cursor_column", "watermark", "batches", "changed_at")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def without_time(rows: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """The rows without ``changed_at``, which a migration takes from the old row's ``synced_at``."""
    return {table: {k: v for k, v in row.items() if k != "changed_at"} for table, row in rows.items()}


def sequences(dsn: str, schema: str, tables: set[str], state_schema: str = DEFAULT_STATE_SCHEMA) -> dict[str, int]:
    """The snapshot number of each table, and under "" the target schema's last snapshot number."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            found = {t: sequence_value(cur, state_schema, version_sequence(schema, t)) for t in tables}
            found[""] = sequence_value(cur, state_schema, snapshot_sequence(schema))
            return found  # type: ignore[return-value]
    finally:
        conn.close()


def _sqlite(path: Path, statement: str, params: tuple[object, ...] = ()) -> object:
    conn = sqlite3.connect(path)
    try:
        with conn:
            row = conn.execute(statement, params).fetchone()
        return None if row is None else row[0]
    finally:
        conn.close()


def _write(path: Path, *statements: str) -> None:
    """Commit in another process, as the application would (see test_divergence._write)."""
    script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n"
    script += "".join(f"c.execute({s!r})\n" for s in statements) + "c.commit()\nc.close()\n"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)


def assert_mirrored(path: Path, dsn: str, schema: str) -> None:
    for table in DEMO_TABLES:
        assert pg_rows(dsn, schema, table) == sqlite_rows(path, table), table


# --- the mirror holds only the SQLite tables; the state is in the state schema --------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"delete_orphans": True}, {"cursor_columns": CURSORS}, {"full_refresh": True}],
    ids=["full scan", "delete_orphans", "cursor", "full_refresh"],
)
def test_the_mirrored_schema_holds_exactly_the_sqlite_tables_and_the_state_is_in_sqlite_pg_sync(
    demo_db, pg_dsn, schema, options
):
    first = numbered_sync(demo_db, pg_dsn, schema, **options)
    mutate(demo_db, 2)
    again = numbered_sync(demo_db, pg_dsn, schema, **options)
    assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
    assert_mirrored(demo_db, pg_dsn, schema)

    stored = state_rows(pg_dsn, schema)
    assert set(stored) == DEMO_TABLES
    for table, row in stored.items():
        if "cursor_columns" in options:
            assert row["cursor_column"] == "updated_at" and row["batches"] is None
            assert row["watermark"] == {
                "class": "text",
                "value": _sqlite(demo_db, f"SELECT max(updated_at) FROM {table}"),
            }
        else:
            assert row["cursor_column"] is None and row["batches"]["batch_size"] == BATCH  # type: ignore[index]
    numbers = sequences(pg_dsn, schema, DEMO_TABLES)
    assert numbers[""] == 2 and all(numbers[t] == 2 for t in DEMO_TABLES)
    if "cursor_columns" in options:
        assert again["narrative_results"].watermark_before == first["narrative_results"].watermark_after
    elif not options:
        assert again["experiments"].rows_skipped == again["experiments"].sqlite_rows  # the digests were found


def test_a_dagster_run_leaves_only_the_sqlite_tables_in_the_target_schema(demo_db, pg_dsn, schema):
    from .test_dagster_assets import run_sync

    assert run_sync(demo_db, pg_dsn, schema, batch_size=BATCH).success
    assert run_sync(demo_db, pg_dsn, schema, batch_size=BATCH, cursor_columns=CURSORS).success
    assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
    assert set(state_rows(pg_dsn, schema)) == DEMO_TABLES
    assert sequences(pg_dsn, schema, DEMO_TABLES)[""] == 2


def test_a_custom_state_schema_is_created_on_first_use_and_shared_by_target_schemas(
    demo_db, pg_dsn, schema, other_schema, state_schema
):
    for target in (schema, other_schema):
        numbered_sync(demo_db, pg_dsn, target, state_schema, cursor_columns={"narrative_results": "updated_at"})
        assert relations(pg_dsn, target) == only_tables(DEMO_TABLES)
    assert set(state_rows(pg_dsn, schema, state_schema)) == set(state_rows(pg_dsn, other_schema, state_schema))
    assert set(state_rows(pg_dsn, schema, state_schema)) == DEMO_TABLES
    assert state_rows(pg_dsn, schema) == {}  # nothing in the default state schema
    assert {kind for _, kind in relations(pg_dsn, state_schema)} == {"r", "S"}

    # Forgetting one target schema leaves the other's state whole.
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            forget(cur, schema, state_schema)
    finally:
        conn.close()
    assert state_rows(pg_dsn, schema, state_schema) == {}
    assert set(state_rows(pg_dsn, other_schema, state_schema)) == DEMO_TABLES
    assert sequences(pg_dsn, schema, DEMO_TABLES, state_schema) == dict.fromkeys([*DEMO_TABLES, ""])
    assert all(sequences(pg_dsn, other_schema, DEMO_TABLES, state_schema).values())


def test_pg_state_schema_reaches_the_dagster_cli(demo_db, pg_dsn, schema, state_schema, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SQLITE_PATH": str(demo_db),
        "PG_CONN_STR": pg_dsn,
        "PG_SCHEMA": schema,
        "PG_STATE_SCHEMA": state_schema,
    }
    dagster = str(Path(sys.executable).parent / "dagster")
    config = json.dumps({"ops": {"sqlite_tables": {"config": {"cursor_columns": CURSORS}}}})
    command = [dagster, "asset", "materialize", "-m", "sync_pipeline.definitions", "--select", "*"]
    run = subprocess.run(  # not in the checkout, whose .env the dagster CLI would read
        [*command, "--config-json", config], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
    assert set(state_rows(pg_dsn, schema, state_schema)) == DEMO_TABLES
    assert state_rows(pg_dsn, schema) == {}
    assert_mirrored(demo_db, pg_dsn, schema)


def test_a_state_schema_that_is_the_target_schema_is_refused(demo_db, pg_dsn, schema):
    with pytest.raises(TargetError, match="must differ from the target schema"):
        numbered_sync(demo_db, pg_dsn, schema, state_schema=schema)
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db, arrow=False) as snapshot, pytest.raises(TargetError, match="PG_STATE_SCHEMA"):
            sync_table(snapshot, conn, snapshot.table("experiments"), schema, SyncOptions(state_schema=schema))
    finally:
        conn.close()
    assert relations(pg_dsn, schema) == set()


# --- a sync that changes nothing writes nothing, anywhere ---------------------------------------------


def _writes(dsn: str) -> dict[tuple[str, str], int]:
    """n_tup_ins + n_tup_upd + n_tup_del of every user table of the database (a new session: its
    statistics snapshot is fresh)."""
    rows = query(dsn, "SELECT schemaname, relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables")
    return {(s, t): int(n) for s, t, n in rows}


def settled_writes(dsn: str, quiet_s: float = 0.5, timeout_s: float = 15) -> dict[tuple[str, str], int]:
    """The counters once they hold still for ``quiet_s``. The syncing session publishes its own
    statistics before its sync returns (``flush_stats``); this also waits out sessions that closed
    just before (PostgreSQL 15 publishes a session's statistics lazily, or when it exits)."""
    deadline = time.monotonic() + timeout_s
    last = _writes(dsn)
    while True:
        time.sleep(quiet_s)
        now = _writes(dsn)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


@pytest.mark.parametrize(
    "options", [{"delete_orphans": True}, {"cursor_columns": CURSORS, "delete_orphans": True}], ids=["full", "cursor"]
)
def test_a_sync_without_changes_writes_no_row_in_any_table_bookkeeping_included(demo_db, pg_dsn, schema, options):
    numbered_sync(demo_db, pg_dsn, schema, **options)
    numbers = sequences(pg_dsn, schema, DEMO_TABLES)
    before = settled_writes(pg_dsn)
    state_table = (DEFAULT_STATE_SCHEMA, STATE_TABLE)
    assert state_table in before and (schema, "narrative_results") in before

    again = numbered_sync(demo_db, pg_dsn, schema, **options)

    assert all(result.rows_changed == 0 for result in again.values())
    after = settled_writes(pg_dsn)
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}
    assert after.keys() == before.keys()
    # The snapshot numbers did move on: they are kept where moving them writes no row.
    moved = sequences(pg_dsn, schema, DEMO_TABLES)
    assert all(moved[t] > numbers[t] for t in [*DEMO_TABLES, ""])

    # Positive control: a change is seen, in the mirror and in the bookkeeping (a digest or the watermark moved).
    _write(demo_db, "UPDATE narrative_results SET label = 'changed', updated_at = '9999-01-01' WHERE result_id = 5")
    changed = numbered_sync(demo_db, pg_dsn, schema, **options)
    assert changed["narrative_results"].rows_updated == 1
    written = settled_writes(pg_dsn)
    assert written[(schema, "narrative_results")] == after[(schema, "narrative_results")] + 1
    assert written[state_table] == after[state_table] + 1


@pytest.mark.parametrize("options", [{}, {"cursor_columns": CURSORS}], ids=["full", "cursor"])
def test_an_older_snapshot_is_refused_after_a_newer_one_synced_without_changes(tmp_path, pg_dsn, schema, options):
    """Snapshot A, then snapshot B; B's sync changes nothing and writes no row, yet A, older, must
    be refused. Why it matters (full scan): X synced; the application writes Y, snapshot A (Y); it
    writes X back, snapshot B (X). A would write Y over the newer X. (In cursor mode the application
    bumps the cursor on every write, so a write undone is still a change: no edits there.)"""
    edits = not options
    db = tmp_path / "s.sqlite"
    _write(db, "PRAGMA journal_mode=WAL", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER)")
    _write(db, "INSERT INTO t VALUES (1, 'x', 1)")
    opts = SyncOptions(cursor_columns={"t": "updated_at"} if options else {})
    clock = _clock(pg_dsn, schema)
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(db, arrow=False, clock=clock) as first:
            sync_table(first, conn, first.table("t"), schema, opts)
        stored = state_rows(pg_dsn, schema)["t"]
        if edits:
            _write(db, "UPDATE t SET v = 'y' WHERE id = 1")
        with SqliteSnapshot(db, arrow=False, clock=clock) as older:
            if edits:
                _write(db, "UPDATE t SET v = 'x' WHERE id = 1")
            with SqliteSnapshot(db, arrow=False, clock=clock) as newer:
                assert newer.version > older.version
                result = sync_table(newer, conn, newer.table("t"), schema, opts)
            assert result.rows_changed == 0
            assert state_rows(pg_dsn, schema)["t"] == stored  # not written, not even its time
            with pytest.raises(StaleSnapshotError, match="newer SQLite snapshot"):
                sync_table(older, conn, older.table("t"), schema, opts)
    finally:
        conn.close()
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t") == [(1, "x", 1)]


def test_state_written_for_one_mirror_does_not_describe_another_of_the_same_name(demo_db, pg_dsn, schema):
    """The state is no longer dropped with the mirror: a table restored from a dump of its schema
    (older rows, a new OID) must be read in full, not skipped batch by batch."""
    numbered_sync(demo_db, pg_dsn, schema)
    backup = sql.Identifier(schema, "backup")
    target = sql.Identifier(schema, "narrative_results")
    query(pg_dsn, sql.SQL("CREATE TABLE {} AS TABLE {}").format(backup, target))
    _write(demo_db, "UPDATE narrative_results SET label = 'after the backup' WHERE result_id = 7")
    numbered_sync(demo_db, pg_dsn, schema)
    query(
        pg_dsn,
        sql.SQL(
            "DROP TABLE {t}; ALTER TABLE {b} RENAME TO narrative_results; ALTER TABLE {t} ADD PRIMARY KEY (result_id)"
        ).format(t=target, b=backup),
    )
    restored = numbered_sync(demo_db, pg_dsn, schema)["narrative_results"]
    assert restored.rows_skipped == 0 and restored.rows_updated == 1
    assert_mirrored(demo_db, pg_dsn, schema)


# --- migration of the old layout ------------------------------------------------------------------


def to_old_layout(dsn: str, schema: str, ddl: str = OLD_DDL, version: int | None = None) -> dict[str, object]:
    """Turn the state of ``schema`` into what the code before issue 10 left: ``<schema>._sps_sync_state``
    (layout ``ddl``) and ``<schema>._sps_snapshots``. ``version``: the snapshot number to record
    for every table (default: the one it has). Returns the state as it was."""
    tables = set(state_rows(dsn, schema))
    numbers = sequences(dsn, schema, tables)
    before = {"rows": state_rows(dsn, schema), "numbers": numbers}
    old_table, old_sequence = sql.Identifier(schema, OLD_STATE_TABLE), sql.Identifier(schema, OLD_SEQUENCE)
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT table_name, cursor_column, watermark::text, batches::text, shape FROM {} "
                    "WHERE target_schema = %s"
                ).format(sql.Identifier(DEFAULT_STATE_SCHEMA, STATE_TABLE)),
                (schema,),
            )
            rows = cur.fetchall()
            forget(cur, schema)
            cur.execute(sql.SQL(ddl).format(old_table))
            first_layout = "shape" not in ddl
            for table, cursor_column, watermark, batches, shape in rows:
                if first_layout:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (table_name, cursor_column, watermark, batches) VALUES (%s, %s, %s, %s)"
                        ).format(old_table),
                        (table, cursor_column, watermark, batches),
                    )
                else:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (table_name, cursor_column, watermark, batches, shape, snapshot_version) "
                            "VALUES (%s, %s, %s, %s, %s, %s)"
                        ).format(old_table),
                        (table, cursor_column, watermark, batches, shape, version or numbers[table]),
                    )
            cur.execute(sql.SQL("CREATE SEQUENCE {}").format(old_sequence))
            cur.execute("SELECT setval(%s::regclass, %s)", (old_sequence.as_string(cur), version or numbers[""]))
    finally:
        conn.close()
    assert relations(dsn, schema) == only_tables(DEMO_TABLES) | {(OLD_STATE_TABLE, "r"), (OLD_SEQUENCE, "S")}
    assert state_rows(dsn, schema) == {}
    return before


def test_the_old_layout_is_migrated_keeping_watermark_digests_and_snapshot_numbers(demo_db, pg_dsn, schema):
    options = {"cursor_columns": {"narrative_results": "updated_at"}}
    numbered_sync(demo_db, pg_dsn, schema, **options)
    high = _sqlite(demo_db, "SELECT max(updated_at) FROM narrative_results")
    before = to_old_layout(pg_dsn, schema, version=40)
    updated, added = mutate(demo_db, 2)
    expected_read = _sqlite(demo_db, "SELECT count(*) FROM narrative_results WHERE updated_at >= ?", (high,))

    result = numbered_sync(demo_db, pg_dsn, schema, **options)

    assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
    cursor = result["narrative_results"]
    assert cursor.watermark_before == high and cursor.rows_processed == expected_read < cursor.sqlite_rows
    assert (cursor.rows_updated, cursor.rows_inserted) == (updated, added)
    for table in DEMO_TABLES - {"narrative_results"}:  # unchanged: every batch found in the migrated digests
        assert result[table].rows_skipped == result[table].sqlite_rows > 0, table
        assert without_time(state_rows(pg_dsn, schema))[table] == without_time(before["rows"])[table]  # type: ignore[arg-type]
    assert_mirrored(demo_db, pg_dsn, schema)
    # Numbers go on from the old sequence's, never back.
    assert all(n == 41 for n in sequences(pg_dsn, schema, DEMO_TABLES).values())

    # A snapshot numbered before the migrated number is refused.
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db, arrow=False) as snapshot:
            snapshot.version = 40
            with pytest.raises(StaleSnapshotError, match=r"\(#41\) than this run's \(#40\)"):
                sync_table(snapshot, conn, snapshot.table("experiments"), schema, SyncOptions())
    finally:
        conn.close()


def test_an_old_layout_from_before_shapes_and_snapshot_numbers_is_migrated_and_read_in_full(demo_db, pg_dsn, schema):
    options = {"cursor_columns": {"narrative_results": "updated_at"}}
    numbered_sync(demo_db, pg_dsn, schema, **options)
    to_old_layout(pg_dsn, schema, ddl=FIRST_DDL, version=30)
    mutate(demo_db, 1)

    result = numbered_sync(demo_db, pg_dsn, schema, **options)

    assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
    # No shape stored: the watermark and digests may describe another shape, so every row is read.
    assert result["narrative_results"].watermark_before is None
    assert all(r.rows_processed == r.sqlite_rows and r.rows_skipped == 0 for r in result.values())
    assert_mirrored(demo_db, pg_dsn, schema)
    assert set(state_rows(pg_dsn, schema)) == DEMO_TABLES
    assert sequences(pg_dsn, schema, DEMO_TABLES)[""] == 31


def first_syncs_at_once(path: Path, dsn: str, schema: str) -> tuple[list[BaseException], list[int]]:
    """Every table's sync (unnumbered: the migration falls to the syncs) and two snapshot clocks,
    all let go at once; (what they raised, the numbers the clocks handed out)."""
    start = threading.Barrier(len(DEMO_TABLES) + 2)
    errors: list[BaseException] = []
    numbers: list[int] = []

    def sync_one(table: str) -> None:
        conn = psycopg2.connect(dsn)
        try:
            with SqliteSnapshot(path, arrow=False) as snapshot:
                start.wait()
                sync_table(snapshot, conn, snapshot.table(table), schema, SyncOptions(batch_size=BATCH))
        except BaseException as exc:  # noqa: BLE001 - collected, and the test asserts there are none
            errors.append(exc)
        finally:
            conn.close()

    def number_one() -> None:
        try:
            start.wait()
            with _clock(dsn, schema)() as number:
                numbers.append(number)
        except BaseException as exc:  # noqa: BLE001 - collected, and the test asserts there are none
            errors.append(exc)

    threads = [threading.Thread(target=sync_one, args=(t,)) for t in sorted(DEMO_TABLES)]
    threads += [threading.Thread(target=number_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors, numbers


def test_concurrent_first_syncs_migrate_the_old_layout_exactly_once(demo_db, pg_dsn, schema):
    numbered_sync(demo_db, pg_dsn, schema)
    for version in (100, 200, 300):
        before = to_old_layout(pg_dsn, schema, version=version)
        errors, numbers = first_syncs_at_once(demo_db, pg_dsn, schema)
        assert errors == []
        assert relations(pg_dsn, schema) == only_tables(DEMO_TABLES)
        assert without_time(state_rows(pg_dsn, schema)) == without_time(before["rows"])  # type: ignore[arg-type]
        assert sorted(numbers) == [version + 1, version + 2]
        found = sequences(pg_dsn, schema, DEMO_TABLES)
        assert found == {**dict.fromkeys(DEMO_TABLES, version), "": version + 2}
