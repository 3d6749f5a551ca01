"""Files written by other applications: what they do that our own files never do.

Each test builds a file with the habit of a real application: a collation only that application
registers (Anki's ``unicase``), full-text and R-tree indexes beside the data.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from dagster import DagsterInstance

from sync_pipeline.engine.sqlite_source import list_tables

from .conftest import pg_rows, sync_all
from .test_dagster_assets import log_text, metadata_by_table, run_sync


def _unicase(a: str, b: str) -> int:
    return (a.casefold() > b.casefold()) - (a.casefold() < b.casefold())


def _app_collation_file(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.create_collation("unicase", _unicase)
    conn.executescript(
        """CREATE TABLE decks (id INTEGER PRIMARY KEY, name TEXT NOT NULL COLLATE unicase);
           CREATE UNIQUE INDEX idx_decks_name ON decks (name COLLATE "unicase");
           CREATE TABLE tags (tag TEXT NOT NULL PRIMARY KEY COLLATE unicase, usn INTEGER) WITHOUT ROWID;
           INSERT INTO decks (name) VALUES ('Default'), ('Ünï'), ('b');
           INSERT INTO tags VALUES ('A', 1), ('b', 2), ('ß', 3);"""
    )
    conn.commit()
    conn.close()
    return path


def test_plain_sqlite_cannot_read_a_table_whose_key_uses_an_app_only_collation(tmp_path):
    """The failure this guards against, as any reader without the application's collation meets it."""
    path = _app_collation_file(tmp_path / "app.sqlite")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="no such collation sequence: unicase"):
        conn.execute("SELECT count(*) FROM tags").fetchone()
    conn.close()


def _rows_as_the_app_reads_them(path: Path, table: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    conn.create_collation("unicase", _unicase)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        conn.close()


@pytest.mark.parametrize("arrow", [True, False], ids=["arrow", "exact"])
def test_tables_indexed_with_an_app_only_collation_sync_exactly(tmp_path, pg_dsn, schema, arrow):
    path = _app_collation_file(tmp_path / "app.sqlite")
    results = sync_all(path, pg_dsn, schema, arrow=arrow)
    assert {name: r.pg_rows_after for name, r in results.items()} == {"decks": 3, "tags": 3}
    for table in ("decks", "tags"):
        assert pg_rows(pg_dsn, schema, table) == _rows_as_the_app_reads_them(path, table)
    assert sync_all(path, pg_dsn, schema, arrow=arrow)["tags"].rows_changed == 0


def test_virtual_tables_and_views_are_not_assets_and_every_one_is_named_in_the_run_log(tmp_path, pg_dsn, schema):
    path = tmp_path / "fts.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
           CREATE VIRTUAL TABLE notes_fts USING fts5(body);
           CREATE VIRTUAL TABLE bounds USING rtree(id, minx, maxx);
           CREATE VIEW long_notes AS SELECT * FROM notes WHERE length(body) > 10;
           INSERT INTO notes VALUES (1, 'a note'), (2, 'another, longer note');
           INSERT INTO notes_fts (body) VALUES ('text only the index holds');
           INSERT INTO bounds VALUES (1, 0.5, 1.5);"""
    )
    conn.commit()
    conn.close()
    assert [t.name for t in list_tables(path)] == ["notes"]

    instance = DagsterInstance.ephemeral()
    result = run_sync(path, pg_dsn, schema, instance=instance)
    assert result.success and sorted(metadata_by_table(result)) == ["notes"]
    logs = log_text(instance, result)
    for skipped in (
        "notes_fts (virtual table)",
        "notes_fts_content (storage of a virtual table)",
        "bounds (virtual table)",
        "bounds_node (storage of a virtual table)",
        "long_notes (view)",
    ):
        assert skipped in logs
