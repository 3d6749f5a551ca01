"""The Arrow read path: taken where it is exact, handing the table to the exact path otherwise.

Every test here compares what PostgreSQL holds with what SQLite holds (or with what the exact
path loads from the same file), so a value changed on the way fails it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from sync_pipeline.demo import generate
from sync_pipeline.engine import SqliteSnapshot, SyncError, SyncOptions, sqlite_source, sync_table
from sync_pipeline.engine.arrow_child import ArrowChild
from sync_pipeline.engine.arrow_reader import arrow_chunks
from sync_pipeline.engine.change_detection import Batching

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
    assert {(r.read_path, r.copy_format) for r in fast.values()} == {("arrow", "binary")}
    assert {(r.read_path, r.copy_format) for r in exact.values()} == {("exact", "text")}
    for table in fast:
        assert pg_rows(pg_dsn, schema, table) == pg_rows(pg_dsn, other_schema, table) == sqlite_rows(db, table)
    again = sync_all(db, pg_dsn, schema, delete_orphans=True)
    assert all(r.rows_changed == 0 and r.read_path == "arrow" for r in again.values())


def test_every_type_binary_copy_carries_loads_what_the_exact_path_loads(tmp_path, pg_dsn, schema, other_schema):
    """Binary COPY has no types: each value must be sent as its column's. Integers in a text and in a real
    column, booleans, a blob column of NULLs, doubles at their edges, text of every kind."""
    edges = [0.0, -0.0, float("inf"), float("-inf"), 1e308, 5e-324, 2.0**53, 0.1]
    texts = ["", "tab\tnew\nline\\", "é ✓ 🦆", "\\N", None, "x" * 5000]
    rows = [
        (i, i % 2 if i % 5 else None, 10**15 + i, i if i % 3 else None, edges[i % 8], None, texts[i % 6])
        for i in range(1, 3001)
    ]
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, b BOOLEAN, n_text TEXT, n_real REAL, d REAL, blob BLOB, s TEXT)"
    db = _db(tmp_path / "b.sqlite", ddl, rows, 7)
    fast = sync_all(db, pg_dsn, schema)["t"]
    exact = sync_all(db, pg_dsn, other_schema, arrow=False)["t"]
    assert (fast.read_path, fast.copy_format, exact.copy_format) == ("arrow", "binary", "text")
    assert pg_rows(pg_dsn, schema, "t") == pg_rows(pg_dsn, other_schema, "t") == sqlite_rows(db, "t")


def test_a_column_the_mirror_keeps_wider_sends_its_table_as_text(tmp_path, pg_dsn, schema):
    """numeric has no binary encoding here: a mirror holding one gets COPY text, and exact values."""
    db = generate(tmp_path / "demo.sqlite", rows=3000, seed=5)
    sync_all(db, pg_dsn, schema)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(f'ALTER TABLE "{schema}".narrative_results ALTER tokens_in TYPE numeric')
    conn.close()
    with sqlite3.connect(db) as src:
        src.execute("UPDATE narrative_results SET tokens_in = tokens_in + 1 WHERE result_id % 7 = 0")
    src.close()
    result = sync_all(db, pg_dsn, schema)["narrative_results"]
    assert (result.read_path, result.copy_format, result.rows_updated) == ("arrow", "text", 3000 // 7)
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(db, "narrative_results")


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
        # A blob in a TEXT column: SQLite keeps it a blob; the driver would pass its bytes as text.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            [(1, "a"), (2, "b"), (3, b"abc")],
            None,
            "exact encoder",
        ),
        # A STRICT table's ANY column keeps a real as a real, whatever its name says elsewhere.
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v ANY) STRICT",
            [(1, "a"), (2, 0.1 + 0.2)],
            [(1, "a"), (2, "0.30000000000000004")],
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
    tmp_path, pg_dsn, schema, other_schema, ddl, rows, loaded, reason
):
    db = _db(tmp_path / "m.sqlite", ddl, rows, 2)
    (result,) = sync_all(db, pg_dsn, schema, batch_size=2).values()
    assert result.read_path == "exact"
    assert reason in result.arrow_refused
    if loaded is None:  # what the exact path alone loads
        sync_all(db, pg_dsn, other_schema, arrow=False)
        loaded = pg_rows(pg_dsn, other_schema, "t")
    assert sorted(pg_rows(pg_dsn, schema, "t"), key=repr) == sorted(loaded, key=repr)


def test_the_guard_flags_exactly_the_rows_the_driver_would_convert(tmp_path):
    """Each row holding a blob in any of several TEXT columns, a real or a blob in a column of another
    affinity mapped to text, or a double past 2**53 read as an integer, and no other row."""
    from sync_pipeline.engine.arrow_reader import _guard

    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b VARCHAR(9), c CLOB, d DATETIME, r REAL, n)"
    rows = [
        (1, "x", "y", "z", "2025-01-01", 1.5, "text"),
        (2, b"x", "y", "z", None, 2, 3),  # flagged: a blob in a
        (3, "x", "y", b"z", None, None, None),  # flagged: a blob in c
        (4, 1, 2.5, None, "d", 2**60, None),  # numbers in TEXT columns become text; REAL reads reals
        (5, None, None, None, 0.5, None, None),  # flagged: a real in d
        (6, None, None, None, None, None, 0.5),  # flagged: a real in the typeless n
        (7, None, b"", None, None, None, None),  # flagged: an empty blob in b
    ]
    db = _db(tmp_path / "g.sqlite", ddl, rows, 7)
    with SqliteSnapshot(db, arrow=False) as snapshot:
        guard = _guard(snapshot.table("t"))
        flagged = [i for (i,) in snapshot.conn.execute(f"SELECT id FROM t WHERE {guard}")]
    assert flagged == [2, 3, 5, 6, 7]


def test_with_strict_types_a_blob_in_a_text_column_is_refused_by_name_not_passed_as_text(tmp_path, pg_dsn, schema):
    db = _db(tmp_path / "b.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [(1, "a"), (2, b"abc")], 2)
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema, strict_types=True)
    assert "column 'v'" in str(failure.value) and "(id=2)" in str(failure.value)


def test_with_strict_types_a_value_postgres_refuses_rolls_arrow_back_and_is_named_by_the_exact_path(
    tmp_path, pg_dsn, schema
):
    db = _db(tmp_path / "n.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, ok BOOLEAN)", [(1, 1), (2, 0)], 2)
    sync_all(db, pg_dsn, schema)
    before = pg_rows(pg_dsn, schema, "t")
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO t VALUES (3, 0), (4, 2)")  # 2 is not a boolean: PostgreSQL refuses it
    conn.commit()
    conn.close()
    with pytest.raises(SyncError) as failure:
        sync_all(db, pg_dsn, schema, strict_types=True)
    assert "column 'ok'" in str(failure.value) and "(id=4)" in str(failure.value)
    assert pg_rows(pg_dsn, schema, "t") == before == [(1, True), (2, False)]


def _arrow_text(arrow: ArrowChild, query: str, params: tuple[object, ...] = ()) -> bytes:
    """``query`` (one bigint column, then the guard) read through an Arrow child as COPY text."""
    return b"".join(chunk or b"" for chunk, _, _, _ in arrow.query(query, params, ["bigint"], 100))


def test_every_reader_of_a_snapshot_sees_the_same_state_even_when_a_writer_commits_while_they_open(
    tmp_path, monkeypatch
):
    """The sqlite3 and Arrow readers of each parallel worker must agree, whatever commits meanwhile."""
    db = _db(tmp_path / "w.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY)", [(1,)], 1)
    sqlite3.connect(db).execute("PRAGMA journal_mode=wal").close()
    writer = sqlite3.connect(db, isolation_level=None)
    begun = ArrowChild.begun
    calls = iter(range(100))

    def begun_then_commit(self: ArrowChild, *args: object) -> bool:
        ok = begun(self, *args)
        call = next(calls)
        if call in (1, 4):  # during the first two attempts (three readers each), a writer commits
            writer.execute("INSERT INTO t VALUES (?)", (call + 10,))
        return ok

    monkeypatch.setattr(ArrowChild, "begun", begun_then_commit)
    with SqliteSnapshot(db, readers=3) as snapshot:
        writer.execute("INSERT INTO t VALUES (100)")  # after the snapshot: seen by none of them
        assert len(snapshot.views) == 2
        for reader in (snapshot, *snapshot.views):
            assert reader.conn.execute("SELECT count(*) FROM t").fetchone()[0] == 3
            assert reader.arrow is not None
            assert _arrow_text(reader.arrow, "SELECT count(*), 0 FROM t") == b"3\n"
    # The two racing attempts were discarded, and the third found no commit in its bracket.
    assert next(calls) == 9
    writer.close()


def _children() -> set[int]:
    """Our child processes still alive or unreaped (zombies included)."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == me:
                found.add(int(entry.name))
    return found


