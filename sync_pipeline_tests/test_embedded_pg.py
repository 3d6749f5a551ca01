"""The embedded PostgreSQL fallback: survives restarts, and a killed client cannot pin it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sync_pipeline.embedded_pg import prune_dead_handles

_CHILD = """
import sys, psycopg2
from pathlib import Path
from sync_pipeline.embedded_pg import embedded_dsn
conn = psycopg2.connect(embedded_dsn(Path(sys.argv[1])))
conn.autocommit = True
cur = conn.cursor()
if sys.argv[2] == "write":
    cur.execute("CREATE TABLE kept (v text)")
    cur.execute("INSERT INTO kept VALUES ('survives a restart')")
else:
    cur.execute("SELECT v FROM kept")
    print(cur.fetchone()[0])
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_client_pids_are_pruned_and_live_ones_kept(tmp_path: Path):
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".handle_pids.json").write_text(json.dumps([dead, alive.pid]))

        assert prune_dead_handles(tmp_path) == [dead]
        assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [alive.pid]
    finally:
        alive.kill()
        alive.wait()


def test_embedded_data_survives_the_server_stopping_and_starting_again(tmp_path: Path):
    pgdata = tmp_path / "pgdata"
    write = subprocess.run([sys.executable, "-c", _CHILD, str(pgdata), "write"], capture_output=True, text=True)
    assert write.returncode == 0, write.stderr
    # The server stopped when its only client exited; the next client starts it again.
    assert not (pgdata / "postmaster.pid").exists()

    read = subprocess.run([sys.executable, "-c", _CHILD, str(pgdata), "read"], capture_output=True, text=True)

    assert read.returncode == 0, read.stderr
    assert read.stdout.strip().splitlines()[-1] == "survives a restart"
