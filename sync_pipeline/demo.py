"""Deterministic demo data shaped like the user's experiment database.

    python -m sync_pipeline.demo                   # (re)create state/demo.sqlite
    python -m sync_pipeline.demo big.sqlite --rows 1000000
    python -m sync_pipeline.demo --mutate 1        # update 1% of results and append 1% more

The same seed gives the same file, so tests and benchmarks can rebuild it at will; a mutation
is deterministic too (seeded by the file's current size), so it simulates a new batch of
experiment output that an incremental sync should pick up.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = PROJECT_ROOT / "state"
DEFAULT_DEMO_PATH = STATE_DIR / "demo.sqlite"
DEFAULT_ROWS = 16_000

SCHEMA = """
CREATE TABLE source_narratives (
    narrative_id INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    source TEXT,
    narrative TEXT,
    word_count INTEGER,
    created_at TEXT,
    updated_at TEXT
);
CREATE TABLE experiments (
    experiment_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT,
    temperature REAL,
    prompt_version INTEGER,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    notes TEXT,
    updated_at TEXT
);
CREATE TABLE narrative_results (
    result_id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id),
    narrative_id INTEGER NOT NULL REFERENCES source_narratives(narrative_id),
    label TEXT,
    confidence REAL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    latency_ms REAL,
    output TEXT,
    created_at TEXT,
    updated_at TEXT
);
CREATE VIEW experiment_summary AS
    SELECT experiment_id, count(*) AS results, avg(confidence) AS mean_confidence
    FROM narrative_results GROUP BY experiment_id;
"""

# Built after the rows are in: one sort each instead of ten million random inserts.
INDEXES = """
CREATE INDEX narrative_results_experiment ON narrative_results(experiment_id);
-- The application bumps updated_at on every write; the index lets a cursor-mode sync find
-- the rows past its watermark without scanning the table.
CREATE INDEX narrative_results_updated_at ON narrative_results(updated_at);
"""

_WORDS = (
    "vehicle pedestrian crossing signal witness reported driver collision lane north south east west "
    "intersection injury minor severe police arrived scene weather rain clear night morning traffic "
    "speed brake turned stopped hospital statement camera footage damage rear front side"
).split()
_LABELS = ("relevant", "irrelevant", "uncertain", "duplicate", "needs_review")
_MODELS = ("gpt-4o-mini", "claude-3-haiku", "llama-3-8b", "mistral-7b")
_SOURCES = ("police_report", "news", "insurance_claim", "social_media")
_EPOCH = datetime(2025, 1, 1)


def _timestamp(rng: random.Random) -> str:
    return (_EPOCH + timedelta(seconds=rng.randrange(0, 365 * 86400))).strftime("%Y-%m-%d %H:%M:%S")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _sizes(rows: int) -> tuple[int, int]:
    return max(rows // 40, 10), max(rows // 300, 3)


def _narratives(rng: random.Random, count: int, start: int = 1) -> Iterator[tuple[object, ...]]:
    for i in range(start, start + count):
        words = rng.randrange(20, 80)
        ts = _timestamp(rng)
        yield (i, f"INC-{rng.randrange(10**6):06d}", rng.choice(_SOURCES), _text(rng, words), words, ts, ts)


def _experiments(rng: random.Random, count: int, start: int = 1) -> Iterator[tuple[object, ...]]:
    for i in range(start, start + count):
        started = _timestamp(rng)
        yield (
            i,
            f"exp-{i:04d}",
            rng.choice(_MODELS),
            round(rng.random(), 2),
            rng.randrange(1, 12),
            started,
            started,
            _text(rng, 6) if rng.random() < 0.5 else None,
            started,
        )


def _result(rng: random.Random, result_id: int, narratives: int, experiments: int) -> tuple[object, ...]:
    ts = _timestamp(rng)
    return (
        result_id,
        rng.randrange(1, experiments + 1),
        rng.randrange(1, narratives + 1),
        rng.choice(_LABELS),
        rng.random(),
        rng.randrange(50, 4000),
        rng.randrange(1, 800),
        rng.uniform(50, 5000),
        _text(rng, rng.randrange(20, 60)),
        ts,
        ts,
    )


def generate(path: str | Path, rows: int = DEFAULT_ROWS, seed: int = 42) -> Path:
    """Write a fresh demo database with ``rows`` narrative results (replacing any file there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    narratives, experiments = _sizes(rows)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        with conn:
            conn.executemany("INSERT INTO source_narratives VALUES (?,?,?,?,?,?,?)", _narratives(rng, narratives))
            conn.executemany("INSERT INTO experiments VALUES (?,?,?,?,?,?,?,?,?)", _experiments(rng, experiments))
            conn.executemany(
                "INSERT INTO narrative_results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (_result(rng, i, narratives, experiments) for i in range(1, rows + 1)),
            )
        conn.executescript(INDEXES)
    finally:
        conn.close()
    return path


def mutate(path: str | Path, percent: float) -> tuple[int, int]:
    """Update ``percent``% of the results and append as many new ones; returns (updated, added)."""
    conn = sqlite3.connect(path)
    try:
        (count, max_id) = conn.execute("SELECT count(*), coalesce(max(result_id), 0) FROM narrative_results").fetchone()
        (narratives,) = conn.execute("SELECT count(*) FROM source_narratives").fetchone()
        (experiments,) = conn.execute("SELECT count(*) FROM experiments").fetchone()
        rng = random.Random(max_id)
        n = max(1, round(count * percent / 100))
        ids = [r for (r,) in conn.execute("SELECT result_id FROM narrative_results")]
        chosen = rng.sample(ids, min(n, len(ids)))
        now = (_EPOCH + timedelta(days=400, seconds=max_id)).strftime("%Y-%m-%d %H:%M:%S")
        with conn:
            conn.executemany(
                "UPDATE narrative_results SET label = ?, confidence = ?, updated_at = ? WHERE result_id = ?",
                ((rng.choice(_LABELS), rng.random(), now, rid) for rid in chosen),
            )
            conn.executemany(
                "INSERT INTO narrative_results VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                ((*_result(rng, max_id + 1 + i, narratives, experiments)[:-2], now, now) for i in range(n)),
            )
    finally:
        conn.close()
    return len(chosen), n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default=str(DEFAULT_DEMO_PATH), help="SQLite file (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="narrative_results rows (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--mutate", type=float, metavar="PCT", help="update and append PCT%% of rows in an existing file"
    )
    args = parser.parse_args(argv)
    if args.mutate is not None:
        updated, added = mutate(args.path, args.mutate)
        print(f"{args.path}: updated {updated} and appended {added} narrative_results rows")
    else:
        generate(args.path, rows=args.rows, seed=args.seed)
        print(f"{args.path}: demo database with {args.rows} narrative_results rows")


if __name__ == "__main__":
    main()
