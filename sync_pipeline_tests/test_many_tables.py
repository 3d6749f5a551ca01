"""A file of many tables (issue 16): every table keeps its catalog entry while the run writes few events.

The op records each table's materialization and check evaluations as events of their own (no
step outputs), logs one line for the run instead of two per table, and while it records holds
Dagster's SQLite event shards open and has Dagster's connections to them commit with
``synchronous=NORMAL`` (event_store.py). None of that may cost a table its materialization, any of
its metadata or either of its checks in the catalog: this reads them back from the instance's
event log (on-disk SQLite storage, as ``dagster dev`` has it), not from the run's result.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    IntMetadataValue,
    MaterializeResult,
    asset,
    materialize,
)
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from sync_pipeline.assets import LOG_EACH_TABLE_UP_TO
from sync_pipeline.engine.sqlite_source import SourceUnavailableError, SqliteSnapshot
from sync_pipeline.event_store import SYNCHRONOUS_LEVEL, hold_event_shards, shard_paths
from sync_pipeline.translator import ROW_COUNT_CHECK, TYPES_CHECK

from .test_dagster_assets import INT_KEYS, log_text, run_sync

TABLES = 200
ROWS = 3
FULL = 2  # PRAGMA synchronous: SQLite's default
CONTRACT_KEYS = {
    *INT_KEYS,
    "dagster/table_name",
    "dagster/column_schema",
    "mode",
    "duration_s",
    "table_size",
    "read_path",
    "rows_skipped",
    "columns_retyped",
}


def _many_tables(path: Path) -> list[str]:
    names = [f"t{number:04d}" for number in range(TABLES)]
    conn = sqlite3.connect(path)
    with conn:
        for number, name in enumerate(names):
            conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, label TEXT, amount REAL)")
            conn.executemany(
                f"INSERT INTO {name} VALUES (?, ?, ?)", [(i, f"row {number}-{i}", i * 1.5) for i in range(ROWS)]
            )
    conn.close()
    return names


def test_every_table_of_a_200_table_file_has_its_materialization_metadata_and_checks(tmp_path, pg_dsn, schema):
    path = tmp_path / "many.sqlite"
    names = _many_tables(path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        result = run_sync(path, pg_dsn, schema, instance=instance)
        assert result.success

        for name in names:
            key = AssetKey([name])
            records = instance.fetch_materializations(key, limit=5).records
            assert len(records) == 1, name  # one materialization per table, none lost, none twice
            assert records[0].run_id == result.run_id
            materialization = records[0].asset_materialization
            assert materialization is not None
            metadata = materialization.metadata
            assert CONTRACT_KEYS <= set(metadata), (name, CONTRACT_KEYS - set(metadata))
            assert metadata["dagster/row_count"] == IntMetadataValue(ROWS), name
            assert metadata["rows_inserted"] == IntMetadataValue(ROWS), name
            assert metadata["dagster/table_name"].value == f"{schema}.{name}"
            assert [c.name for c in metadata["dagster/column_schema"].value.columns] == ["id", "label", "amount"]

            for check_name in (ROW_COUNT_CHECK, TYPES_CHECK):
                record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(key, check_name))
                assert record is not None, (name, check_name)
                assert record.run_id == result.run_id
                assert record.status.value == "SUCCEEDED", (name, check_name, record.status)
                evaluation = record.event.dagster_event.asset_check_evaluation_data  # type: ignore[union-attr]
                assert evaluation.passed, (name, check_name)
                if check_name == ROW_COUNT_CHECK:
                    assert evaluation.metadata["sqlite_rows"] == IntMetadataValue(ROWS)
                    assert evaluation.metadata["pg_rows"] == IntMetadataValue(ROWS)

        # Written with synchronous=NORMAL and held shards (event_store.py): intact, and every holder
        # closed with the op's scope (the last close checkpointed and removed each WAL).
        for shard in shard_paths(instance, result.run_id):
            assert not os.path.exists(f"{shard}-wal"), shard
            with sqlite3.connect(shard) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

        # One line for the run instead of two per table; the summary block still names every table.
        assert TABLES > LOG_EACH_TABLE_UP_TO
        logs = log_text(instance, result)
        assert "📥 Syncing t0000..." not in logs
        assert f"📥 Syncing {TABLES} tables" in logs
        assert all(name in logs for name in names)


def _synchronous(conn: Any) -> int:
    """``PRAGMA synchronous`` of a SQLAlchemy connection: 2 FULL (SQLite's default), 1 NORMAL."""
    return int(conn.exec_driver_sql("PRAGMA synchronous").scalar())


def test_event_shards_are_held_only_where_events_are_sqlite_files(tmp_path):
    """The index shard exists once the instance does; a run's shard only once the run wrote to it.
    Storage without files (in memory here, PostgreSQL in deploy/) is left alone."""
    with DagsterInstance.ephemeral() as in_memory, hold_event_shards(in_memory, "some-run") as shards:
        assert shards.held == frozenset() and shards.folder is None
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        assert [Path(p).name for p in shard_paths(instance, "no-such-run")] == ["index.db"]
        with hold_event_shards(instance, None) as shards:
            assert [Path(p).name for p in shards.held] == ["index.db"]


def test_only_dagster_event_shard_connections_skip_the_commit_fsync_and_only_inside_the_scope(tmp_path):
    """Dagster's own connections to its event shards get synchronous=NORMAL while the scope lasts;
    SQLite's default (FULL) before and after it, and for any other SQLite file during it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as setup:
        assert setup.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    other_engine = create_engine(f"sqlite:///{other}", poolclass=NullPool)
    with DagsterInstance.local_temp(str(home)) as instance:
        storage = instance.event_log_storage
        with storage.index_connection() as conn:
            assert _synchronous(conn) == FULL
        with hold_event_shards(instance, None) as shards:
            with storage.index_connection() as conn:
                assert _synchronous(conn) == SYNCHRONOUS_LEVEL
            assert shards.tuned == 1
            with other_engine.connect() as conn:
                assert _synchronous(conn) == FULL
            assert shards.tuned == 1
        with storage.index_connection() as conn:
            assert _synchronous(conn) == FULL
        assert shards.tuned == 1


def test_a_run_created_inside_the_scope_has_its_shard_held_and_its_events_recorded(tmp_path):
    """As the headless command does: the run's own shard, which Dagster creates with the run's first
    event, is held as soon as it exists, and every event still lands in the catalog."""

    @asset(check_specs=[AssetCheckSpec("positive", asset="tiny")])
    def tiny() -> MaterializeResult:
        return MaterializeResult(
            metadata={"rows": 3}, check_results=[AssetCheckResult(check_name="positive", passed=True)]
        )

    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        with hold_event_shards(instance, None) as shards:
            result = materialize([tiny], instance=instance)
        assert result.success
        run_shard = os.path.realpath(instance.event_log_storage.path_for_shard(result.run_id))
        assert run_shard in shards.held
        assert shards.tuned > 0
        records = instance.fetch_materializations(AssetKey("tiny"), limit=5).records
        assert [r.run_id for r in records] == [result.run_id]
        assert records[0].asset_materialization.metadata["rows"] == IntMetadataValue(3)
        check = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey("tiny"), "positive"))
        assert check is not None and check.run_id == result.run_id and check.status.value == "SUCCEEDED"
        # Every holder closed with the scope: the last connection's close checkpointed and removed the WAL.
        for path in shard_paths(instance, result.run_id):
            assert not os.path.exists(f"{path}-wal"), path
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_table_is_looked_up_by_its_exact_name_alone(tmp_path):
    """The per-table lookup reads one entry of SQLite's table list (not the whole list, which made a
    sync of n tables O(n^2)); it must still find only a table of data, by its own name."""
    db = tmp_path / "lookup.sqlite"
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE Mixed (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT)")  # makes sqlite_sequence
        conn.execute("CREATE VIEW v AS SELECT * FROM Mixed")
    conn.close()
    with SqliteSnapshot(db, arrow=False) as snapshot:
        found = snapshot.table("Mixed")
        assert (found.name, found.column_names) == ("Mixed", ("id", "v"))
        for not_a_data_table in ("mixed", "sqlite_sequence", "v", "absent"):
            with pytest.raises(SourceUnavailableError, match="has no table"):
                snapshot.table(not_a_data_table)
