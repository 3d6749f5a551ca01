"""Many SQLite files as partitions of the same assets: which files, and the key of each.

``SQLITE_PATH`` naming one file keeps the single-file layout (no partitions). Naming a directory
or a glob (``/data/runs/*.sqlite``) makes every matching file a partition of the dynamic
partitions definition ``sqlite_files``. The rules, one place for all of them (README, "Many files"):

- **What is a file.** In a directory, the files ending in ``.sqlite``, ``.sqlite3`` or ``.db``, in
  any subdirectory; with a glob, what it matches. SQLite's own ``-wal``, ``-shm`` and ``-journal``
  files never are, nor is anything inside a Dagster instance's SQLite storage (a folder holding
  ``history/runs.db``, or ``runs.db`` beside ``runs/``: the layout of Dagster's storage), so
  ``SQLITE_PATH=state`` never takes Dagster's run history for data.
- **Refused, each alone.** A file that does not start with SQLite's header (a text file named
  ``junk.sqlite``, an empty or half-started copy), a file shorter than its header says (a copy still being
  written), a symlink (or a file reached through a symlinked
  folder: symlinks are never followed, so a link can neither leave the folder nor name a file twice),
  a path of 512 bytes or more (SQLite cannot open it), a key Dagster does not accept as a partition
  key, and every file of a key two files share (``a.db`` beside ``a.sqlite``): none is a partition,
  each is listed with why (the sensor's skip reason, the headless command's warnings), and every
  other file syncs as if it were not there.
- **Key.** A file's key is its path relative to the directory (for a glob, to the deepest directory
  before the first wildcard), with ``/`` between directories and the extension dropped:
  ``/data/runs/2024/run_7.sqlite`` under ``/data/runs`` is ``2024/run_7``.

Which tables the assets have comes from the files readable when the definitions load
(:func:`union_of_tables`): each file is read alone (its schema only, never a copy of it), and a
file that cannot be read then (a hot rollback journal, a half-copied file) adds no table and fails
no other file; its own run fails, naming it.
"""

from __future__ import annotations

import glob
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dagster import DagsterInstance, DynamicPartitionsDefinition
from sqlalchemy.exc import IntegrityError

from .engine import SourceUnavailableError, TableInfo, list_tables

PARTITIONS_NAME = "sqlite_files"
SQLITE_FILES = DynamicPartitionsDefinition(name=PARTITIONS_NAME)
SUFFIXES = (".sqlite", ".sqlite3", ".db")
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
SQLITE_HEADER = b"SQLite format 3\x00"
_HEADER_BYTES = 100  # SQLite's database header
MAX_PATH_BYTES = 512  # SQLite's unix VFS refuses a path of this many bytes or more (SQLITE_MAX_PATHNAME)
# What Dagster refuses in a partition key (dagster's INVALID_PARTITION_SUBSTRINGS, not exported).
_BAD_IN_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_WILDCARDS = set("*?[")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Folder:
    """What ``SQLITE_PATH`` names now: the partitions (key -> file, in key order) and the files it
    matched that are not partitions, each with why (path -> reason)."""

    files: dict[str, Path] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def refusals(self) -> list[str]:
        return [f"{path}: {why}" for path, why in sorted(self.refused.items())]


def is_many(path: str) -> bool:
    """Whether ``SQLITE_PATH`` names many files (a directory or a glob) rather than one ('' names none)."""
    return bool(path) and (Path(path).is_dir() or bool(_WILDCARDS & set(path)))


def _root(path: str) -> Path:
    if Path(path).is_dir():
        return Path(path)
    parts = Path(path).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if _WILDCARDS & set(p))]]
    return Path(*fixed) if fixed else Path(".")


def _candidates(path: str) -> list[Path]:
    """Every path ``path`` matches that could be a file to sync, symlinks included (refused later)."""
    if Path(path).is_dir():
        return [  # os.walk never enters a symlinked folder; a symlinked file is listed, then refused
            Path(directory, name)
            for directory, _, names in os.walk(path)
            for name in names
            if Path(name).suffix.lower() in SUFFIXES
        ]
    return [Path(p) for p in glob.glob(path, recursive=True) if not p.endswith(SQLITE_COMPANIONS)]


def _is_dagster_storage(directory: Path, seen: dict[Path, bool]) -> bool:
    if directory not in seen:
        seen[directory] = (directory / "history" / "runs.db").is_file() or (
            (directory / "runs.db").is_file() and (directory / "runs").is_dir()
        )
    return seen[directory]


