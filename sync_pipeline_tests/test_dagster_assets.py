"""The Dagster layer: specs, config, metadata, checks, failures and secrets, on real servers."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2.extensions
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    ExecuteInProcessResult,
    FloatMetadataValue,
    IntMetadataValue,
    TableSchemaMetadataValue,
    TextMetadataValue,
    materialize,
)
from psycopg2 import sql

from sync_pipeline import assets as assets_module
from sync_pipeline.assets import build_sync_assets
from sync_pipeline.demo import mutate
from sync_pipeline.engine import list_tables, mask_dsn
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.translator import ROW_COUNT_CHECK, TYPES_CHECK, AssetKeyCollisionError, SqliteTableTranslator

from .conftest import pg_rows, query, sqlite_rows

INT_KEYS = [
    "dagster/row_count",
    "sqlite_rows",
    "pg_rows_before",
    "pg_rows_after",
    "rows_processed",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_unchanged",
    "rows_changed",
    "table_bytes_before",
    "table_bytes_after",
    "table_bytes_delta",
    "batch_size",
]
OP = "sqlite_tables"


def run_sync(
    path: Path,
    dsn: str,
    schema: str,
    instance: DagsterInstance | None = None,
    selection: list[str] | AssetSelection | None = None,
    tables_from: Path | None = None,
    **config: object,
) -> ExecuteInProcessResult:
    """Materialize in process; ``tables_from``: build the assets from another file (as loaded earlier)."""
    assets = build_sync_assets(list_tables(tables_from or path), SqliteTableTranslator(pg_schema=schema))
    return materialize(
        [assets],
        instance=instance or DagsterInstance.ephemeral(),
        resources={"sqlite": SQLiteSource(path=str(path)), "postgres": PostgresTarget(conn_str=dsn, pg_schema=schema)},
        run_config={"ops": {OP: {"config": config}}},
        selection=selection,
        raise_on_error=False,
    )


def metadata_by_table(result: ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        e.asset_key.path[-1]: dict(e.materialization.metadata)  # type: ignore[union-attr]
        for e in result.get_asset_materialization_events()
    }


def failure_message(result: ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")]
    return "\n".join(
        (e.step_failure_data.error.message if e.step_failure_data and e.step_failure_data.error else e.message or "")
        for e in failures
    )


def log_text(instance: DagsterInstance, result: ExecuteInProcessResult) -> str:
    return "\n".join(entry.message for entry in instance.all_logs(result.run_id))


def test_materialization_records_every_contract_key_with_numbers_as_numbers(demo_db, pg_dsn, schema):
    result = run_sync(demo_db, pg_dsn, schema, batch_size=700)

    assert result.success
    metadata = metadata_by_table(result)
    assert set(metadata) == {"experiments", "narrative_results", "source_narratives"}
    for table, md in metadata.items():
        for key in INT_KEYS:
            assert isinstance(md[key], IntMetadataValue), (table, key)
        assert isinstance(md["duration_s"], FloatMetadataValue)
        assert isinstance(md["dagster/column_schema"], TableSchemaMetadataValue)
        assert md["dagster/table_name"] == TextMetadataValue(f"{schema}.{table}")
        assert md["mode"] == TextMetadataValue("incremental")
        assert md["batch_size"].value == 700
        assert md["sqlite_rows"].value == len(sqlite_rows(demo_db, table)) == md["dagster/row_count"].value
        assert md["rows_changed"].value == md["rows_inserted"].value == md["sqlite_rows"].value
    assert pg_rows(pg_dsn, schema, "experiments") == sqlite_rows(demo_db, "experiments")


def test_cursor_mode_shows_its_column_and_watermarks_in_the_catalog(demo_db, pg_dsn, schema):
    cursor = {"narrative_results": "updated_at"}
    run_sync(demo_db, pg_dsn, schema, cursor_columns=cursor)
    high = sqlite3.connect(demo_db).execute("SELECT max(updated_at) FROM narrative_results").fetchone()[0]
    mutate(demo_db, 1)
    result = run_sync(demo_db, pg_dsn, schema, cursor_columns=cursor)
    assert result.success
    metadata = metadata_by_table(result)
    md = metadata["narrative_results"]
    assert md["mode"] == TextMetadataValue("cursor")
    assert md["cursor_column"] == TextMetadataValue("updated_at")
    assert md["watermark_before"] == TextMetadataValue(repr(high))
    assert md["rows_processed"].value < md["sqlite_rows"].value == md["dagster/row_count"].value
    assert md["read_path"] == TextMetadataValue("exact")  # a small file: no Arrow reader process (arrow="auto")
    assert metadata["experiments"]["mode"] == TextMetadataValue("incremental")
    assert "cursor_column" not in metadata["experiments"]


def test_tables_sync_in_parallel_so_one_waiting_table_does_not_hold_up_the_others(demo_db, pg_dsn, schema):
    """The test holds the lock the engine takes for 'experiments' (the first table in order):
    with two workers the other tables are synced and committed while it waits."""
    blocker = psycopg2.connect(pg_dsn)
    blocker.autocommit = True
    lock = ("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"sqlite_pg_sync:{schema}.experiments",))
    blocker.cursor().execute(*lock)
    outcome: list[ExecuteInProcessResult] = []
    run = threading.Thread(target=lambda: outcome.append(run_sync(demo_db, pg_dsn, schema, parallel_tables=2)))
    run.start()
    try:
        deadline = time.monotonic() + 60
        others = ("narrative_results", "source_narratives")
        while time.monotonic() < deadline and not all(_committed_rows(pg_dsn, schema, t) for t in others):
            time.sleep(0.2)
        for table in others:
            assert _committed_rows(pg_dsn, schema, table) == len(sqlite_rows(demo_db, table))
        assert _committed_rows(pg_dsn, schema, "experiments") is None  # still waiting for the lock
    finally:
        blocker.cursor().execute(lock[0].replace("pg_advisory_lock", "pg_advisory_unlock"), lock[1])
        blocker.close()
        run.join(timeout=120)
    assert outcome and outcome[0].success
    assert set(metadata_by_table(outcome[0])) == {"experiments", "narrative_results", "source_narratives"}
    assert pg_rows(pg_dsn, schema, "experiments") == sqlite_rows(demo_db, "experiments")


def _committed_rows(dsn: str, schema: str, table: str) -> int | None:
    if query(dsn, "SELECT to_regclass(%s)", (f'"{schema}"."{table}"',))[0][0] is None:
        return None
    return int(query(dsn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))[0][0])


def row_count_evaluations(result: ExecuteInProcessResult) -> list[AssetCheckEvaluation]:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == ROW_COUNT_CHECK]


def test_row_count_check_passes_after_a_sync_and_flags_orphans_that_were_kept(demo_db, pg_dsn, schema):
    first = run_sync(demo_db, pg_dsn, schema)
    assert {(e.asset_key.path[-1], e.passed) for e in row_count_evaluations(first)} == {
        ("experiments", True),
        ("narrative_results", True),
        ("source_narratives", True),
    }
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("DELETE FROM experiments WHERE experiment_id = 1")
    conn.close()

    kept = run_sync(demo_db, pg_dsn, schema)
    evaluations = {e.asset_key.path[-1]: e for e in row_count_evaluations(kept)}
    assert kept.success  # a warning check does not fail the run
    assert not evaluations["experiments"].passed
    assert evaluations["experiments"].metadata["difference"].value == 1
    assert evaluations["narrative_results"].passed

    cleaned = run_sync(demo_db, pg_dsn, schema, delete_orphans=True)
    assert all(e.passed for e in cleaned.get_asset_check_evaluations())  # the types check too
    assert metadata_by_table(cleaned)["experiments"]["rows_deleted"].value == 1


def test_a_table_failing_with_strict_types_does_not_hide_the_others_and_the_run_fails_naming_it(
    demo_db, pg_dsn, schema
):
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("UPDATE experiments SET prompt_version = 'seven' WHERE experiment_id = 2")
    conn.close()

    result = run_sync(demo_db, pg_dsn, schema, strict_types=True)

    assert not result.success
    assert set(metadata_by_table(result)) == {"narrative_results", "source_narratives"}
    message = failure_message(result)
    assert "1 of 3 tables failed to sync: experiments" in message
    assert "prompt_version" in message
    assert "(experiment_id=2)" in message
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")


@pytest.mark.parametrize("batch_size", [0, -5, 50_000_000])
def test_a_bad_batch_size_is_rejected_with_a_reason_before_any_database_is_touched(demo_db, batch_size):
    # Port 1 refuses connections: reaching PostgreSQL at all would produce a connection error instead.
    result = run_sync(demo_db, "postgresql://nobody:pw@127.0.0.1:1/none", "public", batch_size=batch_size)

    assert not result.success
    message = failure_message(result)
    assert "batch_size must be between 1 and 1,000,000 rows" in message
    assert "connect" not in message
    assert result.get_asset_materialization_events() == []


def test_the_password_never_reaches_logs_metadata_or_errors(demo_db, pg_dsn, schema):
    params = psycopg2.extensions.parse_dsn(pg_dsn)
    secret = "hunter2-very-secret"
    with_password = psycopg2.extensions.make_dsn(**{**params, "password": secret})  # trust auth ignores it
    instance = DagsterInstance.ephemeral()

    ok = run_sync(demo_db, with_password, schema, instance=instance)
    unreachable = run_sync(demo_db, f"postgresql://someone:{secret}@127.0.0.1:1/db", schema, instance=instance)

    assert ok.success and not unreachable.success
    assert "cannot connect to PostgreSQL at postgresql://someone:***@127.0.0.1:1/db" in failure_message(unreachable)
    everything = "\n".join(
        [log_text(instance, ok), log_text(instance, unreachable), failure_message(unreachable)]
        + [str(md) for md in metadata_by_table(ok).values()]
    )
    assert "password=***" in log_text(instance, ok)
    assert secret not in everything


def test_an_unknown_role_is_one_clear_line_without_the_password(demo_db, pg_dsn, schema):
    params = psycopg2.extensions.parse_dsn(pg_dsn)
    wrong = psycopg2.extensions.make_dsn(**{**params, "user": "no_such_role", "password": "s3cret-pw"})

    result = run_sync(demo_db, wrong, schema)

    message = failure_message(result)
    assert not result.success
    assert "cannot connect to PostgreSQL at" in message and "no_such_role" in message
    assert "s3cret-pw" not in message and "password=***" in message


def test_a_subset_selection_syncs_only_the_selected_tables(demo_db, pg_dsn, schema):
    result = run_sync(demo_db, pg_dsn, schema, selection=["experiments"])

    assert result.success
    assert set(metadata_by_table(result)) == {"experiments"}
    assert {(e.asset_key, e.check_name) for e in result.get_asset_check_evaluations()} == {
        (AssetKey("experiments"), ROW_COUNT_CHECK),
        (AssetKey("experiments"), TYPES_CHECK),
    }


def test_progress_lines_and_the_seed_summary_appear_in_the_run_log(demo_db, pg_dsn, schema, monkeypatch):
    monkeypatch.setattr(assets_module, "PROGRESS_EVERY_S", 0.0)
    instance = DagsterInstance.ephemeral()

    result = run_sync(demo_db, pg_dsn, schema, instance=instance, batch_size=1000)

    logs = log_text(instance, result)
    assert "⚡ INCREMENTAL mode" in logs
    assert "📥 Syncing narrative_results..." in logs
    # A line while the table is part done (batches are key ranges of up to 1,000 rows here).
    partial = re.findall(r"narrative_results: ([\d,]+) of 3,000 rows \((\d+)%\)", logs)
    assert any(0 < int(done.replace(",", "")) < 3000 and 0 < int(share) < 100 for done, share in partial)
    assert "PostgreSQL before/after:" in logs
    assert "  experiments: 0 -> 10 (processed 10 rows, 10 changed)" in logs
    assert "size: 0.00 MB -> " in logs
    # Once every row is read, the wait for PostgreSQL (merge, key build) is said, not silent.
    assert re.search(r"narrative_results: 3,000 rows read in [\d.]+ s; PostgreSQL is writing them", logs)
    # The checks are recorded as evaluations, not outputs: Dagster's "not yielded" line is not shown
    assert len(result.get_asset_check_evaluations()) >= 6
    assert "did not yield or return expected outputs" not in logs


def test_dagsters_not_yielded_line_is_kept_when_it_names_an_output_that_is_not_a_check():
    line = assets_module._ChecksRecordedAsEvaluations({"t_row_count_matches_sqlite", "t_types_match_declared"})

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("dagster", logging.INFO, __file__, 1, message, None, None)

    said = "op 'x' did not yield or return expected outputs {}."
    assert not line.filter(record(said.format("{'t_types_match_declared', 't_row_count_matches_sqlite'}")))
    assert line.filter(record(said.format("{'t_row_count_matches_sqlite', 't'}")))
    assert line.filter(record("✓ t: 3 rows synced"))


def test_tables_whose_asset_keys_collide_are_refused_at_load_time(tmp_path):
    path = tmp_path / "c.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript('CREATE TABLE "daily stats" (id INTEGER PRIMARY KEY); CREATE TABLE daily_stats (id INTEGER);')
    conn.close()

    with pytest.raises(AssetKeyCollisionError, match="'daily stats' and 'daily_stats' both map to asset key"):
        build_sync_assets(list_tables(path))


RESERVED = ["config", "context", "type", "input", "output", "int", "class", "def", "from"]


def test_tables_named_like_dagster_or_python_reserved_words_are_assets_that_sync(tmp_path, pg_dsn, schema):
    path = tmp_path / "reserved.sqlite"
    conn = sqlite3.connect(path)
    for number, name in enumerate(RESERVED):
        conn.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, v TEXT)')
        conn.execute(f'INSERT INTO "{name}" VALUES (?, ?)', (number, name))
    conn.commit()
    conn.close()

    result = run_sync(path, pg_dsn, schema)
    assert result.success
    assert sorted(metadata_by_table(result)) == sorted(RESERVED)
    for name in RESERVED:
        assert pg_rows(pg_dsn, schema, name) == sqlite_rows(path, name)
    # One of them alone, as a click on its asset would select it.
    assert run_sync(path, pg_dsn, schema, selection=["class"]).success


def test_definitions_make_one_asset_per_user_table_from_the_environment(tmp_path, pg_dsn):
    path = tmp_path / "env.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE "Daily Stats" (id INTEGER PRIMARY KEY AUTOINCREMENT, v REAL);
           CREATE TABLE plain (a TEXT, b BLOB);
           CREATE VIEW v AS SELECT * FROM plain;
           INSERT INTO "Daily Stats"(v) VALUES (1.5);"""
    )
    conn.close()
    script = """
import json
from sync_pipeline.definitions import defs
graph = defs.resolve_asset_graph()
out = {}
for key in graph.get_all_asset_keys():
    spec = graph.get(key)
    out[key.to_user_string()] = {"kinds": sorted(spec.kinds), "table": spec.metadata["dagster/table_name"],
        "target": spec.metadata["sync_target"],
        "columns": [c.name + ":" + c.type for c in spec.metadata["dagster/column_schema"].columns]}
print(json.dumps(out))
"""
    secret_dsn = psycopg2.extensions.make_dsn(pg_dsn, password="hunter2")
    env = {**os.environ, "SQLITE_PATH": str(path), "PG_CONN_STR": secret_dsn, "PG_SCHEMA": "analytics"}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    specs = json.loads(out.strip().splitlines()[-1])

    target = mask_dsn(secret_dsn) + ", schema analytics"
    assert "hunter2" not in out and "password=***" in target
    assert specs == {
        "Daily_Stats": {
            "kinds": ["postgres", "sqlite"],
            "table": "analytics.Daily Stats",
            "target": target,
            "columns": ["id:bigint", "v:double precision"],
        },
        "plain": {
            "kinds": ["postgres", "sqlite"],
            "table": "analytics.plain",
            "target": target,
            "columns": ["a:text", "b:bytea"],
        },
    }


