"""``defs``: the assets, resources and checks Dagster loads (``workspace.yaml`` points here).

Which tables exist is read from the SQLite file when the code location loads, so a new table
in the file becomes a new asset at the next reload. Environment:

- ``SQLITE_PATH``: the file to mirror; unset means the demo file ``state/demo.sqlite``,
  generated on first use. A directory or a glob makes every matching file a partition
  (``sqlite_files``) of the same assets (see partitions.py).
- ``PG_CONN_STR``: the target; unset means the embedded PostgreSQL in ``state/pgdata``.
- ``PG_SCHEMA``: target schema, default ``public``.
- ``PG_STATE_SCHEMA``: schema of the sync's bookkeeping (snapshot numbers, watermarks, batch
  digests), default ``sqlite_pg_sync``, created on first use; it must differ from ``PG_SCHEMA``.
- ``SYNC_TABLES``, ``SYNC_EXCLUDE_TABLES``: comma-separated globs on SQLite table names; a table
  left out is not an asset. ``SYNC_EXCLUDE_COLUMNS``: ``table.column`` globs of columns never read.
"""

import os

from dagster import AssetSelection, Definitions, EnvVar, in_process_executor

from .assets import build_sync_assets
from .demo import DEFAULT_DEMO_PATH, generate
from .engine import list_tables
from .engine.bookkeeping import DEFAULT_STATE_SCHEMA
from .engine.selection import Selection, parse_globs
from .partitions import SQLITE_FILES, discover, is_many, union_tables
from .resources import PostgresTarget, SQLiteSource
from .sensor import build_sensor
from .translator import SqliteTableTranslator


def _source() -> tuple[str, SQLiteSource]:
    if os.environ.get("SQLITE_PATH"):
        return os.environ["SQLITE_PATH"], SQLiteSource(path=EnvVar("SQLITE_PATH"))
    if not DEFAULT_DEMO_PATH.exists():
        generate(DEFAULT_DEMO_PATH)
    return str(DEFAULT_DEMO_PATH), SQLiteSource(path=str(DEFAULT_DEMO_PATH))


def _target() -> tuple[str, str, PostgresTarget]:
    """(schema, where the data goes with the password masked, the resource).

    The resource takes ``EnvVar``s, so the UI shows variable names, never values.
    """
    schema = os.environ.get("PG_SCHEMA") or "public"
    conn_str = os.environ.get("PG_CONN_STR", "")
    label = PostgresTarget(conn_str=conn_str, pg_schema=schema).describe()
    resource = PostgresTarget(
        conn_str=EnvVar("PG_CONN_STR") if conn_str else "",
        pg_schema=EnvVar("PG_SCHEMA") if os.environ.get("PG_SCHEMA") else "public",
        state_schema=EnvVar("PG_STATE_SCHEMA") if os.environ.get("PG_STATE_SCHEMA") else DEFAULT_STATE_SCHEMA,
    )
    return schema, label, resource


def _selection() -> Selection:
    return Selection(
        tables=parse_globs(os.environ.get("SYNC_TABLES", "")),
        exclude_tables=parse_globs(os.environ.get("SYNC_EXCLUDE_TABLES", "")),
        exclude_columns=parse_globs(os.environ.get("SYNC_EXCLUDE_COLUMNS", "")),
    )


def build_definitions() -> Definitions:
    path, sqlite = _source()
    schema, target_label, postgres = _target()
    translator = SqliteTableTranslator(pg_schema=schema, target_label=target_label)
    selection = _selection()
    if is_many(path):  # every file a partition of the same assets (partitions.py)
        found = union_tables(list_tables(file) for file in discover(path).values())
        tables = build_sync_assets(selection.apply(found), translator, selection=selection, partitions_def=SQLITE_FILES)
    else:
        tables = build_sync_assets(selection.apply(list_tables(path)), translator, selection=selection)
    return Definitions(
        assets=[tables],
        # One op per run: a step process of its own would add a process start to every sync, and
        # outlive a run worker killed under it (recording its table inside a run already failed).
        executor=in_process_executor,
        sensors=[build_sensor(AssetSelection.assets(tables))],
        resources={"sqlite": sqlite, "postgres": postgres},
    )


defs = build_definitions()
