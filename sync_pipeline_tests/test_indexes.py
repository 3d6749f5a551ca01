"""SQLite's indexes and foreign keys in the mirror (issue 27): a Chinook-shaped file built here (mixed-case
names, ``IFK_*`` indexes, foreign keys; the real file is not in the repo), one index of each kind, and
what PostgreSQL's catalog then holds (``pg_indexes``, ``pg_constraint``), through the engine alone."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance
from psycopg2 import sql

from sync_pipeline.assets import materialization_metadata
from sync_pipeline.components import SqliteSyncComponent
from sync_pipeline.config import SyncConfig
from sync_pipeline.engine.naming import EXACT, LOWER, PgNames
from sync_pipeline.engine.selection import Selection
from sync_pipeline.engine.sqlite_source import SqliteSnapshot, list_tables
from sync_pipeline.engine.sync import SyncOptions, TableSyncResult, sync_table
from sync_pipeline.translator import SqliteTableTranslator

from .conftest import query, sync_all
from .test_cli import cli_env, run_cli  # noqa: F401 - cli_env is a fixture

CHINOOK = """
PRAGMA journal_mode=WAL;
CREATE TABLE [Artist] ([ArtistId] INTEGER NOT NULL, [Name] NVARCHAR(120),
  CONSTRAINT [PK_Artist] PRIMARY KEY ([ArtistId]));
CREATE TABLE [Album] ([AlbumId] INTEGER NOT NULL, [Title] NVARCHAR(160) NOT NULL, [ArtistId] INTEGER NOT NULL,
  CONSTRAINT [PK_Album] PRIMARY KEY ([AlbumId]),
  FOREIGN KEY ([ArtistId]) REFERENCES [Artist] ([ArtistId]) ON DELETE NO ACTION ON UPDATE NO ACTION);
CREATE TABLE [Genre] ([GenreId] INTEGER NOT NULL, [Name] NVARCHAR(120), CONSTRAINT [PK_Genre] PRIMARY KEY ([GenreId]));
CREATE TABLE [Track] ([TrackId] INTEGER NOT NULL, [Name] NVARCHAR(200) NOT NULL, [AlbumId] INTEGER, [GenreId] INTEGER,
  [Composer] NVARCHAR(220), [Milliseconds] INTEGER NOT NULL, [UnitPrice] NUMERIC(10,2) NOT NULL,
  CONSTRAINT [PK_Track] PRIMARY KEY ([TrackId]),
  FOREIGN KEY ([AlbumId]) REFERENCES [Album] ([AlbumId]) ON DELETE NO ACTION ON UPDATE NO ACTION,
  FOREIGN KEY ([GenreId]) REFERENCES [genre] ON DELETE CASCADE);
CREATE INDEX [IFK_AlbumArtistId] ON [Album] ([ArtistId]);
CREATE INDEX [IFK_TrackAlbumId] ON [Track] ([AlbumId]);
CREATE INDEX [IFK_TrackGenreId] ON [Track] ([GenreId]);
CREATE UNIQUE INDEX [IPK_Track] ON [Track]([TrackId]);
"""

# One index of each kind on one table, and two that must be skipped.
KINDS = """
CREATE TABLE Customer (CustomerId INTEGER PRIMARY KEY, Email TEXT NOT NULL, LastName TEXT, FirstName TEXT,
  Country TEXT, Score INTEGER, Active INTEGER, Note TEXT);