def test_each_arrow_reader_is_a_process_of_its_own_and_leaves_no_process_or_descriptor_behind(demo_db):
    """The syncing process never loads the driver's SQLite: only its children open the file with it."""
    fds_before, children_before = len(os.listdir("/proc/self/fd")), _children()
    with SqliteSnapshot(demo_db, readers=2) as snapshot:
        readers = [snapshot.arrow, snapshot.views[0].arrow]
        assert all(isinstance(r, ArrowChild) for r in readers)
        pids = {r.pid for r in readers}  # type: ignore[union-attr]
        assert len(pids) == 2 and pids <= _children() - children_before
        for pid in pids:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "adbc_driver_sqlite" in maps and "libsqlite3" not in maps
        assert "adbc_driver_sqlite" not in Path("/proc/self/maps").read_text()
    assert _children() == children_before
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_reader_started_ahead_is_the_snapshots_and_one_never_taken_is_gone_at_exit(demo_db, tmp_path):
    from sync_pipeline.engine import arrow_child

    children_before = _children()
    arrow_child.prestart(demo_db)
    (spare,) = _children() - children_before
    with SqliteSnapshot(demo_db, readers=2) as snapshot:
        pids = {snapshot.arrow.pid, snapshot.views[0].arrow.pid}  # type: ignore[union-attr]
        assert spare in pids and len(pids) == 2
    assert _children() == children_before
    # A process that started one and never opened a snapshot leaves no reader behind.
    script = "import sys; from pathlib import Path; from sync_pipeline.engine import arrow_child; "
    script += "arrow_child.prestart(Path(sys.argv[1])); print(next(iter(arrow_child._SPARES.values())).pid)"
    out = subprocess.run([sys.executable, "-c", script, str(demo_db)], capture_output=True, text=True, check=True)
    assert not Path(f"/proc/{int(out.stdout)}").exists()


