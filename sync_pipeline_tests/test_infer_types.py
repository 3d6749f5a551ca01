"""SYNC_INFER_TYPES (issue 27): a column declared as a date, time, timestamp, JSON or UUID takes that type
while every value reads exactly as it (engine/inferred.py says what "exactly" is), else stays text, reported.

Each refusing column holds one good value beside the one that refuses, so it is that value, not the column,
that keeps it text; values read back are compared with Python's own reading of the SQLite text.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg2 import sql

from sync_pipeline.config import settings_digest, sync_config_class
from sync_pipeline.engine import inferred
from sync_pipeline.engine.selection import Selection
from sync_pipeline.engine.sync import TableSyncResult

from .conftest import query, sync_all
from .test_cli import EXIT_OK, cli_env, run_cli  # noqa: F401 - the fixture, for the headless test

TS = "timestamp without time zone"


def _uuid_text(text: str) -> str:
    """A UUID as psycopg2 reads a uuid column: its text, lowercase."""
    return str(uuid.UUID(text))


TSTZ = "timestamp with time zone"
# column -> (declared type, the two values of rows 1 and 2, the PostgreSQL type, Python's reading of a value)
INFERS: dict[str, tuple[str, tuple[str | None, str], str, Callable[[str], object]]] = {
    "d": ("DATE", ("2026-03-12", "0001-01-01"), "date", datetime.date.fromisoformat),
    "tm": ("TIME", ("10:00:00.500", "23:59:59.999999"), "time without time zone", datetime.time.fromisoformat),
    "ts_t_or_space": (
        "DATETIME",
        ("2026-03-12T10:00:00", "2026-03-12 10:00:00.123456"),
        TS,
        datetime.datetime.fromisoformat,
    ),
    "ts_offsets": (
        "TIMESTAMP",
        ("2026-03-12T10:00:00Z", "2026-03-12 10:00:00-05:30"),
        TSTZ,
        datetime.datetime.fromisoformat,
    ),
    "j": ("JSON", ('{"b": 1, "a": [1.50, "\\u00e9"]}', "[]"), "jsonb", json.loads),
    "u": ("UUID", ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12"), "uuid", _uuid_text),
    "nulls_and_one": ("DATE", (None, "2024-02-29"), "date", datetime.date.fromisoformat),
}
# column -> (declared type, the value of row 1 (row 2's is good), what the reason says)
REFUSES: dict[str, tuple[str, object, str]] = {
    "ts_mix": ("DATETIME", "2026-03-12 10:00:00Z", "some values have an offset or Z and some not"),
    "ts_7_digits": ("DATETIME", "2026-03-12 10:00:00.1234567", "do not read exactly"),
    "d_feb_30": ("DATE", "2026-02-30", "do not read exactly"),
    "d_us": ("DATE", "03/12/2026", "do not read exactly"),
    "d_epoch": ("DATE", 1700000000, "never numbers"),
    "j_invalid": ("JSON", "{a: 1}", "do not read exactly"),
    "j_duplicate_key": ("JSON", '{"a": 1, "a": 2}', "do not read exactly"),
    "j_scalar": ("JSON", '"a"', "do not read exactly"),  # a bare scalar is any text, not a document
    "u_braces": ("UUID", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "do not read exactly"),
}
GOOD = {"DATETIME": "2026-03-12 10:00:00", "DATE": "2026-03-12", "JSON": "{}", "UUID": str(uuid.UUID(int=1))}


def _file(path: Path) -> Path:
    """Table t (key id, then every column of INFERS and REFUSES), 2 rows; table k with a DATE key."""
    conn = sqlite3.connect(path)
    columns = {name: spec[0] for name, spec in INFERS.items()} | {name: spec[0] for name, spec in REFUSES.items()}
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {', '.join(f'{n} {d}' for n, d in columns.items())})")
    for row in (1, 2):
        values = [spec[1][row - 1] for spec in INFERS.values()]
        values += [spec[1] if row == 1 else GOOD[spec[0]] for spec in REFUSES.values()]
        conn.execute(f"INSERT INTO t VALUES ({row}, {', '.join('?' * len(values))})", values)
    conn.execute("CREATE TABLE k (day DATE PRIMARY KEY, n INTEGER)")
    conn.execute("INSERT INTO k VALUES ('2026-03-12', 1)")
    conn.commit()
    conn.close()
    return path


def _sync(path: Path, dsn: str, schema: str, **options: object) -> dict[str, TableSyncResult]:
    return sync_all(path, dsn, schema, **options)


def _pg_types(dsn: str, schema: str, table: str) -> dict[str, str]:
    rows = query(
        dsn,
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        (f'"{schema}"."{table}"',),
    )
    return {str(name): str(typ) for name, typ in rows}


def _column(dsn: str, schema: str, column: str) -> list[object]:
    statement = sql.SQL("SELECT {} FROM {} ORDER BY id").format(sql.Identifier(column), sql.Identifier(schema, "t"))
    return [row[0] for row in query(dsn, statement)]


def _set(path: Path, column: str, row: int, value: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE t SET {column} = ? WHERE id = ?", (value, row))
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("check", "text", "exact"),
    [
        (inferred.exact_date, "2024-02-29", True),
        (inferred.exact_date, "2023-02-29", False),
        (inferred.exact_date, "0000-01-01", False),  # PostgreSQL has no year 0
        (inferred.exact_date, "2026-3-12", False),
        (
            inferred.exact_date,
            "\uff12\uff10\uff12\uff16-03-12",
            False,
        ),  # fullwidth digits are digits to Python's \d, not to ISO
        (inferred.exact_time, "24:00:00", False),
        (inferred.exact_time, "10:00", False),
        (inferred.exact_timestamp, "2026-03-12t10:00:00", False),
        (inferred.exact_timestamp, "2026-03-12 10:00:60", False),
        (inferred.exact_timestamptz, "2026-03-12 10:00:00+15:59", True),
        (inferred.exact_timestamptz, "2026-03-12 10:00:00+16:00", False),  # past PostgreSQL's range
        (inferred.exact_timestamptz, "2026-03-12 10:00:00+0200", False),
        (inferred.exact_json, ' [1, {"a": null}] ', True),
        (inferred.exact_json, '{"a": NaN}', False),
        (inferred.exact_json, '{"a": "\\u0000"}', False),  # jsonb refuses NUL
        (inferred.exact_json, '["\\ud800"]', False),  # and a lone surrogate
        (inferred.exact_json, "[1e1001]", False),
        (inferred.exact_uuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11", False),
    ],
)
def test_what_reads_exactly(check: Callable[[str], bool], text: str, exact: bool) -> None:
    assert check(text) is exact


def test_inferred_columns_read_back_equal_and_refusing_ones_stay_text_reported(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "infer.sqlite")
    result = _sync(path, pg_dsn, schema, infer_types=True, column_types={"t.nulls_and_one": "text"})["t"]

    types = _pg_types(pg_dsn, schema, "t")
    expected = {name: spec[2] for name, spec in INFERS.items()} | dict.fromkeys(REFUSES, "text")
    expected["nulls_and_one"] = "text"  # a pin wins over inference
    assert {name: types[name] for name in expected} == expected
    for name, (_, values, _pg_type, read) in INFERS.items():
        if name != "nulls_and_one":
            assert _column(pg_dsn, schema, name) == [read(v) for v in values], name
    # The 'T' form reads back with a space; the UUID lowercase; the instant, not the offset, is kept.
    assert query(
        pg_dsn, sql.SQL("SELECT ts_t_or_space::text, u::text FROM {} WHERE id = 1").format(sql.Identifier(schema, "t"))
    ) == [("2026-03-12 10:00:00", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")]
    retyped = {r.column: r for r in result.columns_retyped}
    assert set(retyped) == set(REFUSES)
    for name, (_, value, why) in REFUSES.items():
        assert why in retyped[name].why and retyped[name].example_key == "(id=1)", retyped[name]
        assert _column(pg_dsn, schema, name)[0] == str(value)  # exactly as without the setting
    assert _pg_types(pg_dsn, schema, "k")["day"] == "text"  # a key is never inferred

    again = _sync(path, pg_dsn, schema, infer_types=True, column_types={"t.nulls_and_one": "text"})["t"]
    assert (again.rows_changed, again.columns_widened) == (0, ())
    # Found again from the COMMENT the widening wrote, with a row that still does not read exactly.
    assert {r.column: r.example_key for r in again.columns_retyped} == dict.fromkeys(REFUSES, "(id=1)")
    assert all("did not hold every value" in r.why for r in again.columns_retyped)


def test_off_by_default_every_such_column_is_text_and_turning_it_on_later_narrows_nothing(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "infer.sqlite")
    result = _sync(path, pg_dsn, schema)["t"]
    assert set(_pg_types(pg_dsn, schema, "t").values()) == {"bigint", "text"}
    assert result.columns_retyped == ()

    on = _sync(path, pg_dsn, schema, infer_types=True)["t"]
    assert (on.rows_changed, on.columns_widened, set(on.pg_types.values())) == (0, (), {"bigint", "text"})
    retyped = {r.column: r for r in on.columns_retyped}
    assert "built without the setting" in retyped["d"].why and retyped["d"].example_key is None
    assert set(retyped) == set(REFUSES) | set(INFERS)  # each says full_refresh would infer it


def test_a_value_that_no_longer_reads_exactly_widens_the_column_to_text_reported(tmp_path, pg_dsn, schema):
    path = _file(tmp_path / "infer.sqlite")
    _sync(path, pg_dsn, schema, infer_types=True)
    _set(path, "ts_t_or_space", 2, "12 March 2026")

    result = _sync(path, pg_dsn, schema, infer_types=True)["t"]

    assert result.columns_widened == ("ts_t_or_space",)
    (retype,) = [r for r in result.columns_retyped if r.column == "ts_t_or_space"]
    assert (retype.pg_type, retype.example_key) == ("text", "(id=2)")
    # Every row as SQLite holds it, the unchanged one too (not PostgreSQL's '2026-03-12 10:00:00').
    assert _column(pg_dsn, schema, "ts_t_or_space") == ["2026-03-12T10:00:00", "12 March 2026"]
    # A timestamp column whose values all come to have an offset cannot hold the old ones either: text.
    _set(path, "ts_offsets", 1, "2026-03-12 10:00:00")
    assert _sync(path, pg_dsn, schema, infer_types=True)["t"].pg_types["ts_offsets"] == "text"


def test_settings_digest_changes_with_the_setting_on_only():
    selection = Selection()
    plain = settings_digest(selection, sync_config_class("plain"))
    assert settings_digest(selection, sync_config_class("off", infer_types=False)) == plain
    assert settings_digest(selection, sync_config_class("on", infer_types=True)) != plain
    assert sync_config_class("on", infer_types=True)().to_options().infer_types  # a component's run_config


def test_headless_run_with_sync_infer_types(cli_env, tmp_path, pg_dsn, schema):  # noqa: F811
    conn = sqlite3.connect(tmp_path / "app.sqlite")
    conn.execute("CREATE TABLE invoice (id INTEGER PRIMARY KEY, issued DATETIME, meta JSON)")
    conn.executemany(
        "INSERT INTO invoice VALUES (?, ?, ?)",
        [(1, "2009-01-01 00:00:00", '{"a": 1}'), (2, "2009-01-02 00:00:00", "[]")],
    )
    conn.commit()
    conn.close()
    env = {**cli_env, "SQLITE_PATH": str(tmp_path / "app.sqlite"), "SYNC_INFER_TYPES": "1"}
    done = run_cli(env)
    assert done.returncode == EXIT_OK, done.stderr
    assert _pg_types(pg_dsn, schema, "invoice") == {"id": "bigint", "issued": TS, "meta": "jsonb"}
    again = run_cli({**cli_env, "SQLITE_PATH": str(tmp_path / "app.sqlite")})  # the setting off: a changed mapping
    assert again.returncode != EXIT_OK and "full_refresh" in again.stdout + again.stderr


def test_the_arrow_path_sends_inferred_columns_and_leaves_misfits_to_the_exact_one(tmp_path, pg_dsn, schema):
    path = tmp_path / "arrow.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE, tm TIME, ts DATETIME, tz TIMESTAMP, u UUID)")
    good = ("2026-03-12", "10:00:00.5", "2026-03-12T10:00:00", "2026-03-12 10:00:00+02:00", str(uuid.UUID(int=7)))
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", [(i, *good) for i in range(1, 4)])
    conn.commit()
    conn.close()
    first = _sync(path, pg_dsn, schema, infer_types=True)["t"]
    assert (first.read_path, first.columns_retyped) == ("arrow", ())
    assert list(first.pg_types.values())[1:] == ["date", "time without time zone", TS, TSTZ, "uuid"]
    assert _sync(path, pg_dsn, schema, infer_types=True)["t"].rows_skipped == 3  # unchanged: nothing checked again

    # Hour 24 has no ISO shape here (PostgreSQL would read it); Feb 30 has one, and PostgreSQL refuses it.
    _set(path, "tm", 2, "24:00:00")
    _set(path, "d", 3, "2026-02-30")
    result = _sync(path, pg_dsn, schema, infer_types=True)["t"]
    assert {r.column: r.example_key for r in result.columns_retyped} == {"tm": "(id=2)", "d": "(id=3)"}
    assert _column(pg_dsn, schema, "tm") == ["10:00:00.5", "24:00:00", "10:00:00.5"]
    assert _sync(path, pg_dsn, schema, infer_types=True)["t"].read_path == "arrow"


# Texts near each inferred type's edges: the Arrow path's shape check may pass one the exact check refuses only
# where PostgreSQL refuses it too (so COPY fails and the read falls back to the exact path).
EDGES = {
    inferred.DATE: ["2026-02-30", "0000-01-01", "2026-13-01", "2026-00-01", "2026-01-00", "2026-01-32", "2024-02-29"],
    inferred.TIME: ["24:00:00", "23:59:60", "23:60:00", "10:00:00.1234567", "10:00:00.", "10:00", "23:59:59.999999"],
    inferred.TIMESTAMP: ["2026-02-29 10:00:00", "2026-03-12T24:00:00", "0000-01-01 00:00:00", "2026-03-12 10:00:00"],
    inferred.TIMESTAMPTZ: [
        "2026-03-12 10:00:00+16:00",
        "2026-03-12 10:00:00-15:60",
        "2026-03-12 10:00:00+15:59",
        "2026-02-30T10:00:00Z",
        "2026-03-12 10:00:00.5Z",
        "2026-03-12 10:00:00+02",
    ],
    inferred.UUID: ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"],
}


def test_the_arrow_shapes_pass_no_inexact_text_postgresql_would_read(pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn, conn.cursor() as cur:
            for pg_type, texts in EDGES.items():
                shaped = pc.match_substring_regex(pa.array(texts), inferred.ARROW_PATTERNS[pg_type.name]).to_pylist()
                for text, passes in zip(texts, shaped, strict=True):
                    exact = inferred.CHECKS[pg_type.name](text)
                    assert not exact or passes, (pg_type.name, text)  # the Arrow path sends every exact text
                    if passes and not exact:
                        cur.execute("SAVEPOINT s")
                        with pytest.raises(psycopg2.DataError):
                            cur.execute(sql.SQL("SELECT %s::{}").format(sql.SQL(pg_type.name)), (text,))
                        cur.execute("ROLLBACK TO SAVEPOINT s")
    finally:
        conn.close()
