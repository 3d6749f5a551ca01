"""Many files under the churn a real folder sees, through the headless command and the sensor's evaluation.

A stray or broken file fails only itself; files that go and come back end with PostgreSQL equal to the
folder as it is; a removed file's rows and bookkeeping go (``SYNC_DELETE_REMOVED_FILES=1``) or stay.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import os
import signal
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, RunsFilter, SensorResult, build_sensor_context

from sync_pipeline.cli import EXIT_FAILED, EXIT_OK
from sync_pipeline.demo import generate
from sync_pipeline.partitions import MAX_PATH_BYTES, PARTITIONS_NAME, add_partitions, survey
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.sensor import Settle, evaluate

from .conftest import headless, query, sqlite_rows

FAST = Settle(listen_s=0, quiet_s=0.05, budget_s=1, poll_s=0.02)


def file_rows(dsn: str, schema: str, table: str, key: str) -> list[tuple[object, ...]]:
    rows = query(dsn, f'SELECT * FROM "{schema}"."{table}" WHERE _source_file = %s', (key,))
    return sorted((row[1:] for row in rows), key=repr)


def keys_in(dsn: str, schema: str) -> list[str]:
    return [k for (k,) in query(dsn, f'SELECT DISTINCT _source_file FROM "{schema}".experiments ORDER BY 1')]


def hot_journal(path: Path) -> Path:
    """A file whose writer was killed mid-transaction: its rollback journal is hot, so a read-only open fails."""
    generate(path, rows=50, seed=5)
    script = (
        "import os, signal, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=DELETE'); c.execute('PRAGMA cache_size=1')\n"
        "c.execute('BEGIN'); c.execute(\"UPDATE narrative_results SET output = output || 'x'\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert Path(f"{path}-journal").stat().st_size > 0
    return path


def test_stray_and_broken_files_fail_only_themselves_and_every_good_file_syncs(
    home, tmp_path, pg_dsn, schema, monkeypatch
):
    runs = tmp_path / "runs"
    runs.mkdir()
    good = generate(runs / "good.sqlite", rows=80, seed=1)
    (runs / "junk.sqlite").write_text("not a database, just text\n")
    (runs / "half.sqlite").write_bytes(good.read_bytes()[:4096])  # a copy still being written
    generate(runs / "twin.sqlite", rows=20, seed=2)
    generate(runs / "twin.db", rows=20, seed=3)
    outside = generate(tmp_path / "outside.sqlite", rows=20, seed=4)
    (runs / "outside.sqlite").symlink_to(outside)
    (runs / "alias.sqlite").symlink_to(good)
    deep = runs.joinpath(*["d" * 200] * 3)
    deep.mkdir(parents=True)
    long = generate(tmp_path / "long.sqlite", rows=20, seed=6).rename(deep / "long.sqlite")  # SQLite can't make it
    assert len(os.fsencode(long.absolute())) >= MAX_PATH_BYTES
    hot = hot_journal(runs / "hot.sqlite")
    monkeypatch.setenv("SQLITE_PATH", str(runs))

    code, _, err = headless()

    assert code == EXIT_FAILED  # the hot-journal file's own run failed...
    assert str(hot) in err and "readonly database" in err
    for table in ("experiments", "narrative_results", "source_narratives"):  # ...and the good file synced
        assert file_rows(pg_dsn, schema, table, "good") == sqlite_rows(good, table)
    assert keys_in(pg_dsn, schema) == ["good"]
    for refused, why in (
        ("junk.sqlite", "not a SQLite database"),
        ("half.sqlite", "incomplete: 4,096 of the"),
        ("twin.sqlite", "would all be partition 'twin'"),
        ("twin.db", "would all be partition 'twin'"),
        ("outside.sqlite", "a symlink"),
        ("alias.sqlite", "a symlink"),
        (str(long.relative_to(runs)), "bytes or longer"),
    ):
        line = next((line for line in err.splitlines() if str(runs / refused) in line), "")
        assert line.startswith("warning: not synced") and why in line, (refused, err)
    with DagsterInstance.get() as instance:
        assert sorted(instance.get_dynamic_partitions(PARTITIONS_NAME)) == ["good", "hot"]
        tick = evaluate(build_sensor_context(instance=instance), SQLiteSource(path=str(runs)), settle=FAST)
    assert isinstance(tick, SensorResult)
    assert [r.partition_key for r in tick.run_requests] == ["good"]  # the sensor waits on the hot journal


def test_a_file_moved_away_and_back_unchanged_is_synced_again_and_its_bookkeeping_goes_when_removed(
    home, tmp_path, pg_dsn, schema, monkeypatch
):
    runs = tmp_path / "runs"
    (runs / "lab").mkdir(parents=True)
    moved = generate(runs / "lab" / "a.sqlite", rows=60, seed=1)
    generate(runs / "b.sqlite", rows=40, seed=2)
    monkeypatch.setenv("SQLITE_PATH", str(runs))
    monkeypatch.setenv("SYNC_DELETE_REMOVED_FILES", "1")
    assert headless()[0] == EXIT_OK
    assert keys_in(pg_dsn, schema) == ["b", "lab/a"]

    # Moving the folder leaves the file's inode, times and size as they were: the same fingerprint.
    (runs / "lab").rename(tmp_path / "away")
    code, _, err = headless()
    assert code == EXIT_OK, err
    assert keys_in(pg_dsn, schema) == ["b"]
    state = "sqlite_pg_sync"
    assert query(pg_dsn, f"SELECT count(*) FROM {state}._sps_table_state WHERE source_file = 'lab/a'") == [(0,)]
    sequences = query(
        pg_dsn,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'S' AND obj_description(c.oid) LIKE %s",
        (state, "%lab/a%"),
    )
    assert sequences == [(0,)]

    (tmp_path / "away").rename(runs / "lab")
    code, _, err = headless()
    assert code == EXIT_OK, err
    assert file_rows(pg_dsn, schema, "experiments", "lab/a") == sqlite_rows(moved, "experiments")

    # The sensor: the same removal and return, each run key new to the instance (Dagster dedupes them forever).
    postgres = PostgresTarget(conn_str=pg_dsn, pg_schema=schema)
    sqlite = SQLiteSource(path=str(runs))
    with DagsterInstance.get() as instance:
        cursor = evaluate(build_sensor_context(instance=instance), sqlite, postgres=postgres, settle=FAST).cursor
        (runs / "lab").rename(tmp_path / "away")
        cursor = evaluate(
            build_sensor_context(instance=instance, cursor=cursor), sqlite, postgres=postgres, settle=FAST
        ).cursor
        assert keys_in(pg_dsn, schema) == ["b"]
        (tmp_path / "away").rename(runs / "lab")
        back = evaluate(build_sensor_context(instance=instance, cursor=cursor), sqlite, postgres=postgres, settle=FAST)
        assert isinstance(back, SensorResult)
        (request,) = back.run_requests
        assert request.partition_key == "lab/a"
        assert not instance.get_runs(RunsFilter(tags={"dagster/run_key": request.run_key}))


def test_after_a_rename_the_headless_command_syncs_the_new_key_keeps_the_old_rows_and_exits_0(
    home, tmp_path, pg_dsn, schema, monkeypatch
):
    runs = tmp_path / "runs"
    runs.mkdir()
    generate(runs / "a.sqlite", rows=30, seed=1)
    monkeypatch.setenv("SQLITE_PATH", str(runs))
    assert headless()[0] == EXIT_OK
    (runs / "a.sqlite").rename(runs / "renamed.sqlite")

    for _ in range(2):  # every later sync too, not only the first after the rename
        code, _, err = headless()
        assert code == EXIT_OK, err
        assert "rows kept" in err and "a" in err
        assert keys_in(pg_dsn, schema) == ["a", "renamed"]

    monkeypatch.setenv("SYNC_DELETE_REMOVED_FILES", "1")
    code, _, err = headless()
    assert code == EXIT_OK, err
    assert keys_in(pg_dsn, schema) == ["renamed"]


ROUNDS = 20


def _register_rounds(barrier: multiprocessing.synchronize.Barrier, failures: multiprocessing.Queue) -> None:
    with DagsterInstance.get() as instance:
        for round_ in range(ROUNDS):
            barrier.wait()
            try:
                add_partitions(instance, PARTITIONS_NAME, [f"r{round_}_{i}" for i in range(50)])
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
                failures.put(repr(exc))


def test_registering_the_same_new_files_from_two_processes_at_once_is_success(home):
    with DagsterInstance.get() as instance:  # the storage created once, as by any earlier command
        instance.get_dynamic_partitions(PARTITIONS_NAME)
    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_register_rounds, args=(barrier, failures)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert failures.empty(), failures.get()
    with DagsterInstance.get() as instance:
        assert len(instance.get_dynamic_partitions(PARTITIONS_NAME)) == ROUNDS * 50


def test_a_folder_holding_dagsters_own_storage_offers_only_the_data_files(tmp_path):
    data = tmp_path / "state"
    generate(data / "demo.sqlite", rows=10, seed=1)
    base = data / "dagster"
    with DagsterInstance.from_config(str(_home(tmp_path, base))) as instance:
        instance.add_dynamic_partitions(PARTITIONS_NAME, ["x"])  # makes the storage write its files
    assert any(p.suffix == ".db" for p in base.rglob("*")), "Dagster wrote no .db file: the test proves nothing"
    assert list(survey(str(data)).files) == ["demo"]
    assert list(survey(str(data / "**" / "*.db")).files) == []


def _home(tmp_path: Path, base: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {base}\n")
    return home


def test_a_column_excluded_later_leaves_postgresql_though_no_file_changed(home, tmp_path, pg_dsn, schema, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    for key in ("a", "b"):
        generate(runs / f"{key}.sqlite", rows=20, seed=1)
    monkeypatch.setenv("SQLITE_PATH", str(runs))
    assert headless()[0] == EXIT_OK
    columns = f"SELECT count(*) FROM information_schema.columns WHERE table_schema = '{schema}' AND column_name = %s"
    assert query(pg_dsn, columns, ("notes",)) == [(1,)]

    monkeypatch.setenv("SYNC_EXCLUDE_COLUMNS", "experiments.notes")
    code, _, err = headless()  # no file changed: the settings did

    assert code == EXIT_OK, err
    assert query(pg_dsn, columns, ("notes",)) == [(0,)]

    def tick(cursor: str | None, settings: str) -> SensorResult:
        with DagsterInstance.get() as instance:
            context = build_sensor_context(instance=instance, cursor=cursor)
            result = evaluate(context, SQLiteSource(path=str(runs)), settle=FAST, settings=settings)
        assert isinstance(result, SensorResult)
        return result

    first = tick(None, "one")
    assert tick(first.cursor, "one").run_requests == []  # requested already, files unchanged
    again = tick(first.cursor, "two")  # new settings: every file again, under run keys of their own
    assert sorted(r.partition_key for r in again.run_requests) == ["a", "b"]
    assert not {r.run_key for r in again.run_requests} & {r.run_key for r in first.run_requests}