def test_run_config_defaults_follow_the_seed_environment_variables():
    script = "from sync_pipeline.config import SyncConfig; print(SyncConfig().model_dump_json())"
    env = {
        **os.environ,
        "FULL_REFRESH": "1",
        "DELETE_ORPHANS": "true",
        "BATCH_SIZE": "2500",
        "SYNC_CURSOR_COLUMNS": "narrative_results=updated_at, t = v",
        "SYNC_PARALLEL_TABLES": "3",
        "SYNC_STRICT_TYPES": "1",
        "SYNC_COLUMN_TYPES": "experiments.config=jsonb, a.b.c = timestamp with time zone",
        "SYNC_VERIFY": "1",
        "SYNC_PG_NAMES": "Lower",
        "SYNC_INFER_TYPES": "1",
        "SYNC_INDEXES": "0",
        "SYNC_FOREIGN_KEYS": "1",
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {
        "full_refresh": True,
        "full_refresh_tables": [],  # no variable: set per table in a component's defs.yaml
        "delete_orphans": True,
        "verify": True,
        "verify_tables": [],  # like full_refresh_tables: per table in a component's defs.yaml
        "batch_size": 2500,
        "cursor_columns": {"narrative_results": "updated_at", "t": "v"},
        "parallel_tables": 3,
        "strict_types": True,
        "column_types": {"experiments.config": "jsonb", "a.b.c": "timestamp with time zone"},
        "pg_names": "lower",
        "infer_types": True,
        "indexes": False,
        "foreign_keys": True,
    }

    bad = subprocess.run(
        [sys.executable, "-c", script], env={**env, "BATCH_SIZE": "lots"}, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "BATCH_SIZE must be an integer from 1 to 1000000, got 'lots'" in bad.stderr


def test_running_only_the_row_count_check_compares_counts_without_syncing(demo_db, pg_dsn, schema):
    never_synced = run_sync(demo_db, pg_dsn, schema, selection=AssetSelection.all_asset_checks())
    assert never_synced.success
    assert metadata_by_table(never_synced) == {}
    assert {(e.asset_key.path[-1], e.check_name): e.passed for e in never_synced.get_asset_check_evaluations()} == {
        (table, check): False
        for table in ("experiments", "narrative_results", "source_narratives")
        for check in (ROW_COUNT_CHECK, TYPES_CHECK)
    }
    assert {e.asset_key.path[-1]: e.passed for e in row_count_evaluations(never_synced)} == {
        "experiments": False,
        "narrative_results": False,
        "source_narratives": False,
    }
    run_sync(demo_db, pg_dsn, schema)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("DELETE FROM experiments WHERE experiment_id IN (1, 2, 3)")
    conn.close()

    checked = run_sync(demo_db, pg_dsn, schema, selection=AssetSelection.all_asset_checks())

    evaluations = {e.asset_key.path[-1]: e for e in row_count_evaluations(checked)}
    assert metadata_by_table(checked) == {}
    assert all(e.passed for e in checked.get_asset_check_evaluations() if e.check_name == TYPES_CHECK)
    assert evaluations["experiments"].metadata["difference"].value == 3
    assert not evaluations["experiments"].passed
    assert evaluations["narrative_results"].passed
