"""What a SQLite file looks like from outside, cheaply: enough to tell that a commit happened.

In WAL mode a commit appends to ``<db>-wal`` and leaves the main file alone until a
checkpoint, so both files are fingerprinted. ``<db>-shm`` is ignored: every reader touches
it. Only ``stat`` is used, never a read of the data: a sensor tick must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileState:
    """The fingerprint of a SQLite file, or why there is none to take."""

    fingerprint: str | None
    missing: bool = False
    writing: bool = False  # a rollback journal exists: a write transaction is in progress


def _stat_part(path: Path) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}"


def file_state(path: str | Path) -> FileState:
    path = Path(path)
    if not path.is_file():
        return FileState(fingerprint=None, missing=True)
    if Path(f"{path}-journal").exists():
        return FileState(fingerprint=None, writing=True)
    return FileState(fingerprint=f"db={_stat_part(path)};wal={_stat_part(Path(f'{path}-wal'))}")