CREATE UNIQUE INDEX UX_Email ON Customer (Email);
CREATE INDEX IX_Name ON Customer (LastName, FirstName);
CREATE INDEX IX_ScoreDesc ON Customer (Score DESC);
CREATE INDEX IX_Country ON Customer (Country COLLATE NOCASE);
CREATE INDEX IX_Active ON Customer (Score) WHERE Active = 1 AND Note IS NOT NULL;
CREATE INDEX IX_Lower ON Customer (lower(LastName));
CREATE INDEX IX_Plus ON Customer (Score + 1);
CREATE INDEX IX_Like ON Customer (Email) WHERE Email LIKE '%@example.org';
CREATE INDEX IX_Mixed ON Customer (Score) WHERE Score = 'high';
"""


def _file(path: Path, script: str, rows: int = 40) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    if "Track" in script:
        conn.executemany("INSERT INTO Artist VALUES (?, ?)", [(i, f"artist {i}") for i in range(1, 6)])
        conn.executemany("INSERT INTO Album VALUES (?, ?, ?)", [(i, f"album {i}", i % 5 + 1) for i in range(1, 21)])
        conn.executemany("INSERT INTO Genre VALUES (?, ?)", [(i, f"genre {i}") for i in range(1, 4)])
        conn.executemany(
            "INSERT INTO Track VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i, f"track {i}", i % 20 + 1, i % 3 + 1, None, 1000 + i, "0.99") for i in range(1, rows + 1)],
        )
    conn.commit()
    conn.close()
    return path


def _sync(path: Path, dsn: str, schema: str, **options: object) -> dict[str, TableSyncResult]:
    """Every table through the exact path (conftest.sync_all)."""
    return sync_all(path, dsn, schema, arrow=False, **options)


def _indexes(dsn: str, schema: str) -> dict[str, str]:
    """Index name -> its definition, as pg_indexes has them, less the primary keys'."""
    rows = query(
        dsn,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND indexname NOT LIKE '\\_sps\\_pk\\_%%'",
        (schema,),
    )
    return {name: definition for name, definition in rows}


def _oids(dsn: str, schema: str) -> set[tuple[str, int]]:
    """Every index's and constraint's (name, oid) in the schema: a rebuilt one has a new oid."""
    rows = query(
        dsn,
        "SELECT relname, oid::int FROM pg_class WHERE relnamespace = %s::regnamespace AND relkind = 'i' "
        "UNION ALL SELECT conname, oid::int FROM pg_constraint WHERE connamespace = %s::regnamespace",
        (schema, schema),
    )
    return {(name, oid) for name, oid in rows}


def _constraints(dsn: str, schema: str) -> dict[str, tuple[str, bool, str]]:
    rows = query(
        dsn,
        "SELECT conname, conrelid::regclass::text, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = %s::regnamespace AND contype = 'f'",
        (schema,),
    )
    return {name: (table, valid, definition) for name, table, valid, definition in rows}


def test_chinook_indexes_and_foreign_keys(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    first = _sync(path, pg_dsn, schema, foreign_keys=True)
    # Every SQLite index has its counterpart, named from the PostgreSQL names, after one run.
    assert _indexes(pg_dsn, schema) == {
        "Album_ArtistId_idx": f'CREATE INDEX "Album_ArtistId_idx" ON {schema}."Album" USING btree ("ArtistId")',
        "Track_AlbumId_idx": f'CREATE INDEX "Track_AlbumId_idx" ON {schema}."Track" USING btree ("AlbumId")',
        "Track_GenreId_idx": f'CREATE INDEX "Track_GenreId_idx" ON {schema}."Track" USING btree ("GenreId")',
        "Track_TrackId_key": f'CREATE UNIQUE INDEX "Track_TrackId_key" ON {schema}."Track" USING btree ("TrackId")',
    }
    assert [(i.sqlite_name, i.pg_name, i.unique) for i in first["Track"].indexes] == [
        ("IFK_TrackAlbumId", "Track_AlbumId_idx", False),
        ("IFK_TrackGenreId", "Track_GenreId_idx", False),
        ("IPK_Track", "Track_TrackId_key", True),
    ]
    # Foreign keys: NOT VALID constraints (the first run made them all, whichever table came second),
    # to the referred table's key when the declaration names no column, in any case; actions not mirrored.
    assert _constraints(pg_dsn, schema) == {
        "Album_ArtistId_fkey": (
            f'{schema}."Album"',
            False,
            f'FOREIGN KEY ("ArtistId") REFERENCES {schema}."Artist"("ArtistId") NOT VALID',
        ),
        "Track_AlbumId_fkey": (
            f'{schema}."Track"',
            False,
            f'FOREIGN KEY ("AlbumId") REFERENCES {schema}."Album"("AlbumId") NOT VALID',
        ),
        "Track_GenreId_fkey": (
            f'{schema}."Track"',
            False,
            f'FOREIGN KEY ("GenreId") REFERENCES {schema}."Genre"("GenreId") NOT VALID',
        ),
    }
    links = {(f.table, f.columns, f.ref_table, f.ref_columns, f.constraint) for f in first["Track"].foreign_keys}
    assert links == {
        ("Track", ("AlbumId",), "Album", ("AlbumId",), "Track_AlbumId_fkey"),
        ("Track", ("GenreId",), "Genre", ("GenreId",), "Track_GenreId_fkey"),
    }
    album = {f.ref_table: f for f in first["Album"].foreign_keys}  # its own, and Track's to it
    assert album["Artist"].constraint is None and "created once" in album["Artist"].note  # Artist came next
    # A no-change sync runs no index or constraint DDL: every oid stays.
    before = _oids(pg_dsn, schema)
    again = _sync(path, pg_dsn, schema, foreign_keys=True)
    assert _oids(pg_dsn, schema) == before
    assert {f.constraint for f in again["Album"].foreign_keys} == {"Album_ArtistId_fkey", "Track_AlbumId_fkey"}
    assert query(pg_dsn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "Track"))) == [(40,)]


