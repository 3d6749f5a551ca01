"""Benchmark: our engine against the COPY floor and the seed's upsert, in ONE run.

    .venv/bin/python bench/bench_sync.py --rows 200000 [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Only ``narrative_results`` (the big table) is timed. Each scenario runs in a child process,
so its peak RSS is its own; WAL is measured on the server (``pg_current_wal_lsn``) and rows
written from ``pg_stat_user_tables``. Times are also printed as a ratio to the floor measured
in the same run, because absolute times on shared machines are noise. The Arrow path reads in a
child process of the engine (see arrow_child.py): its peak RSS is a column of its own.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql

from sync_pipeline.demo import generate, mutate
from sync_pipeline.engine import SqliteSnapshot, SyncOptions, sync_table
from sync_pipeline.engine.pg_target import PgTable

TABLE = "narrative_results"
DATA_DIR = Path(__file__).resolve().parent / ".data"
BENCH_DB = "sps_bench"
# The peak RSS of the scenario's Arrow child, read before the child exits; 0 without one.
child_peak_kb = 0


def _dsn_for(dsn: str, dbname: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params["dbname"] = dbname
    return psycopg2.extensions.make_dsn(**params)


def _columns(path: Path) -> list[str]:
    with SqliteSnapshot(path, arrow=False) as snap:
        return list(snap.table(TABLE).column_names)


def _create_target(conn: psycopg2.extensions.connection, path: Path, schema: str, with_key: bool) -> None:
    with SqliteSnapshot(path, arrow=False) as snap, conn, conn.cursor() as cur:
        target = PgTable(cur, schema, snap.table(TABLE))
        ident = target.create()
        if with_key:
            target.add_primary_key(ident, f"{TABLE}_pkey")


# --- scenarios, each run in a child process ------------------------------------------------


def floor_copy(path: Path, dsn: str, schema: str, batch: int) -> None:
    """Bare COPY fed from sqlite3 with Python's csv module: no checks, no key, no merge."""
    conn = psycopg2.connect(dsn)
    _create_target(conn, path, schema, with_key=False)
    cols = _columns(path)
    src = sqlite3.connect(path)
    cursor = src.execute(f"SELECT {', '.join(cols)} FROM {TABLE}")
    copy = sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv)").format(sql.Identifier(schema, TABLE))
    with conn, conn.cursor() as cur:
        while rows := cursor.fetchmany(batch):
            buf = io.StringIO()
            csv.writer(buf).writerows(rows)
            buf.seek(0)
            cur.copy_expert(copy.as_string(cur), buf)


def seed_upsert(path: Path, dsn: str, schema: str, batch: int) -> None:
    """The seed script's approach with execute_batch: INSERT ... ON CONFLICT DO UPDATE every row."""
    conn = psycopg2.connect(dsn)
    cols = _columns(path)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
            (schema, TABLE),
        )
        exists = cur.fetchone() is not None
    conn.commit()
    if not exists:
        _create_target(conn, path, schema, with_key=True)
    statement = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v}) ON CONFLICT ({k}) DO UPDATE SET {s}").format(
        t=sql.Identifier(schema, TABLE),
        c=sql.SQL(", ").join(map(sql.Identifier, cols)),
        v=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        k=sql.Identifier(cols[0]),
        s=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols[1:]),
    )
    src = sqlite3.connect(path)
    cursor = src.execute(f"SELECT {', '.join(cols)} FROM {TABLE}")
    with conn, conn.cursor() as cur:
        text = statement.as_string(cur)
        while rows := cursor.fetchmany(batch):
            psycopg2.extras.execute_batch(cur, text, rows, page_size=1000)


