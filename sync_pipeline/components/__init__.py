"""Dagster components of this project (registered for ``dg`` by the ``dagster_dg_cli.registry_modules``
entry point in pyproject.toml): ``SqliteSyncComponent``, a SQLite-to-PostgreSQL sync declared in YAML."""

from .sqlite_sync import SqliteSyncComponent

__all__ = ["SqliteSyncComponent"]
