"""Column types from the declaration and the data: which PostgreSQL type each column gets.

SQLite's declared types are hints (an INTEGER column may hold text, a GEOMETRY column blobs),
so the declaration only gives the starting type (``types.pg_type_for``). Reading costs nothing
extra while the values fit it: the encoders check every value anyway. When one does not fit,
the sync rolls back to its savepoint, profiles the columns (one SQLite scan, only then), moves
each column that does not hold its values to the narrowest type that holds them all exactly,
and reads again. The lattice, for a column's values (NULLs fit anything):

* integers only: ``bigint`` (``boolean`` while they are all 0 or 1 and the column says BOOLEAN);
* reals among them: ``double precision``, or ``numeric`` when an integer is past 2^53;
* blobs only: ``bytea``;
* any text, or numbers beside blobs: ``text``, numbers as their exact decimal text.

Some mixes no single type holds exactly: text beside blobs, text with NUL bytes or invalid UTF-8.
Those become :data:`~.types.REPAIRED_TEXT`: blobs as ``\\x`` and hex digits, NUL and invalid
bytes as U+FFFD. The values changed are counted and reported, never silent.

A column that exists in PostgreSQL is never narrowed: its type only widens (``ALTER COLUMN ...
TYPE ... USING``, in the sync's transaction), joined with what PostgreSQL already holds, and
``full_refresh`` recomputes every type from the data. Two settings opt out: ``strict_types``
fails instead (naming table, column and key), and ``column_types`` pins a column's type, which
then never moves: the column gets PostgreSQL's reading of each value's text (its input function,
under :data:`PIN_INPUT_SETTINGS`), and a value PostgreSQL cannot read as that type fails the table.

Every column whose type differs from its declared mapping, or whose values were changed, is
reported as a :class:`ColumnRetype` (with why, from a profile of that column: the normal case
has none and profiles nothing).

One more rule, opt-in (``infer_types``, ``SYNC_INFER_TYPES``): a column whose declared type names a
date, time, timestamp, JSON or UUID (and maps to text, and is not a key or pinned) starts from that
PostgreSQL type instead of text, as if pinned, with an encoder that accepts only values that read back
as the same value (inferred.py says what "exactly" is per type). The first value that is not such
widens the column as any misfit does: a timestamp column whose every value has an offset to
``timestamptz``, any other to text (its declared mapping without the rule), reported with why and the
row. A key column is never inferred: two texts that read as one value ('T' or a space) would be one key.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from . import inferred
from .errors import SyncError, ValueMismatchError
from .sqlite_source import ColumnInfo, SqliteSnapshot, TableInfo, quote_sqlite_identifier
from .types import (
    BIGINT,
    BOOLEAN,
    BYTEA,
    DOUBLE,
    NATIVE,
    NUMERIC,
    REPAIRED_TEXT,
    TEXT,
    PgType,
    decode_leniently,
    pg_type_for,
    pinned_type,
)

MAX_EXACT_DOUBLE_INT = 2**53
REPAIRS = "blobs stored as \\x and hex digits, NUL bytes and invalid UTF-8 as U+FFFD"


@dataclass(frozen=True)
class ColumnRetype:
    """One column whose PostgreSQL type is not its declared mapping, or whose values were changed."""

    column: str  # SQLite's name
    declared: str  # SQLite's declared type ('' when none)
    mapped: str  # the PostgreSQL type the declaration maps to
    pg_type: str  # the PostgreSQL type the column has
    why: str
    example_key: str | None  # one row that does not fit the declared mapping, when one still exists
    values_changed: int = 0  # values stored changed (REPAIRED_TEXT), in the whole SQLite table


@dataclass(frozen=True)
class Profile:
    """What one column holds, by SQLite storage class (NULLs left out)."""

    integers: int = 0
    reals: int = 0
    texts: int = 0
    blobs: int = 0
    min_int: int | None = None
    max_int: int | None = None
    texts_with_nul: int = 0
    texts_not_utf8: int = 0  # counted only when asked (it takes a Python call per text)

    @property
    def changed_as_text(self) -> int:
        """Values REPAIRED_TEXT stores changed."""
        return self.blobs + self.texts_with_nul + self.texts_not_utf8

    def ints_within(self, low: int, high: int) -> bool:
        return self.min_int is None or (low <= self.min_int and self.max_int <= high)  # type: ignore[operator]

    def describe(self) -> str:
        texts = f"{self.texts:,} {'text' if self.texts == 1 else 'texts'}"
        flaws = [
            f"{n:,} {what}"
            for n, what in ((self.texts_with_nul, "with NUL bytes"), (self.texts_not_utf8, "not UTF-8"))
            if n
        ]
        if flaws:
            texts += f" ({', '.join(flaws)})"
        found = [
            f"{n:,} {one if n == 1 else many}"
            for n, one, many in (
                (self.integers, "integer", "integers"),
                (self.reals, "real", "reals"),
                (self.blobs, "blob", "blobs"),
            )
            if n
        ]
        if self.texts:
            found.insert(len(found) - bool(self.blobs), texts)
        if self.min_int is not None and self.min_int != self.max_int:
            found.append(f"integers from {self.min_int} to {self.max_int}")
        return ", ".join(found) or "only NULLs"


def fits(pg_type: PgType, profile: Profile) -> bool:
    """Whether every value of the column reads back equal from a column of this type."""
    numbers = profile.integers + profile.reals
    if pg_type.repairs:
        return True
    if pg_type is BOOLEAN:
        return not (profile.reals or profile.texts or profile.blobs) and profile.ints_within(0, 1)
    if pg_type is BIGINT:
        return not (profile.reals or profile.texts or profile.blobs)
    if pg_type is DOUBLE:
        return not (profile.texts or profile.blobs) and profile.ints_within(-MAX_EXACT_DOUBLE_INT, MAX_EXACT_DOUBLE_INT)
    if pg_type is NUMERIC:
        return not (profile.texts or profile.blobs)
    if pg_type is TEXT:
        return not (profile.blobs or profile.texts_with_nul or profile.texts_not_utf8)
    if pg_type is BYTEA:
        return not (numbers or profile.texts)
    return True  # a pinned type: PostgreSQL itself decides


def needed(profile: Profile, mapped: PgType) -> PgType:
    """The narrowest type holding every value of the profile exactly (or repaired, if none can)."""
    if profile.texts or (profile.blobs and (profile.integers or profile.reals)):
        return TEXT if fits(TEXT, profile) else REPAIRED_TEXT
    if profile.blobs:
        return BYTEA
    if profile.reals:
        return DOUBLE if fits(DOUBLE, profile) else NUMERIC
    if profile.integers:
        return BOOLEAN if mapped is BOOLEAN and fits(BOOLEAN, profile) else BIGINT
    return mapped


def join(current: PgType, wanted: PgType, ints_within_double: bool) -> PgType:
    """The narrowest type holding both what a PostgreSQL column of type ``current`` holds and ``wanted``;
    ``ints_within_double``: every integer of both sides is within 2^53."""
    if current == wanted:
        return current
    pair = {current, wanted}
    if REPAIRED_TEXT in pair or BYTEA in pair:
        return REPAIRED_TEXT  # bytea beside anything else: no exact type (blobs become hex text)
    if TEXT in pair or any(t.name in inferred.INFERRED for t in pair):
        return TEXT  # two inferred types (timestamp beside timestamptz) hold no common values but as text
    if NUMERIC in pair:
        return NUMERIC
    if BOOLEAN in pair:
        return (pair - {BOOLEAN}).pop()
    # bigint and double precision
    return DOUBLE if ints_within_double else NUMERIC


def using(column: sql.Identifier, old: str, new: PgType) -> sql.Composable:
    """The USING expression of ``ALTER COLUMN ... TYPE new`` from a column of type ``old``.

    Rows still in SQLite are rewritten by the merge that follows, in the same transaction; the
    expression matters for rows only PostgreSQL still has, so it keeps their values exactly:
    a double goes to numeric through its shortest exact text (a direct cast keeps 15 digits).
    """
    target = sql.SQL(new.name)
    if old == "boolean":
        return sql.SQL("{}::integer::{}").format(column, target)
    if old == "double precision" and new.name == "numeric":
        return sql.SQL("{}::text::numeric").format(column)
    if old == "bytea":
        return sql.SQL("'\\x' || encode({}, 'hex')").format(column)
    return sql.SQL("{}::{}").format(column, target)


def cast_keeps_values(old: str, new: PgType) -> bool:
    """Whether :func:`using` leaves every value of a column of type ``old`` exactly as the engine
    writes it into type ``new``. Integers and booleans keep their text in any wider type; reals do
    not: a double ``100.0`` cast to text is ``'100'`` (the engine writes ``'100.0'``, its repr), and
    to numeric ``100`` (the engine's ``100.0`` keeps its scale); a numeric ``1e+292`` as text is 293
    digits. Rows a sync does not rewrite itself must then be rewritten from SQLite (rewrites.py)."""
    # Nor does an inferred type's text ('T' reads back as a space, JSON normalized, a UUID lowercased).
    return (old not in (DOUBLE.name, NUMERIC.name) and old not in inferred.INFERRED) or new.name == old


# Types whose ``=`` is identity: two values are equal only when they read back the same. Integers,
# booleans, bytea, uuid, money (an int64), the date and time types (timestamptz is one instant, shown
# per session; timetz compares its zone too), inet/cidr (mask included; '10.0.0.1' is '10.0.0.1/32'),
# ``character`` (no typmod is char(1), always padded) and text: the engine's text columns take the
# database's default collation, which PostgreSQL 15 allows only deterministic, and a deterministic
# collation's ``=`` compares bytes. A pinned domain or text type with a nondeterministic collation is
# not named here, so it compares by ``::text``, whose collation is the default one.
_EQUALITY_IS_IDENTITY = frozenset(
    {
        "bigint",
        "integer",
        "smallint",
        "oid",
        "boolean",
        "bytea",
        "text",
        "character varying",
        "character",
        "name",
        "uuid",
        "money",
        "date",
        "timestamp without time zone",
        "timestamp with time zone",
        "time without time zone",
        "time with time zone",
        "inet",
        "cidr",
        "macaddr",
        "macaddr8",
    }
)
# Floats: ``=`` says -0 = 0; their binary form tells them apart, and NaN's is equal to itself. Binary,
# not text, so the comparison holds under any ``extra_float_digits`` (text at 0 drops digits).
_BINARY_IDENTITY = {"double precision": "float8send", "real": "float4send"}


def identity(value: sql.Composable, pg_type: str) -> sql.Composable:
    """An expression of ``value`` (of the PostgreSQL type named ``pg_type``, as ``format_type`` spells it)
    whose ``=`` holds only when the two values read back the same, for deciding "unchanged".

    ``=`` is coarser than that for many types: -0 = 0 (floats), 2.0 = 2 (numeric), '1 day' = '24 hours'
    (interval), {"a": 1.0} = {"a": 1} (jsonb), 'A' = 'a' (citext), two boxes of equal area; and json,
    xml, point and others have no ``=`` at all. Such a value compares by its text, which is what a
    reader gets. Unknown types (any pin) compare by text too: text equality is identity of the output.
    Types whose ``=`` already is identity get ``value`` itself back, so their comparison costs nothing more.
    """
    if pg_type in _EQUALITY_IS_IDENTITY:
        return value
    if pg_type in _BINARY_IDENTITY:
        return sql.SQL("{}({})").format(sql.SQL(_BINARY_IDENTITY[pg_type]), value)
    return sql.SQL("({})::text").format(value)


def compared_columns(columns: Sequence[ColumnInfo], primary_key: Sequence[str]) -> list[ColumnInfo]:
    """The columns to compare, and rewrite when they differ, in a row matched by its key: every non-key
    column, and the key columns whose ``=`` is coarser than identity (a key that goes from 0.0 to -0.0, or
    '24 hours' to '1 day', still matches the same row by ``=``, and must be written all the same)."""
    return [c for c in columns if c.name not in primary_key or c.pg_type.name not in _EQUALITY_IS_IDENTITY]


def _valid_utf8(raw: bytes | None) -> int:
    try:
        (raw or b"").decode()
    except UnicodeDecodeError:
        return 0
    return 1


def profile(snapshot: SqliteSnapshot, table: TableInfo, columns: Iterable[str], utf8: bool) -> dict[str, Profile]:
    """Profiles of ``columns`` in one scan of the table; ``utf8``: also count invalid UTF-8 texts."""
    names = list(columns)
    if not names:
        return {}
    if utf8:
        snapshot.conn.create_function("sps_valid_utf8", 1, _valid_utf8, deterministic=True)
    parts = []
    for name in names:
        q = quote_sqlite_identifier(name)
        parts += [
            f"count(CASE WHEN typeof({q}) = 'integer' THEN 1 END)",
            f"count(CASE WHEN typeof({q}) = 'real' THEN 1 END)",
            f"count(CASE WHEN typeof({q}) = 'text' THEN 1 END)",
            f"count(CASE WHEN typeof({q}) = 'blob' THEN 1 END)",
            f"min(CASE WHEN typeof({q}) = 'integer' THEN {q} END)",
            f"max(CASE WHEN typeof({q}) = 'integer' THEN {q} END)",
            f"count(CASE WHEN typeof({q}) = 'text' AND instr(CAST({q} AS BLOB), x'00') > 0 THEN 1 END)",
            f"count(CASE WHEN typeof({q}) = 'text' AND NOT sps_valid_utf8(CAST({q} AS BLOB)) THEN 1 END)"
            if utf8
            else "0",
        ]
    row = snapshot.conn.execute(f"SELECT {', '.join(parts)} FROM {quote_sqlite_identifier(table.name)}").fetchone()
    width = len(parts) // len(names)
    return {name: Profile(*row[i * width : (i + 1) * width]) for i, name in enumerate(names)}


def _misfit_condition(q: str, mapped: PgType) -> str:
    """A SQLite condition true for a value that does not fit ``mapped`` (see :func:`fits`)."""
    if mapped is BOOLEAN:
        return f"NOT (typeof({q}) = 'integer' AND {q} IN (0, 1))"
    if mapped is BIGINT:
        return f"typeof({q}) <> 'integer'"
    if mapped is DOUBLE:
        limit = MAX_EXACT_DOUBLE_INT
        return f"(typeof({q}) IN ('text', 'blob') OR (typeof({q}) = 'integer' AND ({q} > {limit} OR {q} < -{limit})))"
    if mapped is NUMERIC:
        return f"typeof({q}) IN ('text', 'blob')"
    if mapped is BYTEA:
        return f"typeof({q}) <> 'blob'"
    # text: what REPAIRED_TEXT changes
    return (
        f"(typeof({q}) = 'blob' OR (typeof({q}) = 'text' AND (instr(CAST({q} AS BLOB), x'00') > 0 "
        f"OR NOT sps_valid_utf8(CAST({q} AS BLOB)))))"
    )


def _exact(kind: str, value: object) -> int:
    return int(type(value) is str and inferred.CHECKS[kind](value))


def _exact_condition(q: str, family: Sequence[PgType]) -> str:
    """A SQLite condition true for a value that reads exactly as one of ``family`` (parameters: their names)."""
    return "(" + " OR ".join(f"sps_exact(?, {q})" for _ in family) + ")"


def inferred_misfits(
    snapshot: SqliteSnapshot, table: TableInfo, column: str, family: Sequence[PgType]
) -> dict[str, int]:
    """Per inferred type of ``family``, the values of ``column`` that do not read exactly as it, and
    ("any") those that read as none of them, in one scan (a Python call per value: on a misfit only)."""
    snapshot.conn.create_function("sps_exact", 2, _exact, deterministic=True)
    q = quote_sqlite_identifier(column)
    parts = [f"count(CASE WHEN {q} IS NOT NULL AND NOT sps_exact(?, {q}) THEN 1 END)" for _ in family]
    parts.append(f"count(CASE WHEN {q} IS NOT NULL AND NOT {_exact_condition(q, family)} THEN 1 END)")
    names = [t.name for t in family]
    row = snapshot.conn.execute(
        f"SELECT {', '.join(parts)} FROM {quote_sqlite_identifier(table.name)}", (*names, *names)
    ).fetchone()
    return {**dict(zip(names, row, strict=False)), "any": row[-1]}


def inferred_example_key(
    snapshot: SqliteSnapshot, table: TableInfo, column: str, family: Sequence[PgType]
) -> str | None:
    """One row whose value in ``column`` reads as none of ``family``, or else (a timestamp column whose
    values mix offsets and none) one that does not read as the first."""
    snapshot.conn.create_function("sps_exact", 2, _exact, deterministic=True)
    q = quote_sqlite_identifier(column)
    names = [t.name for t in family]
    for condition, params in ((_exact_condition(q, family), names), (f"sps_exact(?, {q})", names[:1])):
        key = _first_key(snapshot, table, f"{q} IS NOT NULL AND NOT {condition}", params)
        if key is not None:
            return key
    return None


def _first_key(snapshot: SqliteSnapshot, table: TableInfo, condition: str, params: Sequence[object]) -> str | None:
    key = list(table.primary_key) or ["rowid"]
    try:
        row = snapshot.conn.execute(
            f"SELECT {', '.join(map(quote_sqlite_identifier, key))} FROM {quote_sqlite_identifier(table.name)} "
            f"WHERE {condition} LIMIT 1",
            tuple(params),
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # a table without rowid and key cannot be pointed at
    return None if row is None else "(" + ", ".join(f"{k}={v!r}" for k, v in zip(key, row, strict=True)) + ")"


def example_key(snapshot: SqliteSnapshot, table: TableInfo, column: str, mapped: PgType) -> str | None:
    """One row whose value in ``column`` does not fit ``mapped``, as its key (or rowid), if any."""
    key = list(table.primary_key) or ["rowid"]
    q = quote_sqlite_identifier(column)
    conn = snapshot.conn
    conn.create_function("sps_valid_utf8", 1, _valid_utf8, deterministic=True)
    previous, conn.text_factory = conn.text_factory, decode_leniently
    try:
        row = conn.execute(
            f"SELECT {', '.join(map(quote_sqlite_identifier, key))} FROM {quote_sqlite_identifier(table.name)} "
            f"WHERE {q} IS NOT NULL AND {_misfit_condition(q, mapped)} LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # a table without rowid and key cannot be pointed at; the why still says it all
    finally:
        conn.text_factory = previous
    return None if row is None else "(" + ", ".join(f"{k}={v!r}" for k, v in zip(key, row, strict=True)) + ")"


class ColumnTypes:
    """The types of one table's columns for one sync, and how they may move during it."""

    def __init__(self, table: TableInfo, strict: bool, pins: Mapping[str, PgType], infer: bool = False) -> None:
        self.table = table  # as SQLite declares it
        self.strict = strict
        self.pins = dict(pins)  # SQLite column name -> pinned type
        self.reasons: dict[str, tuple[str, str | None]] = {}  # column -> (why, example key) decided now
        self.widened: list[str] = []  # columns whose type moved in this sync
        # Column -> the inferred types it may take (``infer``), the first to start from. Strictness has
        # no lattice to widen in, so no inference either; a pin always wins; keys are never inferred.
        self.inferable: dict[str, tuple[PgType, ...]] = {
            c.name: found
            for c in table.columns
            if infer and not strict and c.name not in self.pins and not c.pk_position
            if (found := inferred.candidates(c.declared_type))
        }
        self.comments: dict[str, str] = {}  # inferable column -> its COMMENT in PostgreSQL (start() reads them)

    def mapped(self, column: str) -> PgType:
        if column in self.inferable:
            return self.inferable[column][0]
        return self.pins.get(column) or pg_type_for(
            self.table.columns[self.table.column_names.index(column)].declared_type
        )

    def _as_mapped(self, column: str, pg_type: PgType) -> bool:
        """Whether the column has the type its declaration maps to (any of its inferred types counts)."""
        return pg_type.name == self.mapped(column).name or pg_type in self.inferable.get(column, ())

    def fix_input_settings(self, cur: psycopg2.extensions.cursor) -> None:
        """:data:`PIN_INPUT_SETTINGS` for a table with inferred columns and no pin (resolve_pins sets them
        then): a widening's ``USING`` casts a timestamptz to text, which reads the session's TimeZone."""
        if self.inferable and not self.pins:
            cur.execute(sql.SQL("SELECT {}").format(_SET_PIN_INPUT))

    def start(self, in_pg: Mapping[str, tuple[str, str | None]] | None) -> TableInfo:
        """The table with the types to start from: the declared mapping (pins first) for a table
        built from nothing, else the types PostgreSQL has (``in_pg``: ``PgTable.catalog()``, type and
        COMMENT per column; never narrowed), the declared mapping for columns it lacks. A text column
        whose COMMENT (written from :meth:`notes`) says its values are repaired is read as such at
        once, instead of failing on the first such value again.

        With ``strict_types`` every column starts from (and stays at) its declared mapping, so a
        column PostgreSQL holds under another type, widened earlier or declared otherwise since,
        fails the sync as a changed shape ("run with full_refresh"), as before types from the data.
        """
        columns = []
        for column in self.table.columns:
            pg_type = self.mapped(column.name)
            if in_pg is not None and column.name in in_pg and column.name not in self.pins and not self.strict:
                name, comment = in_pg[column.name]
                if column.name in self.inferable:
                    self.comments[column.name] = comment or ""
                family = {t.name: t for t in self.inferable.get(column.name, ())}
                pg_type = family.get(name) or _by_name(name, pg_type)
                if pg_type is TEXT and REPAIRS in (comment or ""):
                    pg_type = REPAIRED_TEXT
            columns.append(replace(column, pg_type=pg_type))
        return replace(self.table, columns=tuple(columns))

    def widen(
        self,
        snapshot: SqliteSnapshot,
        typed: TableInfo,
        misfit: SyncError,
        pg_holds: Callable[[str], tuple[bool, bool]] | None,
    ) -> dict[str, tuple[PgType, bool]]:
        """The columns of ``typed`` that must change type to hold the snapshot's values, and to what.

        ``pg_holds``, for a table whose rows stay (an incremental sync): for a column, whether
        PostgreSQL holds values in it, and whether its integers are within 2^53. Returns, per
        column to change, the new type and whether PostgreSQL holds values in it. Raises
        ``misfit`` itself when no type may move (strict, a pinned column) or none would help.
        """
        if self.strict:
            raise misfit
        candidates = [c.name for c in typed.columns if c.name not in self.pins and not c.pg_type.repairs]
        # Invalid UTF-8 is counted too (a Python call per text): this runs only on a misfit.
        profiles = profile(snapshot, typed, candidates, utf8=True)
        changes: dict[str, tuple[PgType, bool]] = {}
        for column in typed.columns:
            found = profiles.get(column.name)
            if found is not None and column.pg_type in self.inferable.get(column.name, ()):
                if column.name != misfit.column:  # each inferred column is scanned when it is the one refused
                    continue
                wanted, why = self._inferred_or_text(snapshot, column.name, found)
                holds, _ = pg_holds(column.name) if pg_holds is not None else (False, True)
                new = join(column.pg_type, wanted, True) if holds else wanted
                if new == column.pg_type:
                    continue  # cannot happen (the scan refuses what the encoder refused); as below
                if new != wanted:
                    why += f"; PostgreSQL holds {column.pg_type.name} values already: only text holds both"
                changes[column.name] = (new, holds)
                self.reasons[column.name] = (why, None if self._as_mapped(column.name, new) else misfit.row_key)
                if column.name not in self.widened:
                    self.widened.append(column.name)
                continue
            if found is None or fits(column.pg_type, found):
                continue
            wanted = needed(found, self.mapped(column.name))
            holds, within_double = pg_holds(column.name) if pg_holds is not None else (False, True)
            # Integers PostgreSQL keeps and those SQLite holds now must all fit a double.
            within_double = within_double and found.ints_within(-MAX_EXACT_DOUBLE_INT, MAX_EXACT_DOUBLE_INT)
            new = join(column.pg_type, wanted, within_double) if holds else wanted
            if new == column.pg_type:
                continue  # cannot happen (``needed`` always fits); guards the caller's loop all the same
            changes[column.name] = (new, holds)
            self.reasons[column.name] = (
                f"{self.mapped(column.name).name} cannot hold its values ({found.describe()})"
                + (f"; {found.changed_as_text:,} changed to fit: {REPAIRS}" if new.repairs else ""),
                example_key(snapshot, self.table, column.name, self.mapped(column.name)),
            )
            if column.name not in self.widened:
                self.widened.append(column.name)
        if not changes:
            raise misfit  # a pinned column's value, or a value no profile explains
        return changes

    def _earlier(self, snapshot: SqliteSnapshot, column: str, mapped: PgType) -> tuple[str, str | None]:
        """Why a column has a wider type than its mapping, decided by an earlier sync, and a row that says so.
        An inferable column whose COMMENT does not name the setting was built without it: no row to look for
        (a scan calling Python per value, at every sync, for nothing)."""
        never = "columns are never narrowed automatically: full_refresh recomputes the type from the data"
        if column not in self.inferable:
            why = f"widened by an earlier sync (its values did not all fit {mapped.name}); {never}"
            return why, example_key(snapshot, self.table, column, mapped)
        if "SYNC_INFER_TYPES" not in self.comments.get(column, "SYNC_INFER_TYPES"):
            return f"{mapped.name} (SYNC_INFER_TYPES): the column was built without the setting; {never}", None
        why = f"{mapped.name} (SYNC_INFER_TYPES) did not hold every value when the column was built or since; {never}"
        return why, inferred_example_key(snapshot, self.table, column, self.inferable[column])

    def _inferred_or_text(self, snapshot: SqliteSnapshot, column: str, found: Profile) -> tuple[PgType, str]:
        """The inferred type every value of ``column`` reads exactly as (timestamptz where timestamp was
        refused), else text, the declared mapping without inference; and why, for the report."""
        family = self.inferable[column]
        first = family[0].name
        if found.integers or found.reals or found.blobs or found.texts_with_nul or found.texts_not_utf8:
            text = TEXT if fits(TEXT, found) else REPAIRED_TEXT
            return text, (
                f"{first} (SYNC_INFER_TYPES) cannot hold its values ({found.describe()}): only text is read as "
                "such, never numbers (an epoch number is not read as a date); pin the column to convert it"
            )
        misfits = inferred_misfits(snapshot, self.table, column, family)
        for pg_type in family:
            if not misfits[pg_type.name]:
                return pg_type, f"every value reads exactly as {pg_type.name} (SYNC_INFER_TYPES)"
        if len(family) > 1 and misfits["any"] == 0:
            return TEXT, f"{first} (SYNC_INFER_TYPES): some values have an offset or Z and some not"
        return (
            TEXT,
            f"{first} (SYNC_INFER_TYPES): {misfits['any']:,} of {found.texts:,} values do not read exactly as it",
        )

    def notes(self, typed: TableInfo) -> dict[str, str]:
        """Why each column retyped in this sync has its type, for its PostgreSQL COMMENT."""
        types = {c.name: c.pg_type.name for c in typed.columns}
        return {column: f"{types[column]} here, {why}" for column, (why, _) in self.reasons.items()}

    def report(self, snapshot: SqliteSnapshot, typed: TableInfo) -> tuple[ColumnRetype, ...]:
        """Every column whose type is not its declared mapping, or whose values were changed."""
        repaired = [c.name for c in typed.columns if c.pg_type.repairs]
        changed = {name: found.changed_as_text for name, found in profile(snapshot, typed, repaired, True).items()}
        entries = []
        for column in typed.columns:
            mapped = self.mapped(column.name)
            if column.name in self.pins or (
                self._as_mapped(column.name, column.pg_type) and not changed.get(column.name)
            ):
                continue
            why, example = self.reasons.get(column.name) or self._earlier(snapshot, column.name, mapped)
            entries.append(
                ColumnRetype(
                    column=column.name,
                    declared=column.declared_type,
                    mapped=mapped.name,
                    pg_type=column.pg_type.name,
                    why=why,
                    example_key=example,
                    values_changed=changed.get(column.name, 0),
                )
            )
        return tuple(entries)


def _by_name(name: str, mapped: PgType) -> PgType:
    """Our type of a PostgreSQL column type name (``format_type``'s spelling); a type of no mapping
    of ours (changed by hand) gives ``mapped``, and the sync then says the shapes differ."""
    return mapped if name == mapped.name else NATIVE.get(name, mapped)


# The session settings PostgreSQL's input functions read, fixed for the transaction of a table with a pin,
# so that the same text always reads as the same value, whatever the server's, database's or role's own:
# a timestamp without zone is UTC, an ambiguous date '01/02/2024' is January 2 (MDY, PostgreSQL's built-in
# default order), '-1 2:00:00' is -1 day +2 hours (``postgres``, not ``sql_standard``), and a zone
# abbreviation such as 'EST' means what PostgreSQL's Default set says. Only pins read them: the engine's
# own types (bigint, double precision, numeric, boolean, text, bytea) read their text the same under any.
PIN_INPUT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "timezone_abbreviations": "Default",
}
_SET_PIN_INPUT = sql.SQL(", ").join(
    sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
    for name, value in PIN_INPUT_SETTINGS.items()
)


