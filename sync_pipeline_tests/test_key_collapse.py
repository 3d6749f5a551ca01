"""Distinct SQLite keys that one conversion makes one PostgreSQL key fail the sync, naming both, and
change nothing (keys.py); a key whose conversion is one to one costs no check at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg2
import pytest

from sync_pipeline.engine import SqliteSnapshot, SyncError, SyncOptions, sync_table

from .conftest import pg_rows, sync_all
from .test_batch_digests import _Recording

BIG = 1152921504606847200  # the numeric the real 2^60 + 256 converts to: '1.1529215046068472e+18'


def _file(path: Path, create: str, rows: list[tuple[object, ...]]) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute(create)
    _insert(conn, rows)
    return conn


def _insert(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    with conn:
        conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * len(rows[0]))})", rows)


@pytest.mark.parametrize("mode", [{}, {"cursor_columns": {"t": "n"}}], ids=["incremental", "cursor"])
def test_a_real_and_an_integer_that_become_one_numeric_fail_naming_both_and_change_nothing(
    tmp_path, pg_dsn, schema, other_schema, mode
):
    """The issue's case: SQLite compares 1152921504606847200 and the real 2^60 + 256 exactly (distinct);
    as numeric both are 1152921504606847200. Alone in its batch (batch_size 1) the new key's MERGE
    would overwrite the integer key's row, which its own batch, unchanged, never sends."""
    path = tmp_path / "k.sqlite"
    conn = _file(path, "CREATE TABLE t (k BLOB PRIMARY KEY, v TEXT, n INTEGER)", [(1, "one", 1), (BIG, "int", 2)])
    options = {"batch_size": 1, **mode}
    sync_all(path, pg_dsn, schema, **options)
    _insert(conn, [(2.0**60 + 256, "real", 3)])
    conn.close()
    before = pg_rows(pg_dsn, schema, "t")

    with pytest.raises(SyncError) as caught:
        sync_all(path, pg_dsn, schema, **options)
    assert f"two SQLite rows have the key (k='{BIG}')" in str(caught.value)
    assert f"(k=1.1529215046068472e+18 (real)) and (k={BIG} (integer))" in str(caught.value)
    assert pg_rows(pg_dsn, schema, "t") == before and len(before) == 2
    # Writing all rows anew hits PostgreSQL's primary key, which names the key.
    with pytest.raises(SyncError, match=rf"two rows share a primary key.*Key \(k\)=\({BIG}\)"):
        sync_all(path, pg_dsn, schema, full_refresh=True, **options)
    assert pg_rows(pg_dsn, schema, "t") == before
    with pytest.raises(SyncError, match=rf"two rows share a primary key.*Key \(k\)=\({BIG}\)"):
        sync_all(path, pg_dsn, other_schema, **options)  # the first load into a new table


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        # Two texts that differ only in an invalid byte: both 'caf' and U+FFFD.
        (
            "CAST(x'636166e9' AS TEXT)",
            "CAST(x'636166e8' AS TEXT)",
            ("x'636166e9' (text, not UTF-8)", "x'636166e8' (text, not UTF-8)"),
        ),
        # A blob and the text of its hex digits: the blob is repaired to that text.
        ("x'01'", "'\\x01'", ("x'01' (blob)", "'\\\\x01' (text)")),
        # A NUL byte is repaired to U+FFFD, which another text holds as it is.
        ("CAST(x'6100' AS TEXT)", "'a' || char(65533)", ("'a\\x00' (text)", "'a\ufffd' (text)")),
    ],
    ids=["invalid-utf8", "blob-beside-text", "nul"],
)
def test_keys_that_become_one_only_through_the_repair_fail_naming_both(tmp_path, pg_dsn, schema, first, second, named):
    path = tmp_path / "r.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (k PRIMARY KEY, v TEXT)")
    with conn:
        conn.execute(f"INSERT INTO t VALUES ({first}, 'first')")  # the test's own literals
    sync_all(path, pg_dsn, schema)
    with conn:
        conn.execute(f"INSERT INTO t VALUES ({second}, 'second')")
    conn.close()
    before = pg_rows(pg_dsn, schema, "t")

    with pytest.raises(SyncError, match="two SQLite rows have the key") as caught:
        sync_all(path, pg_dsn, schema)
    assert all(f"(k={shown})" in str(caught.value) for shown in named), str(caught.value)
    assert pg_rows(pg_dsn, schema, "t") == before and len(before) == 1


def test_a_pinned_key_type_whose_equality_is_coarser_than_sqlites_fails_naming_both(tmp_path, pg_dsn, schema):
    """'1 day' and '24 hours' are two texts in SQLite and one interval (by its ``=``) in PostgreSQL."""
    path = tmp_path / "p.sqlite"
    conn = _file(path, "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)", [("1 day", "day")])
    pins = {"t.k": "interval"}
    sync_all(path, pg_dsn, schema, column_types=pins)
    _insert(conn, [("24 hours", "hours")])
    conn.close()
    before = pg_rows(pg_dsn, schema, "t")

    with pytest.raises(SyncError, match=r"\(k='1 day' \(text\)\) and \(k='24 hours' \(text\)\)"):
        sync_all(path, pg_dsn, schema, column_types=pins)
    assert pg_rows(pg_dsn, schema, "t") == before


def _key_checks(path: Path, dsn: str, schema: str) -> tuple[list[str], list[str]]:
    """What a sync of table t that changes nothing does about its keys: (SQLite statements asking for
    storage classes, PostgreSQL statements on the key stage)."""
    sqlite_seen: list[str] = []
    pg = psycopg2.connect(dsn, connection_factory=_Recording)
    try:
        with SqliteSnapshot(path) as snapshot:
            snapshot.conn.set_trace_callback(sqlite_seen.append)
            (table,) = snapshot.tables()
            assert sync_table(snapshot, pg, table, schema, SyncOptions(batch_size=1)).rows_changed == 0
    finally:
        pg.close()
    return [s for s in sqlite_seen if "EXISTS" in s and "typeof" in s], [s for s in pg.statements if "_sps_keys" in s]


def test_only_keys_that_can_merge_are_checked_and_an_integer_primary_key_costs_nothing(
    tmp_path, pg_dsn, schema, other_schema
):
    rowid = tmp_path / "i.sqlite"
    _file(rowid, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [(i, str(i)) for i in range(5)]).close()
    sync_all(rowid, pg_dsn, schema, batch_size=1)
    assert _key_checks(rowid, pg_dsn, schema) == ([], [])

    # Integers and reals past 2^53 in a numeric key: every sync checks every key, changed or not.
    numeric = tmp_path / "n.sqlite"
    _file(numeric, "CREATE TABLE t (k BLOB PRIMARY KEY, v TEXT)", [(BIG, "int"), (2.0**60, "real")]).close()
    sync_all(numeric, pg_dsn, other_schema, batch_size=1)
    sqlite_checks, staged = _key_checks(numeric, pg_dsn, other_schema)
    assert len(sqlite_checks) == 1 and staged
