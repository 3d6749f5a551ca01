"""Faults in the middle of a sync, with real processes and a real server.

Whatever happens, PostgreSQL keeps its previous consistent state (each table syncs in one
transaction), the failure is one clear line, and the next run completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance

from sync_pipeline import assets as assets_module
from sync_pipeline.demo import generate, mutate
from sync_pipeline.engine import SqliteSnapshot, SyncError, SyncOptions, sync_table

from .conftest import pg_rows, query, sqlite_rows, sync_all
from .test_dagster_assets import failure_message, log_text, metadata_by_table, run_sync

APP = "sqlite-pg-sync"


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Large enough that a sync spends a second or more in COPY, where the faults strike."""
    return generate(tmp_path_factory.mktemp("big") / "big.sqlite", rows=100_000, seed=5)


def copying_backend(dsn: str, timeout_s: float = 30) -> int:
    """The pid of a backend of ours that is in the middle of a COPY."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = query(
            dsn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query ILIKE 'COPY%%' "
            "AND state = 'active' AND datname = current_database()",
            (APP,),
        )
        if rows:
            return int(rows[0][0])
        time.sleep(0.005)
    raise AssertionError("no sync was seen in the middle of a COPY")


_CHILD = """
import os, sys, psycopg2
from sync_pipeline.engine import SqliteSnapshot, SyncOptions, sync_table
path, schema = sys.argv[1:3]
dsn = os.environ["SYNC_TEST_DSN"]  # not on the command line, where ps shows it
conn = psycopg2.connect(dsn, application_name="sqlite-pg-sync")
with SqliteSnapshot(path) as snap:
    for table in snap.tables():
        sync_table(snap, conn, table, schema, SyncOptions(batch_size=500, delete_orphans=True))
print("finished")
"""


def test_kill_9_in_the_middle_of_a_copy_leaves_the_previous_state_and_the_next_run_completes(
    big_db, tmp_path, pg_dsn, schema
):
    path = Path(shutil.copy(big_db, tmp_path / "k.sqlite"))
    sync_all(path, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "narrative_results")
    mutate(path, 5)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), schema],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SYNC_TEST_DSN": pg_dsn},
    )
    try:
        copying_backend(pg_dsn)
        child.send_signal(signal.SIGKILL)
    finally:
        out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and "finished" not in out

    assert pg_rows(pg_dsn, schema, "narrative_results") == before
    result = sync_all(path, pg_dsn, schema, delete_orphans=True)["narrative_results"]  # waits out the dead one's lock
    assert result.rows_changed > 0
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(path, "narrative_results")


def test_a_connection_lost_mid_sync_is_a_transient_error_and_changes_nothing(big_db, pg_dsn, schema):
    sync_all(big_db, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "narrative_results")
    conn = psycopg2.connect(pg_dsn, application_name=APP)
    killer = threading.Thread(
        target=lambda: query(pg_dsn, "SELECT pg_terminate_backend(%s)", (copying_backend(pg_dsn),))
    )
    killer.start()
    try:
        with SqliteSnapshot(big_db) as snapshot, pytest.raises(SyncError) as caught:
            options = SyncOptions(batch_size=500, full_refresh=True)
            sync_table(snapshot, conn, snapshot.table("narrative_results"), schema, options)
    finally:
        killer.join()
        conn.close()

    assert caught.value.transient
    assert "lost the PostgreSQL connection" in str(caught.value)
    assert pg_rows(pg_dsn, schema, "narrative_results") == before


def test_a_run_whose_connection_drops_retries_on_a_new_one_and_succeeds(big_db, pg_dsn, schema, monkeypatch):
    monkeypatch.setattr(assets_module, "RETRY_DELAYS_S", (0.2,))
    instance = DagsterInstance.ephemeral()
    killer = threading.Thread(
        target=lambda: query(pg_dsn, "SELECT pg_terminate_backend(%s)", (copying_backend(pg_dsn),))
    )
    killer.start()
    try:
        result = run_sync(big_db, pg_dsn, schema, instance=instance, batch_size=500)
    finally:
        killer.join()

    assert result.success
    assert "lost the PostgreSQL connection" in log_text(instance, result)
    assert "(attempt 2 of 2)" in log_text(instance, result)
    assert set(metadata_by_table(result)) == {"experiments", "narrative_results", "source_narratives"}
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(big_db, "narrative_results")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("garbage", "file is not a database"),
        ("truncate", "database disk image is malformed"),
        ("delete", "does not exist or is not a file"),
    ],
)
def test_a_damaged_or_missing_sqlite_file_fails_in_one_clear_line_and_touches_nothing(
    demo_db, pg_dsn, schema, damage, expected
):
    assert run_sync(demo_db, pg_dsn, schema).success
    before = {t: pg_rows(pg_dsn, schema, t) for t in ("experiments", "narrative_results")}
    good = demo_db.read_bytes()
    loaded_from = demo_db.with_suffix(".as-loaded.sqlite")
    loaded_from.write_bytes(good)
    if damage == "garbage":
        demo_db.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    elif damage == "truncate":
        demo_db.write_bytes(good[: len(good) // 3])
    else:
        demo_db.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{demo_db}{suffix}").unlink(missing_ok=True)

    # The definitions were built from the good file; the damage happens before the run.
    result = run_sync(demo_db, pg_dsn, schema, tables_from=loaded_from)

    assert not result.success
    message = failure_message(result)
    assert expected in message
    assert "Traceback" not in message.split("\n")[0]
    assert {t: pg_rows(pg_dsn, schema, t) for t in before} == before
