"""Definitions built from the component instances under ``sync_pipeline/defs/`` (one ``defs.yaml`` each).

Two ways, for two readers:

- :func:`build_definitions`: every instance, as Dagster loads the code location (``definitions.py``:
  ``dagster dev``, ``dg``, the deploy image). Built from the root of the tree, so the code location
  carries the component-types metadata of the UI's Docs tab.
- :func:`project_definitions`: the project's own instance only (``defs/sqlite_pg_sync``), for
  ``python -m sync_pipeline sync`` and ``db``, which use nothing else: the command syncs only that
  instance's assets (``cli.select_tables``) and ``db`` prints only its target. Building the rest costs
  every other instance's load (each reads its SQLite file) and, at the root, the Docs tab's metadata
  (a JSON schema and a sample YAML for every component type of the environment: about 80 ms, a quarter
  of a no-change headless sync's overhead outside Dagster itself).

``SPS_DEFS_ONLY`` (comma-separated folders under ``defs/``, e.g. ``sqlite_pg_sync``) makes both build only
those instances. The test suite sets it, so that instances a user added to the checkout (pointing at their
own files and databases) are neither loaded nor materialized by a test's ``--select '*'``. Loaded this
way, the code location lacks the component-types metadata (Dagster adds it only when it builds the whole tree).

This module is apart from ``definitions.py`` because importing that one builds every instance (Dagster
finds ``defs`` among its module attributes).
"""

import os
from collections.abc import Sequence

from dagster import ComponentTree, Definitions, in_process_executor

from . import defs as defs_folder
from .demo import PROJECT_ROOT

ONLY_DEFS_ENV = "SPS_DEFS_ONLY"
PROJECT_DEFS = "sqlite_pg_sync"  # the project's own instance: defs/sqlite_pg_sync/defs.yaml


def only_defs() -> list[str]:
    """The folders ``SPS_DEFS_ONLY`` names, in its order; empty when it is unset."""
    return [name.strip() for name in os.environ.get(ONLY_DEFS_ENV, "").split(",") if name.strip()]


def build_definitions(only: Sequence[str] = ()) -> Definitions:
    """The instances of the folders ``only`` names, else those of ``SPS_DEFS_ONLY``, else every ``defs.yaml``
    under ``sync_pipeline/defs/`` (the whole tree). Loaded from the module rather than with
    ``load_from_defs_folder``, which looks for pyproject.toml: the deploy image installs the package into
    site-packages (deploy/Dockerfile), where there is none."""
    tree = ComponentTree.from_module(defs_module=defs_folder, project_root=PROJECT_ROOT)
    folders = list(only) or only_defs()
    return Definitions.merge(
        *([tree.build_defs(name) for name in folders] if folders else [tree.build_defs()]),
        # One op per run: a step process of its own would add a process start to every sync, and
        # outlive a run worker killed under it (recording its table inside a run already failed).
        Definitions(executor=in_process_executor),
    )


def project_definitions() -> Definitions:
    """The definitions the headless commands use: the project's own instance (the instances ``SPS_DEFS_ONLY``
    names, when set), without the rest of the tree (module docstring)."""
    return build_definitions(only_defs() or [PROJECT_DEFS])
