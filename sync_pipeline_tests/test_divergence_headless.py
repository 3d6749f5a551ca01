"""The engine's ways to report success while PostgreSQL differs, each driven through the headless command.

Each case syncs a small file, changes it the way that once went unwritten or was refused, and syncs again:
PostgreSQL must end equal to SQLite, or the sync must fail naming table, column or keys and leave it as it was.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sync_pipeline.cli import EXIT_CHECK_FAILED, EXIT_FAILED, EXIT_OK

from .conftest import query
from .test_cli import cli_env, run_cli  # noqa: F401 - the fixture, for the tests below

# column -> (pin, value synced first, value after, how PostgreSQL reads the new one back)
CASES = {
    "d": (None, 0.0, -0.0, "-0"),  # BLOB affinity keeps the sign, in double precision; = says 0 = -0
    "z": (None, -0.0, 0.0, "0"),
    "i": ("interval", "24 hours", "1 day", "1 day"),  # interval's = says they are equal
    "n": ("numeric", "2", "2.0", "2.0"),  # numeric's = ignores the scale; the text read by PostgreSQL
    "p": ("numeric", "5", "19.99", "19.99"),  # a text price pinned to numeric
    "b": ("boolean", "false", "true", "true"),
}


def _file(path: Path, ddl: str, rows: list[tuple[object, ...]]) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(ddl)
        conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.close()
    return path


def _execute(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, params)
    conn.close()


def test_values_that_only_read_differently_are_written(cli_env, tmp_path, schema, pg_dsn):  # noqa: F811
    columns = ", ".join(f"{c} BLOB" for c in CASES)
    path = _file(
        tmp_path / "t.sqlite",
        f"CREATE TABLE t (id INTEGER PRIMARY KEY, {columns})",
        [(1, *(case[1] for case in CASES.values()))],
    )
    env = {
        **cli_env,
        "SQLITE_PATH": str(path),
        "SYNC_COLUMN_TYPES": ",".join(f"t.{c}={pin}" for c, (pin, *_) in CASES.items() if pin),
    }
    first = run_cli(env)
    assert first.returncode in (EXIT_OK, EXIT_CHECK_FAILED), (
        first.stderr
    )  # 3: d and z are double precision, not BLOB's bytea
    _execute(path, f"UPDATE t SET {', '.join(f'{c} = ?' for c in CASES)}", tuple(case[2] for case in CASES.values()))

    again = run_cli(env)

    assert again.returncode in (EXIT_OK, EXIT_CHECK_FAILED), again.stderr
    (row,) = query(pg_dsn, f'SELECT {", ".join(f"{c}::text" for c in CASES)} FROM "{schema}".t')
    assert dict(zip(CASES, row, strict=True)) == {c: case[3] for c, case in CASES.items()}


def test_two_sqlite_keys_that_would_become_one_fail_naming_both_and_change_nothing(
    cli_env,  # noqa: F811 - the fixture imported above
    tmp_path,
    schema,
    pg_dsn,
):
    path = _file(tmp_path / "k.sqlite", "CREATE TABLE t (k BLOB PRIMARY KEY, v TEXT)", [(1152921504606847200, "int")])
    env = {**cli_env, "SQLITE_PATH": str(path), "BATCH_SIZE": "1"}  # the new key in a batch of its own
    assert run_cli(env).returncode in (EXIT_OK, EXIT_CHECK_FAILED)
    before = query(pg_dsn, f'SELECT k::text, v FROM "{schema}".t ORDER BY 1')
    _execute(path, "INSERT INTO t VALUES (?, 'real')", (2.0**60 + 256,))

    done = run_cli(env)

    assert done.returncode == EXIT_FAILED
    assert "1152921504606847200 (integer)" in done.stderr and "1.1529215046068472e+18 (real)" in done.stderr
    assert query(pg_dsn, f'SELECT k::text, v FROM "{schema}".t ORDER BY 1') == before


def test_a_pinned_value_postgresql_cannot_read_fails_naming_column_and_key(
    cli_env,  # noqa: F811 - the fixture imported above
    tmp_path,
    schema,
    pg_dsn,
):
    path = _file(tmp_path / "p.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, price TEXT)", [(1, "19.99")])
    env = {**cli_env, "SQLITE_PATH": str(path), "SYNC_COLUMN_TYPES": "t.price=numeric"}
    assert run_cli(env).returncode == EXIT_OK
    _execute(path, "INSERT INTO t VALUES (2, 'n/a')")

    done = run_cli(env)

    assert done.returncode == EXIT_FAILED
    assert "price" in done.stderr and "id=2" in done.stderr
    assert query(pg_dsn, f'SELECT id, price::text FROM "{schema}".t') == [(1, "19.99")]
