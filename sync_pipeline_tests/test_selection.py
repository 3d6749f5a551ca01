"""Choosing what is mirrored: tables by glob (not assets when left out), columns never read."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from sync_pipeline.assets import build_sync_assets
from sync_pipeline.engine import list_tables
from sync_pipeline.engine.selection import Selection, SelectionError
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.translator import SqliteTableTranslator

from .conftest import query


def _file(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, password_hash TEXT);
           CREATE TABLE users_audit (id INTEGER PRIMARY KEY, note TEXT);
           CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
           CREATE TABLE tmp_scratch (x);
           INSERT INTO users VALUES (1, 'ann', 'ann@example.org', 'x1'), (2, 'bob', 'bob@example.org', 'x2');
           INSERT INTO orders VALUES (10, 1, 9.5);"""
    )
    conn.commit()
    conn.close()
    return path


def test_sync_tables_and_exclude_tables_decide_which_tables_are_assets(tmp_path):
    path = _file(tmp_path / "s.sqlite")
    script = (
        "import json; from sync_pipeline.definitions import defs; "
        "print(json.dumps(sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())))"
    )
    env = {**os.environ, "SQLITE_PATH": str(path), "SYNC_TABLES": "users*, orders", "SYNC_EXCLUDE_TABLES": "*_audit"}
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["orders", "users"]


def test_excluded_columns_never_reach_postgresql(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "s.sqlite")
    selection = Selection(exclude_columns=("users.email", "*.password_*"))
    assets = build_sync_assets(
        selection.apply(list_tables(path)), SqliteTableTranslator(pg_schema=schema), selection=selection
    )
    result = materialize(
        [assets],
        instance=DagsterInstance.ephemeral(),
        resources={
            "sqlite": SQLiteSource(path=str(path)),
            "postgres": PostgresTarget(conn_str=pg_dsn, pg_schema=schema),
        },
        selection=["users"],
    )
    assert result.success
    columns = query(
        pg_dsn,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'users' "
        "ORDER BY ordinal_position",
        (schema,),
    )
    assert [c[0] for c in columns] == ["id", "name"]
    assert query(pg_dsn, f'SELECT id, name FROM "{schema}".users ORDER BY id') == [(1, "ann"), (2, "bob")]


@pytest.mark.parametrize(
    ("excluded", "message"),
    [("users.id", "part of its primary key"), ("tmp_scratch.*", "leaves no column")],
)
def test_a_selection_that_cannot_work_is_refused_naming_the_table(tmp_path, excluded, message):
    tables = list_tables(_file(tmp_path / "s.sqlite"))
    with pytest.raises(SelectionError, match=message):
        Selection(exclude_columns=(excluded,)).apply(tables)
