"""Verify and repair (issue 25, item 5): edits made to the mirror by someone else survive a plain sync,
and ``--verify`` finds and repairs them, reporting what it did (metadata, the run log, the check
``mirror_matches_sqlite``), through the headless command as cron runs it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DynamicPartitionsDefinition,
    asset,
    build_schedule_context,
    instance_for_test,
    materialize,
)

from sync_pipeline.cli import EXIT_CHECK_FAILED, EXIT_OK
from sync_pipeline.components import SqliteSyncComponent
from sync_pipeline.demo import generate
from sync_pipeline.schedule import DEFAULT_CRON, build_verify_schedule
from sync_pipeline.translator import MIRROR_CHECK

from .conftest import query, sync_all
from .test_cli import cli_env, run_cli  # noqa: F401 - the fixture, and the command as cron runs it

EVALUATED = "ASSET_CHECK_EVALUATION"  # not merely planned: a run that does not verify leaves the check alone
COLUMNS = "result_id, experiment_id, narrative_id, label, confidence, tokens_in, tokens_out, latency_ms, output"


def sqlite_rows(path: str | Path, statement: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(statement).fetchall(), key=repr)
    finally:
        conn.close()


def pg_rows(dsn: str, statement: str) -> list[tuple[object, ...]]:
    return sorted(query(dsn, statement), key=repr)


def latest(home: str, table: str) -> tuple[dict[str, object], object]:
    """(the table's last materialization metadata, values only; the mirror_matches_sqlite evaluation of that
    materialization's run, None if the run did not evaluate it)."""
    with DagsterInstance.from_config(home) as instance:
        (record,) = instance.fetch_materializations(AssetKey(table), limit=1).records
        metadata = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        key = AssetCheckKey(AssetKey(table), MIRROR_CHECK)
        for check in instance.event_log_storage.get_asset_check_execution_history(key, limit=20):
            event = check.event.dagster_event if check.event is not None else None
            if check.run_id == record.run_id and event is not None and event.event_type_value == EVALUATED:
                return metadata, event.asset_check_evaluation_data
        return metadata, None


def test_verify_repairs_out_of_band_edits_that_a_plain_sync_keeps(
    cli_env: dict[str, str],  # noqa: F811 - the fixture imported above
    pg_dsn: str,
    schema: str,
) -> None:
    path = cli_env["SQLITE_PATH"]
    with sqlite3.connect(path) as conn:  # a table without a key beside the demo's keyed ones
        conn.execute("CREATE TABLE notes_log (msg TEXT, n INTEGER)")
        conn.executemany("INSERT INTO notes_log VALUES (?, ?)", [(f"note {i}", i % 3) for i in range(40)])
    conn.close()
    assert run_cli(cli_env).returncode == EXIT_OK
    nr, log = f'"{schema}".narrative_results', f'"{schema}".notes_log'
    in_sqlite = sqlite_rows(path, f"SELECT {COLUMNS} FROM narrative_results")
    log_in_sqlite = sqlite_rows(path, "SELECT msg, n FROM notes_log")
    # Another client edits the mirror: one row updated, one deleted, one inserted under a new key.
    query(pg_dsn, f"UPDATE {nr} SET label = 'tampered' WHERE result_id = 10")
    query(pg_dsn, f"DELETE FROM {nr} WHERE result_id = 20")
    query(
        pg_dsn, f"INSERT INTO {nr} ({COLUMNS}) SELECT result_id + 100000, {COLUMNS[11:]} FROM {nr} WHERE result_id = 30"
    )
    query(pg_dsn, f"UPDATE {log} SET n = 99 WHERE msg = 'note 1'")
    query(pg_dsn, f"DELETE FROM {log} WHERE msg = 'note 2'")
    query(pg_dsn, f"INSERT INTO {log} VALUES ('intruder', 7)")

    plain = run_cli(cli_env)
    # The keyless table's count check sees the intruder (exit 3); the keyed table's counts still match.
    assert plain.returncode == EXIT_CHECK_FAILED, plain.stderr
    assert "notes_log: row_count_matches_sqlite failed" in plain.stderr
    assert "narrative_results: row_count_matches_sqlite" not in plain.stderr
    # The problem: a plain sync trusts PostgreSQL; the edits stay and the counts still match.
    assert pg_rows(pg_dsn, f"SELECT {COLUMNS} FROM {nr}") != in_sqlite
    assert query(pg_dsn, f"SELECT count(*) FROM {nr}") == [(len(in_sqlite),)]
    metadata, check = latest(cli_env["DAGSTER_HOME"], "narrative_results")
    assert (metadata["rows_verified"], metadata["rows_repaired"], check) == (0, 0, None)

    verified = run_cli(cli_env, "--verify")
    assert verified.returncode == EXIT_CHECK_FAILED, verified.stderr  # synced, and mirror_matches_sqlite failed
    assert "narrative_results: mirror_matches_sqlite failed" in verified.stderr
    assert pg_rows(pg_dsn, f"SELECT {COLUMNS} FROM {nr}") == in_sqlite
    assert pg_rows(pg_dsn, f"SELECT msg, n FROM {log}") == log_in_sqlite
    assert "verify=on" in verified.stdout
    assert "⚠ narrative_results: 3 of 500 rows differed" in verified.stdout
    metadata, check = latest(cli_env["DAGSTER_HOME"], "narrative_results")
    assert (metadata["rows_verified"], metadata["rows_repaired"]) == (500, 3)
    # Repairs are not SQLite's changes: the sync itself changed nothing.
    assert (metadata["rows_inserted"], metadata["rows_updated"], metadata["rows_deleted"]) == (0, 0, 0)
    assert metadata["repaired_keys"] == "result_id=10\nresult_id=20\nresult_id=100030"
    assert check is not None and not check.passed
    assert check.metadata["rows_repaired"].value == 3
    assert "result_id=100030" in (check.description or "")
    # Without a key: the rows PostgreSQL lacked were appended by the plain sync already; the two rows
    # SQLite lacks (the intruder, and note 1 as edited) were left to the repair.
    log_metadata, log_check = latest(cli_env["DAGSTER_HOME"], "notes_log")
    assert (log_metadata["rows_inserted"], log_metadata["rows_repaired"]) == (0, 2)
    assert log_check is not None and not log_check.passed

    again = run_cli(cli_env, "--verify")
    assert again.returncode == EXIT_OK, again.stderr
    for table in ("narrative_results", "notes_log", "experiments"):
        metadata, check = latest(cli_env["DAGSTER_HOME"], table)
        assert metadata["rows_repaired"] == 0, table
        assert check is not None and check.passed, table
    assert pg_rows(pg_dsn, f"SELECT {COLUMNS} FROM {nr}") == in_sqlite


def test_verify_of_one_file_never_touches_another_files_rows(
    cli_env: dict[str, str],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    pg_dsn: str,
    schema: str,
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, key in enumerate(("lab_a", "lab_b")):
        generate(runs / f"{key}.sqlite", rows=60, seed=i)
    env = {**cli_env, "SQLITE_PATH": str(runs)}
    assert run_cli(env).returncode == EXIT_OK
    nr = f'"{schema}".narrative_results'
    query(pg_dsn, f"UPDATE {nr} SET label = 'tampered' WHERE result_id = 5")  # in both files
    query(
        pg_dsn,
        f"INSERT INTO {nr} (_source_file, {COLUMNS}) SELECT _source_file, result_id + 1000, {COLUMNS[11:]} "
        f"FROM {nr} WHERE result_id = 6",
    )

    # The files are unchanged since their sync: a plain run would skip them, a verify run does not.
    done = run_cli(env, "--verify", "--files", "lab_a")
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr  # it repaired lab_a: its mirror check failed
    assert "⚠ narrative_results [lab_a]: 2 of 60 rows differed" in done.stdout
    assert pg_rows(pg_dsn, f"SELECT {COLUMNS} FROM {nr} WHERE _source_file = 'lab_a'") == sqlite_rows(
        runs / "lab_a.sqlite", f"SELECT {COLUMNS} FROM narrative_results"
    )
    # lab_b keeps its drift until its own verify: the one of lab_a saw only lab_a's rows.
    assert query(pg_dsn, f"SELECT label FROM {nr} WHERE _source_file = 'lab_b' AND result_id = 5") == [("tampered",)]
    assert query(pg_dsn, f"SELECT count(*) FROM {nr} WHERE _source_file = 'lab_b'") == [(61,)]


def test_the_verify_schedule_is_off_by_default_and_asks_one_run_per_file() -> None:
    files = DynamicPartitionsDefinition(name="verify_test_files")

    @asset(partitions_def=files)
    def mirrored() -> None:
        """Stands for the sync's assets."""

    stopped = build_verify_schedule(mirrored, name="s_verify", op_name="s_tables", setting="")
    assert (stopped.default_status, stopped.cron_schedule) == (DefaultScheduleStatus.STOPPED, DEFAULT_CRON)
    assert build_verify_schedule(mirrored, name="s", op_name="o", setting="1").default_status == (
        DefaultScheduleStatus.RUNNING
    )
    hourly = build_verify_schedule(mirrored, name="s", op_name="s_tables", setting="0 * * * *", partitions_def=files)
    assert (hourly.default_status, hourly.cron_schedule) == (DefaultScheduleStatus.RUNNING, "0 * * * *")
    tick = datetime(2026, 12, 3, 3, tzinfo=UTC)
    with instance_for_test() as instance:  # a schedule's context needs an instance with a ref
        instance.add_dynamic_partitions(files.name, ["a.sqlite", "b.sqlite"])
        # Called directly: evaluate_tick would also resolve the partitions against a repository.
        requests = hourly(build_schedule_context(instance=instance, scheduled_execution_time=tick))
    assert [r.partition_key for r in requests] == ["a.sqlite", "b.sqlite"]
    assert len({r.run_key for r in requests}) == 2
    assert all(r.run_config == {"ops": {"s_tables": {"config": {"verify": True}}}} for r in requests)


def test_a_component_verifies_the_tables_it_marks_and_ships_its_schedule(
    tmp_path: Path, pg_dsn: str, schema: str
) -> None:
    path = generate(tmp_path / "lab.sqlite", rows=30, seed=4)
    component = SqliteSyncComponent.resolve_from_dict(
        {
            "sqlite": {"path": str(path)},
            "postgres": {"conn_str": pg_dsn, "pg_schema": schema},
            "tables": {"options": {"experiments": {"verify": True}}},
            "verify_schedule": {"when": True},  # `when: on` in YAML
        }
    )
    defs = component.build("lab")
    (schedule,) = defs.schedules or []
    assert (schedule.name, schedule.cron_schedule, schedule.default_status) == (
        "lab_verify",
        DEFAULT_CRON,
        DefaultScheduleStatus.RUNNING,
    )
    (assets,) = defs.assets
    assert MIRROR_CHECK in {check.name for check in assets.check_specs}  # a default check
    instance = DagsterInstance.ephemeral()
    assert materialize([assets], resources=dict(defs.resources or {}), instance=instance).success
    query(pg_dsn, f"UPDATE \"{schema}\".experiments SET notes = 'tampered' WHERE experiment_id = 1")
    query(pg_dsn, f"UPDATE \"{schema}\".narrative_results SET label = 'tampered' WHERE result_id = 1")
    result = materialize([assets], resources=dict(defs.resources or {}), instance=instance)
    repaired = {
        event.asset_key.path[-1]: (
            event.materialization.metadata["rows_verified"].value,
            event.materialization.metadata["rows_repaired"].value,
        )
        for event in result.get_asset_materialization_events()
    }
    assert repaired["experiments"][1] == 1 and repaired["experiments"][0] > 0
    assert repaired["narrative_results"] == (0, 0)  # not marked: a plain sync, which trusts PostgreSQL
    assert query(pg_dsn, f'SELECT label FROM "{schema}".narrative_results WHERE result_id = 1') == [("tampered",)]


def _edit_sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        conn.close()


def test_a_verify_run_reads_once_and_tells_sqlites_changes_from_drift(demo_db: Path, pg_dsn: str, schema: str) -> None:
    """One read: every row staged (none skipped), compared once; a difference in a key range SQLite changed
    since the last sync is SQLite's change, one in a range it left alone is drift (verify.py)."""
    sync_all(demo_db, pg_dsn, schema, batch_size=500, delete_orphans=True)
    nr = f'"{schema}".narrative_results'
    # SQLite changes rows 1700 (update), 2500 (delete) and adds 3001..3002 past the end.
    _edit_sqlite(
        demo_db,
        "UPDATE narrative_results SET label = 'changed' WHERE result_id = 1700",
        "DELETE FROM narrative_results WHERE result_id = 2500",
        f"INSERT INTO narrative_results ({COLUMNS}) SELECT result_id + 3000, {COLUMNS[11:]} "
        "FROM narrative_results WHERE result_id IN (1, 2)",
    )
    # Someone edits the mirror where SQLite did not change: an update, a delete, an insert in a new range.
    query(pg_dsn, f"UPDATE {nr} SET label = 'tampered' WHERE result_id = 10")
    query(pg_dsn, f"DELETE FROM {nr} WHERE result_id = 20")
    query(pg_dsn, f"INSERT INTO {nr} ({COLUMNS}) SELECT 1000000, {COLUMNS[11:]} FROM {nr} WHERE result_id = 30")

    result = sync_all(demo_db, pg_dsn, schema, batch_size=500, verify=True)["narrative_results"]
    assert (result.rows_skipped, result.rows_processed) == (0, result.sqlite_rows)
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (2, 1, 1)
    assert (result.rows_repaired, result.repaired_keys) == (3, ("result_id=10", "result_id=20", "result_id=1000000"))
    assert result.pg_rows_after == result.sqlite_rows
    assert pg_rows(pg_dsn, f"SELECT {COLUMNS} FROM {nr}") == sqlite_rows(
        demo_db, f"SELECT {COLUMNS} FROM narrative_results"
    )
    # The verify run kept the digests of what it read: the next plain sync skips every row.
    plain = sync_all(demo_db, pg_dsn, schema, batch_size=500, delete_orphans=True)["narrative_results"]
    assert plain.rows_skipped == plain.sqlite_rows and plain.rows_changed == 0


def test_without_usable_digests_every_difference_is_sqlites_change(demo_db: Path, pg_dsn: str, schema: str) -> None:
    """Another batch size than the last sync's: its digests say nothing of this read, so nothing tells
    drift from SQLite's changes; every difference is counted as a change, as a plain full resend counts it."""
    sync_all(demo_db, pg_dsn, schema, batch_size=500)
    nr = f'"{schema}".narrative_results'
    query(pg_dsn, f"UPDATE {nr} SET label = 'tampered' WHERE result_id = 10")
    result = sync_all(demo_db, pg_dsn, schema, batch_size=700, verify=True)["narrative_results"]
    assert (result.rows_updated, result.rows_repaired, result.verified) == (1, 0, True)
    assert query(pg_dsn, f"SELECT label FROM {nr} WHERE result_id = 10") != [("tampered",)]
