"""What every benchmark run needs around it: a Dagster home and PostgreSQL schemas of its own.

The instance is the project's ``dagster.yaml`` with its storage moved into a temporary folder, so
a benchmark never touches the project's history; the target and bookkeeping schemas are created
for the run. All of it is removed at the end, whatever happened.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql

from sync_pipeline.demo import PROJECT_ROOT


@dataclass(frozen=True)
class Workspace:
    work: Path  # a temporary folder for the run's files
    home: Path  # DAGSTER_HOME
    schema: str  # PG_SCHEMA
    state_schema: str  # PG_STATE_SCHEMA, apart from the shared default

    def env(self, dsn: str) -> dict[str, str]:
        return {"PG_CONN_STR": dsn, "PG_SCHEMA": self.schema, "PG_STATE_SCHEMA": self.state_schema,
                "DAGSTER_HOME": str(self.home)}  # fmt: skip


@contextmanager
def workspace(dsn: str, name: str) -> Iterator[Workspace]:
    work = Path(tempfile.mkdtemp(prefix=f"sps-{name}-"))
    home = work / "dagster_home"
    home.mkdir()
    config = (PROJECT_ROOT / "dagster.yaml").read_text()
    (home / "dagster.yaml").write_text(config.replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}"))
    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield Workspace(work, home, schema, f"{schema}_state")
    finally:
        for dropped in (schema, f"{schema}_state"):
            conn.cursor().execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(dropped)))
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