def ours(
    path: Path,
    dsn: str,
    schema: str,
    batch: int,
    full_refresh: bool = False,
    arrow: bool = True,
    cursor: bool = False,
    verify: bool = False,
    indexes: bool = True,
) -> float:
    """Our engine on the table; returns the engine's own duration (snapshot open excluded)."""
    global child_peak_kb
    conn = psycopg2.connect(dsn)
    with SqliteSnapshot(path, arrow=arrow) as snap:
        options = SyncOptions(
            batch_size=batch,
            full_refresh=full_refresh,
            delete_orphans=True,
            cursor_columns={TABLE: "updated_at"} if cursor else {},
            verify=verify,
            indexes=indexes,
        )
        result = sync_table(snap, conn, snap.table(TABLE), schema, options)
        child_peak_kb = (snap.arrow.peak_rss_kb() or 0) if snap.arrow is not None else 0
    return result.duration_s


def ours_no_indexes(path: Path, dsn: str, schema: str, batch: int) -> float:
    """SYNC_INDEXES=0: what building SQLite's indexes (the demo has two on the table) adds to a first load."""
    return ours(path, dsn, schema, batch, indexes=False)


def ours_full_refresh(path: Path, dsn: str, schema: str, batch: int) -> float:
    return ours(path, dsn, schema, batch, full_refresh=True)


def ours_verify(path: Path, dsn: str, schema: str, batch: int) -> float:
    """A verify sync (engine/verify.py): every row compared with PostgreSQL, what differs repaired."""
    return ours(path, dsn, schema, batch, verify=True)


def ours_exact(path: Path, dsn: str, schema: str, batch: int) -> float:
    return ours(path, dsn, schema, batch, arrow=False)


def ours_cursor(path: Path, dsn: str, schema: str, batch: int) -> float:
    return ours(path, dsn, schema, batch, cursor=True)


def dagster_run(path: Path, dsn: str, schema: str, batch: int) -> float:
    """The same sync as a Dagster materialization in process: what the run adds around the engine."""
    from dagster import AssetKey, DagsterInstance, materialize

    from sync_pipeline.assets import OP_NAME, build_sync_assets
    from sync_pipeline.engine import list_tables
    from sync_pipeline.resources import PostgresTarget, SQLiteSource
    from sync_pipeline.translator import SqliteTableTranslator

    tables = [t for t in list_tables(path) if t.name == TABLE]
    result = materialize(
        [build_sync_assets(tables, SqliteTableTranslator(pg_schema=schema))],
        instance=DagsterInstance.ephemeral(),
        resources={"sqlite": SQLiteSource(path=str(path)), "postgres": PostgresTarget(conn_str=dsn, pg_schema=schema)},
        run_config={"ops": {OP_NAME: {"config": {"batch_size": batch, "delete_orphans": True}}}},
    )
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(TABLE)]
    return float(event.materialization.metadata["duration_s"].value)  # type: ignore[union-attr]


