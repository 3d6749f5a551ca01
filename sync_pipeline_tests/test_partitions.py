"""Many files through Dagster: each file a partition of ``sqlite_files``, synced by the sensor."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from dagster import DagsterInstance, SensorResult, build_sensor_context, materialize

from sync_pipeline.assets import OP_NAME, build_sync_assets
from sync_pipeline.demo import generate
from sync_pipeline.engine import list_tables
from sync_pipeline.history import sync_history
from sync_pipeline.partitions import PARTITIONS_NAME, SQLITE_FILES, discover, survey, union_tables
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.sensor import Settle, evaluate
from sync_pipeline.translator import SqliteTableTranslator

from .conftest import query


def test_a_files_key_is_its_path_under_the_directory_without_extension_and_clashes_refuse_both(tmp_path):
    for name in ("a.sqlite", "sub/b.db", "c.sqlite3", "d.sqlite"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(tmp_path / name).execute("CREATE TABLE t (x)").connection.close()
    for name in ("notes.txt", "a.sqlite-wal"):
        (tmp_path / name).write_bytes(b"")
    assert list(discover(str(tmp_path))) == ["a", "c", "d", "sub/b"]
    assert list(discover(str(tmp_path / "*.sqlite"))) == ["a", "d"]
    assert list(discover(str(tmp_path / "**" / "*.db"))) == ["sub/b"]
    (tmp_path / "a.db").write_bytes((tmp_path / "a.sqlite").read_bytes())
    folder = survey(str(tmp_path))
    assert list(folder.files) == ["c", "d", "sub/b"]  # neither `a` is a partition; the others are untouched
    for name in ("a.db", "a.sqlite"):
        assert "would all be partition 'a'" in folder.refused[str(tmp_path / name)]
        assert str(tmp_path / "a.db") in folder.refused[str(tmp_path / name)]


def _directory(tmp_path: Path, keys: tuple[str, ...] = ("run_a", "run_b")) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, key in enumerate(keys):
        generate(runs / f"{key}.sqlite", rows=200 + 50 * i, seed=i)
    return runs


def _materialize(runs: Path, dsn: str, schema: str, instance: DagsterInstance, key: str, **config: object):
    files = discover(str(runs))
    assets = build_sync_assets(
        union_tables(list_tables(f) for f in files.values()),
        SqliteTableTranslator(pg_schema=schema),
        partitions_def=SQLITE_FILES,
    )
    return materialize(
        [assets],
        instance=instance,
        partition_key=key,
        resources={"sqlite": SQLiteSource(path=str(runs)), "postgres": PostgresTarget(conn_str=dsn, pg_schema=schema)},
        run_config={"ops": {OP_NAME: {"config": config}}},
        raise_on_error=False,
    )


def test_each_file_is_a_partition_whose_run_syncs_only_its_rows_and_history_names_it(tmp_path, pg_dsn, schema):
    runs = _directory(tmp_path)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_NAME, list(discover(str(runs))))

    for key in ("run_a", "run_b"):
        result = _materialize(runs, pg_dsn, schema, instance, key)
        assert result.success
        materializations = result.asset_materializations_for_node(OP_NAME)
        assert {m.partition for m in materializations} == {key}
        assert {m.metadata["source_file"].value for m in materializations} == {key}

    counts = dict(
        query(pg_dsn, f'SELECT _source_file, count(*) FROM "{schema}".narrative_results GROUP BY 1 ORDER BY 1')
    )
    for key, path in discover(str(runs)).items():
        conn = sqlite3.connect(path)
        assert counts[key] == conn.execute("SELECT count(*) FROM narrative_results").fetchone()[0]
        conn.close()
    history = sync_history("narrative_results", instance=instance)
    assert sorted(history["partition"]) == ["run_a", "run_b"]


FAST = Settle(listen_s=0, quiet_s=0.1, budget_s=1, poll_s=0.02)  # the default listens for 4 s a tick


def test_the_sensor_adds_new_files_as_partitions_and_syncs_each_changed_file_once(tmp_path):
    runs = _directory(tmp_path)
    instance = DagsterInstance.ephemeral()
    sqlite = SQLiteSource(path=str(runs))

    def tick(cursor: str | None) -> SensorResult:
        result = evaluate(build_sensor_context(instance=instance, cursor=cursor), sqlite, settle=FAST)
        assert isinstance(result, SensorResult)
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(PARTITIONS_NAME, list(request.partition_keys))
        return result

    first = tick(None)
    assert sorted(r.partition_key for r in first.run_requests) == ["run_a", "run_b"]
    assert sorted(instance.get_dynamic_partitions(PARTITIONS_NAME)) == ["run_a", "run_b"]

    generate(runs / "run_c.sqlite", rows=100, seed=7)  # a file dropped into the directory
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["run_c"]
    assert "run_c" in instance.get_dynamic_partitions(PARTITIONS_NAME)

    conn = sqlite3.connect(runs / "run_b.sqlite")
    conn.execute("UPDATE experiments SET notes = 'changed' WHERE experiment_id = 1")
    conn.commit()
    conn.close()
    settled = tick(second.cursor)  # the tick watches run_b until it is quiet, then asks for its sync
    assert [r.partition_key for r in settled.run_requests] == ["run_b"]
    assert settled.run_requests[0].run_key.startswith("run_b|")
    assert tick(settled.cursor).run_requests == []  # one run per change, per file


def test_a_file_that_keeps_changing_does_not_hold_back_another_that_settled(tmp_path):
    """Changed files are watched together in one tick: each is requested once it is quiet, on its own."""
    runs = _directory(tmp_path)
    instance = DagsterInstance.ephemeral()
    sqlite = SQLiteSource(path=str(runs))
    settle = Settle(listen_s=0, quiet_s=0.2, budget_s=1.0, poll_s=0.02)
    first = evaluate(build_sensor_context(instance=instance), sqlite, settle=settle)
    assert isinstance(first, SensorResult) and len(first.run_requests) == 2
    instance.add_dynamic_partitions(PARTITIONS_NAME, ["run_a", "run_b"])

    conn = sqlite3.connect(runs / "run_a.sqlite")
    conn.execute("UPDATE experiments SET notes = 'once' WHERE experiment_id = 1")
    conn.commit()
    conn.close()
    stop, first_commit = threading.Event(), threading.Event()

    def keep_writing() -> None:  # run_b never quiet for 0.2 s while the tick watches
        busy = sqlite3.connect(runs / "run_b.sqlite")
        busy.execute("PRAGMA synchronous=OFF")  # no fsync: a slow disk must not make a pause the sensor sees
        try:
            while not stop.is_set():
                busy.execute("UPDATE experiments SET notes = ? WHERE experiment_id = 1", (str(time.monotonic()),))
                busy.commit()
                first_commit.set()
                time.sleep(0.02)
        finally:
            busy.close()

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert first_commit.wait(10)
        second = evaluate(build_sensor_context(instance=instance, cursor=first.cursor), sqlite, settle=settle)
    finally:
        stop.set()
        writer.join()

    assert isinstance(second, SensorResult)
    assert [r.partition_key for r in second.run_requests] == ["run_a"]
    assert second.skip_reason is None or "run_b" in (second.skip_reason.skip_message or "")
    assert "waited" in second.cursor and json.loads(json.loads(second.cursor)["run_b"])["waited"] == 1


def test_a_removed_file_keeps_its_rows_unless_asked_then_they_go_in_one_transaction(
    tmp_path, pg_dsn, schema, monkeypatch
):
    runs = _directory(tmp_path)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(PARTITIONS_NAME, list(discover(str(runs))))
    for key in ("run_a", "run_b"):
        assert _materialize(runs, pg_dsn, schema, instance, key).success
    cursor = evaluate(build_sensor_context(instance=instance), SQLiteSource(path=str(runs)), settle=FAST).cursor
    (runs / "run_a.sqlite").unlink()
    postgres = PostgresTarget(conn_str=pg_dsn, pg_schema=schema)
    counts = f'SELECT _source_file, count(*) > 0 FROM "{schema}".experiments GROUP BY 1 ORDER BY 1'

    kept = evaluate(
        build_sensor_context(instance=instance, cursor=cursor),
        SQLiteSource(path=str(runs)),
        postgres=postgres,
        settle=FAST,
    )
    assert not kept.dynamic_partitions_requests
    assert query(pg_dsn, counts) == [("run_a", True), ("run_b", True)]

    monkeypatch.setenv("SYNC_DELETE_REMOVED_FILES", "1")
    evaluate(
        build_sensor_context(instance=instance, cursor=cursor),
        SQLiteSource(path=str(runs)),
        postgres=postgres,
        settle=FAST,
    )
    assert instance.get_dynamic_partitions(PARTITIONS_NAME) == ["run_b"]
    assert query(pg_dsn, counts) == [("run_b", True)]
    assert query(
        pg_dsn,
        "SELECT count(*) FROM sqlite_pg_sync._sps_table_state WHERE target_schema = %s AND source_file = 'run_a'",
        (schema,),
    ) == [(0,)]
