"""``defs``: the assets, resources and checks Dagster loads (``workspace.yaml`` and ``dg`` point here).

They come from the component instances under ``sync_pipeline/defs/`` (one ``defs.yaml`` each; the
project's own is ``defs/sqlite_pg_sync/defs.yaml``), built by ``SqliteSyncComponent`` with the same
builders as ever (see components/). Which tables exist is read from the SQLite file when the code
location loads, so a new table in the file becomes a new asset at the next reload. The project's
instance reads the environment for everything its ``defs.yaml`` leaves out:

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
instances. The test suite sets it, so that instances a user added to the checkout (pointing at their
own files and databases) are neither loaded nor materialized by a test's ``--select '*'``. Loaded this
way, the code location lacks the component-types metadata of the UI's Docs tab (Dagster adds it only
when it builds the whole tree).
"""

import os

from dagster import ComponentTree, Definitions, in_process_executor

from . import defs as defs_folder
from .demo import PROJECT_ROOT

ONLY_DEFS_ENV = "SPS_DEFS_ONLY"


def build_definitions() -> Definitions:
    """Every ``defs.yaml`` under ``sync_pipeline/defs/`` (only those ``SPS_DEFS_ONLY`` names, if set). Loaded
    from the module rather than with ``load_from_defs_folder``, which looks for pyproject.toml: the deploy
    image installs the package into site-packages (deploy/Dockerfile), where there is none."""
    tree = ComponentTree.from_module(defs_module=defs_folder, project_root=PROJECT_ROOT)
    only = [name.strip() for name in os.environ.get(ONLY_DEFS_ENV, "").split(",") if name.strip()]
    return Definitions.merge(
        *([tree.build_defs(name) for name in only] if only else [tree.build_defs()]),
        # One op per run: a step process of its own would add a process start to every sync, and
        # outlive a run worker killed under it (recording its table inside a run already failed).
        Definitions(executor=in_process_executor),
    )


defs = build_definitions()
