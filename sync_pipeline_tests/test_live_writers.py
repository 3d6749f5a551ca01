"""Syncing while another process keeps committing to the SQLite file.

The writer moves money between a ledger and a totals row in one transaction per step, so any
snapshot taken mid-write would break ``sum(ledger.amount) == totals.total``. It uses a short
busy timeout (0.5 s): if a sync held SQLite's lock longer than that, it would see
"database is locked".
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg2 import sql

from sync_pipeline.demo import generate

from .conftest import pg_rows, query, sqlite_rows, sync_all

_WRITER = """
import json, random, sqlite3, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
conn = sqlite3.connect(path, timeout=0.5, isolation_level=None)
rng = random.Random(1)
commits = locked = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    amount = rng.randrange(1, 100)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO ledger (amount) VALUES (?)", (amount,))
        conn.execute("UPDATE totals SET total = total + ?, n = n + 1 WHERE id = 1", (amount,))
        conn.execute("COMMIT")
        commits += 1
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        locked += 1
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    time.sleep(0.002)
print(json.dumps({"commits": commits, "locked": locked}))
"""


@pytest.fixture(scope="module")
def filler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file big enough that one sync takes well over the writer's busy timeout."""
    return generate(tmp_path_factory.mktemp("live") / "filler.sqlite", rows=60_000, seed=3)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_syncs_during_live_writes_read_consistent_snapshots_and_never_lock_the_writer_out(
    filler, tmp_path, pg_dsn, schema, journal_mode
):
    path = Path(shutil.copy(filler, tmp_path / "live.sqlite"))
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.executescript(
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);"
        "CREATE TABLE totals (id INTEGER PRIMARY KEY, total INTEGER NOT NULL, n INTEGER NOT NULL);"
        "INSERT INTO totals VALUES (1, 0, 0);"
    )
    conn.commit()
    conn.close()
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "8"], stdout=subprocess.PIPE, text=True)
    syncs = 0
    try:
        time.sleep(0.3)
        while writer.poll() is None:
            results = sync_all(path, pg_dsn, schema, delete_orphans=True, batch_size=2000)
            syncs += 1
            (total, n), (ledger_sum, ledger_rows) = (
                query(pg_dsn, sql.SQL("SELECT total, n FROM {}").format(sql.Identifier(schema, "totals")))[0],
                query(
                    pg_dsn,
                    sql.SQL("SELECT coalesce(sum(amount), 0), count(*) FROM {}").format(
                        sql.Identifier(schema, "ledger")
                    ),
                )[0],
            )
            assert (ledger_sum, ledger_rows) == (total, n), f"sync {syncs} saw a half-written transaction"
            assert results["ledger"].sqlite_rows == n
    finally:
        out, _ = writer.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1])

    assert syncs >= 2
    assert report["commits"] > 100
    assert report["locked"] == 0, f"the writer was locked out {report['locked']} times"
    sync_all(path, pg_dsn, schema, delete_orphans=True)
    for table in ("ledger", "totals"):
        assert pg_rows(pg_dsn, schema, table) == sqlite_rows(path, table)
