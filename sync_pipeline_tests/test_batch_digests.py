"""A full-scan sync sends only the batches whose digest differs from what the last sync sent.

A table read in the order of its integer key is cut into key ranges (change_detection.py), so a
row inserted or deleted changes its own batch only; other tables are cut by position. Every
test checks PostgreSQL against SQLite afterwards: skipping a batch is only right if PostgreSQL
still holds exactly those rows.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid

import psycopg2
import psycopg2.extensions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg2 import sql

from sync_pipeline.engine import SyncError, SyncOptions, reader, sync_table
from sync_pipeline.engine.change_detection import plan
from sync_pipeline.engine.errors import OrphanDeletionRefused
from sync_pipeline.engine.sqlite_source import ColumnInfo, SqliteSnapshot, TableInfo
from sync_pipeline.engine.types import pg_type_for

from .conftest import pg_rows, query, sqlite_rows, sync_all

BATCH = 500


def _execute(path, statement: str, params: tuple[object, ...] = ()) -> int:
    conn = sqlite3.connect(path)
    try:
        with conn:
            return conn.execute(statement, params).rowcount
    finally:
        conn.close()


def _synced(demo_db, pg_dsn, schema, **options):
    results = sync_all(demo_db, pg_dsn, schema, batch_size=BATCH, **options)
    for table in results:
        assert pg_rows(pg_dsn, schema, table) == sqlite_rows(demo_db, table)
    return results


def test_a_sync_without_changes_sends_no_batch(demo_db, pg_dsn, schema):
    _synced(demo_db, pg_dsn, schema)
    again = _synced(demo_db, pg_dsn, schema, delete_orphans=True)
    for result in again.values():
        assert result.rows_skipped == result.rows_processed == result.sqlite_rows > 0
        assert result.rows_changed == 0


def _sent(result) -> int:
    return result.rows_processed - result.rows_skipped


def test_one_changed_row_sends_only_that_row(demo_db, pg_dsn, schema):
    """Its batch's digest changed, and of that batch only the row whose hash is new is sent (row_digests.py)."""
    _synced(demo_db, pg_dsn, schema)
    _execute(demo_db, "UPDATE narrative_results SET label = 'changed' WHERE result_id = 1700")
    result = _synced(demo_db, pg_dsn, schema)["narrative_results"]
    assert (result.rows_updated, result.rows_inserted) == (1, 0)
    assert _sent(result) == 1


def test_rows_deleted_mid_table_resend_only_their_batch_and_leave_no_orphan(demo_db, pg_dsn, schema):
    _synced(demo_db, pg_dsn, schema)
    assert _execute(demo_db, "DELETE FROM narrative_results WHERE result_id BETWEEN 1700 AND 1709") == 10
    result = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert result.rows_deleted == 10 and result.rows_changed == 10
    # By position, every batch after row 1700 would have shifted and been sent again (1300 rows). By key,
    # one batch changed, and every row left in it is one PostgreSQL has: nothing is sent, and the orphans
    # are found among the SQLite keys of that batch's range alone.
    assert _sent(result) == 0


def test_rows_inserted_mid_table_and_appended_resend_only_their_batches(demo_db, pg_dsn, schema):
    _synced(demo_db, pg_dsn, schema)
    _execute(demo_db, "DELETE FROM narrative_results WHERE result_id = 1200")
    _synced(demo_db, pg_dsn, schema, delete_orphans=True)
    _execute(demo_db, "INSERT INTO narrative_results (result_id, experiment_id, narrative_id) VALUES (1200, 1, 1)")
    _execute(demo_db, "INSERT INTO narrative_results (result_id, experiment_id, narrative_id) VALUES (9000, 1, 1)")
    result = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert (result.rows_inserted, result.rows_deleted) == (2, 0)
    assert _sent(result) == 2


def test_orphans_a_sync_kept_are_deleted_later_even_where_nothing_changed(demo_db, pg_dsn, schema):
    """A sync without delete_orphans leaves rows SQLite no longer has; the digests it records then do
    not describe PostgreSQL exactly, so a later delete_orphans must search every key range."""
    _synced(demo_db, pg_dsn, schema)
    _execute(demo_db, "DELETE FROM narrative_results WHERE result_id = 100")
    kept = sync_all(demo_db, pg_dsn, schema, batch_size=BATCH)["narrative_results"]
    assert kept.rows_deleted == 0 and kept.pg_rows_after == kept.sqlite_rows + 1
    _execute(demo_db, "DELETE FROM narrative_results WHERE result_id = 2900")
    result = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert result.rows_deleted == 2 and result.pg_rows_after == result.sqlite_rows


