"""What a SQLite file looks like from outside, cheaply: enough to tell that a commit happened.

In WAL mode a commit appends to ``<db>-wal`` and leaves the main file alone until a
checkpoint, so both files are fingerprinted. ``<db>-shm`` is ignored: every reader touches
it. An empty ``-wal`` counts as none (opening a WAL database creates one). Only ``stat`` and
an 8-byte header read are used, never the data: a sensor tick must stay cheap.

Size and ``st_mtime_ns`` alone miss a file replaced by one with the same size and mtime
(``cp -p``, restore tools, ``os.utime`` then ``os.replace``), so the inode is part of both
files' fingerprints and the main file's ``st_ctime_ns`` too: the kernel sets ctime on every
write, rename or metadata change and nothing can set it back. The ``-wal`` file's ctime is
left out on purpose: SQLite running as root ``fchown``s the ``-wal`` every time a connection
opens it, even a read-only reader (the sync itself), which changes its ctime without a commit
and would make every sync trigger the next one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A rollback journal that holds a transaction has a non-zero 28-byte header (the magic
# number is only written when it is synced, but the nonce and sizes are there from the
# start). In TRUNCATE or PERSIST journal mode the file stays after a commit, empty or with its
# header zeroed: no write is in progress then.
_JOURNAL_HEADER_BYTES = 28


@dataclass(frozen=True)
class FileState:
    """The fingerprint of a SQLite file, or why there is none to take."""

    fingerprint: str | None
    missing: bool = False
    writing: bool = False  # a live rollback journal: a write transaction is in progress


def _main_part(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"


def _wal_part(wal: Path) -> str:
    try:
        st = os.stat(wal)
    except FileNotFoundError:
        return "-"
    # No ctime here: see the module docstring (readers running as root change it).
    return "-" if st.st_size == 0 else f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _write_in_progress(journal: Path) -> bool:
    try:
        with journal.open("rb") as f:
            return any(f.read(_JOURNAL_HEADER_BYTES))
    except FileNotFoundError:
        return False


def file_state(path: str | Path) -> FileState:
    path = Path(path)
    if not path.is_file():
        return FileState(fingerprint=None, missing=True)
    if _write_in_progress(Path(f"{path}-journal")):
        return FileState(fingerprint=None, writing=True)
    try:
        main = os.stat(path)
    except FileNotFoundError:  # removed or renamed away since is_file()
        return FileState(fingerprint=None, missing=True)
    return FileState(fingerprint=f"db={_main_part(main)};wal={_wal_part(Path(f'{path}-wal'))}")
