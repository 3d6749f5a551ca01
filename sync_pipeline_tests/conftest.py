"""Real servers only: PG_TEST_DSN names one; without it the embedded PostgreSQL is started.

Each test session works in a database of its own (created and dropped here), and each test
in a schema of its own, so runs never see each other's tables.

Hermetic: the user's settings (SQLITE_PATH, PG_CONN_STR, SYNC_*, DAGSTER_HOME...) are taken out of the
environment for the session (``pytest_configure``, so before any test module imports the definitions),
and ``SPS_DEFS_ONLY`` makes ``sync_pipeline.definitions`` load only the project's own instance, not the
ones a user added under ``sync_pipeline/defs/``. Commands that read ``.env`` from their working directory
(``dagster dev``, ``dagster asset materialize``, ``dg``) are started outside the checkout.
"""

from __future__ import annotations

import io
import os
import sqlite3
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline.engine import SqliteSnapshot, SyncOptions, TableSyncResult, sync_table
from sync_pipeline.engine.bookkeeping import DEFAULT_STATE_SCHEMA, forget
from sync_pipeline.engine.sqlite_source import quote_sqlite_identifier

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

# The user's settings, which would point tests at their files, databases or Dagster instance.
USER_SETTINGS = (
    "SQLITE_PATH",
    "PG_CONN_STR",
    "PG_SCHEMA",
    "PG_STATE_SCHEMA",
    "FULL_REFRESH",
    "DELETE_ORPHANS",
    "BATCH_SIZE",
    "DAGSTER_HOME",
)
ONLY_DEFS_ENV = "SPS_DEFS_ONLY"  # read by sync_pipeline/defs_builder.py
PROJECT_DEFS = "sqlite_pg_sync"
_USER_ENV: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Take the user's settings out of the environment for the session (PG_TEST_DSN stays: it names the
    test server). Here rather than in a fixture: test modules import the definitions at collection."""
    for name in list(os.environ):
        if name in USER_SETTINGS or name.startswith("SYNC_"):
            _USER_ENV[name] = os.environ.pop(name)
    _USER_ENV.setdefault(ONLY_DEFS_ENV, os.environ.get(ONLY_DEFS_ENV))
    os.environ[ONLY_DEFS_ENV] = PROJECT_DEFS


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back as it was."""
    for name, value in _USER_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _with_dbname(dsn: str, dbname: str) -> str:
    params = psycopg2.extensions.parse_dsn(dsn)
    params["dbname"] = dbname
    return psycopg2.extensions.make_dsn(**params)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    dsn = os.environ.get("PG_TEST_DSN")
    if dsn:
        yield dsn
        return
    from sync_pipeline.embedded_pg import embedded_dsn

    # Not under pytest's basetemp: a concurrent pytest session prunes old basetemps, which
    # would delete a running server's data directory.
    yield embedded_dsn(Path(tempfile.mkdtemp(prefix="sps-test-pg-")) / "pgdata", cleanup_mode="delete")


@contextmanager
def scratch_database(server_dsn: str, prefix: str) -> Iterator[str]:
    """A database created for the block and dropped after it (its sessions ended first); its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture(scope="session")
def pg_dsn(server_dsn: str) -> Iterator[str]:
    """A database of this test session's own."""
    with scratch_database(server_dsn, "sps_test") as name:
        yield _with_dbname(server_dsn, name)


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(pg_dsn)
    try:
        yield conn
    finally:
        conn.close()


def drop_schema(dsn: str, name: str, state_schema: str = DEFAULT_STATE_SCHEMA) -> None:
    """Drop a test's target schema, and what the state schema keeps about it (rows, sequences):
    the state schema is shared by every test of the session."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            forget(cur, name, state_schema)
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
    finally:
        conn.close()


@contextmanager
def _new_schema(dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    query(dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        drop_schema(dsn, name)


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    with _new_schema(pg_dsn) as name:
        yield name


@pytest.fixture
def other_schema(pg_dsn: str) -> Iterator[str]:
    """A second empty schema, for comparing two syncs of the same file."""
    with _new_schema(pg_dsn) as name:
        yield name


@pytest.fixture
def wal_db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL file with table t and its open writer, which keeps commits in the -wal file."""
    path = tmp_path / "w.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # keep commits in the -wal file, as a busy app would
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    yield path, writer
    writer.close()


@pytest.fixture
def demo_db(tmp_path: Path) -> Path:
    return generate(tmp_path / "demo.sqlite", rows=3000, seed=7)


def sync_all(path: Path, dsn: str, schema: str, arrow: bool = True, **options: object) -> dict[str, TableSyncResult]:
    """Sync every table of a file with the engine alone, on a fresh connection."""
    conn = psycopg2.connect(dsn)
    try:
        with SqliteSnapshot(path, arrow=arrow) as snapshot:
            results = {
                t.name: sync_table(snapshot, conn, t, schema, SyncOptions(**options))  # type: ignore[arg-type]
                for t in snapshot.tables()
            }
        flush_stats(conn)
        return results
    finally:
        conn.close()


def flush_stats(conn: psycopg2.extensions.connection) -> None:
    """Make this backend publish its table statistics now (they are otherwise sent lazily).

    The flush happens when the backend goes idle after the forcing transaction, which is
    before the server answers the COMMIT.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT pg_stat_force_next_flush()")
    conn.commit()


def _in_stable_order(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    # Sorted in Python: SQLite's BINARY collation and PostgreSQL's locale order text differently.
    return sorted(rows, key=repr)


def sqlite_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return _in_stable_order(conn.execute(f"SELECT * FROM {quote_sqlite_identifier(table)}").fetchall())
    finally:
        conn.close()


def pg_rows(dsn: str, schema: str, table: str) -> list[tuple[object, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table)))
            rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in cur.fetchall()]
        return _in_stable_order(rows)
    finally:
        conn.close()


def query(dsn: str, statement: sql.Composable | str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on a connection of its own (committed, then closed); rows if any."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def table_write_stats(dsn: str, schema: str, table: str) -> tuple[int, int, int]:
    """(n_tup_ins, n_tup_upd, n_tup_del) as the statistics system has them right now."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = %s",
                (schema, table),
            )
            row = cur.fetchone()
            return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
    finally:
        conn.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str, schema: str) -> Path:
    """A DAGSTER_HOME of the test's own, and the environment the headless command reads (for ``headless``)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    text = (PROJECT_ROOT / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(text.replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PG_CONN_STR", pg_dsn)
    monkeypatch.setenv("PG_SCHEMA", schema)
    monkeypatch.setenv("SYNC_SENSOR", "off")
    return home


def headless(**request: object) -> tuple[int, str, str]:
    """``python -m sync_pipeline sync`` in this process, with the definitions built from the environment now:
    (exit code, stdout, stderr)."""
    from sync_pipeline.cli import SyncRequest, sync
    from sync_pipeline.defs_builder import project_definitions

    out, err = io.StringIO(), io.StringIO()
    code = sync(SyncRequest(**request), out=out, err=err, defs=project_definitions())  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()
