"""``SYNC_PG_NAMES=lower``: a Chinook-shaped file (mixed-case names, like the real one) mirrored under
lowercased PostgreSQL names, queryable unquoted; ``exact`` (the default) keeps SQLite's names.

The fixture is built here with Chinook's shapes (``Album``, ``Track`` with ``TrackId``/``AlbumId``), not
the real file, plus a non-ASCII column, since lowercasing is Unicode-aware (engine/naming.py).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import psycopg2
import pytest
from dagster import AssetKey
from psycopg2 import sql

from sync_pipeline.components import SqliteSyncComponent
from sync_pipeline.config import SETTINGS_TAG, SyncConfig, settings_digest, sync_config_class
from sync_pipeline.engine import (
    SchemaMismatchError,
    SqliteSnapshot,
    SyncOptions,
    UnsupportedTableError,
    list_tables,
    sync_table,
)
from sync_pipeline.engine.naming import EXACT, LOWER, PgNames
from sync_pipeline.engine.selection import Selection
from sync_pipeline.translator import AssetKeyCollisionError, SqliteTableTranslator, specs_by_table

from .conftest import query, sync_all
from .test_cli import cli_env, run_cli  # noqa: F401 (cli_env is a fixture)
from .test_dagster_assets import run_sync

TRACKS = 40


def chinook_like(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE Album (AlbumId INTEGER PRIMARY KEY, Title NVARCHAR(160) NOT NULL, ArtistId INTEGER NOT NULL);
        CREATE TABLE Track (TrackId INTEGER PRIMARY KEY, Name NVARCHAR(200) NOT NULL, AlbumId INTEGER,
                            Milliseconds INTEGER NOT NULL, "Größe" INTEGER);
        """
    )
    conn.executemany("INSERT INTO Album VALUES (?, ?, ?)", [(i, f"Album {i}", i % 3) for i in range(1, 6)])
    conn.executemany(
        "INSERT INTO Track VALUES (?, ?, ?, ?, ?)",
        [(i, f"Track {i}", i % 5 + 1, 1000 * i, i * 7) for i in range(1, TRACKS + 1)],
    )
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def chinook(tmp_path: Path) -> Path:
    return chinook_like(tmp_path / "chinook.sqlite")


def columns_of(dsn: str, schema: str, table: str) -> list[str]:
    rows = query(
        dsn,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (schema, table),
    )
    return [str(r[0]) for r in rows]


