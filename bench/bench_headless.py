"""Benchmark: what a headless run costs beyond its sync, on the 1M-row bench file.

    .venv/bin/python bench/bench_headless.py [--rows 1000000] [--runs 5] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Runs ``python -m sync_pipeline sync`` as cron would (a fresh process each time, the project's
``dagster.yaml`` with its storage in a temporary Dagster home, a PostgreSQL schema of its own):
one first load, then ``--runs`` syncs with no change. For each it prints the wall time of the
whole process, the engine's ``duration_s`` summed over the tables (from the command's own
``✓ table ... in N s`` lines) and the difference: process start, imports, definitions, instance,
run creation, events and exit. The file is the one ``bench_sync.py`` generates (bench/.data).

The command runs as it does on a user's machine: with ``PYTHONDONTWRITEBYTECODE`` unset, so the project's
modules are compiled once and their bytecode kept, as any Python does by default (this machine's environment
sets the variable, which makes every run compile the project's 12,000 lines again: 0.06-0.15 s here);
``--no-bytecode`` keeps the variable as the environment has it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

from sync_pipeline.demo import generate

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / ".data"
_ENGINE_LINE = re.compile(r"^✓ .* in ([0-9.]+) s$", re.M)


def _headless(env: dict[str, str]) -> tuple[float, float]:
    """(wall s, engine s summed) of one headless sync."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sync_pipeline", "sync"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the headless sync failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall, sum(float(s) for s in _ENGINE_LINE.findall(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="no-change runs after the first load")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as the environment sets it"
    )
    parser.add_argument(
        "--dsn", default=os.environ.get("PG_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()

    DATA_DIR.mkdir(exist_ok=True)
    base = DATA_DIR / f"demo_{args.rows}.sqlite"
    if not base.exists():
        generate(base, rows=args.rows)
    work = Path(tempfile.mkdtemp(prefix="sps_headless_"))
    schema = f"headless_{uuid.uuid4().hex[:8]}"
    try:
        home = work / "home"
        home.mkdir()
        config = (ROOT / "dagster.yaml").read_text().replace("base_dir: state/dagster", f"base_dir: {home}/storage")
        (home / "dagster.yaml").write_text(config)
        shutil.copy(base, work / "bench.sqlite")
        with psycopg2.connect(args.dsn) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "SQLITE_PATH": str(work / "bench.sqlite"),
            "PG_CONN_STR": args.dsn,
            "PG_SCHEMA": schema,
            "PG_STATE_SCHEMA": f"{schema}_state",
        }
        if not args.no_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        runs = [("first load", *_headless(env))] + [("no change", *_headless(env)) for _ in range(args.runs)]
    finally:
        with psycopg2.connect(args.dsn) as conn, conn.cursor() as cur:
            for name in (schema, f"{schema}_state"):
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        shutil.rmtree(work, ignore_errors=True)

    bytecode = "PYTHONDONTWRITEBYTECODE as set" if args.no_bytecode else "bytecode kept"
    print(f"\nheadless `python -m sync_pipeline sync`, {args.rows:,} rows, {bytecode}\n")
    print("| run | wall s | engine s | wall - engine s |")
    print("|---|---|---|---|")
    for label, wall, engine in runs:
        print(f"| {label} | {wall:.2f} | {engine:.2f} | {wall - engine:.2f} |")
    overheads = [wall - engine for label, wall, engine in runs if label == "no change"]
    print(f"\nno change, wall - engine: min {min(overheads):.2f} s, median {statistics.median(overheads):.2f} s")


if __name__ == "__main__":
    main()
