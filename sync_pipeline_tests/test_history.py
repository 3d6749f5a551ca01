"""Sync history comes back from the Dagster instance as a DataFrame, one row per sync."""

from __future__ import annotations

import sqlite3

from dagster import DagsterInstance

from sync_pipeline.history import COLUMNS, sync_history

from .test_dagster_assets import metadata_by_table, run_sync


def test_history_has_one_row_per_sync_with_the_recorded_numbers(demo_db, pg_dsn, schema):
    instance = DagsterInstance.ephemeral()
    first = run_sync(demo_db, pg_dsn, schema, instance=instance)
    conn = sqlite3.connect(demo_db)
    with conn:
        conn.execute("UPDATE experiments SET notes = 'changed' WHERE experiment_id <= 4")
    conn.close()
    second = run_sync(demo_db, pg_dsn, schema, instance=instance, delete_orphans=True)

    everything = sync_history(instance=instance)
    experiments = sync_history("experiments", instance=instance)

    assert list(everything.columns) == COLUMNS
    assert len(everything) == 6
    assert set(everything["table"]) == {
        f"{schema}.{t}" for t in ("experiments", "narrative_results", "source_narratives")
    }
    assert list(experiments["run_id"]) == [second.run_id, first.run_id]  # newest first
    recorded = metadata_by_table(second)["experiments"]
    assert experiments.loc[0, "rows_updated"] == recorded["rows_updated"].value == 4
    assert experiments.loc[0, "rows_changed"] == recorded["rows_changed"].value
    assert experiments.loc[1, "rows_inserted"] == metadata_by_table(first)["experiments"]["rows_inserted"].value
    assert experiments["timestamp"].is_monotonic_decreasing
