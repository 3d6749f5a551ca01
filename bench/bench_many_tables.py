"""Benchmark: one SQLite file of many small tables, through ONE in-process Dagster run of every asset.

    .venv/bin/python bench/bench_many_tables.py [--tables 100 1000] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

For each count given (default: 100, then 1000), builds a file of that many tables of 50 rows each
(``id INTEGER PRIMARY KEY`` and five typed columns) and materializes every asset as the tests do
(``build_sync_assets`` over ``list_tables``, ``dagster.materialize`` with ``SQLiteSource`` and
``PostgresTarget``), against an instance of its own (a temporary ``DAGSTER_HOME`` with the project's
dagster.yaml: SQLite event storage on disk), a target schema and a bookkeeping schema of its own.
Scenarios: the first sync, then a no-change sync, each in a child process so that its peak RSS is
its own; then one more no-change sync under cProfile (skip it with ``--no-profile``), whose top
functions are printed for the op's thread (which yields the results and so records the
materializations and checks) and for the sync worker thread(s) apart: cProfile sees one thread only.

``--floor`` adds Dagster's own floor for the same file: after an untimed no-change sync, a run of a
multi-asset with the sync's outputs and checks whose op does no work but record again the events
that sync recorded (the same way, under ``hold_event_shards``), then the same events without
metadata. No engine is faster than that run, so it bounds what any change to the engine can win.

Per scenario: ``defs s`` (``list_tables`` and ``build_sync_assets``), ``wall s`` (the
``materialize`` call), ``engine s`` (the materializations' ``duration_s`` summed), ``Dagster s``
(wall minus engine), ``store_event s`` (time in the event log storage's ``store_event``, in the
op's thread, of which the planned events Dagster writes for every asset and check as it creates
the run, and in the others: worker threads log too) and ``handle_new_event s`` (the instance's
whole handling of an event, the storage write included), the events stored, PostgreSQL round trips
per table and the child's peak RSS. Round trips are counted in the child by a psycopg2 connection
class installed through ``psycopg2.connect``, over every connection of the run (the snapshot
clock's and the bookkeeping's included): each ``execute`` and ``copy_expert``, the ``BEGIN``
psycopg2 sends before a transaction's first statement, and each ``COMMIT`` or ``ROLLBACK`` of an
open transaction; connecting is counted apart.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import re
import resource
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from sqlalchemy.engine import make_url
from workspace import workspace

ROWS_PER_TABLE = 50
PROFILE_TOP = 15
PROFILE_OWN_TOP = 8
STATEMENT_SHAPES_TOP = 12


# --- the file -------------------------------------------------------------------------------


def build_file(path: Path, tables: int) -> None:
    rng = random.Random(16)
    width = max(4, len(str(tables - 1)))
    conn = sqlite3.connect(path)
    try:
        with conn:
            for number in range(tables):
                name = f"t{number:0{width}d}"
                conn.execute(
                    f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, "
                    "price REAL, active BOOLEAN, created_at TIMESTAMP)"
                )
                conn.executemany(
                    f"INSERT INTO {name} VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            i,
                            f"item {number}-{i}",
                            rng.randint(0, 1000),
                            round(rng.uniform(0, 100), 2),
                            rng.randint(0, 1),
                            f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} 12:00:00",
                        )
                        for i in range(1, ROWS_PER_TABLE + 1)
                    ],
                )
    finally:
        conn.close()


# --- counting in the child: round trips and event-store time -------------------------------

_lock = threading.Lock()
trips: Counter[str] = Counter()  # "statement", "begin", "commit", "connect"
shapes: Counter[str] = Counter()  # statements by their text, table names folded
# "store_event op", "store_event other", "store_event planned" (part of "op"), "handle_new_event", "events"
store_s: Counter[str] = Counter()
event_types: Counter[str] = Counter()  # events stored, by Dagster event type ("log" for a log line)

_NAMES = re.compile(r"\bt\d{4,}\b|bench_mt_[0-9a-f]+(_state)?")


def _shape(text: str) -> str:
    return _NAMES.sub("…", " ".join(text.split()))[:110]


class CountingCursor(psycopg2.extensions.cursor):
    def _count(self, query: Any) -> None:
        conn = self.connection
        begins = not conn.autocommit and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        text = query if isinstance(query, str) else query.as_string(self)
        with _lock:
            trips["statement"] += 1
            trips["begin"] += begins
            shapes[_shape(text)] += 1

    def execute(self, query: Any, vars: Any = None) -> None:
        self._count(query)
        super().execute(query, vars)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        self._count(sql)
        super().copy_expert(sql, file, size)


class CountingConnection(psycopg2.extensions.connection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = CountingCursor
        with _lock:
            trips["connect"] += 1

    def _end(self) -> None:
        if self.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            with _lock:
                trips["commit"] += 1

    def commit(self) -> None:
        self._end()
        super().commit()

    def rollback(self) -> None:
        self._end()
        super().rollback()


def _install_counters() -> None:
    connect = psycopg2.connect

    def counting_connect(*args: Any, **kwargs: Any) -> psycopg2.extensions.connection:
        kwargs.setdefault("connection_factory", CountingConnection)
        return connect(*args, **kwargs)

    psycopg2.connect = counting_connect


def _event_type(entry: Any) -> str:
    return entry.dagster_event.event_type_value if entry.is_dagster_event else "log"


def _timed(key: str | None, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        planned = False
        if key is None:
            entries = args[0] if isinstance(args[0], list) else [args[0]]
            planned = all(_event_type(e).endswith("_PLANNED") for e in entries)
            with _lock:
                event_types.update(_event_type(e) for e in entries)
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            name = key or f"store_event {'op' if threading.current_thread() is threading.main_thread() else 'other'}"
            with _lock:
                store_s[name] += spent
                if key is None:
                    store_s["events"] += 1
                if planned:  # written when the run is created, before the op starts
                    store_s["store_event planned"] += spent

    return wrapper


def _time_event_storage(instance: Any) -> None:
    instance.handle_new_event = _timed("handle_new_event", instance.handle_new_event)
    storage = instance.event_log_storage
    storage.store_event = _timed(None, storage.store_event)
    if hasattr(storage, "store_event_batch"):  # DAGSTER_EVENT_BATCH_SIZE: a batch counts as one write
        storage.store_event_batch = _timed(None, storage.store_event_batch)


# --- a scenario, in a child process ---------------------------------------------------------


def peak_rss_kb() -> int:
    """This process's own peak RSS (VmHWM: getrusage's ru_maxrss is carried over fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _profile_rows(stats: pstats.Stats, column: int, top: int) -> list[str]:
    """The top functions by cumulative (column 3) or own (column 2) time; this file's timers left out."""
    entries = sorted(stats.stats.items(), key=lambda item: item[1][column], reverse=True)  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, calls, own, cum, _callers) in entries:
        if file == __file__:
            continue
        if file == "~":  # a C function; the counting cursor's super() calls are psycopg2's own
            name = re.sub(r" at 0x[0-9a-f]+", "", func).replace("CountingCursor.", "psycopg2 cursor.")
        else:
            where = re.sub(r".*/(site-packages|lib/python3\.\d+)/", "", file)
            where = re.sub(r".*/(sync_pipeline/)", r"\1", where)
            name = f"{where}:{line}({func})"
        rows.append(f"| {cum:.2f} | {own:.2f} | {calls:,} | `{name}` |")
        if len(rows) == top:
            break
    return rows