def test_the_digests_of_one_read_path_or_batch_size_never_excuse_another(demo_db, pg_dsn, schema):
    _synced(demo_db, pg_dsn, schema)
    exact = _synced(demo_db, pg_dsn, schema, arrow=False)["narrative_results"]
    assert exact.read_path == "exact" and exact.rows_skipped == 0 and exact.rows_changed == 0
    resized = sync_all(demo_db, pg_dsn, schema, arrow=False, batch_size=BATCH + 1)["narrative_results"]
    assert resized.rows_skipped == 0 and resized.rows_changed == 0


def test_a_failed_sync_leaves_the_digests_of_the_last_good_one(demo_db, pg_dsn, schema):
    _synced(demo_db, pg_dsn, schema)
    _execute(demo_db, "UPDATE narrative_results SET tokens_in = 'many' WHERE result_id = 10")
    with pytest.raises(SyncError, match="tokens_in"):
        sync_all(demo_db, pg_dsn, schema, batch_size=BATCH, strict_types=True)
    _execute(demo_db, "UPDATE narrative_results SET tokens_in = 5 WHERE result_id = 10")
    result = _synced(demo_db, pg_dsn, schema)["narrative_results"]
    assert result.rows_updated == 1 and _sent(result) == 1


@pytest.mark.parametrize("arrow", [True, False])
def test_scattered_updates_send_only_the_rows_that_changed(demo_db, pg_dsn, schema, arrow):
    """One row in 50 updated, in every batch: every batch changed, and only the updated rows are sent."""
    _synced(demo_db, pg_dsn, schema, arrow=arrow)
    updated = _execute(demo_db, "UPDATE narrative_results SET tokens_in = tokens_in + 1 WHERE result_id % 50 = 7")
    _execute(demo_db, "DELETE FROM narrative_results WHERE result_id % 500 = 11")
    result = _synced(demo_db, pg_dsn, schema, arrow=arrow, delete_orphans=True)["narrative_results"]
    assert result.read_path == ("arrow" if arrow else "exact")
    assert result.rows_updated == updated > 0 and result.rows_deleted > 0
    assert _sent(result) == updated


def _row_digests(pg_dsn, schema, table) -> list[tuple[int, str]]:
    return query(
        pg_dsn,
        "SELECT batch_id, digest FROM sqlite_pg_sync._sps_row_digests WHERE target_schema = %s AND table_name = %s "
        "ORDER BY batch_id",
        (schema, table),
    )


def test_row_hashes_are_trusted_only_for_the_batch_they_were_taken_of(demo_db, pg_dsn, schema):
    """Hashes kept for another content of the batch (here: their batch digest altered) never hold a row
    back: the changed batch is sent whole."""
    _synced(demo_db, pg_dsn, schema)
    kept = _row_digests(pg_dsn, schema, "narrative_results")
    assert len(kept) > 1
    query(pg_dsn, "UPDATE sqlite_pg_sync._sps_row_digests SET digest = 'other' WHERE target_schema = %s", (schema,))
    _execute(demo_db, "UPDATE narrative_results SET label = 'changed' WHERE result_id = 1700")
    result = _synced(demo_db, pg_dsn, schema)["narrative_results"]
    assert result.rows_updated == 1 and _sent(result) > 1
    # The batch sent has its hashes again, taken of its new content; the others' stay as they were.
    now = dict(_row_digests(pg_dsn, schema, "narrative_results"))
    assert sorted(now) == [b for b, _ in kept] and sum(d != "other" for d in now.values()) == 1


