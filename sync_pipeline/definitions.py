"""``defs``: the assets, resources and checks Dagster loads (``workspace.yaml`` and ``dg`` point here).

They come from the component instances under ``sync_pipeline/defs/`` (one ``defs.yaml`` each; the
project's own is ``defs/sqlite_pg_sync/defs.yaml``), built by ``SqliteSyncComponent`` with the same
builders as ever (see components/ and defs_builder.py). Which tables exist is read from the SQLite file
when the code location loads, so a new table in the file becomes a new asset at the next reload. The
project's instance reads the environment for everything its ``defs.yaml`` leaves out:

- ``SQLITE_PATH``: the file to mirror; unset means the demo file ``state/demo.sqlite``,
  generated on first use. A directory or a glob makes every matching file a partition
  (``sqlite_files``) of the same assets (see partitions.py).
- ``PG_CONN_STR``: the target; unset means the embedded PostgreSQL in ``state/pgdata``.
- ``PG_SCHEMA``: target schema, default ``public``.
- ``PG_STATE_SCHEMA``: schema of the sync's bookkeeping (snapshot numbers, watermarks, batch
  digests), default ``sqlite_pg_sync``, created on first use; it must differ from ``PG_SCHEMA``.
- ``SYNC_TABLES``, ``SYNC_EXCLUDE_TABLES``: comma-separated globs on SQLite table names; a table
  left out is not an asset. ``SYNC_EXCLUDE_COLUMNS``: ``table.column`` globs of columns never read.

``SPS_DEFS_ONLY`` (comma-separated folders under ``defs/``, e.g. ``sqlite_pg_sync``) loads only those
instances (defs_builder.py); the test suite sets it. The headless command does not import this module:
it builds only the project's own instance (``defs_builder.project_definitions``).
"""

from .defs_builder import build_definitions

defs = build_definitions()
