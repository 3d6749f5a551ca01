"""The engine against a real PostgreSQL and real SQLite files."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from sync_pipeline.engine import (
    OrphanDeletionRefused,
    SchemaMismatchError,
    SqliteSnapshot,
    SyncError,
    SyncOptions,
    UnsupportedTableError,
    ValueMismatchError,
    sync_table,
)
from sync_pipeline.engine.naming import pg_name
from sync_pipeline.engine.pg_target import STOPGAP_STATISTICS_TARGET, PgTable
from sync_pipeline.engine.sqlite_source import quote_sqlite_identifier

from .conftest import flush_stats, pg_rows, query, sqlite_rows, sync_all, table_write_stats

PRIMARY_KEYS = {"source_narratives": "narrative_id", "experiments": "experiment_id", "narrative_results": "result_id"}


def make_db(path: Path, script: str, rows: dict[str, list[tuple[object, ...]]] | None = None) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    with conn:
        for table, values in (rows or {}).items():
            if values:
                marks = ",".join("?" * len(values[0]))
                conn.executemany(f"INSERT INTO {quote_sqlite_identifier(table)} VALUES ({marks})", values)
    conn.close()
    return path


def assert_tables_equal(path: Path, dsn: str, schema: str) -> None:
    for table in PRIMARY_KEYS:
        assert pg_rows(dsn, schema, table) == sqlite_rows(path, table), table


def test_first_sync_copies_every_table_and_every_value_reads_back_equal(demo_db, pg_dsn, schema):
    results = sync_all(demo_db, pg_dsn, schema)

    assert set(results) == set(PRIMARY_KEYS)
    for name, result in results.items():
        assert result.table_created
        assert result.rows_inserted == result.sqlite_rows == result.pg_rows_after > 0, name
        assert result.table_bytes_after > result.table_bytes_before == 0
    assert_tables_equal(demo_db, pg_dsn, schema)


def test_second_sync_without_changes_rewrites_no_row(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    before = {t: table_write_stats(pg_dsn, schema, t) for t in PRIMARY_KEYS}

    results = sync_all(demo_db, pg_dsn, schema, delete_orphans=True)

    for name, result in results.items():
        assert result.rows_changed == 0, name
        assert result.rows_unchanged == result.sqlite_rows
        assert table_write_stats(pg_dsn, schema, name) == before[name], name


def test_updates_inserts_and_deletes_are_counted_exactly(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    stats_before = table_write_stats(pg_dsn, schema, "narrative_results")
    rng = random.Random(3)
    conn = sqlite3.connect(demo_db)
    ids = [r for (r,) in conn.execute("SELECT result_id FROM narrative_results")]
    picked = rng.sample(ids, 60)
    updated, deleted = picked[:37], picked[37:]
    with conn:
        conn.executemany(
            "UPDATE narrative_results SET label = label || '!' WHERE result_id = ?", [(i,) for i in updated]
        )
        conn.executemany("DELETE FROM narrative_results WHERE result_id = ?", [(i,) for i in deleted])
        conn.execute(
            "INSERT INTO narrative_results SELECT result_id + 100000, experiment_id, narrative_id, label, confidence, "
            "tokens_in, tokens_out, latency_ms, output, created_at, updated_at FROM narrative_results LIMIT 11"
        )
    conn.close()

    results = sync_all(demo_db, pg_dsn, schema, delete_orphans=True, batch_size=500)

    r = results["narrative_results"]
    assert (r.rows_updated, r.rows_inserted, r.rows_deleted) == (len(updated), 11, len(deleted))
    assert r.rows_changed == len(updated) + 11 + len(deleted)
    assert r.pg_rows_after == r.pg_rows_before + 11 - len(deleted) == r.sqlite_rows
    ins, upd, dele = table_write_stats(pg_dsn, schema, "narrative_results")
    assert (ins - stats_before[0], upd - stats_before[1], dele - stats_before[2]) == (11, len(updated), len(deleted))
    assert results["experiments"].rows_changed == 0
    assert_tables_equal(demo_db, pg_dsn, schema)


def test_without_delete_orphans_deleted_rows_are_kept(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("DELETE FROM experiments WHERE experiment_id <= 2")
    conn.close()

    r = sync_all(demo_db, pg_dsn, schema)["experiments"]

    assert r.rows_deleted == 0
    assert r.pg_rows_after == r.sqlite_rows + 2


def test_delete_orphans_refuses_an_empty_source_and_deletes_nothing(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "experiments")
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("DELETE FROM experiments")
    conn.close()

    with pytest.raises(OrphanDeletionRefused, match="experiments"):
        sync_all(demo_db, pg_dsn, schema, delete_orphans=True)

    assert pg_rows(pg_dsn, schema, "experiments") == before


def test_full_refresh_never_shows_a_concurrent_reader_a_missing_empty_or_partial_table(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    expected = len(sqlite_rows(demo_db, "narrative_results"))
    seen: dict[str, list[int]] = {"read committed": [], "repeatable read": []}
    errors: list[str] = []
    stop = threading.Event()

    def count_in_a_loop(isolation: str) -> None:
        conn = psycopg2.connect(pg_dsn)
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "narrative_results"))
        with conn.cursor() as cur:
            while not stop.is_set():
                try:
                    # A snapshot-holding reader counts twice, once before and once during a refresh.
                    cur.execute(sql.SQL("BEGIN ISOLATION LEVEL {}").format(sql.SQL(isolation.upper())))
                    for _ in range(2):
                        cur.execute(query)
                        seen[isolation].append(cur.fetchone()[0])
                        time.sleep(0.005)
                    cur.execute("COMMIT")
                except psycopg2.Error as exc:
                    errors.append(str(exc))
                    conn.rollback()
        conn.close()

    readers = [threading.Thread(target=count_in_a_loop, args=(level,)) for level in seen]
    for reader in readers:
        reader.start()
    try:
        time.sleep(0.2)
        for _ in range(3):
            results = sync_all(demo_db, pg_dsn, schema, full_refresh=True, batch_size=200)
            assert results["narrative_results"].mode == "full_refresh"
        time.sleep(0.2)
    finally:
        stop.set()
        for reader in readers:
            reader.join()

    assert errors == []
    for level, counts in seen.items():
        assert len(counts) > 10, level
        assert set(counts) == {expected}, level
    assert_tables_equal(demo_db, pg_dsn, schema)


def test_a_column_added_in_sqlite_is_added_in_postgres_by_an_incremental_sync(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("ALTER TABLE experiments ADD COLUMN budget REAL")
        conn.execute("UPDATE experiments SET budget = experiment_id * 1.5 WHERE experiment_id <= 4")
    conn.close()

    result = sync_all(demo_db, pg_dsn, schema)["experiments"]

    assert result.columns_added == ("budget",)
    assert (result.rows_updated, result.rows_inserted) == (4, 0)
    assert_tables_equal(demo_db, pg_dsn, schema)


def test_a_dropped_or_retyped_column_asks_for_full_refresh_which_rebuilds_it(demo_db, pg_dsn, schema):
    sync_all(demo_db, pg_dsn, schema)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("ALTER TABLE experiments DROP COLUMN notes")
    conn.close()
    before = pg_rows(pg_dsn, schema, "experiments")

    with pytest.raises(SchemaMismatchError, match="'notes' is gone from SQLite; run with full_refresh"):
        sync_all(demo_db, pg_dsn, schema)
    assert pg_rows(pg_dsn, schema, "experiments") == before

    sync_all(demo_db, pg_dsn, schema, full_refresh=True)
    assert_tables_equal(demo_db, pg_dsn, schema)


def test_full_refresh_keeps_views_when_the_shape_is_unchanged_and_refuses_to_drop_them_otherwise(
    demo_db, pg_dsn, schema, pg
):
    sync_all(demo_db, pg_dsn, schema)
    view = sql.Identifier(schema, "exp_ids")
    with pg, pg.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE VIEW {} AS SELECT experiment_id FROM {}").format(
                view, sql.Identifier(schema, "experiments")
            )
        )
    refreshed = sync_all(demo_db, pg_dsn, schema, full_refresh=True)["experiments"]
    assert refreshed.rows_inserted == refreshed.rows_deleted == refreshed.sqlite_rows
    with pg, pg.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(view))
        assert cur.fetchone()[0] == refreshed.sqlite_rows
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("ALTER TABLE experiments DROP COLUMN notes")
    conn.close()

    with pytest.raises(SyncError, match=f"views depend on it: {schema}.exp_ids"):
        sync_all(demo_db, pg_dsn, schema, full_refresh=True)

    with pytest.raises(SchemaMismatchError):
        sync_all(demo_db, pg_dsn, schema)


def test_composite_keys_and_quoted_identifiers_sync_incrementally(tmp_path, pg_dsn, schema):
    table = 'Run "Scores" select'
    path = make_db(
        tmp_path / "odd.sqlite",
        f'''CREATE TABLE "{table.replace('"', '""')}" (
               "Experiment ID" INTEGER, "order" TEXT, "Ünïcode värde" REAL, "group" VARCHAR(10),
               PRIMARY KEY ("Experiment ID", "order")) WITHOUT ROWID;''',
        {table: [(i % 7, f"step {i}", i / 3, "g\t\\n" if i % 2 else None) for i in range(500)]},
    )
    first = sync_all(path, pg_dsn, schema)[table]
    assert first.rows_inserted == 500
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f'UPDATE {quote_sqlite_identifier(table)} SET "Ünïcode värde" = -1 WHERE "order" = ?', ("step 5",))
    conn.close()

    second = sync_all(path, pg_dsn, schema, delete_orphans=True)[table]

    assert (second.rows_updated, second.rows_inserted, second.rows_deleted) == (1, 0, 0)
    assert pg_rows(pg_dsn, schema, table) == sqlite_rows(path, table)


def test_with_strict_types_a_misfit_names_table_column_and_key_and_changes_nothing(tmp_path, pg_dsn, schema):
    path = make_db(
        tmp_path / "bad.sqlite",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT);",
        {"t": [(i, i, "x") for i in range(1, 101)]},
    )
    sync_all(path, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "t")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE t SET s = 'changed' WHERE id = 1")
        conn.execute("UPDATE t SET n = 'not a number' WHERE id = 77")
    conn.close()

    with pytest.raises(ValueMismatchError) as caught:
        sync_all(path, pg_dsn, schema, batch_size=10, strict_types=True)

    assert (caught.value.table, caught.value.column, caught.value.row_key) == ("t", "n", "(id=77)")
    assert "not a number" in str(caught.value)
    assert pg_rows(pg_dsn, schema, "t") == before


def test_with_strict_types_invalid_utf8_names_table_column_and_key_and_changes_nothing(tmp_path, pg_dsn, schema):
    path = make_db(
        tmp_path / "u.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB, s TEXT);", {"t": [(1, b"\xff", "ok")]}
    )
    sync_all(path, pg_dsn, schema)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO t VALUES (2, x'ff00', 'fine'), (3, NULL, CAST(x'66ff6f' AS TEXT))")
    conn.close()

    with pytest.raises(ValueMismatchError, match="not valid UTF-8") as caught:
        sync_all(path, pg_dsn, schema, strict_types=True)

    assert (caught.value.table, caught.value.column, caught.value.row_key) == ("t", "s", "(id=3)")
    assert pg_rows(pg_dsn, schema, "t") == [(1, b"\xff", "ok")]


def test_a_null_in_a_text_primary_key_fails_naming_table_and_column(tmp_path, pg_dsn, schema):
    # SQLite allows NULL in a PRIMARY KEY that is not INTEGER PRIMARY KEY (a legacy quirk).
    path = make_db(
        tmp_path / "n.sqlite", "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER);", {"t": [("a", 1), (None, 2)]}
    )

    with pytest.raises(SyncError, match=r"table 't': a primary key or NOT NULL column holds NULL.*\"k\""):
        sync_all(path, pg_dsn, schema)

    assert query(pg_dsn, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)) == [(0,)]


def test_keys_that_merge_once_converted_fail_naming_the_key_on_every_path(tmp_path, pg_dsn, schema):
    # A typeless key column can hold 1 and '1'; both become the PostgreSQL text '1'.
    path = make_db(tmp_path / "k.sqlite", "CREATE TABLE t (k PRIMARY KEY, v INTEGER);", {"t": [("1", 1), (2, 2)]})
    assert sync_all(path, pg_dsn, schema)["t"].rows_inserted == 2
    before = pg_rows(pg_dsn, schema, "t")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO t VALUES (1, 10)")
    conn.close()

    with pytest.raises(SyncError, match=r"table 't': two SQLite rows have the key \(k='1'\)"):
        sync_all(path, pg_dsn, schema)
    assert pg_rows(pg_dsn, schema, "t") == before
    with pytest.raises(SyncError, match=r"table 't': .*Key \(k\)=\(1\)"):
        sync_all(path, pg_dsn, schema, full_refresh=True)
    assert pg_rows(pg_dsn, schema, "t") == before


def test_numbers_in_columns_that_map_to_text_keep_their_exact_text(tmp_path, pg_dsn, schema):
    path = make_db(
        tmp_path / "t.sqlite",
        "CREATE TABLE e (id INTEGER PRIMARY KEY, at DATETIME, payload JSON, anything);",
        {"e": [(1, 1700000000, 42, 0.1), (2, "2025-01-01 10:00:00", '{"a": 1}', "text")]},
    )
    sync_all(path, pg_dsn, schema)
    assert pg_rows(pg_dsn, schema, "e") == [
        (1, "1700000000", "42", "0.1"),
        (2, "2025-01-01 10:00:00", '{"a": 1}', "text"),
    ]


def test_a_table_named_like_another_tables_key_does_not_collide(tmp_path, pg_dsn, schema):
    path = make_db(
        tmp_path / "pk.sqlite",
        "CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE t_pkey (id INTEGER PRIMARY KEY);",
        {"t": [(1,)], "t_pkey": [(2,)]},
    )
    results = sync_all(path, pg_dsn, schema)
    assert {name: r.pg_rows_after for name, r in results.items()} == {"t": 1, "t_pkey": 1}
    assert sync_all(path, pg_dsn, schema, full_refresh=True)["t"].pg_rows_after == 1


def test_table_without_primary_key_is_mirrored_as_a_multiset(tmp_path, pg_dsn, schema):
    path = make_db(
        tmp_path / "nokey.sqlite",
        "CREATE TABLE log (msg TEXT, n INTEGER);",
        {"log": [("a", 1), ("a", 1), ("b", 2)]},
    )
    assert sync_all(path, pg_dsn, schema)["log"].rows_inserted == 3
    assert sync_all(path, pg_dsn, schema, delete_orphans=True)["log"].rows_changed == 0
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM log WHERE rowid = 1")
        conn.execute("INSERT INTO log VALUES ('c', 3)")
    conn.close()

    appended = sync_all(path, pg_dsn, schema)["log"]
    assert (appended.rows_inserted, appended.rows_deleted, appended.pg_rows_after) == (1, 0, 4)
    mirrored = sync_all(path, pg_dsn, schema, delete_orphans=True)["log"]
    assert (mirrored.rows_inserted, mirrored.rows_deleted) == (0, 1)
    assert pg_rows(pg_dsn, schema, "log") == sqlite_rows(path, "log")


def test_a_column_added_to_a_table_without_a_key_asks_for_full_refresh(tmp_path, pg_dsn, schema):
    path = make_db(tmp_path / "nk.sqlite", "CREATE TABLE log (msg TEXT);", {"log": [("a",), ("b",)]})
    sync_all(path, pg_dsn, schema)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("ALTER TABLE log ADD COLUMN level INTEGER DEFAULT 1")
    conn.close()

    with pytest.raises(SchemaMismatchError, match="'level' is new in SQLite; run with full_refresh"):
        sync_all(path, pg_dsn, schema)
    assert pg_rows(pg_dsn, schema, "log") == [("a",), ("b",)]


def test_names_longer_than_postgres_allows_are_shortened_deterministically_and_commented(tmp_path, pg_dsn, schema):
    table, column = "t" * 40 + "_é" * 15, "c" * 70  # 85 and 70 bytes; the cut must not split an é
    path = make_db(
        tmp_path / "long.sqlite",
        f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, "{column}" TEXT); INSERT INTO "{table}" VALUES (1, \'v\');',
    )
    result = sync_all(path, pg_dsn, schema)[table]
    mirror = result.pg_table.split(".", 1)[1]
    assert len(mirror.encode()) <= 63 and mirror.startswith("t" * 40) and mirror == pg_name(table) != table
    assert pg_rows(pg_dsn, schema, mirror) == [(1, "v")]
    comments = query(
        pg_dsn,
        "SELECT a.attname, col_description(c.oid, a.attnum), obj_description(c.oid, 'pg_class') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 ORDER BY a.attnum",
        (schema, mirror),
    )
    assert [name for name, _, _ in comments] == ["id", pg_name(column)]
    assert repr(column) in comments[1][1] and repr(table) in comments[0][2]
    # The same names again: the same mirror, found and merged into.
    assert sync_all(path, pg_dsn, schema)[table].rows_unchanged == 1


def test_two_columns_that_would_share_a_postgresql_name_fail_naming_both(tmp_path, pg_dsn, schema):
    long_column = "c" * 70
    path = make_db(
        tmp_path / "clash.sqlite",
        f'CREATE TABLE t (id INTEGER PRIMARY KEY, "{long_column}" TEXT, "{pg_name(long_column)}" TEXT);',
    )
    with pytest.raises(UnsupportedTableError, match="would both be"):
        sync_all(path, pg_dsn, schema)


def test_a_concurrent_sync_of_the_same_table_waits_then_fails_clearly(demo_db, pg_dsn, schema, pg):
    sync_all(demo_db, pg_dsn, schema)
    with pg.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{schema}.experiments",))
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db) as snapshot, pytest.raises(SyncError, match="another sync"):
            sync_table(snapshot, conn, snapshot.table("experiments"), schema, SyncOptions(lock_timeout_s=0.3))
    finally:
        conn.close()
        pg.rollback()


def test_a_statement_timeout_while_waiting_for_the_lock_is_reported_as_itself(demo_db, pg_dsn, schema, pg):
    sync_all(demo_db, pg_dsn, schema)
    with pg.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{schema}.experiments",))
    conn = psycopg2.connect(pg_dsn, options="-c statement_timeout=300")
    try:
        with SqliteSnapshot(demo_db) as snapshot, pytest.raises(SyncError, match="statement timeout"):
            sync_table(snapshot, conn, snapshot.table("experiments"), schema, SyncOptions(lock_timeout_s=30))
    finally:
        conn.close()
        pg.rollback()


def test_a_reader_idle_in_transaction_cannot_make_a_schema_changing_refresh_wait_forever(demo_db, pg_dsn, schema, pg):
    sync_all(demo_db, pg_dsn, schema)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("ALTER TABLE experiments ADD COLUMN budget REAL")
    conn.close()
    with pg.cursor() as cur:  # reads, then sits in its transaction holding ACCESS SHARE
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "experiments")))
    sync_conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db) as snapshot, pytest.raises(SyncError, match="could not be swapped in"):
            options = SyncOptions(full_refresh=True, lock_timeout_s=0.5)
            sync_table(snapshot, sync_conn, snapshot.table("experiments"), schema, options)
    finally:
        sync_conn.close()
    pg.rollback()
    assert [c for c, _ in PgTable(pg.cursor(), schema, _experiments(demo_db)).columns_in_pg()][-1] == "updated_at"


def _experiments(path: Path):
    with SqliteSnapshot(path) as snapshot:
        return snapshot.table("experiments")


def test_missing_target_schema_is_a_clear_error(demo_db, pg_dsn):
    with pytest.raises(SyncError, match="schema 'no_such_schema' does not exist"):
        sync_all(demo_db, pg_dsn, "no_such_schema")


def test_stats_flush_sees_writes(demo_db, pg_dsn, schema, pg):
    """Positive control for the n_tup_upd assertions: an UPDATE shows up in the statistics."""
    sync_all(demo_db, pg_dsn, schema)
    before = table_write_stats(pg_dsn, schema, "experiments")
    with pg.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET notes = 'x' WHERE experiment_id <= 3").format(sql.Identifier(schema, "experiments"))
        )
    pg.commit()
    flush_stats(pg)
    assert table_write_stats(pg_dsn, schema, "experiments")[1] == before[1] + 3


def test_a_loaded_table_gets_full_statistics_or_a_stopgap_that_autovacuum_replaces(tmp_path, pg_dsn, schema):
    """A first load analyzes the table before its commit: fully where nothing else will, from a small sample
    where autovacuum runs, which then analyzes it whole because the load's rows still count as changes."""
    rows = 40_000  # more than a full ANALYZE samples (300 x the statistics target), so the sample size shows
    path = make_db(
        tmp_path / "big.sqlite",
        "CREATE TABLE measures (id INTEGER PRIMARY KEY, value REAL);",
        {"measures": [(i, random.random()) for i in range(rows)]},
    )
    sync_all(path, pg_dsn, schema)

    [(autovacuum, full_target)] = query(
        pg_dsn,
        "SELECT current_setting('autovacuum')::bool AND current_setting('track_counts')::bool, "
        "current_setting('default_statistics_target')::int",
    )
    [(bounds,)] = query(
        pg_dsn,
        "SELECT cardinality(histogram_bounds::text::float8[]) FROM pg_stats "
        "WHERE schemaname = %s AND tablename = 'measures' AND attname = 'value'",
        (schema,),
    )
    assert bounds == (STOPGAP_STATISTICS_TARGET if autovacuum else full_target) + 1
    [(changes,)] = query(
        pg_dsn,
        "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'measures'",
        (schema,),
    )
    assert changes >= rows  # what makes autovacuum analyze it whole after the stopgap