def child(
    scenario: str, path: Path, dsn: str, schema: str, home: Path, parallel: int | None, like_cli: bool
) -> dict[str, Any]:
    _install_counters()
    from dagster import DagsterInstance, materialize

    from sync_pipeline import assets as assets_module
    from sync_pipeline.assets import OP_NAME, build_sync_assets
    from sync_pipeline.engine import list_tables
    from sync_pipeline.event_store import hold_event_shards
    from sync_pipeline.resources import PostgresTarget, SQLiteSource
    from sync_pipeline.translator import SqliteTableTranslator

    profile = scenario == "profile"
    worker_profiles: list[cProfile.Profile] = []
    if profile:
        work = assets_module._Workers._work

        def profiled_work(self: Any, *args: Any) -> None:
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                work(self, *args)
            finally:
                profiler.disable()
                worker_profiles.append(profiler)

        assets_module._Workers._work = profiled_work  # type: ignore[method-assign]

    config = {} if parallel is None else {"parallel_tables": parallel}
    with DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        tables = list_tables(path)
        assets = build_sync_assets(tables, SqliteTableTranslator(pg_schema=schema))
        defs_s = time.perf_counter() - started
        resources = {
            "sqlite": SQLiteSource(path=str(path)),
            "postgres": PostgresTarget(conn_str=dsn, pg_schema=schema, state_schema=f"{schema}_state"),
        }
        run_config = {"ops": {OP_NAME: {"config": config}}}
        if scenario.startswith("floor"):
            # A real no-change sync first (untimed), whose events the floor's op then records again.
            synced = materialize([assets], instance=instance, resources=resources, run_config=run_config)
            assets = dagster_floor(assets, synced, bare=scenario == "floor-bare")
            resources, run_config = {}, {}
            trips.clear()
            shapes.clear()
        _time_event_storage(instance)
        op_profile = cProfile.Profile()
        started = time.perf_counter()
        if profile:
            op_profile.enable()
        # --like-cli: the run is created and executed in hold_event_shards, as `python -m sync_pipeline
        # sync` does (cli.py); else only the op's own recording is (as for a run the UI launches).
        with hold_event_shards(instance, None) if like_cli else nullcontext():
            result = materialize([assets], instance=instance, resources=resources, run_config=run_config)
        if profile:
            op_profile.disable()
        wall = time.perf_counter() - started
    materializations = result.get_asset_materialization_events()
    engine = (
        0.0  # the floor's op does no engine work (its copied duration_s is the earlier sync's)
        if scenario.startswith("floor")
        else sum(float(e.materialization.metadata["duration_s"].value) for e in materializations)  # type: ignore[union-attr]
    )
    report: dict[str, Any] = {
        "tables": len(tables),
        "materialized": len(materializations),
        "checks": len(result.get_asset_check_evaluations()),
        "defs_s": defs_s,
        "wall_s": wall,
        "engine_s": engine,
        "store": dict(store_s),
        "trips": dict(trips),
        "shapes": shapes.most_common(STATEMENT_SHAPES_TOP),
        "event_types": event_types.most_common(),
        "peak_rss_mb": peak_rss_kb() / 1024,
    }
    if profile:
        for thread, stats in (("op", pstats.Stats(op_profile)), ("workers", pstats.Stats(*worker_profiles))):
            report[f"profile_{thread}_cum"] = _profile_rows(stats, 3, PROFILE_TOP)
            report[f"profile_{thread}_own"] = _profile_rows(stats, 2, PROFILE_OWN_TOP)
    return report