def resolve_pins(
    cur: psycopg2.extensions.cursor, table: TableInfo, column_types: Mapping[str, str]
) -> dict[str, PgType]:
    """The pinned types (``column_types``, keyed ``table.column`` by SQLite names) of this table's
    columns, each checked by PostgreSQL and spelled as it spells it (``timestamptz`` is
    ``timestamp with time zone``), so that the pin compares equal to the column it makes.

    A table with a pin also gets :data:`PIN_INPUT_SETTINGS` for the rest of its transaction, set by
    the statement that checks the pin (no round trip of its own), before any value is read.
    """
    pins: dict[str, PgType] = {}
    for column in table.column_names:
        wanted = column_types.get(f"{table.name}.{column}")
        if wanted is None:
            continue
        if "(" in wanted:
            raise SyncError(
                table.name,
                f"column_types pins column {column!r} to {wanted!r}: type modifiers such as (10,2) are not "
                "supported; pin the bare type",
            )
        cur.execute("SAVEPOINT _sps_pin")
        try:
            cur.execute(sql.SQL("SELECT format_type(%s::regtype, NULL), {}").format(_SET_PIN_INPUT), (wanted,))
        except psycopg2.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT _sps_pin")
            raise SyncError(
                table.name,
                f"column_types pins column {column!r} to {wanted!r}, which PostgreSQL does not know as a type: "
                f"{str(exc).strip().splitlines()[0]}",
            ) from None
        canonical = cur.fetchone()[0]
        cur.execute("RELEASE SAVEPOINT _sps_pin")
        pins[column] = pinned_type(canonical)
    return pins