def _why_not(file: Path, root: Path, dagster_dirs: dict[Path, bool]) -> str | None:
    """Why ``file`` is not a partition, None when it is one (the rules of the module docstring);
    ``""``: not a candidate at all (Dagster's own files, a folder), left out without a word."""
    relative = file.relative_to(root)
    ancestors = [root.joinpath(*relative.parts[:i]) for i in range(len(relative.parts))]
    if any(_is_dagster_storage(a, dagster_dirs) for a in ancestors):
        return ""
    if any(a.is_symlink() for a in [*ancestors[1:], file]):
        return "a symlink (symlinks are never followed: sync the file itself)"
    if not file.is_file():
        return ""
    if len(os.fsencode(file.absolute())) >= MAX_PATH_BYTES:
        return f"its path is {MAX_PATH_BYTES} bytes or longer, more than SQLite can open"
    try:
        with file.open("rb") as f:
            header = f.read(_HEADER_BYTES)
        size = file.stat().st_size
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if header[: len(SQLITE_HEADER)] != SQLITE_HEADER:
        return "not a SQLite database (no SQLite header: another kind of file, or a copy not yet written)"
    expected = _size_in_header(header)
    if expected is not None and size < expected:
        return f"incomplete: {size:,} of the {expected:,} bytes its header gives (a copy still being written?)"
    return None


def _size_in_header(header: bytes) -> int | None:
    """The file size SQLite's header promises (page size times the page count), when the header vouches for
    its page count (SQLite's rule: "version-valid-for" equals the change counter); None when it cannot tell."""
    if len(header) < _HEADER_BYTES:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if not pages or header[92:96] != header[24:28]:
        return None
    return page_size * pages


def file_key(file: Path, root: Path) -> str:
    """The partition key of ``file`` (see the module docstring)."""
    return file.absolute().relative_to(root.absolute()).with_suffix("").as_posix()


def survey(path: str) -> Folder:
    """The partitions and the refused files of what ``path`` names now (see the module docstring)."""
    root = _root(path)
    by_key: dict[str, list[Path]] = {}
    refused: dict[str, str] = {}
    dagster_dirs: dict[Path, bool] = {}
    for file in sorted(set(_candidates(path))):
        why = _why_not(file, root, dagster_dirs)
        if why == "":
            continue
        if why is not None:
            refused[str(file)] = why
            continue
        key = file_key(file, root)
        if any(bad in key for bad in _BAD_IN_KEYS):
            refused[str(file)] = f"its key {key!r} holds characters Dagster refuses in a partition key"
            continue
        by_key.setdefault(key, []).append(file)
    files: dict[str, Path] = {}
    for key, found in sorted(by_key.items()):
        if len(found) == 1:
            files[key] = found[0]
            continue
        names = ", ".join(repr(str(f)) for f in found)
        for file in found:
            refused[str(file)] = (
                f"files {names} would all be partition {key!r} (a file's key is its path under the directory "
                "without its extension); rename all but one"
            )
    return Folder(files, refused)


def discover(path: str) -> dict[str, Path]:
    """Partition key -> file, for every file ``path`` names now that is a partition, in key order."""
    return survey(path).files


def add_partitions(instance: DagsterInstance, name: str, keys: Sequence[str]) -> list[str]:
    """Add the partitions ``keys`` the instance does not know yet; the keys added. Idempotent under
    concurrency: Dagster's storage reads the known keys then inserts the others, so two processes adding
    one key at once make the second fail on the table's unique constraint; a key added meanwhile by
    someone else is what was wanted, so each key is then added alone and a clash is success."""
    known = set(instance.get_dynamic_partitions(name))
    new = [key for key in keys if key not in known]
    if not new:
        return []
    try:
        instance.add_dynamic_partitions(name, new)
    except IntegrityError:
        for key in new:
            try:
                instance.add_dynamic_partitions(name, [key])
            except IntegrityError:
                if not instance.has_dynamic_partition(name, key):
                    raise
    return new


def register_files(instance: DagsterInstance, path: str, name: str = PARTITIONS_NAME) -> list[str]:
    """Add the partitions of files ``path`` names now that the instance does not know yet (what the
    sensor does on its tick), so a headless sync sees every file without a sensor; the keys added."""
    return add_partitions(instance, name, list(discover(path)))


def union_of_tables(files: dict[str, Path]) -> list[TableInfo]:
    """The tables of the files, read each alone: a file that cannot be read now adds nothing (logged,
    naming it), and never keeps the others' tables from loading (see the module docstring)."""
    per_file = []
    for key, file in files.items():
        try:
            per_file.append(list_tables(file))
        except (SourceUnavailableError, sqlite3.Error, OSError) as exc:
            _log.warning("SQLite file %s (partition %s) adds no table now: %s", file, key, exc)
    return union_tables(per_file)


def union_tables(per_file: Iterable[Sequence[TableInfo]]) -> list[TableInfo]:
    """The tables of many files as one set of assets: every table any file has, each with every
    column any file gives it (in the order first seen), and the key of the first file that has it.
    PostgreSQL holds the same union (see engine/scope.py); a file lacking a column leaves it NULL."""
    merged: dict[str, TableInfo] = {}
    for tables in per_file:
        for table in tables:
            known = merged.get(table.name)
            if known is None:
                merged[table.name] = table
                continue
            extra = tuple(c for c in table.columns if c.name not in known.column_names)
            if extra:
                merged[table.name] = replace(known, columns=known.columns + extra)
    return [merged[name] for name in sorted(merged)]