def dagster_floor(synced_assets: Any, synced: Any, bare: bool) -> Any:
    """A multi-asset with the sync's own outputs and checks whose op does no work: it records, as the
    sync's op does (under ``hold_event_shards``), the materializations and check evaluations that
    ``synced`` (a run of ``synced_assets``) recorded; ``bare``: the same events without metadata.
    What a run of it costs is Dagster's alone, for exactly the events a sync writes."""
    from dagster import AssetCheckEvaluation, AssetMaterialization, AssetOut, multi_asset

    from sync_pipeline.event_store import hold_event_shards

    specs = {spec.key: spec for spec in synced_assets.specs}
    events: dict[Any, list[Any]] = {}
    for event in synced.get_asset_materialization_events():
        m = event.materialization
        events.setdefault(m.asset_key, []).append(AssetMaterialization(asset_key=m.asset_key) if bare else m)
    for evaluation in synced.get_asset_check_evaluations():
        events[evaluation.asset_key].append(
            AssetCheckEvaluation(asset_key=evaluation.asset_key, check_name=evaluation.check_name,
                                 passed=evaluation.passed, severity=evaluation.severity, blocking=False)
            if bare else evaluation
        )  # fmt: skip

    @multi_asset(
        name="dagster_floor",
        outs={
            name: AssetOut.from_spec(specs[key], is_required=False)
            for name, key in synced_assets.keys_by_output_name.items()
        },
        check_specs=list(synced_assets.check_specs),
        can_subset=True,
    )
    def _floor(context) -> Iterator[Any]:  # type: ignore[no-untyped-def]  # untyped: Dagster cannot resolve a local import
        with hold_event_shards(context.instance, context.run.run_id):
            for key in sorted(context.selected_asset_keys):
                yield from events[key]

    return _floor