def test_digests_an_earlier_version_kept_cost_one_full_resend_that_rewrites_nothing(demo_db, pg_dsn, schema):
    """An upgrade that changes how digests are taken (batch digests, or row hashes of text lines where
    binary tuples are hashed now) sends every batch once, rewrites no row, and then sends only changes."""
    _synced(demo_db, pg_dsn, schema)
    # What the last version left: other batch digests, and row hashes stored untagged (of text lines).
    query(
        pg_dsn,
        "UPDATE sqlite_pg_sync._sps_table_state SET batches = jsonb_set(batches, '{digests}', "
        "(SELECT jsonb_object_agg(k, 'v2-' || v) FROM jsonb_each_text(batches -> 'digests') AS e(k, v))) "
        "WHERE target_schema = %s AND batches IS NOT NULL",
        (schema,),
    )
    query(
        pg_dsn,
        "UPDATE sqlite_pg_sync._sps_row_digests SET digest = 'v2-' || substr(digest, 8) WHERE target_schema = %s",
        (schema,),
    )
    upgraded = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert upgraded.copy_format == "binary" and upgraded.rows_skipped == 0
    assert upgraded.rows_updated == upgraded.rows_inserted == upgraded.rows_deleted == 0
    again = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert again.rows_skipped == again.sqlite_rows
    updated = _execute(demo_db, "UPDATE narrative_results SET tokens_in = tokens_in + 1 WHERE result_id % 50 = 7")
    changed = _synced(demo_db, pg_dsn, schema, delete_orphans=True)["narrative_results"]
    assert changed.rows_updated == updated and _sent(changed) == updated


def test_a_table_of_one_or_two_batches_keeps_no_row_hashes(tmp_path, pg_dsn, schema):
    db = tmp_path / "small.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO small VALUES (?, ?)", [(i, str(i)) for i in range(2 * BATCH)])
    conn.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO big VALUES (?, ?)", [(i, str(i)) for i in range(2 * BATCH + 1)])
    conn.commit()
    conn.close()
    sync_all(db, pg_dsn, schema, batch_size=BATCH)
    assert _row_digests(pg_dsn, schema, "small") == [] and len(_row_digests(pg_dsn, schema, "big")) >= 2


def _synced_t(db, pg_dsn, schema, key: str, rows: int) -> sqlite3.Connection:
    """Table ``t`` (``id <key>, v TEXT``) of ``rows`` rows, synced; its connection, left open for changes."""
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE t (id {key}, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(rows)])
    conn.commit()
    sync_all(db, pg_dsn, schema, batch_size=BATCH)
    return conn


def test_a_table_read_by_position_sends_only_changed_rows_and_finds_its_orphans(tmp_path, pg_dsn, schema):
    """A key that is not the rowid: batches by position, so a delete shifts every later batch; the rows
    that moved into another batch are sent again, the others held back, and orphans found among all keys."""
    db = tmp_path / "p.sqlite"
    conn = _synced_t(db, pg_dsn, schema, "INT PRIMARY KEY", 5000)
    conn.execute("UPDATE t SET v = 'new' WHERE id % 100 = 3")
    conn.execute("DELETE FROM t WHERE id = 250")
    conn.commit()
    conn.close()
    result = sync_all(db, pg_dsn, schema, batch_size=BATCH, delete_orphans=True)["t"]
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")
    assert (result.rows_updated, result.rows_deleted) == (50, 1)
    # Each batch after the delete begins one row later: its first row was the last of the batch before.
    assert _sent(result) <= 50 + 5000 // BATCH


def test_an_unchanged_batch_never_leaves_the_arrow_child(demo_db, pg_dsn, schema, monkeypatch):
    """The child takes each batch's digest and keeps a batch whose digest is the last sync's: a no-change
    sync moves digests through the pipe, not the table's COPY text."""
    from sync_pipeline.engine import arrow_child

    _synced(demo_db, pg_dsn, schema)
    received: list[int] = []
    frame = arrow_child.ArrowChild._frame

    def counting(self: arrow_child.ArrowChild) -> tuple[bytes, int, int, bytes, str, bytes]:
        kind, rows, batch_id, payload, digest, ends = frame(self)
        received.append(len(payload) + len(ends))
        return kind, rows, batch_id, payload, digest, ends

    monkeypatch.setattr(arrow_child.ArrowChild, "_frame", counting)
    result = _synced(demo_db, pg_dsn, schema)["narrative_results"]
    assert result.read_path == "arrow" and result.rows_skipped == result.sqlite_rows
    assert sum(received) < 100 * len(received)  # digests (32 bytes) and frame ends only, no batch data
    _execute(demo_db, "UPDATE narrative_results SET tokens_in = tokens_in + 1 WHERE result_id = 10")
    received.clear()
    changed = _synced(demo_db, pg_dsn, schema)["narrative_results"]
    assert changed.rows_updated == 1 and max(received) > 1000  # the changed batch did cross


