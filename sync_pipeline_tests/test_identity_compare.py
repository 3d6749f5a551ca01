"""A value that changed is written even when PostgreSQL's ``=`` calls old and new equal (issue 25).

-0.0 = 0.0, numeric 2.0 = 2, interval '1 day' = '24 hours', jsonb {"a": 1.0} = {"a": 1}, boxes of
equal area: the merge and the keyless comparison must see each as a change, because a reader sees
it as one. Each case syncs a table, changes the value in SQLite, syncs again, and reads the value
back from PostgreSQL as text.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from psycopg2 import sql

from .conftest import query, sync_all

# (SQLite column declaration, pin or None, the values the column holds in turn, what PostgreSQL shows
# for each). A declared BLOB holding reals becomes double precision (and keeps -0.0, which a REAL
# column would store as the integer 0).
CASES = {
    "double precision": ("BLOB", None, [0.0, -0.0, 0.0], ["0", "-0", "0"]),
    "real": ("", "real", [0.0, -0.0], ["0", "-0"]),
    "numeric": ("", "numeric", [2.0, 2], ["2.0", "2"]),
    "interval": ("", "interval", ["1 day", "24 hours"], ["1 day", "24:00:00"]),
    "jsonb": ("", "jsonb", ['{"a": 1.0}', '{"a": 1}'], ['{"a": 1.0}', '{"a": 1}']),
    "array": ("", "double precision[]", ["{0}", "{-0}"], ["{0}", "{-0}"]),
    # No = at all (json, point), or = by area (box): keyed tables only, EXCEPT needs an =.
    "json": ("", "json", ['{"a":1}', '{"a": 1}'], ['{"a":1}', '{"a": 1}']),
    "point": ("", "point", ["(0,1)", "(-0,1)"], ["(0,1)", "(-0,1)"]),
    "box": ("", "box", ["(2,2),(0,0)", "(3,3),(1,1)"], ["(2,2),(0,0)", "(3,3),(1,1)"]),
}
KEYLESS = ["double precision", "real", "numeric", "interval", "jsonb", "array"]


def _write(path: Path, keyed: bool, declared: str, value: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE IF NOT EXISTS t ({'id INTEGER PRIMARY KEY, ' if keyed else ''}c {declared})")
    conn.execute("DELETE FROM t")
    conn.execute(f"INSERT INTO t ({'id, ' if keyed else ''}c) VALUES ({'1, ' if keyed else ''}?)", (value,))
    conn.commit()
    conn.close()


def _shown(dsn: str, schema: str) -> list[str]:
    return [r[0] for r in query(dsn, sql.SQL("SELECT c::text FROM {} ORDER BY 1").format(sql.Identifier(schema, "t")))]


@pytest.mark.parametrize(
    ("case", "keyed"), [(c, True) for c in CASES] + [(c, False) for c in KEYLESS], ids=lambda v: str(v)
)
def test_a_value_equal_by_eq_but_not_identical_is_written(tmp_path, pg_dsn, schema, case, keyed):
    declared, pin, values, shown = CASES[case]
    pins = {"t.c": pin} if pin else {}
    path = tmp_path / "id.sqlite"
    for value, expected in zip(values, shown, strict=True):
        _write(path, keyed, declared, value)
        sync_all(path, pg_dsn, schema, column_types=pins, delete_orphans=True)
        assert _shown(pg_dsn, schema) == [expected]


def test_a_keyless_table_appends_a_row_that_differs_only_in_the_sign_of_zero(tmp_path, pg_dsn, schema):
    path = tmp_path / "k.sqlite"
    _write(path, False, "BLOB", 0.0)
    sync_all(path, pg_dsn, schema)
    _write(path, False, "BLOB", -0.0)

    result = sync_all(path, pg_dsn, schema)["t"]

    assert result.rows_inserted == 1 and _shown(pg_dsn, schema) == ["-0", "0"]  # without delete_orphans: kept


@pytest.mark.parametrize("verify", [False, True], ids=["plain", "verify"])
def test_a_key_that_changes_only_in_the_sign_of_zero_is_written(tmp_path, pg_dsn, schema, verify):
    """A key 0.0 that becomes -0.0 still matches its row by =: the key itself must be rewritten."""
    path = tmp_path / "z.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (c BLOB PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(0.0, "zero"), (1.5, "x")])
    conn.commit()
    sync_all(path, pg_dsn, schema)
    conn.execute("UPDATE t SET c = -0.0 WHERE c = 0")
    conn.commit()
    conn.close()

    sync_all(path, pg_dsn, schema, verify=verify)

    assert _shown(pg_dsn, schema) == ["-0", "1.5"]