def test_an_abandoned_stream_kills_its_child_and_the_rest_of_the_run_reads_the_exact_path(demo_db, pg_dsn, schema):
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db) as snapshot:
            table = snapshot.table("narrative_results")
            child = snapshot.arrow
            assert child is not None
            chunks = arrow_chunks(snapshot, table, Batching(100))
            assert next(chunks)[1] == 100
            chunks.close()  # what the reader does when the COPY failed midway
            assert snapshot.arrow is None and not child.usable
            assert child.pid not in _children()  # killed and reaped
            result = sync_table(snapshot, conn, table, schema, SyncOptions(batch_size=500))
    finally:
        conn.close()
    assert result.read_path == "exact" and result.arrow_refused == ""  # no Arrow reader to try
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")


def test_a_child_that_dies_hands_its_table_to_the_exact_path_saying_so(demo_db, pg_dsn, schema):
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(demo_db) as snapshot:
            assert snapshot.arrow is not None
            pid = snapshot.arrow.pid
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                time.sleep(0.01)  # dead, not yet reaped
            table = snapshot.table("narrative_results")
            result = sync_table(snapshot, conn, table, schema, SyncOptions(batch_size=500))
            assert snapshot.arrow is None
    finally:
        conn.close()
    assert result.read_path == "exact"
    assert result.arrow_refused == "the Arrow reader is gone (its process was killed by SIGKILL)"
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")


def test_watermarks_of_every_storage_class_reach_the_child_unchanged(tmp_path):
    values = [(1, 5), (2, 2.5), (3, "m"), (4, "z"), (5, b"\x01"), (6, None), (7, -(2**63)), (8, float("inf"))]
    db = _db(tmp_path / "p.sqlite", "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", values, 2)
    source = sqlite3.connect(db)
    with SqliteSnapshot(db) as snapshot:
        assert snapshot.arrow is not None
        for watermark in (5, 2.5, 0.1 + 0.2, "m", b"\x00", -(2**63), float("-inf")):
            (expected,) = source.execute("SELECT count(*) FROM t WHERE v >= ?", (watermark,)).fetchone()
            got = _arrow_text(snapshot.arrow, "SELECT count(*), 0 FROM t WHERE v >= ?", (watermark,))
            assert got == f"{expected}\n".encode(), watermark
    source.close()


def test_auto_starts_arrow_readers_only_for_files_worth_a_process(demo_db, monkeypatch):
    with SqliteSnapshot(demo_db, arrow="auto") as snapshot:
        assert snapshot.arrow is None  # 3000 rows: far below ARROW_AUTO_MIN_BYTES
    monkeypatch.setattr(sqlite_source, "ARROW_AUTO_MIN_BYTES", demo_db.stat().st_size)
    with SqliteSnapshot(demo_db, arrow="auto") as snapshot:
        assert snapshot.arrow is not None
    with SqliteSnapshot(demo_db, arrow=False) as snapshot:
        assert snapshot.arrow is None