# --- the parent -----------------------------------------------------------------------------


def _run(
    scenario: str, path: Path, dsn: str, schema: str, home: Path, parallel: int | None, like_cli: bool
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", scenario, str(path), dsn, schema, str(home), str(parallel or 0)]
    command += ["--like-cli"] if like_cli else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{scenario}: exit {done.returncode}\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{scenario}: {report['wall_s']:.1f} s", flush=True)
    return report


def _row(label: str, r: dict[str, Any]) -> str:
    store, trips_, n = r["store"], r["trips"], r["tables"]
    round_trips = trips_.get("statement", 0) + trips_.get("begin", 0) + trips_.get("commit", 0)
    return (
        f"| {label} | {r['defs_s']:.1f} | {r['wall_s']:.1f} | {r['engine_s']:.1f} | {r['wall_s'] - r['engine_s']:.1f} "
        f"| {store.get('store_event op', 0):.1f} ({store.get('store_event planned', 0):.1f} planned) "
        f"/ {store.get('store_event other', 0):.1f} "
        f"| {store.get('handle_new_event', 0):.1f} | {store.get('events', 0):,} "
        f"| {round_trips / n:.1f} ({trips_.get('statement', 0) / n:.1f} + {trips_.get('begin', 0) / n:.1f} "
        f"+ {trips_.get('commit', 0) / n:.1f}) | {trips_.get('connect', 0)} | {r['peak_rss_mb']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[100, 1000], help="table counts, one file each")
    parser.add_argument(
        "--dsn", default=os.environ.get("PG_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--parallel-tables", type=int, help="the sync config's parallel_tables (default: its own)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled no-change sync")
    parser.add_argument(
        "--like-cli",
        action="store_true",
        help="create and execute the run inside event_store.hold_event_shards, as `python -m sync_pipeline sync` "
        "does (by default only the op's recording is inside it, as for a run the UI or the sensor launches)",
    )
    parser.add_argument(
        "--pg-storage",
        action="store_true",
        help="Dagster's instance storage in PostgreSQL (dagster-postgres, as deploy/ has it; a database of its own "
        "on --dsn's server, dropped after) instead of the project's SQLite files; the round trips counted then "
        "include Dagster's own",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also Dagster's floor: a run of a multi-asset with the same outputs and checks whose op only records "
        "the events a no-change sync recorded (then the same events without metadata), no engine work",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        scenario, path, dsn, schema, home, parallel = args.child
        report = child(scenario, Path(path), dsn, schema, Path(home), int(parallel) or None, args.like_cli)
        print(json.dumps(report))
        return

    for tables in args.tables:
        bench(tables, args.dsn, args.parallel_tables, not args.no_profile, args.like_cli, args.pg_storage, args.floor)


@contextmanager
def pg_storage(dsn: str, home: Path) -> Iterator[None]:
    """``home``'s instance with its storage in a new database on ``dsn``'s server, dropped at the end."""
    database = f"bench_dagster_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    admin.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = make_url(dsn).set(drivername="postgresql+psycopg2", database=database)
    config = (home / "dagster.yaml").read_text()
    start, end = config.index("storage:"), config.index("telemetry:")
    storage = f"storage:\n  postgres:\n    postgres_url: {json.dumps(url.render_as_string(hide_password=False))}\n"
    (home / "dagster.yaml").write_text(config[:start] + storage + config[end:])
    try:
        yield
    finally:
        admin.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.close()


def bench(
    tables: int,
    dsn: str,
    parallel_tables: int | None,
    profile: bool,
    like_cli: bool = False,
    on_pg: bool = False,
    floor: bool = False,
) -> None:
    """One file of ``tables`` tables: first sync, no-change sync, and (``profile``) a profiled one."""

    with workspace(dsn, "mt") as ws, pg_storage(dsn, ws.home) if on_pg else nullcontext():
        work, home, schema = ws.work, ws.home, ws.schema
        path = work / f"tables_{tables}.sqlite"
        started = time.perf_counter()
        build_file(path, tables)
        print(
            f"{tables} tables of {ROWS_PER_TABLE} rows ({tables * ROWS_PER_TABLE:,} rows), "
            f"built in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        run = (path, dsn, schema, home, parallel_tables, like_cli)
        results = [("first sync", _run("first", *run)), ("no-change sync", _run("nochange", *run))]
        if floor:
            results += [
                ("Dagster floor: the no-change sync's events, no engine", _run("floor", *run)),
                ("Dagster floor: the same events without metadata", _run("floor-bare", *run)),
            ]
        profiled = None if not profile else _run("profile", *run)

        print(
            f"\n{tables} tables x {ROWS_PER_TABLE} rows, one in-process Dagster run of every asset "
            f"(parallel_tables {parallel_tables or 'default'}; "
            f"run created {'in hold_event_shards, as the CLI' if like_cli else 'outside it, as the UI'}; "
            f"Dagster's storage in {'PostgreSQL' if on_pg else 'SQLite files'}); "
            "store_event s: op's thread "
            "(of which the planned events, written as the run is created) / other threads; "
            "round trips per table: statements + BEGIN + COMMIT\n"
        )
        print(
            "| scenario | defs s | wall s | engine s | Dagster s (wall - engine) | store_event s | handle_new_event s "
            "| events stored | PG round trips per table | connections | peak RSS MB |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, r in results:
            print(_row(label, r))
        for label, r in results:
            if r["materialized"] != r["tables"]:
                print(f"\n⚠ {label}: {r['materialized']} materializations for {r['tables']} tables")
        nochange = results[1][1]
        print(f"\nStatements of the no-change sync, per table ({nochange['tables']} tables; names folded to …):\n")
        print("| per table | statement |\n|---|---|")
        for shape, count in nochange["shapes"]:
            print(f"| {count / nochange['tables']:.2f} | `{shape}` |")
        print(f"\nEvents stored by the no-change sync, per table ({nochange['tables']} tables):\n")
        print("| per table | event type |\n|---|---|")
        for kind, count in nochange["event_types"]:
            print(f"| {count / nochange['tables']:.2f} | {kind} |")
        if profiled is not None:
            for title, thread in (("the op's thread", "op"), ("the sync worker thread(s)", "workers")):
                for order, top in (("cum", PROFILE_TOP), ("own", PROFILE_OWN_TOP)):
                    print(
                        f"\ncProfile of a no-change sync ({profiled['wall_s']:.1f} s under the profiler), {title}, "
                        f"top {top} by {'cumulative' if order == 'cum' else 'own'} time:\n"
                    )
                    print("| cum s | own s | calls | function |\n|---|---|---|---|")
                    print("\n".join(profiled[f"profile_{thread}_{order}"]))


if __name__ == "__main__":
    main()
