"""Many SQLite files as partitions of the same assets: which files, and the key of each.

``SQLITE_PATH`` naming one file keeps the single-file layout (no partitions). Naming a directory
or a glob (``/data/runs/*.sqlite``) makes every matching file a partition of the dynamic
partitions definition ``sqlite_files``. The one rule for a file's key: its path relative to the
directory (for a glob, to the deepest directory before the first wildcard), with ``/`` between
directories and the file's extension dropped: ``/data/runs/2024/run_7.sqlite`` under
``/data/runs`` is ``2024/run_7``. Two files with one key (``a.db`` beside ``a.sqlite``) are
refused, naming both. In a directory, the files taken are those ending in ``.sqlite``,
``.sqlite3`` or ``.db``, in any subdirectory; SQLite's own ``-wal``, ``-shm`` and ``-journal``
files never are.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

from dagster import DagsterInstance, DynamicPartitionsDefinition

from .engine import TableInfo

PARTITIONS_NAME = "sqlite_files"
SQLITE_FILES = DynamicPartitionsDefinition(name=PARTITIONS_NAME)
SUFFIXES = (".sqlite", ".sqlite3", ".db")
_WILDCARDS = set("*?[")


class FileKeyCollisionError(ValueError):
    """Two SQLite files would be the same partition."""


def is_many(path: str) -> bool:
    """Whether ``SQLITE_PATH`` names many files (a directory or a glob) rather than one ('' names none)."""
    return bool(path) and (Path(path).is_dir() or bool(_WILDCARDS & set(path)))


def _root(path: str) -> Path:
    if Path(path).is_dir():
        return Path(path)
    parts = Path(path).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if _WILDCARDS & set(p))]]
    return Path(*fixed) if fixed else Path(".")


def _matches(path: str) -> list[Path]:
    if Path(path).is_dir():
        return [p for p in Path(path).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES]
    return [
        Path(p)
        for p in glob.glob(path, recursive=True)
        if Path(p).is_file() and not p.endswith(("-wal", "-shm", "-journal"))
    ]


def file_key(file: Path, root: Path) -> str:
    """The partition key of ``file`` (see the module docstring)."""
    relative = file.resolve().relative_to(root.resolve())
    return relative.with_suffix("").as_posix()


def discover(path: str) -> dict[str, Path]:
    """Partition key -> file, for every file ``path`` names now, in key order."""
    root = _root(path)
    found: dict[str, Path] = {}
    for file in sorted(_matches(path)):
        key = file_key(file, root)
        if key in found:
            raise FileKeyCollisionError(
                f"SQLite files {str(found[key])!r} and {str(file)!r} would both be partition {key!r} "
                "(a file's key is its path under the directory without its extension); rename one"
            )
        found[key] = file
    return dict(sorted(found.items()))


def register_files(instance: DagsterInstance, path: str) -> list[str]:
    """Add the partitions of files ``path`` names now that the instance does not know yet (what the
    sensor does on its tick), so a headless sync sees every file without a sensor; the keys added."""
    known = set(instance.get_dynamic_partitions(PARTITIONS_NAME))
    new = [key for key in discover(path) if key not in known]
    if new:
        instance.add_dynamic_partitions(PARTITIONS_NAME, new)
    return new


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
