"""Reading a SQLite file: which tables it has, and their rows from one consistent snapshot.

The file is opened read-only through a ``mode=ro`` URI, so a sync can never write to the
application's database, and everything is read inside one read transaction, or inside several
started on the same state (an Arrow reader, and readers for tables synced in parallel).

In WAL mode that read transaction is a true snapshot that never blocks the writer. In
rollback-journal mode it would hold a shared lock for the whole sync, and a writer that needs
to commit would get "database is locked" once its busy timeout ran out. So such a file is
first copied with SQLite's backup API (the lock is held only for the copy: 0.7 s for a 420 MB
file on this machine kind, against about 15 s for its sync) and the copy is read instead.

The Arrow readers are child processes (:mod:`.arrow_child`): ADBC's driver brings its own SQLite
library, and two SQLite libraries must not have one file open in the same process. A child
costs a process start (python, pyarrow and the driver): 0.09 s and 57 MB RSS on an idle 2-core
machine, 0.12-0.19 s for a snapshot's open when the machine is busy, four at once 0.23 s; its
peak is about 100 MB while it reads batches of 10,000 rows. The Arrow path saves 2.4-2.6 s on
a 448 MB file (1M rows of the demo's big table, first load or no change), but on the demo's
files, snapshot open included, the two paths broke even near 30 MB (first load 0.59 s against
0.67, no change 0.32 against 0.34, noisy) and the Arrow one saved 0.08-0.13 s at 60 MB. So
``arrow="auto"`` starts children only for a file (with its WAL) of at least
``ARROW_AUTO_MIN_BYTES`` (64 MB, where the gain clearly pays for a child's start and memory);
``arrow=True`` always starts them (tests use it to send small files through the Arrow path),
``arrow=False`` never.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from .arrow_child import ArrowChild, ArrowUnfit, prestart, take_spare
from .types import PgType, decode_leniently, pg_type_for

# Tries at opening every reader on one snapshot before the run makes do with a single one.
SNAPSHOT_ATTEMPTS = 5
# arrow="auto": files (with their WAL) at least this big get Arrow readers (see the docstring).
ARROW_AUTO_MIN_BYTES = 64 * 1024 * 1024


class SourceUnavailableError(Exception):
    """The SQLite file cannot be opened or read as a database."""


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    declared_type: str
    not_null: bool
    pk_position: int  # 1-based position in the primary key, 0 when not part of it
    pg_type: PgType


@dataclass(frozen=True)
class ForeignKey:
    """One of SQLite's foreign keys (``PRAGMA foreign_key_list``), with SQLite's names: the table's
    ``columns`` refer to ``ref_columns`` of ``ref_table`` (its primary key when the declaration names
    none; empty when that table is not in the file). The actions are SQLite's, shown, never mirrored."""

    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"

    def describe(self) -> str:
        return f"({', '.join(self.columns)}) -> {self.ref_table} ({', '.join(self.ref_columns)})"


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[ColumnInfo, ...]
    primary_key: tuple[str, ...]  # column names in key order; empty when the table has none
    without_rowid: bool
    # The key is the rowid (INTEGER PRIMARY KEY, not DESC): every value an integer, rows stored in its order.
    rowid_key: bool = False
    # Its foreign keys, as SQLite declares them (metadata, and constraints with SYNC_FOREIGN_KEYS).
    foreign_keys: tuple[ForeignKey, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_indexes(self) -> tuple[int, ...]:
        names = self.column_names
        return tuple(names.index(k) for k in self.primary_key)

    def describe_key(self, row: tuple[object, ...], row_number: int) -> str:
        """A row's identity for an error message: its primary key, or its position."""
        if not self.primary_key:
            return f"#{row_number} (table has no primary key)"
        return "(" + ", ".join(f"{k}={row[i]!r}" for k, i in zip(self.primary_key, self.key_indexes, strict=True)) + ")"


@dataclass(frozen=True)
class Since:
    """Rows whose cursor column is at or past a watermark, or NULL (a NULL cannot be ordered,
    so such a row is read every time rather than never)."""

    column: str
    watermark: object

    def where(self) -> str:
        q = quote_sqlite_identifier(self.column)
        return f" WHERE {q} >= ? OR {q} IS NULL"


def quote_sqlite_identifier(name: str) -> str:
    """SQLite's own identifier quoting (PostgreSQL SQL never goes through here)."""
    return '"' + name.replace('"', '""') + '"'


# The rows of pragma_table_list that are tables of data: not views, virtual tables or SQLite's own.
_DATA_TABLES = "schema = 'main' AND type = 'table' AND substr(name, 1, 7) <> 'sqlite_'"


def _user_tables(conn: sqlite3.Connection) -> list[tuple[str, bool]]:
    rows = conn.execute(f"SELECT name, wr FROM pragma_table_list WHERE {_DATA_TABLES} ORDER BY name").fetchall()
    return [(name, bool(wr)) for name, wr in rows]


def _table_info(conn: sqlite3.Connection, name: str, without_rowid: bool) -> TableInfo:
    # hidden: 0 = ordinary, 1 = hidden column of a virtual table, 2/3 = generated column.
    rows = conn.execute(
        'SELECT name, type, "notnull", pk FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid',
        (name,),
    ).fetchall()
    columns = tuple(
        ColumnInfo(
            name=col, declared_type=decl or "", not_null=bool(nn), pk_position=pk, pg_type=pg_type_for(decl or "")
        )
        for col, decl, nn, pk in rows
    )
    primary_key = tuple(c.name for c in sorted((c for c in columns if c.pk_position), key=lambda c: c.pk_position))
    return TableInfo(
        name=name,
        columns=columns,
        primary_key=primary_key,
        without_rowid=without_rowid,
        rowid_key=_is_rowid_key(conn, name, columns, without_rowid),
        foreign_keys=_foreign_keys(conn, name),
    )


def _foreign_keys(conn: sqlite3.Connection, name: str) -> tuple[ForeignKey, ...]:
    """The table's foreign keys, one per constraint (its columns in order), with the names the tables and
    columns have (SQLite matches them without case, so a declaration may spell them otherwise); a reference
    that names no columns is to the referenced table's primary key, resolved here for every reader."""
    rows = conn.execute(
        'SELECT id, "table", "from", "to", on_update, on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq',
        (name,),
    ).fetchall()
    grouped: dict[int, list[tuple[str, str, str | None, str, str]]] = {}
    for fk_id, ref_table, column, ref_column, on_update, on_delete in rows:
        grouped.setdefault(fk_id, []).append((ref_table, column, ref_column, on_update, on_delete))
    keys = []
    own = _column_names(conn, name)
    for fk_id in sorted(grouped, reverse=True):  # SQLite numbers them from the last declared
        parts = grouped[fk_id]
        declared, _, _, on_update, on_delete = parts[0]
        found = conn.execute(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND name = ? COLLATE NOCASE", (declared,)
        ).fetchone()
        ref_table = found[0] if found else declared
        theirs = _column_names(conn, ref_table)
        if all(p[2] is not None for p in parts):
            ref_columns = tuple(theirs.get(str(p[2]).lower(), str(p[2])) for p in parts)
        else:
            pk = conn.execute("SELECT name FROM pragma_table_info(?) WHERE pk > 0 ORDER BY pk", (ref_table,)).fetchall()
            ref_columns = tuple(r[0] for r in pk) if len(pk) == len(parts) else ()
        columns = tuple(own.get(p[1].lower(), p[1]) for p in parts)
        keys.append(ForeignKey(columns, ref_table, ref_columns, on_update, on_delete))
    return tuple(keys)


def _column_names(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    """The table's columns by lower-cased name."""
    return {r[0].lower(): r[0] for r in conn.execute("SELECT name FROM pragma_table_xinfo(?)", (table,)).fetchall()}


def _is_rowid_key(conn: sqlite3.Connection, name: str, columns: tuple[ColumnInfo, ...], without_rowid: bool) -> bool:
    """Whether the key is an alias of the rowid: one column declared exactly ``INTEGER`` in a rowid table,
    and no index made for the key (SQLite makes one for ``INTEGER PRIMARY KEY DESC``, which is no alias
    and may hold text, reals and NULLs)."""
    keys = [c for c in columns if c.pk_position]
    if without_rowid or len(keys) != 1 or keys[0].declared_type.strip().upper() != "INTEGER":
        return False
    origins = conn.execute("SELECT origin FROM pragma_index_list(?)", (name,)).fetchall()
    return all(origin != "pk" for (origin,) in origins)


def _open_read_only(path: Path, timeout_s: float = 30.0) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout_s)
    _register_missing_collations(conn)
    return conn


_BUILT_IN_COLLATIONS = {"binary", "nocase", "rtrim"}
_COLLATE = re.compile(r"""\bCOLLATE\s+(?:"((?:[^"]|"")+)"|'((?:[^']|'')+)'|`([^`]+)`|\[([^\]]+)\]|([\w$]+))""", re.I)


def _collation_name(match: re.Match[str]) -> str:
    double, single, backtick, bracket, bare = match.groups()
    if double is not None:
        return double.replace('""', '"')
    if single is not None:
        return single.replace("''", "'")
    return backtick or bracket or bare


def _binary_order(a: str, b: str) -> int:
    return (a > b) - (a < b)


def _register_missing_collations(conn: sqlite3.Connection) -> None:
    """Give collations the application registers itself (Anki's ``unicase``, say) a stand-in.

    Without one, SQLite refuses any statement that needs the collation ("no such collation
    sequence"), even a ``count(*)`` that walks an index declared with it. The stand-in compares
    by code point, as BINARY does: deterministic, and reading rows never depends on it. Only
    ordering and equality of such a column inside SQLite would (a cursor on it compares its
    watermark under it); values are read unchanged.
    """
    statements = conn.execute("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL").fetchall()
    names = {_collation_name(m) for (text,) in statements for m in _COLLATE.finditer(text)}
    for name in names:
        if name.lower() not in _BUILT_IN_COLLATIONS:
            conn.create_collation(name, _binary_order)


class SqliteSnapshot:
    """One read-only, consistent view of a SQLite file, for as long as the context lasts.

    One snapshot serves every table of a run, so tables that refer to each other
    (``narrative_results.experiment_id`` -> ``experiments``) arrive in PostgreSQL from
    the same instant of the source.
    """

    def __init__(
        self,
        path: str | Path,
        arrow: bool | Literal["auto"] = True,
        readers: int = 1,
        clock: Callable[[], AbstractContextManager[int]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.use_arrow = arrow
        self.readers = readers
        # Numbers the snapshot while its read transactions begin (see versions.py), so that a
        # sync can refuse to write a state older than one already written. None: unnumbered.
        self.clock = clock
        self.version: int | None = None
        # Other readers of this very snapshot, one per extra parallel table sync (see _begin).
        self.views: list[SqliteSnapshot] = []
        self._conn: sqlite3.Connection | None = None
        self._arrow: ArrowChild | None = None
        self._copy_dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> SqliteSnapshot:
        if not self.path.is_file():
            raise SourceUnavailableError(f"SQLite file {str(self.path)!r} does not exist or is not a file")
        conns: list[sqlite3.Connection] = []
        arrows: list[ArrowChild | None] = []
        try:
            # The number covers the copy too: the state read is fixed when the copy is taken.
            with self.clock() if self.clock is not None else nullcontext(None) as version:
                read_path = self.path
                conn = _open_read_only(read_path)
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    read_path = self._copy(conn)
                    conn = _open_read_only(read_path)
                conns = [conn] + [_open_read_only(read_path) for _ in range(self.readers - 1)]
                # Started, and their imports and opens done, before the snapshot is bracketed.
                arrows = _open_arrows(read_path, len(conns)) if self._wants_arrow() else []
                readers = self._begin(conns, arrows)
            self.version = version
        except BaseException as exc:
            for opened in conns:
                opened.close()
            for arrow in arrows:
                if arrow is not None:
                    arrow.close()
            self._cleanup()
            if isinstance(exc, sqlite3.DatabaseError):
                raise SourceUnavailableError(f"cannot read SQLite file {str(self.path)!r}: {exc}") from exc
            raise
        (self._conn, self._arrow), *others = readers
        for extra, arrow in others:
            view = SqliteSnapshot(self.path, self.use_arrow)
            view._conn, view._arrow, view.version = extra, arrow, self.version
            self.views.append(view)
        return self

    def _wants_arrow(self) -> bool:
        return wants_arrow(self.path, self.use_arrow)

    def _begin(
        self, conns: list[sqlite3.Connection], arrows: list[ArrowChild | None]
    ) -> list[tuple[sqlite3.Connection, ArrowChild | None]]:
        """Start the read transactions of ``conns`` (and of their Arrow readers) on one snapshot.

        Connections cannot share a transaction, so the others (the Arrow children first, all at
        once) start theirs between two readings of ``PRAGMA data_version`` by the first, the
        second inside the first's own transaction; equal readings mean no writer committed in
        between, so every transaction sees the same state. If a writer commits at that very
        moment on every try, the run makes do with the first connection alone: no Arrow reader,
        no parallel readers (the extra ones are closed). ``arrows`` holds one opened child (or
        None) per connection, or nothing. Returns the (sqlite3 connection, Arrow reader or None)
        pairs now in the snapshot.
        """
        first, others = conns[0], conns[1:]
        if others or any(arrows):
            arrows = arrows or [None] * len(conns)
            for _ in range(SNAPSHOT_ATTEMPTS):
                before = _data_version(first)
                arrows = _begin_arrows(arrows)
                for conn in others:
                    _begin_read(conn)
                _begin_read(first)
                if _data_version(first) == before:
                    return list(zip(conns, arrows, strict=True))
                # The children roll back when they next begin; the sqlite3 readers do it now.
                for conn in conns:
                    conn.rollback()
            for conn in others:
                conn.close()
            for arrow in arrows:
                if arrow is not None:
                    arrow.close()
        _begin_read(first)
        return [(first, None)]

    def _copy(self, source: sqlite3.Connection) -> Path:
        self._copy_dir = tempfile.TemporaryDirectory(prefix="sqlite-pg-sync-")
        copy_path = Path(self._copy_dir.name) / "snapshot.sqlite"
        target = sqlite3.connect(copy_path)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return copy_path

    def _cleanup(self) -> None:
        if self._copy_dir is not None:
            self._copy_dir.cleanup()
            self._copy_dir = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for view in self.views:
            view.__exit__(None, None, None)
        self.views = []
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
        if self._arrow is not None:
            self._arrow.close()
            self._arrow = None
        self._cleanup()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteSnapshot used outside its 'with' block")
        return self._conn

    @property
    def arrow(self) -> ArrowChild | None:
        """The Arrow reader (a child process), in the same snapshot as :attr:`conn`; None without
        one, or once it was killed (a stream abandoned midway) or died."""
        return self._arrow if self._arrow is not None and self._arrow.usable else None

    def tables(self) -> list[TableInfo]:
        """User tables: views, virtual tables and SQLite's internal ``sqlite_*`` tables excluded."""
        return [_table_info(self.conn, name, wr) for name, wr in _user_tables(self.conn)]

    def schema_version(self) -> int:
        """SQLite's schema cookie in this snapshot: it moves on with every change to any table's schema."""
        return int(self.conn.execute("PRAGMA schema_version").fetchone()[0])

    def skipped_tables(self) -> list[str]:
        """What the file has besides the tables synced, each with why, so nothing is left out silently.

        Virtual tables (FTS, R-tree) are indexes kept by a module, over data an application keeps
        elsewhere; their shadow tables are that module's storage. An FTS5 table that stores its own
        content is the exception: its text is in its ``<name>_content`` shadow table only.
        """
        rows = self.conn.execute(
            "SELECT name, type FROM pragma_table_list WHERE schema = 'main' AND type IN ('view', 'virtual', 'shadow') "
            "ORDER BY name"
        ).fetchall()
        why = {"view": "view", "virtual": "virtual table", "shadow": "storage of a virtual table"}
        return [f"{name} ({why[kind]})" for name, kind in rows]

    def table(self, name: str) -> TableInfo:
        """One table, looked up by name: ``pragma_table_list(name)`` reads that table's entry only,
        where listing every table costs 3 ms in a file of 1000 (so O(n^2) over a sync of them all).
        SQLite matches the name without regard to case; the name must be the table's own."""
        rows = self.conn.execute(f"SELECT name, wr FROM pragma_table_list(?) WHERE {_DATA_TABLES}", (name,)).fetchall()
        for candidate, wr in rows:
            if candidate == name:
                return _table_info(self.conn, name, bool(wr))
        raise SourceUnavailableError(f"SQLite file {str(self.path)!r} has no table {name!r}")

    def count(self, table: TableInfo, since: Since | None = None) -> int:
        where, params = _filter(since)
        (n,) = self.conn.execute(
            f"SELECT count(*) FROM {quote_sqlite_identifier(table.name)}{where}", params
        ).fetchone()
        return int(n)

    def key_span(self, table: TableInfo, column: str) -> tuple[int, int] | None:
        """The smallest and largest value of an integer key; None if empty. Two subqueries: SQLite reads
        one end of the b-tree for a lone min() or max(), but scans the table for both in one SELECT."""
        q, name = quote_sqlite_identifier(column), quote_sqlite_identifier(table.name)
        low, high = self.conn.execute(f"SELECT (SELECT min({q}) FROM {name}), (SELECT max({q}) FROM {name})").fetchone()
        return None if low is None else (int(low), int(high))

    def keys_in_ranges(self, table: TableInfo, column: str, shift: int, batch_ids: Iterable[int]) -> Iterator[int]:
        """The values of integer key ``column`` in the key ranges ``batch_ids`` (batch *n* holds the keys
        ``[n << shift, (n + 1) << shift)``, see change_detection.py): a range scan of the rowid each."""
        q = quote_sqlite_identifier(column)
        query = f"SELECT {q} FROM {quote_sqlite_identifier(table.name)} WHERE {q} BETWEEN ? AND ?"
        for n in sorted(batch_ids):
            low = n << shift
            for (key,) in self.conn.execute(query, (low, low + (1 << shift) - 1)):
                yield int(key)

    def batches(
        self, table: TableInfo, batch_size: int, since: Since | None = None, order: str = ""
    ) -> Iterator[list[tuple[object, ...]]]:
        """Rows in lists of at most ``batch_size``; memory stays one batch whatever the table size.

        A table with a column that repairs text (``types.REPAIRED_TEXT``) is read with text that is
        not valid UTF-8 decoded leniently, which costs a Python call per text value.
        """
        columns = ", ".join(quote_sqlite_identifier(c) for c in table.column_names)
        where, params = _filter(since)
        if any(c.pg_type.repairs for c in table.columns):
            self.conn.text_factory = decode_leniently
        try:
            query = f"SELECT {columns} FROM {quote_sqlite_identifier(table.name)}{where}{order}"
            cursor = self.conn.execute(query, params)
            try:
                while batch := cursor.fetchmany(batch_size):
                    yield batch
            finally:
                cursor.close()
        finally:
            self.conn.text_factory = str

    def find_invalid_utf8(self, table: TableInfo) -> tuple[str, tuple[object, ...], int] | None:
        """(column, row, row number) of the first TEXT value that is not valid UTF-8.

        SQLite stores whatever bytes it is given as TEXT; Python's reader then fails without
        saying which row. This second pass, run only after such a failure, reads text as bytes
        to find it (blobs are left out: they are bytes anyway).
        """
        names = table.column_names
        texts = ", ".join(f"CASE WHEN typeof({q}) = 'text' THEN {q} END" for q in map(quote_sqlite_identifier, names))
        columns = ", ".join(map(quote_sqlite_identifier, names))
        self.conn.text_factory = bytes
        try:
            cursor = self.conn.execute(f"SELECT {columns}, {texts} FROM {quote_sqlite_identifier(table.name)}")
            for number, row in enumerate(cursor, start=1):
                for name, value in zip(names, row[len(names) :], strict=True):
                    if value is None:
                        continue
                    try:
                        value.decode("utf-8")
                    except UnicodeDecodeError:
                        shown = tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row)
                        return name, shown[: len(names)], number
            return None
        finally:
            self.conn.text_factory = str


def _filter(since: Since | None) -> tuple[str, tuple[object, ...]]:
    return ("", ()) if since is None else (since.where(), (since.watermark,))


def _data_version(conn: sqlite3.Connection) -> int:
    """The connection's view of how often others committed; a read first brings it up to date."""
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _begin_read(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN")
    # The read transaction, and so the snapshot, starts at the first read.
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()


def wants_arrow(path: Path, use_arrow: bool | Literal["auto"] = "auto") -> bool:
    """Whether a snapshot of ``path`` starts Arrow readers: always, never, or ("auto") for a file big
    enough to repay a child's start (:data:`ARROW_AUTO_MIN_BYTES`, the WAL counted)."""
    if use_arrow != "auto":
        return bool(use_arrow)
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
    return size >= ARROW_AUTO_MIN_BYTES


def prestart_arrow_reader(path: Path) -> None:
    """For a process that opens a snapshot of ``path`` (``arrow="auto"``) once its own set-up is done: the
    snapshot's Arrow reader, started now so that its start overlaps that set-up (arrow_child.prestart)."""
    try:
        wanted = path.is_file() and wants_arrow(path)
    except OSError:
        return  # gone meanwhile: the snapshot will say so
    if wanted:
        prestart(path)


def _open_arrows(path: Path, count: int) -> list[ArrowChild | None]:
    """``count`` Arrow readers of ``path``, started at once (one may have been started ahead:
    arrow_child.prestart); None for one that cannot open the file (the exact reader then says what
    is wrong with it) or cannot start."""
    spare = take_spare(path)
    started: list[ArrowChild | None] = [spare] if spare is not None else []
    try:
        for _ in range(count - len(started)):
            try:
                started.append(ArrowChild.spawn(path))
            except OSError:
                started.append(None)
        return [child if child is not None and child.wait_opened() else None for child in started]
    except BaseException:
        for child in started:
            if child is not None:
                child.close()
        raise


def _begin_arrows(arrows: list[ArrowChild | None]) -> list[ArrowChild | None]:
    """Start the read transactions of the Arrow readers (all at once) and wait until each has
    its snapshot; a reader that fails to is closed and becomes None."""
    for arrow in arrows:
        if arrow is not None and arrow.usable:
            try:
                arrow.begin()
            except ArrowUnfit:
                pass  # gone: begun() says so
    return [arrow if arrow is not None and arrow.begun() else None for arrow in arrows]


def list_tables(path: str | Path, busy_timeout_s: float = 2.0) -> list[TableInfo]:
    """The user tables of a SQLite file, read once (used at definitions load time, once per file).

    Only the schema is read, in one short read transaction: a snapshot would copy a file in
    rollback-journal mode whole first. A writer's lock is waited for ``busy_timeout_s`` at most, so a
    busy file cannot hold up the load of every other one; it then fails like an unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise SourceUnavailableError(f"SQLite file {str(path)!r} does not exist or is not a file")
    try:
        conn = _open_read_only(path, busy_timeout_s)
        try:
            conn.execute("BEGIN")
            return [_table_info(conn, name, wr) for name, wr in _user_tables(conn)]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SourceUnavailableError(f"cannot read SQLite file {str(path)!r}: {exc}") from exc