@pytest.mark.parametrize(
    ("declared", "before", "after"),
    [("INTEGER", None, 0), ("INTEGER", 0, None), ("TEXT", None, ""), ("TEXT", "", None), ("REAL", 0.0, None)],
)
def test_a_null_becoming_a_value_or_a_value_becoming_null_is_never_taken_for_unchanged(
    tmp_path, pg_dsn, schema, declared, before, after
):
    # Digests on the Arrow path are of Arrow buffers, where a NULL's slot holds a filler: the null
    # positions are part of the digest, so NULL and 0 (or '') never look alike.
    db = tmp_path / "n.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {declared})")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, before if i == 3 else i) for i in range(1, 6)])
    conn.commit()
    assert sync_all(db, pg_dsn, schema, batch_size=BATCH)["t"].read_path == "arrow"
    conn.execute("UPDATE t SET v = ? WHERE id = 3", (after,))
    conn.commit()
    conn.close()

    result = sync_all(db, pg_dsn, schema, batch_size=BATCH)["t"]

    assert (result.read_path, result.rows_updated, result.rows_skipped) == ("arrow", 1, 0)
    assert [v for k, v in pg_rows(pg_dsn, schema, "t") if k == 3] == [after]


@pytest.mark.parametrize(
    "create",
    [
        "CREATE TABLE t (id INTEGER PRIMARY KEY DESC, v TEXT)",  # no rowid alias: any value, even NULL keys
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID",
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
    ],
)
def test_an_integer_key_that_is_not_the_rowid_may_hold_anything_and_still_syncs(tmp_path, pg_dsn, schema, create):
    db = tmp_path / "k.sqlite"
    conn = sqlite3.connect(db)
    conn.execute(create)
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2.5, "b"), ("x", "c"), (2**40, "d")])
    conn.commit()
    first = sync_all(db, pg_dsn, schema, batch_size=2)["t"]
    conn.execute("DELETE FROM t WHERE id = 2.5")
    conn.commit()
    conn.close()
    again = sync_all(db, pg_dsn, schema, batch_size=2, delete_orphans=True)["t"]
    assert first.pg_rows_after == 4 and again.rows_deleted == 1
    assert set(pg_rows(pg_dsn, schema, "t")) == {("1", "a"), ("x", "c"), (str(2**40), "d")}


def test_keys_too_sparse_for_small_ranges_are_read_by_position():
    """A million keys in a row and one far-off key: ranges wide enough to keep the batch count sane
    would put every row into one batch, so the rows are cut by position instead."""
    key = ColumnInfo(name="id", declared_type="INTEGER", not_null=False, pk_position=1, pg_type=pg_type_for("INTEGER"))
    table = TableInfo(name="t", columns=(key,), primary_key=("id",), without_rowid=False, rowid_key=True)
    assert plan(table, 10_000, 1_000_001, (1, 2**63 - 1), None).by_key is False
    assert plan(table, 10_000, 1_000_000, (1, 1_000_000), None).by_key is True


_KEYS = {
    "dense": st.integers(1, 60),
    "sparse": st.integers(-(2**63), 2**63 - 1),
    "mixed": st.one_of(st.integers(-50, 50), st.sampled_from([-(2**63), 2**62, 2**63 - 1, 2**40])),
}
_EDIT = st.one_of(
    # Text PostgreSQL stores as it is (a NUL byte would be repaired, see test_messy_types.py).
    st.tuples(
        st.just("upsert"),
        st.integers(),
        st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=5) | st.none(),
    ),
    st.tuples(st.just("delete"), st.integers(), st.integers(0, 60)),
)