def tables_of(dsn: str, schema: str) -> set[str]:
    rows = query(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {str(r[0]) for r in rows}


def count_unquoted(dsn: str, schema: str, table: str) -> int:
    """``select count(*) from <table>`` as an analyst types it: the table name unquoted."""
    statement = sql.SQL("SELECT count(*) FROM {}.").format(sql.Identifier(schema)) + sql.SQL(table)
    return int(query(dsn, statement)[0][0])


def test_the_naming_modes():
    assert PgNames.parse("exact") == EXACT and PgNames.parse(" Lower ") == LOWER
    with pytest.raises(ValueError, match="'exact' or 'lower'"):
        PgNames.parse("upper")
    assert EXACT.name("TrackId") == "TrackId" and LOWER.name("TrackId") == "trackid"
    # Unicode-aware, and lower() rather than casefold(): ß stays ß.
    assert LOWER.name("GRÖẞE") == "größe" and LOWER.name("Größe") == "größe"
    long = "Ä" * 40  # 80 bytes: lowercased, then shortened as ever
    assert LOWER.name(long) == EXACT.name("ä" * 40) and len(LOWER.name(long).encode()) <= 63


def test_lower_mirrors_chinook_under_lowercase_names_and_keeps_the_sqlite_names_in_comments(chinook, pg_dsn, schema):
    first = sync_all(chinook, pg_dsn, schema, pg_names=LOWER)
    assert first["Track"].pg_table == f"{schema}.track" and first["Track"].table == "Track"
    assert tables_of(pg_dsn, schema) == {"album", "track"}
    assert count_unquoted(pg_dsn, schema, "track") == TRACKS
    assert columns_of(pg_dsn, schema, "track") == ["trackid", "name", "albumid", "milliseconds", "größe"]
    key = query(
        pg_dsn,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary",
        (f'"{schema}".track',),
    )
    assert key == [("trackid",)]
    comments = query(
        pg_dsn,
        "SELECT obj_description(%s::regclass, 'pg_class'), col_description(%s::regclass, 5)",
        (f'"{schema}".track', f'"{schema}".track'),
    )[0]
    assert comments[0] == "SQLite table 'Track'"
    assert comments[1].startswith("SQLite column 'Track'.'Größe'")
    joined = query(
        pg_dsn,
        sql.SQL("SELECT count(*) FROM {s}.track t JOIN {s}.album a ON a.albumid = t.albumid").format(
            s=sql.Identifier(schema)
        ),
    )
    assert joined == [(TRACKS,)]

    # The bookkeeping found the mirror by its lowercased name: the next sync skips every unchanged batch.
    again = sync_all(chinook, pg_dsn, schema, pg_names=LOWER)["Track"]
    assert (again.rows_changed, again.rows_skipped) == (0, TRACKS)
    conn = sqlite3.connect(chinook)
    conn.execute("UPDATE Track SET Name = 'renamed', Milliseconds = 99999 WHERE TrackId = 7")
    conn.commit()
    conn.close()
    changed = sync_all(chinook, pg_dsn, schema, pg_names=LOWER)["Track"]
    assert (changed.rows_updated, changed.rows_inserted, changed.rows_deleted) == (1, 0, 0)
    assert query(pg_dsn, sql.SQL("SELECT name FROM {}.track WHERE trackid = 7").format(sql.Identifier(schema))) == [
        ("renamed",)
    ]


def test_pins_cursor_and_verify_take_sqlite_names_in_lower_mode(chinook, pg_dsn, schema):
    options = {"pg_names": LOWER, "column_types": {"Track.Größe": "numeric"}}
    sync_all(chinook, pg_dsn, schema, **options)
    typed = query(
        pg_dsn,
        "SELECT data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'track' AND column_name = 'größe'",
        (schema,),
    )
    assert typed == [("numeric",)]
    cursor = {"cursor_columns": {"Track": "Milliseconds"}}
    sync_all(chinook, pg_dsn, schema, **options, **cursor)  # sets the watermark
    conn = sqlite3.connect(chinook)
    conn.execute("INSERT INTO Track VALUES (999, 'new', 1, 10000000, NULL)")
    conn.commit()
    conn.close()
    by_cursor = sync_all(chinook, pg_dsn, schema, **options, **cursor)["Track"]
    assert by_cursor.mode == "cursor" and by_cursor.rows_inserted == 1 and by_cursor.rows_processed < TRACKS
    query(pg_dsn, sql.SQL("UPDATE {}.track SET name = 'edited' WHERE trackid = 3").format(sql.Identifier(schema)))
    verified = sync_all(chinook, pg_dsn, schema, **options, verify=True)["Track"]
    # Repaired (counted as a change of SQLite's here: the cursor syncs before it kept no batch digests).
    assert verified.verified and verified.rows_verified == TRACKS + 1
    assert query(pg_dsn, sql.SQL("SELECT name FROM {}.track WHERE trackid = 3").format(sql.Identifier(schema))) == [
        ("Track 3",)
    ]


def test_a_table_of_many_files_keeps_its_source_file_column_in_lower_mode(tmp_path, pg_dsn, schema):
    conn = psycopg2.connect(pg_dsn)
    try:
        for key in ("a.sqlite", "b.sqlite"):
            path = chinook_like(tmp_path / key)
            with SqliteSnapshot(path) as snapshot:
                table = snapshot.table("Track")
                sync_table(snapshot, conn, table, schema, SyncOptions(pg_names=LOWER), source_file=key)
    finally:
        conn.close()
    assert columns_of(pg_dsn, schema, "track")[:2] == ["_source_file", "trackid"]
    assert query(
        pg_dsn,
        sql.SQL("SELECT _source_file, count(*) FROM {}.track GROUP BY 1 ORDER BY 1").format(sql.Identifier(schema)),
    ) == [("a.sqlite", TRACKS), ("b.sqlite", TRACKS)]
    # A column excluded later leaves the shared table: the glob (SQLite names) matches its lowercased name.
    excluded = Selection(exclude_columns=("Track.Größe",))
    conn = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(tmp_path / "a.sqlite") as snapshot:
            table = excluded.columns_of(snapshot.table("Track"))
            options = SyncOptions(pg_names=LOWER, exclude_columns=excluded.exclude_columns)
            sync_table(snapshot, conn, table, schema, options, source_file="a.sqlite")
    finally:
        conn.close()
    assert "größe" not in columns_of(pg_dsn, schema, "track")


def test_names_that_meet_once_lowercased_are_refused_by_name(tmp_path, pg_dsn, schema):
    path = tmp_path / "meet.sqlite"
    conn = sqlite3.connect(path)  # SQLite folds only ASCII letters: Ä and ä are two names to it
    conn.execute('CREATE TABLE "Ärger" (id INTEGER PRIMARY KEY, "Ä" TEXT, "ä" TEXT)')
    conn.close()
    with pytest.raises(UnsupportedTableError, match=r"columns 'Ä' and 'ä' would both be 'ä' in PostgreSQL"):
        sync_all(path, pg_dsn, schema, pg_names=LOWER)
    assert tables_of(pg_dsn, schema) == set()  # refused before anything was written
    sync_all(path, pg_dsn, schema)  # exact mode keeps them apart, as ever
    assert columns_of(pg_dsn, schema, "Ärger") == ["id", "Ä", "ä"]

    # Two tables: the Kelvin sign lowercases to an ASCII k, so the asset keys differ but the PostgreSQL names meet.
    tables = tmp_path / "tables.sqlite"
    conn = sqlite3.connect(tables)
    conn.executescript('CREATE TABLE "\u212aelvin" (x); CREATE TABLE kelvin (x);')
    conn.close()
    meet = r"SQLite tables '(\u212aelvin|kelvin)' and '(\u212aelvin|kelvin)' would both be .*'kelvin'"
    with pytest.raises(AssetKeyCollisionError, match=meet):  # at load time
        specs_by_table(list_tables(tables), SqliteTableTranslator(pg_schema=schema, pg_names=LOWER))
    # The run config's mode, which the definitions did not load with: refused before the run writes anything.
    result = run_sync(tables, pg_dsn, schema, pg_names="lower")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert re.search(meet, failure.step_failure_data.error.message)
    assert tables_of(pg_dsn, schema) == {"Ärger"}


def test_exact_mode_is_unchanged_and_the_asset_page_shows_postgres_column_names(chinook, pg_dsn, schema):
    sync_all(chinook, pg_dsn, schema)
    assert tables_of(pg_dsn, schema) == {"Album", "Track"}
    assert columns_of(pg_dsn, schema, "Track") == ["TrackId", "Name", "AlbumId", "Milliseconds", "Größe"]
    tables = {t.name: t for t in list_tables(chinook)}
    exact = SqliteTableTranslator(pg_schema=schema).get_asset_spec(tables["Track"])
    assert [c.name for c in exact.metadata["dagster/column_schema"].columns] == [
        "TrackId",
        "Name",
        "AlbumId",
        "Milliseconds",
        "Größe",
    ]
    lower = SqliteTableTranslator(pg_schema=schema, pg_names=LOWER).get_asset_spec(tables["Track"])
    assert lower.key == exact.key == AssetKey(["Track"])
    assert lower.metadata["dagster/table_name"] == f"{schema}.track"
    schema_md = lower.metadata["dagster/column_schema"]
    assert [c.name for c in schema_md.columns] == ["trackid", "name", "albumid", "milliseconds", "größe"]
    assert schema_md.constraints.other == ["PRIMARY KEY (trackid)"]
    assert "SQLite column 'TrackId'" in schema_md.columns[0].description


def test_run_config_lower_names_the_materialization_columns_as_postgres_has_them(chinook, pg_dsn, schema):
    result = run_sync(chinook, pg_dsn, schema, pg_names="lower")
    assert result.success
    by_key = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    track = by_key[AssetKey(["Track"])]
    assert track["dagster/table_name"].value == f"{schema}.track"
    assert [c.name for c in track["dagster/column_schema"].value.columns][:2] == ["trackid", "name"]
    assert count_unquoted(pg_dsn, schema, "album") == 5


def test_the_component_field_names_the_assets_and_the_settings_digest(chinook):
    component = SqliteSyncComponent.resolve_from_dict(
        {"sqlite": {"path": str(chinook)}, "postgres": {"pg_schema": "lab"}, "run_config": {"pg_names": "lower"}}
    )
    (assets,) = component.build("lab").assets
    spec = assets.specs_by_key[AssetKey(["lab", "Track"])]  # the key keeps the SQLite name
    assert spec.metadata["dagster/table_name"] == "lab.track"
    assert assets.op.config_schema.config_type.fields["pg_names"].default_value == "lower"
    # A file synced under exact is not "synced already" under lower; exact keeps the digest it always had.
    exact = settings_digest(Selection(), SyncConfig)
    assert exact == settings_digest(Selection(), sync_config_class("x", pg_names="exact"))
    assert assets.op.tags[SETTINGS_TAG] != exact
    assert assets.op.tags[SETTINGS_TAG] == settings_digest(Selection(), sync_config_class("y", pg_names="lower"))


def test_a_mode_change_is_refused_until_a_full_refresh_moves_the_mirror(chinook, pg_dsn, schema):
    sync_all(chinook, pg_dsn, schema)
    with pytest.raises(SchemaMismatchError, match=rf"{schema}.Album, made with SYNC_PG_NAMES=exact.*full_refresh"):
        sync_all(chinook, pg_dsn, schema, pg_names=LOWER)
    assert tables_of(pg_dsn, schema) == {"Album", "Track"}  # nothing written
    moved = sync_all(chinook, pg_dsn, schema, pg_names=LOWER, full_refresh=True)["Track"]
    assert moved.table_created and moved.pg_rows_after == TRACKS
    assert tables_of(pg_dsn, schema) == {"album", "track"}  # the old mirrors are gone, in the same transaction
    again = sync_all(chinook, pg_dsn, schema, pg_names=LOWER)["Track"]
    assert (again.rows_changed, again.rows_skipped) == (0, TRACKS)
    # And back: the same refusal the other way round.
    with pytest.raises(SchemaMismatchError, match=r"made with SYNC_PG_NAMES=lower"):
        sync_all(chinook, pg_dsn, schema)


def test_the_headless_command_with_sync_pg_names_lower(cli_env, chinook, pg_dsn, schema):  # noqa: F811
    env = {**cli_env, "SQLITE_PATH": str(chinook), "SYNC_PG_NAMES": "lower"}
    done = run_cli(env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert count_unquoted(pg_dsn, schema, "track") == TRACKS
    bad = run_cli({**env, "SYNC_PG_NAMES": "upper"})
    # Refused as a bad BATCH_SIZE is (when the settings load), naming the variable.
    assert bad.returncode != 0 and "SYNC_PG_NAMES must be 'exact' or 'lower'" in bad.stderr