def test_lookup_by_an_indexed_column_uses_its_index(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    path = _file(tmp_path / "chinook.sqlite", CHINOOK, rows=500)
    _sync(path, pg_dsn, schema)
    plan = query(
        pg_dsn,
        # enable_seqscan off: the plan must use the index, not merely may; without one it would still be a Seq Scan.
        sql.SQL("SET enable_seqscan = off; EXPLAIN SELECT * FROM {} WHERE {} = 7").format(
            sql.Identifier(schema, "Track"), sql.Identifier("AlbumId")
        ),
    )
    text = "\n".join(line for (line,) in plan)
    assert "Track_AlbumId_idx" in text, text


def test_each_kind_of_index(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    path = _file(tmp_path / "kinds.sqlite", KINDS)
    result = _sync(path, pg_dsn, schema)["Customer"]
    found = {i.sqlite_name: i for i in result.indexes}
    defs = _indexes(pg_dsn, schema)

    def definition(name: str) -> str:
        pg = found[name].pg_name
        assert pg is not None, found[name].note
        return defs[pg].split(" USING btree ", 1)[1]

    assert definition("UX_Email") == '("Email")' and found["UX_Email"].unique
    assert definition("IX_Name") == '("LastName", "FirstName")'
    assert definition("IX_ScoreDesc") == '("Score" DESC)'
    assert definition("IX_Country") == '(lower("Country"))'  # COLLATE NOCASE
    assert definition("IX_Active") == '("Score") WHERE (("Active" = 1) AND ("Note" IS NOT NULL))'
    assert definition("IX_Lower") == '(lower("LastName"))'
    assert "UNIQUE" in defs[found["UX_Email"].pg_name or ""]
    # Untranslatable: skipped, saying why, never a failure.
    for name, why in (("IX_Plus", "Score + 1"), ("IX_Like", "LIKE"), ("IX_Mixed", "compares a number with a text")):
        assert found[name].pg_name is None and why in found[name].note, found[name]
    assert len(defs) == 6
    metadata = materialization_metadata(result, list_tables(path)[0])
    rows = {r.data["sqlite_index"]: r.data for r in metadata["indexes"].records}
    assert rows["IX_Country"]["columns"] == "lower(Country)" and rows["IX_Plus"]["pg_index"] == ""


def test_indexes_follow_sqlite_and_leave_others_alone(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    path = _file(tmp_path / "kinds.sqlite", KINDS)
    _sync(path, pg_dsn, schema)
    query(
        pg_dsn,
        sql.SQL("CREATE INDEX mine ON {} ({})").format(sql.Identifier(schema, "Customer"), sql.Identifier("Note")),
    )
    conn = sqlite3.connect(path)
    conn.executescript("DROP INDEX IX_Name; DROP INDEX IX_Country; CREATE INDEX IX_First ON Customer (FirstName);")
    conn.close()
    _sync(path, pg_dsn, schema)
    names = set(_indexes(pg_dsn, schema))
    assert "Customer_LastName_FirstName_idx" not in names and "Customer_lower_Country_idx" not in names
    assert {"Customer_FirstName_idx", "mine", "Customer_Email_key"} <= names
    # SYNC_INDEXES=0: nothing created, nothing dropped.
    conn = sqlite3.connect(path)
    conn.executescript("CREATE INDEX IX_Country2 ON Customer (Country);")
    conn.close()
    _sync(path, pg_dsn, schema, indexes=False)
    assert set(_indexes(pg_dsn, schema)) == names


def test_unique_index_the_data_breaks_in_postgresql(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    """SQLite's NOCASE folds ASCII letters only: 'Émile' and 'émile' are two values to it, one to lower()."""
    path = tmp_path / "u.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE People (Id INTEGER PRIMARY KEY, Name TEXT);"
        "CREATE UNIQUE INDEX UX_Name ON People (Name COLLATE NOCASE);"
        "INSERT INTO People VALUES (1, 'Émile'), (2, 'émile'), (3, 'Zoë');"
    )
    conn.close()
    (index,) = _sync(path, pg_dsn, schema)["People"].indexes
    assert index.pg_name == "People_lower_Name_key" and not index.unique
    assert "not unique in PostgreSQL" in index.note
    assert _indexes(pg_dsn, schema)["People_lower_Name_key"].startswith('CREATE INDEX "People_lower_Name_key"')
    before = _oids(pg_dsn, schema)
    (again,) = _sync(path, pg_dsn, schema)["People"].indexes  # not tried again: no DDL, still reported
    assert _oids(pg_dsn, schema) == before and not again.unique and "not unique" in again.note


def test_foreign_keys_never_block_a_sync(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    """Tables commit one by one: a child row may arrive before its parent, a parent may go before its
    children. Each sync still succeeds, and the constraints are there after each."""
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    _sync(path, pg_dsn, schema, foreign_keys=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "INSERT INTO Artist VALUES (99, 'new'); INSERT INTO Album VALUES (99, 'new album', 99);"
        "DELETE FROM Track WHERE AlbumId = 1; DELETE FROM Album WHERE AlbumId = 1;"
    )
    conn.close()
    before = dict(_oids(pg_dsn, schema))
    pg = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(path, arrow=False) as snapshot:
            options = SyncOptions(foreign_keys=True, delete_orphans=True)
            # The album (child) before its new artist; and Album's deleted row before Track's children of it.
            album = sync_table(snapshot, pg, snapshot.table("Album"), schema, options)
            assert album.rows_inserted == 1 and album.rows_deleted == 1
            after = dict(_oids(pg_dsn, schema))
            assert len(_constraints(pg_dsn, schema)) == 3
            # Both constraints on Album were in the way: dropped and made again in that transaction.
            assert after["Album_ArtistId_fkey"] != before["Album_ArtistId_fkey"]
            assert after["Track_AlbumId_fkey"] != before["Track_AlbumId_fkey"]
            assert after["Track_GenreId_fkey"] == before["Track_GenreId_fkey"]
            for name in ("Artist", "Genre", "Track"):
                sync_table(snapshot, pg, snapshot.table(name), schema, options)
    finally:
        pg.close()
    assert all(not valid for _, valid, _ in _constraints(pg_dsn, schema).values())
    assert len(_constraints(pg_dsn, schema)) == 3
    assert query(
        pg_dsn,
        sql.SQL("SELECT count(*) FROM {} WHERE {} = 99").format(
            sql.Identifier(schema, "Album"), sql.Identifier("ArtistId")
        ),
    ) == [(1,)]


def test_foreign_keys_in_the_asset_description_and_column_schema(tmp_path: Path) -> None:
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    track = next(t for t in list_tables(path) if t.name == "Track")
    spec = SqliteTableTranslator().get_asset_spec(track)
    assert "Foreign keys (SQLite's): (AlbumId) -> Album (AlbumId); (GenreId) -> Genre (GenreId)." in (
        spec.description or ""
    )
    assert "FOREIGN KEY (AlbumId) -> Album (AlbumId)" in spec.metadata["dagster/column_schema"].constraints.other
    assert [r.data["ref_table"] for r in spec.metadata["foreign_keys"].records] == ["Album", "Genre"]
    assert not spec.deps  # a relationship, not a data dependency: no edge in the lineage graph


def test_settings_from_the_environment() -> None:
    """SYNC_INDEXES (default on) and SYNC_FOREIGN_KEYS (default off) reach the run config's defaults."""
    assert SyncConfig().to_options().indexes and not SyncConfig().to_options().foreign_keys
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sync_pipeline.config import SyncConfig as C; o = C().to_options(); print(o.indexes, o.foreign_keys)",
        ],
        env={**env, "SYNC_INDEXES": "0", "SYNC_FOREIGN_KEYS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["False", "True"]
    bad = subprocess.run(
        [sys.executable, "-c", "import sync_pipeline.config"],
        env={**env, "SYNC_INDEXES": "maybe"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0 and "SYNC_INDEXES must be 0 or 1" in bad.stderr


def test_a_dagster_run_records_indexes_and_foreign_keys(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    """Run config ``foreign_keys: true`` through a materialization: the metadata lists both, the run log the
    index that was skipped."""
    from .test_dagster_assets import log_text, metadata_by_table, run_sync

    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX IX_Odd ON Track (Milliseconds / 1000)")
    conn.close()
    instance = DagsterInstance.ephemeral()
    result = run_sync(path, pg_dsn, schema, instance=instance, foreign_keys=True)
    assert result.success
    track = metadata_by_table(result)["Track"]
    indexes = {r.data["sqlite_index"]: r.data for r in track["indexes"].value.records}
    assert indexes["IFK_TrackAlbumId"]["pg_index"] == "Track_AlbumId_idx" and indexes["IX_Odd"]["pg_index"] == ""
    links = {r.data["ref_table"]: r.data["constraint"] for r in track["foreign_keys"].value.records}
    assert links == {"Album": "Track_AlbumId_fkey", "Genre": "Track_GenreId_fkey"}
    assert "Track: index 'IX_Odd': not mirrored" in log_text(instance, result)
    assert len(_constraints(pg_dsn, schema)) == 3


def test_the_component_sets_both_defaults(tmp_path: Path) -> None:
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    component = SqliteSyncComponent.resolve_from_dict(
        {"sqlite": {"path": str(path)}, "run_config": {"indexes": False, "foreign_keys": True}}
    )
    (assets,) = component.build("lab").assets
    fields = assets.op.config_schema.config_type.fields
    assert (fields["indexes"].default_value, fields["foreign_keys"].default_value) == (False, True)


@pytest.mark.parametrize("names", [EXACT, LOWER], ids=["exact", "lower"])
def test_our_indexes_never_block_a_later_sync(tmp_path: Path, pg_dsn: str, schema: str, names: PgNames) -> None:
    """Values that become equal in PostgreSQL after the index was built unique, and a column that widens
    under a partial index's condition: each sync succeeds; the index is made again as it can be, in
    either naming mode."""
    path = tmp_path / "later.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE People (Id INTEGER PRIMARY KEY, Name TEXT, Active INTEGER);"
        "CREATE UNIQUE INDEX UX_Name ON People (Name COLLATE NOCASE);"
        "CREATE INDEX IX_Active ON People (Id) WHERE Active = 1;"
        "INSERT INTO People VALUES (1, 'Émile', 1), (2, 'Zoë', 0);"
    )
    conn.commit()
    first = {i.sqlite_name: i for i in _sync(path, pg_dsn, schema, pg_names=names)["People"].indexes}
    assert first["UX_Name"].unique and first["IX_Active"].pg_name == names.name("People_Id_idx")
    conn.executescript("INSERT INTO People VALUES (3, 'émile', 'yes');")  # equal under lower(); text in Active
    conn.close()
    result = _sync(path, pg_dsn, schema, pg_names=names)["People"]
    later = {i.sqlite_name: i for i in result.indexes}
    assert result.rows_inserted == 1 and result.pg_types["Active"] == "text"
    assert not later["UX_Name"].unique and "not unique in PostgreSQL" in later["UX_Name"].note
    assert later["IX_Active"].pg_name is None and "compares a text with a number" in later["IX_Active"].note
    assert set(_indexes(pg_dsn, schema)) == {names.name("People_lower_Name_key")}


def test_an_excluded_column_takes_its_index_and_foreign_key_along(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX IX_Composer ON Track (Composer, Name)")
    conn.close()
    selection = Selection(exclude_columns=("Track.Composer", "Track.GenreId"))
    pg = psycopg2.connect(pg_dsn)
    try:
        with SqliteSnapshot(path, arrow=False) as snapshot:
            track = selection.columns_of(snapshot.table("Track"))
            options = SyncOptions(foreign_keys=True, exclude_columns=selection.exclude_columns)
            result = sync_table(snapshot, pg, track, schema, options)
    finally:
        pg.close()
    found = {i.sqlite_name: i for i in result.indexes}
    assert found["IX_Composer"].pg_name is None and "'Composer' is not synced" in found["IX_Composer"].note
    assert found["IFK_TrackGenreId"].pg_name is None
    assert sorted((f.ref_table, f.constraint, f.note) for f in result.foreign_keys) == [
        ("Album", None, f"created once {schema}.Album exists in PostgreSQL"),
        ("Genre", None, "columns GenreId are not synced"),
    ]
    assert "GenreId" not in SqliteTableTranslator().get_description(track)


def test_a_chinook_shaped_file_with_every_issue_27_setting_is_a_mirror_analysts_can_query(
    tmp_path: Path,
    cli_env: dict[str, str],  # noqa: F811 - the fixture imported above
    pg_dsn: str,
    schema: str,
) -> None:
    """The issue's "done when", through the headless command: lowercase names, inferred types, indexes and
    NOT VALID foreign keys together."""
    path = _file(tmp_path / "chinook.sqlite", CHINOOK)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE Invoice (InvoiceId INTEGER PRIMARY KEY, InvoiceDate DATETIME NOT NULL)")
        conn.executemany("INSERT INTO Invoice VALUES (?, ?)", [(i, f"2009-01-{i:02d} 00:00:00") for i in range(1, 11)])
    conn.close()
    env = {**cli_env, "SQLITE_PATH": str(path), "SYNC_PG_NAMES": "lower", "SYNC_INFER_TYPES": "1"}
    env["SYNC_FOREIGN_KEYS"] = "1"

    done = run_cli(env)

    assert done.returncode == 0, done.stderr
    assert query(pg_dsn, sql.SQL("SELECT count(*) FROM {}.track").format(sql.Identifier(schema))) == [(40,)]
    # Every SQLite index (IFK_AlbumArtistId, IFK_TrackAlbumId, IFK_TrackGenreId, IPK_Track), by its columns.
    indexed = {
        (table, definition.split(" USING btree ")[1])
        for table, definition in query(
            pg_dsn, "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
        )
    }
    assert {("album", "(artistid)"), ("track", "(albumid)"), ("track", "(genreid)"), ("track", "(trackid)")} <= indexed
    constraints = query(
        pg_dsn,
        "SELECT conrelid::regclass::text, confrelid::regclass::text, convalidated FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = %s::regnamespace ORDER BY 1, 2",
        (schema,),
    )
    assert [(child.split(".")[-1], parent.split(".")[-1], valid) for child, parent, valid in constraints] == [
        ("album", "artist", False),
        ("track", "album", False),
        ("track", "genre", False),
    ]
    (kind,) = query(
        pg_dsn,
        "SELECT data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = 'invoice' "
        "AND column_name = 'invoicedate'",
        (schema,),
    )
    assert kind == ("timestamp without time zone",)
    assert query(
        pg_dsn, sql.SQL("SELECT invoicedate::text FROM {}.invoice ORDER BY 1 LIMIT 1").format(sql.Identifier(schema))
    ) == [("2009-01-01 00:00:00",)]