def duckdb_available() -> str | None:
    """Why the DuckDB peer cannot run (None: it can). It is the optional ``bench`` extra:
    ``.venv/bin/pip install -e '.[bench]'``."""
    for module in ("duckdb", "duckdb_extension_sqlite_scanner", "duckdb_extension_postgres_scanner"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (.venv/bin/pip install -e '.[bench]')"
    return None


def _duckdb_extension(module: str) -> Path:
    """The extension file a ``duckdb-extension-*`` wheel ships, loaded by path: no download, offline."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.submodule_search_locations
    (found,) = Path(spec.submodule_search_locations[0]).glob("extensions/*/*.duckdb_extension")
    return found


def duckdb_load(path: Path, dsn: str, schema: str, batch: int, indexes: bool = False) -> float:
    """What a data engineer tries first: DuckDB attaches both, ``CREATE TABLE AS SELECT``, then the
    primary key (DuckDB's postgres_scanner creates none), and with ``indexes`` the table's two SQLite
    indexes, as our default SYNC_INDEXES=1 builds them. A table already there is dropped first: the
    second run of this scenario is DuckDB's full reload."""
    import duckdb

    con = duckdb.connect()
    for module in ("duckdb_extension_sqlite_scanner", "duckdb_extension_postgres_scanner"):
        con.execute(f"LOAD '{_duckdb_extension(module)}'")
    quoted = {name: str(value).replace("'", "''") for name, value in (("sqlite", path), ("pg", dsn))}
    con.execute(f"ATTACH '{quoted['sqlite']}' AS sq (TYPE sqlite, READ_ONLY)")  # ATTACH takes no parameters
    con.execute(f"ATTACH '{quoted['pg']}' AS pg (TYPE postgres)")
    started = time.perf_counter()
    con.execute(f"DROP TABLE IF EXISTS pg.{schema}.{TABLE}")
    con.execute(f"CREATE TABLE pg.{schema}.{TABLE} AS SELECT * FROM sq.{TABLE}")
    con.execute(f"CALL postgres_execute('pg', 'ALTER TABLE {schema}.{TABLE} ADD PRIMARY KEY (result_id)')")
    for column in ("experiment_id", "updated_at") if indexes else ():
        con.execute(f"CALL postgres_execute('pg', 'CREATE INDEX ON {schema}.{TABLE} ({column})')")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def duckdb_load_indexed(path: Path, dsn: str, schema: str, batch: int) -> float:
    return duckdb_load(path, dsn, schema, batch, indexes=True)


SCENARIOS = {
    f.__name__: f
    for f in (
        floor_copy,
        seed_upsert,
        ours,
        ours_no_indexes,
        ours_full_refresh,
        ours_verify,
        ours_exact,
        ours_cursor,
        dagster_run,
        duckdb_load,
        duckdb_load_indexed,
    )
}


def child(name: str, path: str, dsn: str, schema: str, batch: int) -> None:
    started = time.perf_counter()
    engine = SCENARIOS[name](Path(path), dsn, schema, batch)
    elapsed = time.perf_counter() - started
    report = {"seconds": elapsed, "engine_s": engine, "peak_rss_mb": peak_rss_kb() / 1024}
    print(json.dumps({**report, "child_peak_rss_mb": child_peak_kb / 1024}))


def peak_rss_kb() -> int:
    """This process's own peak RSS. Not getrusage's ru_maxrss: Linux carries that over fork and
    exec, so a child would report the parent's peak (the parent has just mutated a big file)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: the best there is


# --- edits for the change scenarios (untimed, made in the parent between syncs) ------------


def _edit(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(statement, params)
    finally:
        conn.close()


def append_1pct(path: Path, rows: int) -> None:
    """New rows at the end of the key order: copies of the first 1% under new keys."""
    _edit(
        path,
        f"INSERT INTO {TABLE} SELECT result_id + (SELECT max(result_id) FROM {TABLE}), experiment_id, narrative_id, "
        f"label, confidence, tokens_in, tokens_out, latency_ms, output, created_at, updated_at FROM {TABLE} "
        "ORDER BY result_id LIMIT ?",
        (rows // 100,),
    )


def delete_10_middle(path: Path, rows: int) -> None:
    _edit(
        path,
        f"DELETE FROM {TABLE} WHERE result_id IN (SELECT result_id FROM {TABLE} ORDER BY result_id LIMIT 10 OFFSET ?)",
        (rows // 2,),
    )


def update_newest_1pct(path: Path, rows: int) -> None:
    _edit(
        path,
        f"UPDATE {TABLE} SET label = 'newest', confidence = confidence / 2 "
        f"WHERE result_id > (SELECT max(result_id) FROM {TABLE}) - ?",
        (rows // 100,),
    )


def update_scattered_1pct(path: Path, rows: int) -> None:
    """Every 100th key: 1% of the rows, spread over the whole table."""
    _edit(path, f"UPDATE {TABLE} SET label = 'scattered', confidence = confidence / 3 WHERE result_id % 100 = 37")


CHANGES = {
    "no change": None,
    "append 1%": append_1pct,
    "delete 10 in the middle": delete_10_middle,
    "update the newest 1%": update_newest_1pct,
    "update 1% scattered": update_scattered_1pct,
}


# --- the parent: runs scenarios, measures the server side, prints the table ----------------


class Server:
    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True

    def value(self, query: str, params: tuple[object, ...] = ()) -> object:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone()[0]

    def writes(self, schema: str) -> int:
        self.value("SELECT pg_stat_clear_snapshot()")
        found = self.value(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s AND relname = %s",
            (schema, TABLE),
        )
        return int(found)  # type: ignore[arg-type]


def run(server: Server, name: str, path: Path, dsn: str, schema: str, batch: int) -> dict[str, float]:
    """One scenario in a child process, with the server-side costs it caused."""
    # Untimed: no checkpoint or autovacuum left over from the previous scenario runs during this one.
    with server.conn.cursor() as cur:
        cur.execute("VACUUM")
        cur.execute("CHECKPOINT")
    writes_before = server.writes(schema)
    lsn_before = server.value("SELECT pg_current_wal_lsn()")
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, str(path), dsn, schema, str(batch)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    wal = server.value("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn_before,))
    time.sleep(0.6)  # the child's backend publishes its statistics as it exits
    report["wal_mb"] = float(wal) / 1024**2  # type: ignore[arg-type]
    report["rows_written"] = server.writes(schema) - writes_before
    return report


def floor_psql(path: Path, dsn: str, schema: str) -> dict[str, float] | None:
    """The floor the issue names: sqlite3's CSV output piped into psql's \\copy."""
    if not (shutil.which("sqlite3") and shutil.which("psql")):
        return None
    conn = psycopg2.connect(dsn)
    _create_target(conn, path, schema, with_key=False)
    conn.close()
    cols = ", ".join(_columns(path))
    started = time.perf_counter()
    subprocess.run(
        f'sqlite3 -csv "{path}" "SELECT {cols} FROM {TABLE}" | '
        f'psql -q "{dsn}" -c "\\copy {schema}.{TABLE} FROM STDIN WITH (FORMAT csv)"',
        shell=True,
        check=True,
    )
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=SyncOptions().batch_size)
    parser.add_argument(
        "--dsn", default=os.environ.get("PG_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--skip-seed", action="store_true", help="skip the slow seed upsert")
    parser.add_argument(
        "--ours-only", action="store_true", help="only the psql floor and our engine (e.g. for memory at 10M rows)"
    )
    parser.add_argument(
        "--changes", action="store_true", help="only the psql floor and full scans after each kind of change (issue 12)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="only the psql floor, a first load and verify syncs of the unchanged rows (issue 25: at most 1.2x the "
        "first load)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="the floor, DuckDB (first load with the key, full reload) and our first load and no-change sync, "
        "in 3 alternating rounds, medians (issue 28; DuckDB from the optional bench extra)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--peers: rounds")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, path, dsn, schema, batch = args.child
        child(name, path, dsn, schema, int(batch))
        return

    DATA_DIR.mkdir(exist_ok=True)
    base = DATA_DIR / f"demo_{args.rows}.sqlite"
    if not base.exists():
        generate(base, rows=args.rows)
    changed = DATA_DIR / f"demo_{args.rows}_changed.sqlite"
    if not (args.changes or args.verify or args.peers):
        shutil.copy(base, changed)
        mutate(changed, 1.0)

    admin = Server(args.dsn)
    admin.value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (BENCH_DB,))
    with admin.conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BENCH_DB)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BENCH_DB)))
    dsn = _dsn_for(args.dsn, BENCH_DB)
    server = Server(dsn)
    with server.conn.cursor() as cur:
        for name in ("floor_psql", "floor_copy", "seed", "ours", "noidx", "exact", "cursor", "dagster"):
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))

    if args.peers:
        _peers(server, base, dsn, args.batch_size, args.rounds, args.rows)
        _drop(server, admin)
        return
    rows: list[tuple[str, dict[str, float]]] = []
    psql_floor = floor_psql(base, dsn, "floor_psql")
    if psql_floor:
        rows.append(("floor: sqlite3 CSV piped into psql \\copy", psql_floor))
    if not (args.ours_only or args.changes or args.verify):
        floor_copy_row = run(server, "floor_copy", base, dsn, "floor_copy", 10_000)
        rows.append(("floor: Python copy_expert from sqlite3", floor_copy_row))
    if not (args.skip_seed or args.ours_only or args.changes or args.verify):
        rows.append(("seed upsert (execute_batch): first load", run(server, "seed_upsert", base, dsn, "seed", 1000)))
        rows.append(("seed upsert (execute_batch): no change", run(server, "seed_upsert", base, dsn, "seed", 1000)))
        rows.append(
            ("seed upsert (execute_batch): 1% upd + 1% new", run(server, "seed_upsert", changed, dsn, "seed", 1000))
        )
    b = args.batch_size
    if args.verify:
        first = run(server, "ours", base, dsn, "ours", b)
        rows.append(("ours: first load", first))
        for attempt in (1, 2):  # twice: the first verify after a load also meets its fresh table's state
            verified = run(server, "ours_verify", base, dsn, "ours", b)
            rows.append((f"ours: verify, no change ({attempt})", verified))
        _print(rows, args.rows, b)
        print(f"\nverify / first load (engine s): {verified['engine_s'] / first['engine_s']:.2f}")
        _drop(server, admin)
        return
    if args.changes:
        work = DATA_DIR / f"demo_{args.rows}_work.sqlite"
        shutil.copy(base, work)
        rows.append(("ours: first load", run(server, "ours", work, dsn, "ours", b)))
        for label, change in CHANGES.items():
            if change is not None:
                change(work, args.rows)
            rows.append((f"ours, full scan (delete_orphans): {label}", run(server, "ours", work, dsn, "ours", b)))
        work.unlink()
        _print(rows, args.rows, b)
        _drop(server, admin)
        return
    rows.append(("ours: first load", run(server, "ours", base, dsn, "ours", b)))
    rows.append(("ours: no change (delete_orphans)", run(server, "ours", base, dsn, "ours", b)))
    rows.append(("ours: 1% upd + 1% new (delete_orphans)", run(server, "ours", changed, dsn, "ours", b)))
    rows.append(("ours, SYNC_INDEXES=0: first load", run(server, "ours_no_indexes", base, dsn, "noidx", b)))
    rows.append(("ours, SYNC_INDEXES=0: no change", run(server, "ours_no_indexes", base, dsn, "noidx", b)))
    rows.append(("ours: full_refresh", run(server, "ours_full_refresh", changed, dsn, "ours", b)))
    if not args.ours_only:
        rows.append(("ours, exact path only (no Arrow): first load", run(server, "ours_exact", base, dsn, "exact", b)))
        rows.append(("ours, exact path only (no Arrow): no change", run(server, "ours_exact", base, dsn, "exact", b)))
    rows.append(("ours, cursor on updated_at: first load", run(server, "ours_cursor", base, dsn, "cursor", b)))
    rows.append(("ours, cursor on updated_at: no change", run(server, "ours_cursor", base, dsn, "cursor", b)))
    rows.append(("ours, cursor on updated_at: 1% upd + 1% new", run(server, "ours_cursor", changed, dsn, "cursor", b)))
    if not args.ours_only:
        for scenario in ("first load", "no change"):
            label = f"Dagster materialization in process: {scenario}"
            rows.append((label, run(server, "dagster_run", base, dsn, "dagster", b)))

    _print(rows, args.rows, b)
    _drop(server, admin)


DUCK_FIRST = "DuckDB: CREATE TABLE AS, then ADD PRIMARY KEY"
DUCK_INDEXED = "DuckDB: the same, then SQLite's two indexes"
OURS_FIRST = "ours: first load, engine duration_s"
OURS_BARE = "ours, SYNC_INDEXES=0: first load, engine duration_s"


def _peers(server: Server, base: Path, dsn: str, b: int, rounds: int, count: int) -> None:
    """Alternating rounds, each on fresh schemas, so a slow minute of the machine hits every approach."""
    missing = duckdb_available()
    if missing:
        print(f"DuckDB peer skipped: {missing}")
    times: dict[str, list[float]] = {}
    for n in range(1, rounds + 1):
        with server.conn.cursor() as cur:
            for name in (f"floor_{n}", f"duck_{n}", f"duckidx_{n}", f"ours_{n}", f"noidx_{n}"):
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        measured = {"floor: sqlite3 CSV piped into psql \\copy": (floor_psql(base, dsn, f"floor_{n}") or {})}
        if not missing:
            for label in (DUCK_FIRST, "DuckDB: full reload (drop, create, key)"):
                measured[label] = run(server, "duckdb_load", base, dsn, f"duck_{n}", b)
            measured[DUCK_INDEXED] = run(server, "duckdb_load_indexed", base, dsn, f"duckidx_{n}", b)
        first = run(server, "ours", base, dsn, f"ours_{n}", b)
        measured["ours: first load, whole child process"] = first
        measured[OURS_FIRST] = {"seconds": first["engine_s"]}
        # DuckDB makes the key only, as this does: SQLite's two other indexes of the table are not built.
        bare = run(server, "ours_no_indexes", base, dsn, f"noidx_{n}", b)
        measured[OURS_BARE] = {"seconds": bare["engine_s"]}
        again = run(server, "ours", base, dsn, f"ours_{n}", b)
        measured["ours: no change, engine duration_s"] = {"seconds": again["engine_s"]}
        for label, report in measured.items():
            if "seconds" in report:
                times.setdefault(label, []).append(report["seconds"])
        print(f"round {n}: " + ", ".join(f"{label} {r.get('seconds', 0):.2f}" for label, r in measured.items()))
    floor = statistics.median(times["floor: sqlite3 CSV piped into psql \\copy"])
    print(f"\nnarrative_results, {count:,} rows, batch_size {b:,}; median of {rounds} alternating rounds\n")
    print("| approach | " + " | ".join(f"round {n}" for n in range(1, rounds + 1)) + " | median s | x floor |")
    print("|---|" + "---|" * rounds + "---|---|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {median:.2f} | {median / floor:.2f} |")
    # Like for like: the same PostgreSQL table at the end (the key only, or the key and SQLite's indexes).
    for ours_label, duck_label in ((OURS_BARE, DUCK_FIRST), (OURS_FIRST, DUCK_INDEXED)):
        if duck_label in times:
            ratio = statistics.median(times[ours_label]) / statistics.median(times[duck_label])
            print(f"\n{ours_label} / {duck_label}: {ratio:.2f}")


def _print(rows: list[tuple[str, dict[str, float]]], count: int, b: int) -> None:
    floor = rows[0][1]["seconds"]
    print(f"\nnarrative_results, {count:,} rows, batch_size {b:,}; floor = {rows[0][0]}\n")
    print("| approach | time s | x floor | engine s | WAL MB | rows written | peak RSS MB | Arrow child peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        written = r.get("rows_written", float("nan"))
        engine = r.get("engine_s")
        child_mb = r.get("child_peak_rss_mb", 0.0)
        print(
            f"| {label} | {r['seconds']:.2f} | {r['seconds'] / floor:.2f} | "
            f"{'' if engine is None else f'{engine:.2f}'} | {r.get('wal_mb', float('nan')):.1f} "
            f"| {written:,.0f} | {r['peak_rss_mb']:.0f} | {f'{child_mb:.0f}' if child_mb else ''} |"
        )


def _drop(server: Server, admin: Server) -> None:
    server.conn.close()
    with admin.conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BENCH_DB)))


if __name__ == "__main__":
    main()