@settings(
    max_examples=int(os.environ.get("SPS_DIGEST_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), keys=st.sampled_from(sorted(_KEYS)))
def test_change_detection_never_misses_a_change(data, keys, pg_dsn, tmp_path_factory):
    """Random inserts, updates and deletes anywhere (single rows and runs of keys), each round synced
    with random options: the mirror is always SQLite's rows exactly (with delete_orphans) or SQLite's
    rows plus only rows SQLite once had (without), whatever the batches and rows skipped (row_digests.py:
    tables of more than two batches, which batch sizes of 2 and 7 give)."""
    db = tmp_path_factory.mktemp("cd") / "t.sqlite"
    schema = f"cd_{uuid.uuid4().hex[:10]}"
    query(pg_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn = sqlite3.connect(db)
    # The rowid (batches by key) or another integer key (batches by position).
    conn.execute(
        f"CREATE TABLE t (id {data.draw(st.sampled_from(['INTEGER', 'INT']), label='key')} PRIMARY KEY, v TEXT)"
    )
    ever: set[int] = set()
    key = _KEYS[keys]
    # Kept for the whole example: the last sync's digests apply only to a read made the same way.
    arrow = data.draw(st.booleans(), label="arrow")
    batch = data.draw(st.sampled_from([2, 7, 50]), label="batch_size")
    try:
        for _ in range(data.draw(st.integers(2, 6), label="rounds")):
            for op, number, arg in data.draw(st.lists(_EDIT, max_size=12), label="edits"):
                ids = [k for (k,) in conn.execute("SELECT id FROM t ORDER BY id")]
                if op == "upsert":
                    k = data.draw(key) if not ids or number % 2 else ids[number % len(ids)]
                    conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (k, arg))
                    ever.add(k)
                elif ids:  # a run of up to ``arg`` neighbouring keys from a random position
                    start = number % len(ids)
                    conn.executemany("DELETE FROM t WHERE id = ?", [(k,) for k in ids[start : start + arg + 1]])
            conn.commit()
            orphans = data.draw(st.booleans(), label="delete_orphans")
            source = set(sqlite_rows(db, "t"))
            try:
                result = sync_all(db, pg_dsn, schema, arrow=arrow, batch_size=batch, delete_orphans=orphans)["t"]
            except OrphanDeletionRefused:
                assert not source  # emptying the mirror takes full_refresh
                continue
            mirror = set(pg_rows(pg_dsn, schema, "t"))
            if orphans or not ever:
                assert mirror == source
            else:
                assert source <= mirror and {k for k, _ in mirror - source} <= ever - {k for k, _ in source}
            assert result.pg_rows_after == len(mirror)
    finally:
        conn.close()


def test_row_hashes_hold_back_only_lines_the_batch_had_and_never_one_of_two_alike():
    from sync_pipeline.engine.row_digests import RowDigests

    first = RowDigests({})
    assert first.changed_lines(0, None, "d0", b"1\ta\n2\tb\n3\tc\n") == (b"1\ta\n2\tb\n3\tc\n", 3)
    again = RowDigests(dict(first.taken))
    text, sent = again.changed_lines(0, "d0", "d1", b"1\ta\n2\tB\n3\tc\n4\td\n")
    assert (sorted(text.splitlines()), sent, again.held_back) == ([b"2\tB", b"4\td"], 2, 2)
    # Hashes taken of another content of the batch (another digest) hold nothing back.
    other = RowDigests(dict(first.taken))
    assert other.changed_lines(0, "not d0", "d1", b"1\ta\n2\tb\n")[1] == 2
    # Two lines with one hash: the set of hashes could not tell them apart, so the batch goes whole.
    alike = RowDigests(dict(first.taken))
    assert alike.changed_lines(0, "d0", "d2", b"1\ta\n1\ta\n2\tb\n") == (b"1\ta\n1\ta\n2\tb\n", 3)


def test_row_hashes_of_binary_tuples_hold_back_unchanged_tuples_and_never_meet_hashes_of_text_lines():
    import struct

    from sync_pipeline.engine.copy_format import BinaryRows
    from sync_pipeline.engine.row_digests import RowDigests

    def tuples(*rows: bytes) -> BinaryRows:
        data = b"".join(struct.pack(">hi", 1, len(r)) + r for r in rows)
        return BinaryRows(data, struct.pack(f"{len(rows)}q", *[6 + len(r) for r in rows]))

    first = RowDigests({})
    sent = tuples(b"a", b"bb", b"c")
    assert first.changed_lines(0, None, "d0", sent) == (sent.data, 3)
    again = RowDigests(dict(first.taken))
    data, count = again.changed_lines(0, "d0", "d1", tuples(b"a", b"BB", b"c", b"d"))
    assert (sorted([data[:8], data[8:]]), count, again.held_back) == (
        sorted([tuples(b"BB").data, tuples(b"d").data]),
        2,
        2,
    )
    # Hashes of text lines (what an earlier version kept, or a text COPY) never hold a tuple back, nor the
    # reverse, even for rows whose bytes are alike: the batch goes whole, once.
    text = RowDigests({})
    text.changed_lines(0, None, "d0", b"1\n")
    assert RowDigests(dict(text.taken)).changed_lines(0, "d0", "d1", BinaryRows(b"1", struct.pack("q", 1)))[1] == 1
    assert RowDigests(dict(first.taken)).changed_lines(0, "d0", "d1", sent.data[:7] + b"\n")[1] == 1


STAGING_WORDS = ("_sps_stage", "COPY", "_sps_attempt")  # the stage, a COPY, the Arrow path's savepoint


class _RecordingCursor(psycopg2.extensions.cursor):
    def execute(self, query, vars=None):
        self.connection.statements.append(query if isinstance(query, str) else query.as_string(self))
        return super().execute(query, vars)

    def copy_expert(self, sql, file, size=8192):
        self.connection.statements.append(sql)
        return super().copy_expert(sql, file, size)


class _Recording(psycopg2.extensions.connection):
    """Every statement its cursors send, COPY included."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.statements: list[str] = []

    def cursor(self, *args, **kwargs):
        kwargs.setdefault("cursor_factory", _RecordingCursor)
        return super().cursor(*args, **kwargs)


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "exact"])
def test_an_unchanged_table_costs_no_stage_no_copy_and_no_savepoint_of_its_own(demo_db, pg_dsn, schema, arrow):
    """In a file of many tables most are unchanged at each sync: creating and dropping a temporary
    stage for each (catalog churn) and an empty COPY would be most of their round trips."""
    _synced(demo_db, pg_dsn, schema, arrow=arrow)  # batch digests hold for one read path only
    _execute(demo_db, "UPDATE narrative_results SET label = 'changed' WHERE result_id = 1700")
    conn = psycopg2.connect(pg_dsn, connection_factory=_Recording)
    sent: dict[str, list[str]] = {}
    try:
        with SqliteSnapshot(demo_db, arrow=arrow) as snapshot:
            for table in snapshot.tables():
                conn.statements.clear()
                result = sync_table(snapshot, conn, table, schema, SyncOptions(batch_size=BATCH, delete_orphans=True))
                assert result.rows_changed == (1 if table.name == "narrative_results" else 0)
                sent[table.name] = [
                    s for s in conn.statements if "_sps_stage" in s or "COPY" in s or "_sps_attempt" in s
                ]
    finally:
        conn.close()
    assert sent.pop("narrative_results")  # the one changed table is staged and copied
    assert sent == {name: [] for name in sent} and len(sent) >= 2
    for table in ("narrative_results", *sent):
        assert pg_rows(pg_dsn, schema, table) == sqlite_rows(demo_db, table)


def test_a_key_range_gone_whole_is_deleted_although_no_row_is_sent(tmp_path, pg_dsn, schema):
    """Every batch left is unchanged, so there is no stage to compare against until the orphan search
    needs one: the rows of the vanished range must still go."""
    db = tmp_path / "gone.sqlite"
    conn = _synced_t(db, pg_dsn, schema, "INTEGER PRIMARY KEY", 4096)
    conn.execute("DELETE FROM t WHERE id BETWEEN 1024 AND 1279")  # one range of 256 keys (BATCH 500: shift 8)
    conn.commit()
    conn.close()
    result = sync_all(db, pg_dsn, schema, batch_size=BATCH, delete_orphans=True)["t"]
    assert (_sent(result), result.rows_deleted) == (0, 256)
    assert pg_rows(pg_dsn, schema, "t") == sqlite_rows(db, "t")


def test_a_read_slower_than_the_peek_copies_as_before_and_stays_exact(demo_db, pg_dsn, schema, monkeypatch):
    """A big unchanged table is not read to its end before the COPY starts (the transaction would sit
    idle meanwhile): past ``PEEK_S`` the stage and an empty COPY are made as before, with the same result."""
    _synced(demo_db, pg_dsn, schema, arrow=False)
    produce = reader._QueueStream.produce

    def slow(self):
        time.sleep(0.3)
        produce(self)

    monkeypatch.setattr(reader, "PEEK_S", 0.05)
    monkeypatch.setattr(reader._QueueStream, "produce", slow)
    conn = psycopg2.connect(pg_dsn, connection_factory=_Recording)
    try:
        with SqliteSnapshot(demo_db, arrow=False) as snapshot:
            table = snapshot.table("narrative_results")
            result = sync_table(snapshot, conn, table, schema, SyncOptions(batch_size=BATCH, delete_orphans=True))
    finally:
        conn.close()
    assert result.rows_changed == 0 and _sent(result) == 0
    assert any("CREATE TEMP TABLE" in s for s in conn.statements) and any("COPY" in s for s in conn.statements)
    assert pg_rows(pg_dsn, schema, "narrative_results") == sqlite_rows(demo_db, "narrative_results")