_COPY_CONTEXT = re.compile(r'COPY [^\n]*, line \d+, column (.+?): "(.*)"$', re.M)


def pinned_misfit(
    snapshot: SqliteSnapshot,
    target_table: TableInfo,
    pg_columns: Sequence[str],
    pins: Mapping[str, PgType],
    exc: psycopg2.Error,
) -> ValueMismatchError | None:
    """The column and row key of a value PostgreSQL refused for a pinned type, from COPY's error context.

    PostgreSQL names the column and shows the value (cut after 30 characters); the key is that of
    the first SQLite row whose value reads as the one shown. None when the error is not about a
    pinned column.
    """
    found = _COPY_CONTEXT.search(exc.diag.context or "")
    if found is None or found.group(1) not in pg_columns:
        return None
    column = target_table.column_names[list(pg_columns).index(found.group(1))]
    if column not in pins:
        return None
    shown = found.group(2)
    cut = shown.endswith("...")
    key = list(target_table.primary_key) or ["rowid"]
    q = quote_sqlite_identifier(column)
    rows = snapshot.conn.execute(
        f"SELECT {q}, {', '.join(map(quote_sqlite_identifier, key))} FROM {quote_sqlite_identifier(target_table.name)}"
    )
    row_key = "(not found again in SQLite)"
    for value, *ident in rows:
        text = repr(value) if isinstance(value, float) else str(value)
        if text == shown or (cut and text.startswith(shown[:-3])):
            row_key = "(" + ", ".join(f"{k}={v!r}" for k, v in zip(key, ident, strict=True)) + ")"
            break
    rows.close()
    reason = (exc.diag.message_primary or str(exc)).strip()
    return ValueMismatchError(
        target_table.name,
        column,
        row_key,
        f"value {shown!r} does not fit the pinned type {pins[column].name}: {reason}",
    )
