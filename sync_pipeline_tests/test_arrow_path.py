"""The Arrow read path: taken where it is exact, handing the table to the exact path otherwise.

Every test here compares what PostgreSQL holds with what SQLite holds (or with what the exact
path loads from the same file), so a value changed on the way fails it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sync_pipeline.demo import generate
from sync_pipeline.engine import SqliteSnapshot, SyncError, sqlite_source

from .conftest import pg_rows, sqlite_rows, sync_all


def _db(path: Path, ddl: str, rows: list[tuple[object, ...]], columns: int) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(ddl)
    conn.executemany(f"INSERT INTO t VALUES ({', '.join('?' * columns)})", rows)
    conn.commit()
    conn.close()
    return path


def test_demo_tables_take_the_arrow_path_and_load_what_the_exact_path_loads(tmp_path, pg_dsn, schema, other_schema):
    db = generate(tmp_path / "demo.sqlite", rows=3000, seed=11)
    fast = sync_all(db, pg_dsn, schema)
    exact = sync_all(db, pg_dsn, other_schema, arrow=False)
    assert {r.read_path for r in fast.values()} == {"arrow"}
    assert {r.read_path for r in exact.values()} == {"exact"}
    for table in fast:
        assert pg_rows(pg_dsn, schema, table) == pg_rows(pg_dsn, other_schema, table) == sqlite_rows(db, table)
    again = sync_all(db, pg_dsn, schema, delete_orphans=True)
    assert all(r.rows_changed == 0 and r.read_path == "arrow" for r in again.values())


def test_text_that_needs_escaping_goes_the_arrow_path_unchanged(tmp_path, pg_dsn, schema):
    values = ["tab\there", "new\nline", "back\\slash\\n", "cr\r", '"quoted"', "", "é ✓ 🦆", "\\N", None]
    db = _db(tmp_path / "e.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)", list(enumerate(values)), 2)
    (result,) = sync_all(db, pg_dsn, schema).values()
    assert result.read_path == "arrow"
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")


@pytest.mark.parametrize(
    ("ddl", "rows", "loaded", "reason"),
    [
        # A typeless column (text in PostgreSQL): a batch of integers, then text; the driver stops at the text.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v)",
            [(1, 1), (2, 2), (3, "three")],
            [(1, "1"), (2, "2"), (3, "three")],
            "Arrow reader stopped",
        ),
        # A real in a column that maps to text: only the exact encoder gives its shortest text.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v DATETIME)",
            [(1, "2025-01-01"), (2, 0.1 + 0.2)],
            [(1, "2025-01-01"), (2, "0.30000000000000004")],
            "exact encoder",
        ),
        # Blobs: the COPY text of bytea is the exact encoder's.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
            [(1, b"\x00\xff"), (2, None)],
            [(1, b"\x00\xff"), (2, None)],
            "reads as Arrow binary",
        ),
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
            [(1, None), (2, None), (3, b"\x00")],
            [(1, None), (2, None), (3, b"\x00")],
            "Arrow",
        ),
    ],
)
def test_values_the_arrow_path_cannot_send_exactly_go_to_the_exact_path(
    tmp_path, pg_dsn, schema, ddl, rows, loaded, reason
):
    db = _db(tmp_path / "m.sqlite", ddl, rows, 2)
    (result,) = sync_all(db, pg_dsn, schema, batch_size=2).values()
    assert result.read_path == "exact"
    assert reason in result.arrow_refused
    assert sorted(pg_rows(pg_dsn, schema, "t"), key=repr) == sorted(loaded, key=repr)


def test_a_blob_in_a_text_column_is_refused_by_name_not_passed_as_text(tmp_path, pg_dsn, schema):
    db = _db(tmp_path / "b.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [(1, "a"), (2, b"abc")], 2)
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema)
    assert "column 'v'" in str(failure.value) and "(id=2)" in str(failure.value)


def test_a_value_postgres_refuses_rolls_the_arrow_copy_back_and_is_named_by_the_exact_path(tmp_path, pg_dsn, schema):
    db = _db(tmp_path / "n.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, ok BOOLEAN)", [(1, 1), (2, 0)], 2)
    sync_all(db, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "t")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t VALUES (3, 0), (4, 2)")  # 2 is not a boolean: PostgreSQL refuses it
    conn.commit()
    conn.close()
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema)
    assert "column 'ok'" in str(failure.value) and "(id=4)" in str(failure.value)
    assert pg_rows(pg_dsn, schema, "t") == before == [(1, True), (2, False)]


def test_every_reader_of_a_snapshot_sees_the_same_state_even_when_a_writer_commits_while_they_open(
    tmp_path, monkeypatch
):
    """The sqlite3 and Arrow readers of each parallel worker must agree, whatever commits meanwhile."""
    db = _db(tmp_path / "w.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY)", [(1,)], 1)
    sqlite3.connect(db).execute("PRAGMA journal_mode=wal").close()
    writer = sqlite3.connect(db, isolation_level=None)
    opened = sqlite_source._open_arrow
    calls = iter(range(100))

    def open_then_commit(path: Path):
        arrow = opened(path)
        call = next(calls)
        if call in (1, 4):  # during the first two attempts (three readers each), a writer commits
            writer.execute("INSERT INTO t VALUES (?)", (call + 10,))
        return arrow

    monkeypatch.setattr(sqlite_source, "_open_arrow", open_then_commit)
    with SqliteSnapshot(db, readers=3) as snapshot:
        writer.execute("INSERT INTO t VALUES (100)")  # after the snapshot: seen by none of them
        assert len(snapshot.views) == 2
        for reader in (snapshot, *snapshot.views):
            assert reader.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 3
            assert reader.arrow is not None
            with reader.arrow.query("SELECT count(*) FROM t") as batches:
                assert batches.read_all().column(0)[0].as_py() == 3
    # The two racing attempts were discarded (a further one may be: a reader of a newer SQLite
    # version can touch the WAL index, which reads as a change; retrying then is only cautious).
    assert next(calls) >= 9
    writer.close()
