"""Memory stays one batch, whatever the table size (measured in a fresh process each time), plus
the 8 bytes a row of row digests (row_digests.py: 1.5 MB more for the larger file here, 32 MB at most).

On the Arrow path the Arrow work happens in a child process (see arrow_child.py): its peak is
measured too, and the syncing process must not have imported pyarrow at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync_pipeline.demo import generate

from .conftest import drop_schema

# Runs in a child process so that its peak RSS belongs to one sync (first load + no-change merge).
_CHILD = """
import json, os, sys
import psycopg2
from sync_pipeline.engine import SqliteSnapshot, SyncOptions, sync_table
path, schema, batch, arrow = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "arrow"
dsn = os.environ["SYNC_TEST_DSN"]
conn = psycopg2.connect(dsn)
rows = child_peak = 0
for _ in range(2):
    with SqliteSnapshot(path, arrow=arrow) as snap:
        result = sync_table(snap, conn, snap.table("narrative_results"), schema, SyncOptions(batch_size=batch))
        rows = result.rows_processed
        child_peak = max(child_peak, snap.arrow.peak_rss_kb() if snap.arrow is not None else 0)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so it could be pytest's peak.
status = open("/proc/self/status").read().splitlines()
peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
report = {"rows": rows, "path": result.read_path, "peak_rss_kb": peak, "child_peak_rss_kb": child_peak}
print(json.dumps({**report, "pyarrow_imported": "pyarrow" in sys.modules}))
"""


def _peak_rss_kb(path: Path, dsn: str, schema: str, batch_size: int, read_path: str) -> tuple[int, int, int]:
    """(rows, peak RSS of the syncing process, peak RSS of its Arrow child or 0) in kB."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), schema, str(batch_size), read_path],
        env={**os.environ, "SYNC_TEST_DSN": dsn},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["path"] == read_path
    assert not report["pyarrow_imported"]
    assert (report["child_peak_rss_kb"] > 0) == (read_path == "arrow")
    return report["rows"], report["peak_rss_kb"], report["child_peak_rss_kb"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("memory")
    return generate(folder / "small.sqlite", rows=10_000), generate(folder / "large.sqlite", rows=200_000)


@pytest.mark.parametrize("read_path", ["arrow", "exact"])
def test_peak_memory_of_a_200k_row_sync_is_within_a_few_mb_of_a_10k_row_one(files, pg_dsn, pg, read_path):
    small, large = files
    with pg, pg.cursor() as cur:
        cur.execute("CREATE SCHEMA mem_small; CREATE SCHEMA mem_large")
    try:
        small_rows, small_kb, small_child_kb = _peak_rss_kb(small, pg_dsn, "mem_small", 1000, read_path)
        large_rows, large_kb, large_child_kb = _peak_rss_kb(large, pg_dsn, "mem_large", 1000, read_path)
    finally:
        drop_schema(pg_dsn, "mem_small")
        drop_schema(pg_dsn, "mem_large")
    print(
        f"\n{read_path} path, peak RSS at batch_size 1000: {small_rows:,} rows {small_kb / 1024:.1f} MB, "
        f"{large_rows:,} rows {large_kb / 1024:.1f} MB (difference {(large_kb - small_kb) / 1024:+.1f} MB); "
        f"Arrow child {small_child_kb / 1024:.1f} MB and {large_child_kb / 1024:.1f} MB"
    )
    assert (small_rows, large_rows) == (10_000, 200_000)
    assert large_kb - small_kb < 5 * 1024
    assert large_child_kb - small_child_kb < 5 * 1024
