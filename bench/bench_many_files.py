"""Benchmark: many SQLite files into one PostgreSQL, through the headless command.

    .venv/bin/python bench/bench_many_files.py --files 100 --rows 10000 [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Builds ``--files`` demo files (the demo's three tables, ``--rows`` narrative results each) in a
directory, then runs ``python -m sync_pipeline sync`` with ``SQLITE_PATH`` set to it, against an
instance of its own (a temporary ``DAGSTER_HOME``) and a schema of its own, four times: the first
sync, a re-sync with no change (which skips every file whose fingerprint is its last successful
sync's), the same re-sync forced through every file (``--delete-orphans``), and a re-sync after 5
files changed (1% of their results updated and as many added).
Reports wall time, rows/s (rows in the files over wall time), Dagster runs launched, and the
command's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from workspace import workspace

from sync_pipeline.demo import generate, mutate

CHANGED_FILES = 5


def _rows(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return sum(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("experiments", "narrative_results", "source_narratives")
        )
    finally:
        conn.close()


def _runs(home: Path) -> int:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return len(instance.get_runs())


def _scenario(name: str, env: dict[str, str], home: Path, rows: int, *flags: str) -> dict[str, object]:
    before = _runs(home)
    started = time.perf_counter()
    command = [sys.executable, "-m", "sync_pipeline", "sync", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "scenario": name,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "runs": _runs(home) - before,
        "peak_mb": peak_mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument(
        "--dsn", default=os.environ.get("PG_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()

    with workspace(args.dsn, "many_files") as ws:
        runs = ws.work / "runs"
        runs.mkdir()
        started = time.perf_counter()
        files = [generate(runs / f"run_{i:03d}.sqlite", rows=args.rows, seed=i) for i in range(args.files)]
        rows = sum(_rows(f) for f in files)
        print(f"{args.files} files, {rows:,} rows in all, built in {time.perf_counter() - started:.1f} s", flush=True)
        env = {**os.environ, **ws.env(args.dsn), "SQLITE_PATH": str(runs)}
        home = ws.home
        results = [
            _scenario("first sync", env, home, rows),
            _scenario("no change (unchanged files skipped by fingerprint)", env, home, rows),
            _scenario("no change, every file synced anyway (--delete-orphans)", env, home, rows, "--delete-orphans"),
        ]
        for file in files[:CHANGED_FILES]:
            mutate(file, 1.0)
        results.append(_scenario(f"{CHANGED_FILES} files changed (1% of their results)", env, home, rows))
        print("\n| scenario | wall s | rows/s | Dagster runs | peak RSS MB (largest process) |\n|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['scenario']} | {r['wall_s']:.1f} | {r['rows_per_s']:,.0f} | {r['runs']} | {r['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
