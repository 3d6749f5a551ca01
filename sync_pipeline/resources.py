"""The two ends of the sync as Dagster resources, fed by environment variables.

``PG_CONN_STR`` reaches the resource as an ``EnvVar``, so the UI shows the variable's name,
never its value; everything this module logs or raises goes through ``mask_dsn``/``redact``.
"""

from pathlib import Path
from typing import TypeVar

import psycopg2
import psycopg2.extensions
from dagster import ConfigurableResource, DagsterInvariantViolationError, EnvVar
from psycopg2 import sql
from pydantic import Field

from .embedded_pg import embedded_dsn, embedded_pgdata
from .engine import SourceUnavailableError, SqliteSnapshot, redact
from .engine.bookkeeping import DEFAULT_STATE_SCHEMA
from .engine.secrets import mask_dsn
from .engine.versions import SnapshotClock
from .partitions import discover, is_many

R = TypeVar("R", bound=ConfigurableResource)


class TargetUnavailableError(Exception):
    """PostgreSQL could not be reached; the message never carries the password."""


class SQLiteSource(ConfigurableResource):
    """The SQLite file to mirror (``SQLITE_PATH``), or a directory or glob of many (see partitions.py)."""

    path: str = Field(
        description="Path of the SQLite file to mirror, or a directory or glob of many files (SQLITE_PATH)."
    )

    @property
    def many(self) -> bool:
        return is_many(self.path)

    def file(self, key: str | None = None) -> Path:
        """The file to read: the one file, or the file of partition ``key``."""
        if key is None:
            return Path(self.path)
        files = discover(self.path)
        if key not in files:
            raise SourceUnavailableError(f"no SQLite file for partition {key!r} under {self.path!r} any more")
        return files[key]

    def snapshot(self, readers: int = 1, clock: SnapshotClock | None = None, key: str | None = None) -> SqliteSnapshot:
        # Arrow readers (child processes) only for files big enough to repay a process start.
        return SqliteSnapshot(self.file(key), arrow="auto", readers=readers, clock=clock)


class PostgresTarget(ConfigurableResource):
    """The PostgreSQL database and schema that mirror the file (``PG_CONN_STR``, ``PG_SCHEMA``), and the
    schema where the sync keeps its bookkeeping (``PG_STATE_SCHEMA``)."""

    conn_str: str = Field(
        default="",
        description="libpq connection string or URI (PG_CONN_STR). Empty: the embedded PostgreSQL in state/pgdata "
        "(started by the first sync, stopped when the last process using it exits; `python -m sync_pipeline db` "
        "prints its connection string).",
    )
    pg_schema: str = Field(default="public", description="Target schema (PG_SCHEMA); it must exist.")
    state_schema: str = Field(
        default=DEFAULT_STATE_SCHEMA,
        description="Schema of the sync's bookkeeping (PG_STATE_SCHEMA), apart from the mirrored tables; "
        "created on first use, and may be shared by several target schemas.",
    )
    create_schema: bool = Field(
        default=False,
        description="Create the target schema on first connection when it is missing (a component's "
        "postgres.create_schema); off, a missing schema fails the sync, naming it.",
    )

    def describe(self) -> str:
        """Where the data goes, safe to log: the DSN with its password masked."""
        where = mask_dsn(self.conn_str) if self.conn_str else f"embedded PostgreSQL in {embedded_pgdata()}"
        return f"{where}, schema {self.pg_schema}"

    def connect(self) -> psycopg2.extensions.connection:
        conn = self._connect()
        if self.create_schema and (self.conn_str, self.pg_schema) not in _SCHEMAS_MADE:
            _create_schema(conn, self.pg_schema)
            _SCHEMAS_MADE.add((self.conn_str, self.pg_schema))
        return conn

    def _connect(self) -> psycopg2.extensions.connection:
        dsn = self.conn_str or embedded_dsn()
        try:
            # Keepalives: a network that drops without a reset must fail the sync, not hang it
            # while it holds the pool's only slot.
            return psycopg2.connect(
                dsn,
                application_name="sqlite-pg-sync",
                client_encoding="UTF8",  # COPY sends UTF-8, whatever the role's or database's setting
                connect_timeout=10,
                keepalives=1,
                keepalives_idle=30,
                keepalives_interval=10,
                keepalives_count=3,
            )
        except psycopg2.Error as exc:
            raise TargetUnavailableError(
                f"cannot connect to PostgreSQL at {mask_dsn(dsn)}: {redact(str(exc).strip(), dsn)}"
            ) from None


def read_now(resource: R) -> R:
    """``resource`` with its ``EnvVar`` fields read from the environment now: outside a run, what Dagster's
    ``process_config_and_initialize`` gives for these resources (plain fields, no set-up, nothing nested),
    without the ephemeral Dagster instance that it opens to do so: 0.3 s as a process's first instance, of which
    the headless command, which opens the project's instance anyway, saves about 0.05 s per resource read."""
    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    unset = [value.env_var_name for value in fields.values() if isinstance(value, EnvVar) and value.get_value() is None]
    if unset:
        raise DagsterInvariantViolationError(f"environment variable {', '.join(unset)} is not set")
    return type(resource)(**{n: v.get_value() if isinstance(v, EnvVar) else v for n, v in fields.items()})


_SCHEMAS_MADE: set[tuple[str, str]] = set()  # (conn_str, schema) known to exist in this process


def _create_schema(conn: psycopg2.extensions.connection, schema: str) -> None:
    """``CREATE SCHEMA`` only when missing: it needs the database's CREATE privilege even when the
    schema exists, which a sync role that was given an existing schema may not have."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
