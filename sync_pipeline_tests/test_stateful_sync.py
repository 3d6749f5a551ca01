"""Stateful, model-based: random SQLite edits interleaved with syncs under random options.

A hypothesis ``RuleBasedStateMachine`` keeps six SQLite tables (an ``INTEGER PRIMARY KEY`` table, a
typeless key, a ``WITHOUT ROWID`` composite key under a collation only the application registers, a
table with REAL/NUMERIC/BOOLEAN/BLOB/DATETIME columns, a table ``p`` whose key is declared BLOB and
holds numbers (bigint, double precision or numeric from its values) with a TEXT column pinned to
``numeric`` (``column_types``, in every sync) and a BLOB column of numbers (double precision, which
keeps -0.0: a REAL column does not, SQLite stores an integral real there as an integer), and a
keyless table whose name is over 63 bytes) in one file, in WAL mode (one example in four: a
rollback journal, which a sync reads through a backup copy), and one PostgreSQL schema, both fresh
per example. Its rules edit SQLite the way applications do:

* insert, update, update many rows in one statement, change a row's key, delete rows anywhere (so
  batch boundaries shift), duplicate a row of the keyless table, insert the twin of a typeless key
  (``'7'`` beside ``7``, ``7.5`` beside ``'7.5'``) or of a number past 2^53 in ``p``'s key (the real
  2^60 + 256 beside the integer 1152921504606847200: two keys in SQLite, which compares them exactly,
  one as numeric), flip 0.0 to -0.0 or back in a column that keeps the sign;
* give the pinned column text PostgreSQL reads as numeric (``'19.99'``, ``'19.990'``, ``' 5 '``,
  ``'1e3'``, ``'NaN'``...), numbers, and now and then what it cannot read (``'abc'``, a blob);
* ``ALTER TABLE ADD COLUMN`` plain, with a ``DEFAULT`` (``NOT NULL`` too), generated ``VIRTUAL``,
  under hostile names (spaces, quotes, reserved words, non-ASCII, over 63 bytes); ``DROP COLUMN``;
  a migration that drops the last column and adds it again with the same name and type;
* ``VACUUM`` (renumbers the rowids of tables without an ``INTEGER PRIMARY KEY``);
* and, not the application but someone else, edit the PostgreSQL mirror behind the sync's back
  (``edit_mirror``): UPDATE a value (0.0 to -0.0 in a double precision column), DELETE a row, INSERT
  a row under a key SQLite never has;
* values of every storage class: cursors of integers, of reals beyond 2^53 (~1.7e18), of integers
  and reals mixed (now and then a text among them), of text timestamps; non-ASCII text, COPY
  escapes (tab, newline, CR, backslash, ``\\N``), -0.0, +-Infinity, 64-bit bounds; now and then (one
  value in 10, in half the tables) a value the mapping cannot hold (text in an INTEGER column, a real
  or 1e19 there, a blob outside a BLOB column, a NUL byte, text that is not UTF-8), and a ``repair``
  rule;

and syncs every table, in random order, with random options: ``strict_types`` or types from the data
(half the time each, per sync), cursor mode or full scan, ``batch_size`` 1-7 (half the time the
previous sync's, with the same read path, so batch digests skip batches), the Arrow or the exact
read path, ``delete_orphans``, ``full_refresh``, ``verify`` (one sync in 10, one in 2 of the rule
``sync_again``), 1-3 readers (parallel tables' views of one snapshot), a numbered snapshot
(``SnapshotClock``) or not, a reused connection or a new one, possibly in a client encoding other than UTF8 (LATIN1,
WIN1252, SQL_ASCII, EUC_JP). One rule syncs while the application commits between the snapshot and
the read (PostgreSQL must get the snapshot, nothing later); one syncs from a snapshot older than the
last synced one, which must be refused.

The application keeps cursor mode's rule (README, "Cursor mode"): every write sets the cursor to at
least the highest value it ever held (a text among numbers is the documented exception: the sync
reads every row and warns). Everything else is the engine's problem.

Invariant, for every table at every sync. The model first says which type each column must end
with (README, "Real-world files", and ``engine/column_types.py``'s docstring, written down here
independently): a fresh table (new, or ``full_refresh``) starts from the declared mapping (README,
"Data types"), an existing one from PostgreSQL's types (never narrowed; new columns from their
mapping); with ``strict_types`` that is the end, and a value it cannot hold must fail the table.
Without, each column that cannot hold SQLite's values moves to the narrowest type that holds them
all (bigint, double precision or numeric past 2^53, text, bytea; text that repairs, for text beside
blobs, NUL bytes or invalid UTF-8), joined with the type PostgreSQL has when it holds values in the
column. The asset check's ``row_counts`` (on the sync's session, before it) gives the true counts, and
either

* the sync succeeded, the PostgreSQL columns (names over 63 bytes shortened) have exactly the
  model's types (read from the catalog), and every value equals SQLite's under its column's type
  (written here from the README, not taken from ``types.py``; numbers in text as their exact decimal
  text, floats compared by identity (-0.0 is not 0.0; numeric has no -0, so a real -0.0 there is 0),
  rows as multisets for the keyless table; in text, a blob as ``\\x`` and hex digits, NUL and
  invalid bytes as U+FFFD; in the pinned column, what ``SELECT '<text>'::numeric`` gives, scale
  included, for the value's text: a text as it is, an integer's digits, a real's shortest decimal).
  A pinned column keeps its type and is never in ``columns_retyped`` nor ``columns_widened``. No
  column PostgreSQL held values in is narrower than before, unless ``full_refresh`` ran.
  ``columns_retyped`` lists exactly the columns whose type is not their declared mapping or whose
  values were changed, with the PostgreSQL type, the mapping and ``values_changed`` equal to the
  values the repair changes (blobs, texts with NUL, invalid UTF-8); ``columns_widened`` exactly the
  columns whose type moved in this sync. With ``delete_orphans`` or ``full_refresh`` PostgreSQL
  holds exactly SQLite's rows; without, every SQLite row is there and equal and any other key is one
  SQLite once had. Rows edited in the mirror are exempt after a plain sync while they differ from
  SQLite (the model keeps their keys; a plain sync trusts PostgreSQL and need not notice them; the
  keyless table's are not, since its plain sync compares every row), never after a ``verify`` sync
  or ``full_refresh``: then PostgreSQL holds exactly SQLite's rows (as with ``delete_orphans``),
  every SQLite row was compared (``rows_verified``), and where the columns kept their types, the
  rows written by the normal pass (inserted, updated, deleted: SQLite's changes, counted as ever)
  plus ``rows_repaired`` are exactly the rows that differed before (each written once, by the one or
  the other; verify.py), with ``min(rows_repaired, 10)`` ``repaired_keys``. ``sqlite_rows``,
  ``pg_rows_before`` and ``pg_rows_after`` are the true counts, and the rows inserted less the rows
  deleted are what the table gained (give or take ``rows_repaired``, which a verify sync's repair
  wrote); a cursor column holding text beside numbers yields a warning naming it;
* or it raised a ``SyncError`` naming the table, the model says it must fail (with ``strict_types``
  only: a value its column's type cannot hold; in both modes: a value the pin cannot read (the error
  names the column and a row), two keys that become one (twins past 2^53 in ``p``: the error names
  both, a real and an integer), a NULL key, a changed column list that is not an append, or any
  change to the keyless table's, ``delete_orphans`` or ``verify`` over an empty SQLite table, an
  older snapshot), and PostgreSQL is byte-identical to before: rows, columns, constraints, the
  schema's relations and the table's row of the state table (``sqlite_pg_sync._sps_table_state``).
  One case may go either way: with ``strict_types``, a text column that an earlier sync repaired,
  whose repaired values the sync may or may not read (cursor, unchanged batches); it fails if it
  reads one.

Any other exception is a bug; so is a sync that succeeds where the model says it must fail.

A column dropped and added again under another declared type keeps PostgreSQL's type without
``strict_types`` (never narrowed; reported by ``columns_retyped``); with it, a column whose
PostgreSQL type is not its mapping fails the sync until ``full_refresh``.

Environment (the defaults take about a minute on two cores):

* ``SPS_STATEFUL_EXAMPLES`` (default 24): examples (fresh SQLite file and schema each);
* ``SPS_STATEFUL_STEPS`` (default 30): at most this many rules per example;
* ``SPS_STATEFUL_SHRINK=0``: report the first failure as found, unshrunk (shrinking a stateful
  failure against a real server takes minutes);
* ``SPS_STATEFUL_AVOID`` (default none): comma-separated families of inputs to leave out, to hunt past a divergence
  that is being fixed (or to run against an older engine): ``encoding`` (non-UTF8
  sessions), ``collision`` (twin keys, those past 2^53 too), ``text_cursor`` (a text among numeric
  cursors), ``real_cursor`` (reals beyond 2^52 in cursors), ``bad_values`` (values the mapping cannot hold),
  ``bad_utf8`` (text that is not UTF-8),
  ``add_column`` (every ALTER TABLE), ``redefine`` (a column dropped and added again),
  ``row_counts`` (the asset check's count), ``pins`` (no ``column_types``: ``p.price`` is plain
  text), ``drift`` (no edits of the mirror), ``collation`` (the application's own collation),
  ``long_names`` (names over 63 bytes), ``rollback_journal`` (a quarter of the files are not WAL),
  ``zero_keys`` (no -0.0 among ``p``'s keys, and no key's zero flipped: a key 0.0 that becomes -0.0 matches
  its row by ``=``, and must be written all the same),
  ``repaired_keys`` (typeless keys that become one only through the repair: a blob and its ``\\x``
  text, two texts that are not UTF-8, such a text and its U+FFFD twin).

A long hunt: ``SPS_STATEFUL_EXAMPLES=2000 SPS_STATEFUL_STEPS=60 SPS_STATEFUL_SHRINK=0``. Runs are
random (not derandomized; ``--hypothesis-seed`` repeats one); a failure prints its steps and a
``@reproduce_failure`` blob, and every run ends printing what it exercised (``-s`` shows it).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path

import psycopg2
import psycopg2.extensions
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from psycopg2 import sql

from sync_pipeline.engine import SqliteSnapshot, SyncError, SyncOptions, TableSyncResult, row_counts, sync_table
from sync_pipeline.engine.bookkeeping import DEFAULT_STATE_SCHEMA, STATE_TABLE, forget
from sync_pipeline.engine.errors import ValueMismatchError
from sync_pipeline.engine.sqlite_source import quote_sqlite_identifier

try:  # numbered snapshots (engine/versions.py)
    from sync_pipeline.engine.versions import SnapshotClock
except ImportError:  # pragma: no cover - an engine from before them
    SnapshotClock = None  # type: ignore[assignment,misc]

EXAMPLES = int(os.environ.get("SPS_STATEFUL_EXAMPLES", "24"))
STEPS = int(os.environ.get("SPS_STATEFUL_STEPS", "30"))
SHRINK = os.environ.get("SPS_STATEFUL_SHRINK", "1") != "0"
AVOID = frozenset(filter(None, (s.strip() for s in os.environ.get("SPS_STATEFUL_AVOID", "").split(","))))

q = quote_sqlite_identifier
STATE_SCHEMA = DEFAULT_STATE_SCHEMA
MAX_ADDED = 4
BATCH_SIZES = st.integers(1, 7)
ENCODINGS = [None, None, None, "UTF8", "LATIN1", "WIN1252", "SQL_ASCII", "EUC_JP"]

# --- the documented mapping (README, "Data types"), written down independently of types.py --------


def pg_type_of(declared: str) -> str:
    name = declared.upper()
    if "INT" in name:
        return "bigint"
    if "CHAR" in name or "CLOB" in name or "TEXT" in name:
        return "text"
    if "BLOB" in name:
        return "bytea"
    if not name.strip():
        return "text"
    if "REAL" in name or "FLOA" in name or "DOUB" in name:
        return "double precision"
    if "BOOL" in name:
        return "boolean"
    if "DATE" in name or "TIME" in name:
        return "text"
    if "NUMERIC" in name or "DECIMAL" in name:
        return "numeric"
    return "text"


def pg_identifier(name: str) -> str:
    """A SQLite name in PostgreSQL (README, "Tables, keys and identifiers"): the same, or if over 63
    bytes its first bytes (cut on a character boundary), ``_`` and 8 hex digits, 63 bytes at most."""
    raw = name.encode()
    if len(raw) <= 63:
        return name
    return raw[:54].decode("utf-8", "ignore") + "_" + hashlib.blake2b(raw, digest_size=4).hexdigest()


class Unrepresentable(Exception):
    """A SQLite value its PostgreSQL column cannot hold: the sync must fail naming it."""


def _float_text(value: float) -> str:
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def expected_value(pg_type: str, value: object) -> object:
    """What PostgreSQL must return (through psycopg2) for a SQLite value in a column of ``pg_type``."""
    if value is None:
        return None
    kind = type(value)
    if pg_type == "bigint" and kind is int:
        return value
    if pg_type == "double precision":
        if kind is float:
            return value
        if kind is int and abs(value) <= 2**53:
            return float(value)
    if pg_type == "numeric" and kind in (int, float):
        return Decimal(value if kind is int else repr(value))
    if pg_type == "boolean" and kind is int and value in (0, 1):
        return bool(value)
    if pg_type == "text":
        if kind is str and "\x00" not in value:
            return value
        if kind is int:
            return str(value)
        if kind is float:
            return _float_text(value)
    if pg_type == "bytea" and kind is bytes:
        return value
    raise Unrepresentable(f"{value!r} ({kind.__name__}) in a {pg_type} column")


_WIDE = Context(prec=2000)


# --- types from the data (engine/column_types.py's docstring, README "Real-world files"), written down
# independently of column_types.py. A type is its PostgreSQL name, or REPAIRED for the text that changes
# what no type holds (blobs as \x and hex digits, NUL bytes and invalid UTF-8 as U+FFFD).

REPAIRED = "text (repaired)"
MAX_EXACT = 2**53


class RawText(bytes):
    """Text an application stored as bytes that are not UTF-8 (written with ``CAST(? AS TEXT)``)."""


class BadText(str):
    """How the model reads such a text back: decoded with U+FFFD for each invalid byte."""


def read_text(raw: bytes) -> str:
    """The model's ``text_factory``: invalid UTF-8 comes back as :class:`BadText`, not as an error."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return BadText(raw.decode("utf-8", "replace"))


def pg_name(typ: str) -> str:
    return "text" if typ == REPAIRED else typ


@dataclass(frozen=True)
class Profile:
    """What one SQLite column holds, by storage class (NULLs left out)."""

    integers: int = 0
    reals: int = 0
    texts: int = 0
    blobs: int = 0
    min_int: int | None = None
    max_int: int | None = None
    nul: int = 0  # texts with a NUL byte
    not_utf8: int = 0

    @staticmethod
    def of(values: list[object]) -> Profile:
        ints = [v for v in values if type(v) is int]
        texts = [v for v in values if isinstance(v, str)]
        return Profile(
            integers=len(ints),
            reals=sum(type(v) is float for v in values),
            texts=len(texts),
            blobs=sum(isinstance(v, bytes) for v in values),
            min_int=min(ints, default=None),
            max_int=max(ints, default=None),
            nul=sum("\x00" in v for v in texts),
            not_utf8=sum(type(v) is BadText for v in texts),
        )

    @property
    def repairs(self) -> int:
        """Values REPAIRED text stores changed."""
        return self.blobs + self.nul + self.not_utf8

    @property
    def ints_within_double(self) -> bool:
        return self.min_int is None or (-MAX_EXACT <= self.min_int and self.max_int <= MAX_EXACT)  # type: ignore[operator]


def fits(typ: str, p: Profile) -> bool:
    """Whether every value of the profile reads back equal from a column of this type."""
    if typ == REPAIRED:
        return True
    if typ == "boolean":
        return not (p.reals or p.texts or p.blobs) and (p.min_int is None or (p.min_int >= 0 and p.max_int <= 1))  # type: ignore[operator]
    if typ == "bigint":
        return not (p.reals or p.texts or p.blobs)
    if typ == "double precision":
        return not (p.texts or p.blobs) and p.ints_within_double
    if typ == "numeric":
        return not (p.texts or p.blobs)
    if typ == "text":
        return not p.repairs
    assert typ == "bytea", typ
    return not (p.integers or p.reals or p.texts)


def needed(p: Profile, mapped: str) -> str:
    """The narrowest type holding every value of the profile (the README's table), REPAIRED if none can."""
    if p.texts or (p.blobs and (p.integers or p.reals)):
        return "text" if fits("text", p) else REPAIRED
    if p.blobs:
        return "bytea"
    if p.reals:
        return "double precision" if p.ints_within_double else "numeric"
    if p.integers:
        return "boolean" if mapped == "boolean" and fits("boolean", p) else "bigint"
    return mapped


ORDER = ["boolean", "bigint", "double precision", "numeric", "text", REPAIRED]


def join(current: str, wanted: str, pg_ints_within_double: bool, p: Profile) -> str:
    """The narrowest type holding what PostgreSQL holds in a ``current`` column and the profile ``p``."""
    if current == wanted:
        return current
    if "bytea" in (current, wanted):
        return REPAIRED  # bytea beside anything else: blobs become hex text
    if {current, wanted} == {"bigint", "double precision"}:
        return "double precision" if pg_ints_within_double and p.ints_within_double else "numeric"
    return max(current, wanted, key=ORDER.index)


def not_narrower(new: str, old: str) -> bool:
    """Whether a column of PostgreSQL type ``new`` holds every value one of type ``old`` holds."""
    chain = ["boolean", "bigint", "double precision", "numeric", "text"]
    if new == old or new == "text":
        return True
    return old in chain and new in chain and chain.index(new) >= chain.index(old)


def stored_value(pg_type: str, value: object) -> object:
    """What PostgreSQL must return for a SQLite value in a column of this PostgreSQL type, the text of
    a repaired column included (a value a type cannot hold raises Unrepresentable)."""
    if pg_type == "text" and value is not None:
        if isinstance(value, bytes):
            return "\\x" + value.hex()
        if isinstance(value, str):
            return str(value).replace("\x00", "\ufffd")
    return expected_value(pg_type, value)


def _stored_keys(keys: set[tuple[object, ...]], types: list[str]) -> set[tuple[object, ...]]:
    """SQLite keys as PostgreSQL returns them under ``types`` (tokens); keys a type cannot hold are none."""
    stored = set()
    for key in keys:
        try:
            stored.add(tuple(token(stored_value(t, v)) for t, v in zip(types, key, strict=True)))
        except Unrepresentable:
            continue
    return stored


def pinned_token(value: object) -> tuple[object, ...]:
    """A pinned column's value exactly as PostgreSQL shows it (numeric 19.990 is not 19.99)."""
    return ("pinned", None if value is None else str(value))


PIN_READINGS: dict[str, object] = {}  # text -> PostgreSQL's reading of it as PIN (Unrepresentable: refused)


def token(value: object) -> tuple[object, ...]:
    """A hashable, exact form of a value as PostgreSQL returns it (-0.0 is not 0.0, 1.0 is 1)."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, Decimal):  # numeric has no -0: '-0.0'::numeric is 0.0 (a real -0.0 there loses its sign)
        if value.is_zero():
            return ("numeric", "0")
        return ("numeric", str(value.normalize(_WIDE)) if value.is_finite() else str(value))
    if isinstance(value, memoryview):
        return ("bytes", bytes(value))
    return (type(value).__name__, value)


# --- values ---------------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "", "plain", "café", "naïve Ünïcödé", "日本語テキスト", "emoji 🎉", "tab\there", "new\nline", "back\\slash",
    "\\N", "cr\r", "a\tb\nc\\d\r\n", " 42", "1700000000", "0.1", "Infinity", "NULL", "\\.", "é\\t", "ÿ€‰",
]  # fmt: skip
TEXTS = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6),
)
INTS = st.one_of(
    st.integers(-5, 60),
    st.sampled_from([0, -1, 2**31, 2**53, 2**53 + 1, -(2**63), 2**63 - 1, 1700000000]),
)
SPECIAL_FLOATS = [
    0.0, -0.0, 0.1, 1.5, -2.25, 1e300, -1e-300, 5e-324, math.inf, -math.inf, 1.7e18, 1.7000000000000003e18,
    2.0**60, 2.0**53 + 2, 9.2e18, 1e19, 1e16,
]  # fmt: skip
FLOATS = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=False))
TIMESTAMPS = st.sampled_from(["2024-02-29 12:00:00", "2024-01-01T00:00:00Z", "1970-01-01", "yesterday", "12:30"])
NULL = st.none()


def _rarely(good: st.SearchStrategy[object], bad: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly ``good``; one draw in 10 from ``bad`` (a value the mapping cannot hold: without strict_types
    its column widens, so such values are no longer rare in real files nor here)."""
    if "bad_values" in AVOID:
        return good
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


def values_for(declared: str, clean: bool) -> st.SearchStrategy[object]:
    """Values an application might write into a column of this declared type.

    ``clean``: only the column's own storage class (and NULL), which the Arrow path takes;
    otherwise any storage class SQLite's affinity lets through, which sends the table to the
    exact path, and now and then a value the mapping cannot hold.
    """
    name = declared.upper()
    pg_type = pg_type_of(declared)
    if pg_type == "bigint":
        return st.one_of(NULL, INTS) if clean else _rarely(st.one_of(NULL, INTS), st.sampled_from(["abc", 1.5, 1e19]))
    if pg_type == "double precision":
        if clean:
            return st.one_of(NULL, FLOATS)
        return _rarely(st.one_of(NULL, FLOATS, INTS), st.sampled_from(["abc", b"\x02"]))
    if pg_type == "numeric":
        if clean:
            return st.one_of(NULL, INTS)
        return _rarely(st.one_of(NULL, INTS, FLOATS, st.sampled_from(["12.5", "007", "1e3"])), st.just("abc"))
    if pg_type == "boolean":
        good = st.sampled_from([None, 0, 1, True, False])
        return good if clean else _rarely(good, st.sampled_from([2, "t", -1]))
    if pg_type == "bytea":
        return NULL if clean else _rarely(st.one_of(NULL, st.binary(max_size=6)), st.sampled_from(["text", 5, 0.5]))
    if "DATE" in name or "TIME" in name:
        return st.one_of(NULL, TIMESTAMPS) if clean else _rarely(st.one_of(NULL, TIMESTAMPS, INTS, FLOATS), NULL)
    # text: TEXT affinity turns numbers into text, a typeless column keeps them
    if clean:
        return st.one_of(NULL, TEXTS)
    bad = [b"\x04", "nul\x00byte"] + ([] if "bad_utf8" in AVOID else [RawText(b"caf\xe9"), RawText(b"\xff\xfe")])
    return _rarely(st.one_of(NULL, TEXTS, INTS, FLOATS), st.sampled_from(bad))


# --- the tables -------------------------------------------------------------------------------------

LONG = "a column name PostgreSQL would cut at 63 bytes, so it is shortened: ü"
ADDED_NAMES = ["status", "Note Col", "naïve", "select", 'q"uote', "日本", "MixedCase", "c_7"]
if "long_names" not in AVOID:
    ADDED_NAMES += [LONG, LONG + "ü"]
ADDED_TYPES = [
    "TEXT NOT NULL DEFAULT 'active'",
    "TEXT",
    "REAL DEFAULT 1.7000000000000003e18",
    "INTEGER DEFAULT 0",
    "DEFAULT 'caf\u00e9\t\\N'",
    "BOOLEAN DEFAULT 1",
    "NUMERIC DEFAULT 2.5",
    "BLOB DEFAULT x'00ff'",
    "DATETIME DEFAULT '2024-01-01 00:00:00'",
    "DOUBLE DEFAULT -1e300",
    "INTEGER",
]
BAD_ADDED_TYPE = "INTEGER DEFAULT 'oops'"


def _declared(definition: str) -> str:
    """The declared type of an ADD COLUMN definition (what ``pragma_table_xinfo`` says)."""
    return re.split(r"\b(?:DEFAULT|GENERATED|NOT NULL)\b", definition)[0].strip()


@dataclass
class Table:
    name: str
    ddl: str
    key: tuple[str, ...]  # empty: no primary key
    data: dict[str, str]  # writable non-key, non-cursor columns -> declared type
    keys: st.SearchStrategy[tuple[object, ...]] | None
    generated: list[tuple[str, str]]  # (declared type, expression) for ADD COLUMN ... VIRTUAL
    cursor: str | None = None
    cursor_kind: str | None = None  # int, real, mixed (numbers, now and then a text), text
    without_rowid: bool = False
    twins: bool = False  # a typeless key: inserts now and then take the other storage class of a key
    first_keys: st.SearchStrategy[tuple[object, ...]] | None = None  # keys of the rows a table starts with
    clean: bool = False  # values of each column's own storage class only (see values_for)
    added: list[str] = field(default_factory=list)
    high: object = None  # the highest (numeric, for "mixed") cursor value ever written
    text_high: str | None = None  # for "mixed": the highest text written among the numbers
    # The keys SQLite once had, as SQLite held them: an orphan's key is compared under the column's type now,
    # since widening a key column in place (bytea to repaired text, say) converts the orphans' keys too.
    ever_keys: set[tuple[object, ...]] = field(default_factory=set)
    repaired: set[str] = field(default_factory=set)  # columns PostgreSQL knows as REPAIRED text (their COMMENT)
    numeric_twins: bool = False  # a key of numbers: inserts now and then take a twin past 2^53 (numeric_twin)
    typed_by_data: bool = False  # values off the declared mapping are its normal data, not what repair() clears
    # Keys (as SQLite would hold them) of rows edited in PostgreSQL behind the sync's back (edit_mirror) that
    # may still differ from SQLite: a plain sync need not notice them, a verify sync repairs them.
    drift: set[tuple[object, ...]] = field(default_factory=set)
    added_as: dict[str, str] = field(default_factory=dict)  # added column name -> the mapping it was first added with


# Keys that become one only through the repair (engine/keys.py checks every key of a key column that
# repairs values).
REPAIRED_KEYS = st.sampled_from([b"\x00\xff", "\\x00ff", RawText(b"caf\xe9"), RawText(b"caf\xe8"), "caf\ufffd"])


def _k_keys() -> st.SearchStrategy[tuple[object, ...]]:
    """Keys of a typeless key column: integers, reals and text, which PostgreSQL holds as text."""
    plain = st.integers(1, 25)
    keys = st.one_of(plain, plain, st.sampled_from(["ключ", "tab\tkey", "a\\b", "日本", 7.5, 1e16, -0.5]))
    if "collision" not in AVOID:  # the text twins of numbers: two keys in SQLite, one in PostgreSQL
        keys = st.one_of(keys, plain.map(str), st.sampled_from(["7.5", "1e+16", "-0.5", "-0.0", -0.0]))
    if "repaired_keys" not in AVOID:
        keys = st.one_of(keys, REPAIRED_KEYS)
    return _rarely(keys, NULL).map(lambda k: (k,))


def twin(key: object) -> object:
    """The key of the other storage class that PostgreSQL would merge with ``key`` (else ``key``)."""
    if isinstance(key, str):
        for parse in (int, float):
            try:
                number = parse(key)
            except ValueError:
                continue
            return number if expected_value("text", number) == key else key
        return key
    return expected_value("text", key) if isinstance(key, int | float) else key


# The table p: a key declared BLOB that becomes bigint, double precision or numeric from its values (where
# integers and reals past 2^53 meet, numeric makes two SQLite keys one: keys.py), a TEXT column pinned to
# numeric (column_types: PostgreSQL's reading of each value's text), and a BLOB column of numbers, which is
# double precision and keeps -0.0 (a REAL column does not: SQLite stores an integral real there as an
# integer, and -0.0 reads back as 0.0).
BIG = 1152921504606847200  # the numeric the real 2^60 + 256 becomes ('1.1529215046068472e+18')
PIN = "numeric"
PINS = {} if "pins" in AVOID else {"p.price": PIN}
PIN_TEXTS = ["19.99", "19.990", " 5 ", "1e3", "007", "-0.0", " -12.5e-3", "Infinity", "0.10", "NaN"]


def _p_keys() -> st.SearchStrategy[tuple[object, ...]]:
    plain = st.integers(1, 25)
    zeros = [0.0] if "zero_keys" in AVOID else [0.0, -0.0]  # a key 0.0 becomes -0.0 (rekey): another value
    keys = st.one_of(plain, plain, st.sampled_from([*zeros, 1.5, -2.25, 2**53 + 1]))
    if "collision" not in AVOID:  # numbers past 2^53, each with a twin of the other storage class
        keys = st.one_of(keys, st.sampled_from([BIG, 2.0**60 + 256, 2**60, 2.0**60, 1.7000000000000003e18]))
    return keys.map(lambda k: (k,))


def numeric_twin(key: object) -> object:
    """The number of the other storage class that ``key`` becomes one with as numeric, while SQLite, which
    compares an integer and a real exactly, keeps them apart (else ``key``)."""
    if type(key) not in (int, float) or math.isinf(key) or abs(key) <= MAX_EXACT:  # type: ignore[arg-type]
        return key
    if type(key) is int:
        real = float(key)
        return real if Decimal(repr(real)) == key and int(real) != key else key
    integer = int(Decimal(repr(key)))
    return integer if integer != int(key) and -(2**63) <= integer < 2**63 else key  # type: ignore[arg-type]


def _price_values(clean: bool) -> st.SearchStrategy[object]:
    """Values of the pinned column: text PostgreSQL reads as numeric (numbers too, unless ``clean``),
    now and then a text it cannot read, or a blob, which has no text."""
    good = (
        st.one_of(NULL, st.sampled_from(PIN_TEXTS))
        if clean
        else st.one_of(NULL, st.sampled_from(PIN_TEXTS), INTS, FLOATS)
    )
    return _rarely(good, st.sampled_from(["abc", "1,5", b"\x01"]))


def _sign_values(clean: bool) -> st.SearchStrategy[object]:
    """Values of a BLOB column of numbers: zeros of both signs often; now and then a blob or a text."""
    zeros = st.sampled_from([0.0, -0.0])
    good = st.one_of(NULL, zeros, FLOATS) if clean else st.one_of(NULL, zeros, FLOATS, INTS)
    return good if clean else _rarely(good, st.sampled_from([b"\x02", "text"]))


COLUMN_VALUES: dict[tuple[str, str], Callable[[bool], st.SearchStrategy[object]]] = {
    ("p", "price"): _price_values,
    ("p", "z"): _sign_values,
}


def keeps_sign(declared: str) -> bool:
    """Whether a column of this declared type keeps -0.0 (BLOB affinity: typeless or declared BLOB)."""
    name = declared.upper()
    return not any(s in name for s in ("INT", "CHAR", "CLOB", "TEXT")) and ("BLOB" in name or not name.strip())


KEYLESS = "Mixed Bag" + (
    "" if "long_names" in AVOID else ", a table name over sixty-three bytes PostgreSQL would cut: ß"
)
COLLATION = "" if "collation" in AVOID else " COLLATE unicase"  # a collation only the application registers


def make_tables() -> list[Table]:
    return [
        Table(
            "t",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, r REAL, x, u INTEGER, n INTEGER)",
            ("id",),
            {"v": "TEXT", "r": "REAL", "x": "", "n": "INTEGER"},
            st.integers(1, 40).map(lambda i: (i,)),
            [
                ("INTEGER", "length(v)"),
                ("TEXT", "v || '!'"),
                ("REAL", "r * 2"),
                ("", "x"),
                ("INTEGER", "x * 2"),
            ],
            cursor="u",
            cursor_kind="int",
        ),
        Table(
            "k",
            "CREATE TABLE k (k PRIMARY KEY, v TEXT, n)",
            ("k",),
            {"v": "TEXT"},
            _k_keys(),
            [("TEXT", "upper(v)"), ("", "k")],
            cursor="n",
            cursor_kind="mixed",
            twins=True,
            first_keys=st.integers(1, 25).map(lambda k: (k,)),  # distinct in PostgreSQL too: the first sync works
        ),
        Table(
            "r",
            "CREATE TABLE r (id INTEGER PRIMARY KEY, ts REAL, num NUMERIC, flag BOOLEAN, b BLOB, d DATETIME)",
            ("id",),
            {"num": "NUMERIC", "flag": "BOOLEAN", "b": "BLOB", "d": "DATETIME"},
            st.integers(1, 40).map(lambda i: (i,)),
            [("REAL", "ts / 3"), ("NUMERIC", "num * 2"), ("BLOB", "b")],
            cursor="ts",
            cursor_kind="int" if "real_cursor" in AVOID else "real",
        ),
        Table(
            "wörter",
            (
                f'CREATE TABLE "wörter" (a TEXT{COLLATION}, b INTEGER, v, upd DATETIME, PRIMARY KEY (a, b)) '
                "WITHOUT ROWID"
            ),
            ("a", "b"),
            {"v": ""},
            st.tuples(
                st.one_of(
                    st.sampled_from(["a", "A", "b", "ä", "Ä", "tab\t", "", "new\nline", "zz"]),
                    # (no invalid UTF-8 here: Python's sqlite3 cannot pass it to the collation)
                    *([st.sampled_from([b"\x00\xff", "\\x00ff"])] if "repaired_keys" not in AVOID else []),
                ),
                st.integers(-3, 3),
            ),
            [("TEXT", "a || b"), ("", "v")],
            cursor="upd",
            cursor_kind="text",
            without_rowid=True,
        ),
        Table(
            "p",
            "CREATE TABLE p (k BLOB PRIMARY KEY, price TEXT, z BLOB)",
            ("k",),
            {"price": "TEXT", "z": "BLOB"},
            _p_keys(),
            [],
            first_keys=st.integers(1, 25).map(lambda k: (k,)),
            numeric_twins=True,
            typed_by_data=True,
        ),
        Table(
            KEYLESS,
            f"CREATE TABLE {q(KEYLESS)} (a TEXT, b REAL, c)",
            (),
            {"a": "TEXT", "b": "REAL", "c": ""},
            None,
            [("TEXT", "a || 'x'")],
        ),
    ]


TEXT_EPOCH = datetime(2024, 1, 1)


def _text_time(seconds: int) -> str:
    return (TEXT_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _unicase(a: str, b: str) -> int:
    return (a.casefold() > b.casefold()) - (a.casefold() < b.casefold())


def _application_connection(path: Path) -> sqlite3.Connection:
    """A connection as the application has it: with its own collation ``unicase`` (as Anki's)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_collation("unicase", _unicase)
    conn.text_factory = read_text
    return conn


def _mark(value: object) -> str:
    """The placeholder of a value: text that is not UTF-8 is bound as a blob and cast to text."""
    return "CAST(? AS TEXT)" if isinstance(value, RawText) else "?"


# --- the machine ------------------------------------------------------------------------------------

TOTALS: Counter[str] = Counter()  # what the run exercised, printed at its end


def note(what: str) -> None:
    event(what)
    TOTALS[what] += 1


@dataclass
class PgState:
    """What PostgreSQL held for one table before a sync (``dump`` byte for byte, the rest parsed)."""

    dump: tuple[object, ...]
    exists: bool
    columns: list[tuple[str, str]]
    rows: int


@dataclass
class Expectation:
    """What the model says one table's sync must do."""

    reasons: list[str]  # why it must fail (empty: it must succeed)
    maybe: str | None  # strict_types only: why it may fail as well as succeed
    options: SyncOptions  # the options it runs with (see the workaround in _expect)
    fresh: bool  # built from nothing: full_refresh, or no table yet
    names: list[str]  # SQLite's columns
    declared: dict[str, str]  # column -> its declared type
    mapped: dict[str, str]  # column -> its declared mapping
    start: dict[str, str]  # column -> the type the sync starts from (PostgreSQL's, for columns it has)
    types: dict[str, str]  # column -> the type it must end with, REPAIRED for repaired text
    profiles: dict[str, Profile]
    held: dict[str, bool]  # column -> whether PostgreSQL held a value in it before
    pins: dict[str, str]  # column -> the type column_types pins it to


class SyncMachine(RuleBasedStateMachine):
    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn
        self.dir = Path(tempfile.mkdtemp(prefix="sps-stateful-"))
        self.path = self.dir / "app.sqlite"
        self.schema = f"st_{uuid.uuid4().hex[:10]}"
        self.observer = psycopg2.connect(dsn)
        self.observer.autocommit = True
        with self.observer.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        self.db = _application_connection(self.path)
        self.wal = True  # the journal mode; create() may pick a rollback journal (read through a backup copy)
        # What the model compares PostgreSQL with: the file itself, or, while an application
        # writes during a sync, a read transaction begun with the sync's snapshot.
        self.seen = self.db
        self.tables = make_tables()
        self.kept: psycopg2.extensions.connection | None = None  # a connection reused across syncs
        self.last_read: tuple[bool, int] | None = None  # (arrow, batch_size) of the last sync
        self.drifts = 0  # rows inserted in the mirror so far (their keys: 1000 + n, or 'drift n')
        TOTALS["examples"] += 1

    @invariant()
    def count_steps(self) -> None:
        TOTALS["steps"] += 1

    def teardown(self) -> None:
        self.db.close()
        if self.kept is not None:
            self.kept.close()
        with self.observer.cursor() as cur:
            forget(cur, self.schema, STATE_SCHEMA)
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema)))
        self.observer.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- SQLite side ------------------------------------------------------------------------

    def _columns(self, table: Table, source: sqlite3.Connection | None = None) -> list[tuple[str, str, bool]]:
        """(name, declared type, generated) of every column a sync reads, in order."""
        rows = (
            (source or self.db)
            .execute(
                "SELECT name, type, hidden FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid", (table.name,)
            )
            .fetchall()
        )
        return [(name, decl or "", hidden in (2, 3)) for name, decl, hidden in rows]

    def _writable(self, table: Table) -> dict[str, str]:
        """Non-key, non-cursor columns an application writes (added ones included)."""
        written = dict(table.data)
        for name, decl, generated in self._columns(table):
            if name in table.added and not generated:
                written[name] = decl
        return written

    def _locators(self, table: Table) -> list[tuple[str, tuple[object, ...]]]:
        """A WHERE clause and its parameters for each row, in storage order."""
        if table.without_rowid:
            keys = ", ".join(map(q, table.key))
            rows = self.db.execute(f"SELECT {keys} FROM {q(table.name)} ORDER BY {keys}").fetchall()
            where = " AND ".join(f"{q(k)} = ?" for k in table.key)
            return [(where, tuple(r)) for r in rows]
        return [("rowid = ?", (r[0],)) for r in self.db.execute(f"SELECT rowid FROM {q(table.name)} ORDER BY rowid")]

    def _pick(self, data: st.DataObject, table: Table) -> tuple[str, tuple[object, ...]] | None:
        rows = self._locators(table)
        if not rows:
            return None
        return rows[data.draw(st.integers(0, len(rows) - 1), label="row")]

    def _bump(self, data: st.DataObject, table: Table) -> object:
        """A cursor value no lower than any the column ever held (or NULL, which is always read)."""
        kind, high = table.cursor_kind, table.high
        choices = {
            "int": ["tie", "step", "step", "jump", "null"],
            "real": ["tie", "step", "step", "jump", "null", "inf"],
            "mixed": ["tie", "int", "int", "real", "jump", "null"] + ([] if "text_cursor" in AVOID else ["text"]),
            "text": ["tie", "step", "jump", "null"],
        }[kind or "int"]
        how = data.draw(st.sampled_from(choices), label="bump")
        if how == "null":
            return None
        if how == "text":  # a text among numbers: documented outcome, every row is read while they meet
            texts = [t for t in ["2024-01-01", "later", "zzz"] if table.text_high is None or t >= table.text_high]
            return data.draw(st.sampled_from(texts), label="text cursor")
        if kind == "text":
            seconds = 0 if high is None else int((datetime.fromisoformat(str(high)) - TEXT_EPOCH).total_seconds())
            step = {"tie": 0, "step": data.draw(st.integers(1, 60), label="seconds"), "jump": 86400}
            return _text_time(seconds + step[how]) if how in step else _text_time(seconds)
        if high is None:
            if kind == "real":
                return data.draw(st.floats(1.6e18, 1.8e18), label="first cursor")
            return data.draw(st.integers(0, 100), label="first cursor")
        candidate: object = high
        if kind == "int":
            if how == "step":
                candidate = high + data.draw(st.integers(1, 3), label="step")
            elif how == "jump":
                candidate = high + data.draw(st.integers(1000, 10**12), label="step")
            candidate = min(candidate, 2**63 - 1)
        elif kind == "real":
            if how == "step":
                candidate = math.nextafter(high, math.inf)
            elif how == "jump":
                candidate = high + data.draw(st.sampled_from([1000.0, 1e6, 1e15]), label="step")
            elif how == "inf" and data.draw(st.integers(0, 9), label="inf?") == 9:
                candidate = math.inf
        elif kind == "mixed":
            if how == "int" and high < 2**62:
                candidate = math.floor(high) + data.draw(st.integers(1, 5), label="step")
            elif how == "real" and ("real_cursor" not in AVOID or high < 2**52):
                candidate = float(high) + 0.5
            elif how == "jump":
                jumps = st.one_of(
                    st.integers(1000, 10**12).map(lambda d: high + d), st.sampled_from([2**53 + 1, 2**62])
                )
                if "real_cursor" not in AVOID:
                    jumps = st.one_of(jumps, st.sampled_from([9.3e18, 1.7000000000000003e18, 1e16 + 2.0]))
                candidate = data.draw(jumps, label="jump")
        return candidate if candidate >= high else high  # type: ignore[operator]

    def _wrote(self, table: Table, value: object) -> None:
        if value is None or table.cursor_kind is None:
            return
        if table.cursor_kind == "mixed" and isinstance(value, str):
            # Texts go on from the highest text (once the numbers are gone, the column is a text cursor),
            # numbers from the highest number.
            table.text_high = max(value, table.text_high or value)
            return
        if table.high is None or value > table.high:  # type: ignore[operator]
            table.high = value

    @staticmethod
    def _values_for(table: Table, column: str, declared: str) -> st.SearchStrategy[object]:
        own = COLUMN_VALUES.get((table.name, column))
        return own(table.clean) if own is not None else values_for(declared, table.clean)

    def _assignments(self, data: st.DataObject, table: Table, columns: list[str]) -> dict[str, object]:
        values = {
            c: data.draw(self._values_for(table, c, decl), label=c)
            for c, decl in self._writable(table).items()
            if c in columns
        }
        if table.cursor is not None:
            values[table.cursor] = self._bump(data, table)
        return values

    def _execute(self, statement: str, params: tuple[object, ...] | list[object] = ()) -> bool:
        try:
            self.db.execute(statement, params)
        except sqlite3.IntegrityError:  # a key SQLite already has: the application would have got an error
            return False
        return True

    def _insert(
        self, data: st.DataObject, table: Table, first: bool = False, key: tuple[object, ...] | None = None
    ) -> None:
        if table.keys is None and self._locators(table) and data.draw(st.booleans(), label="duplicate"):
            where, params = self._pick(data, table)  # type: ignore[misc]
            columns = ", ".join(map(q, self._writable(table)))
            self._execute(
                f"INSERT INTO {q(table.name)} ({columns}) SELECT {columns} FROM {q(table.name)} WHERE {where}", params
            )
            return
        values = self._assignments(data, table, list(self._writable(table)))
        if table.keys is not None:
            if key is None:
                key = data.draw(table.first_keys if first and table.first_keys is not None else table.keys, label="key")
            values.update(zip(table.key, key, strict=True))
        columns = ", ".join(map(q, values))
        marks = ", ".join(map(_mark, values.values()))
        if self._execute(f"INSERT INTO {q(table.name)} ({columns}) VALUES ({marks})", list(values.values())):
            self._wrote(table, values.get(table.cursor or ""))

    def _update(self, data: st.DataObject, table: Table, where: str, params: tuple[object, ...]) -> None:
        writable = list(self._writable(table))
        chosen = data.draw(st.lists(st.sampled_from(writable), min_size=1, max_size=3, unique=True), label="columns")
        values = self._assignments(data, table, chosen)
        assignments = ", ".join(f"{q(c)} = {_mark(v)}" for c, v in values.items())
        if self._execute(f"UPDATE {q(table.name)} SET {assignments} WHERE {where}", [*values.values(), *params]):
            self._wrote(table, values.get(table.cursor or ""))

    def _table(self, data: st.DataObject) -> Table:
        return self._table_among(data, self.tables)

    def _order(self, data: st.DataObject) -> list[Table]:
        names = data.draw(st.permutations([t.name for t in self.tables]), label="table order")
        return [next(t for t in self.tables if t.name == name) for name in names]

    def _table_among(self, data: st.DataObject, tables: list[Table]) -> Table:
        name = data.draw(st.sampled_from([t.name for t in tables]), label="table")
        return next(t for t in tables if t.name == name)

    @initialize(data=st.data())
    def create(self, data: st.DataObject) -> None:
        if "rollback_journal" not in AVOID:
            self.wal = data.draw(st.sampled_from(["wal", "wal", "wal", "delete"]), label="journal mode") == "wal"
        self.db.execute(f"PRAGMA journal_mode={'WAL' if self.wal else 'DELETE'}")
        for table in self.tables:
            table.clean = data.draw(st.booleans(), label=f"{table.name} clean")
            self.db.execute(table.ddl)
            for _ in range(data.draw(st.integers(0, 8), label=f"rows of {table.name}")):
                self._insert(data, table, first=True)
        encoding = None if "encoding" in AVOID else data.draw(st.sampled_from(ENCODINGS), label="kept encoding")
        self.kept = self._connect(encoding)

    @rule(data=st.data())
    def insert(self, data: st.DataObject) -> None:
        table = self._table(data)
        for _ in range(data.draw(st.integers(1, 4), label="rows")):
            self._insert(data, table)

    @rule(data=st.data())
    def insert_twin(self, data: st.DataObject) -> None:
        """A typeless key gets the other storage class of a key it has (7 beside '7', '7.5' beside 7.5); a
        key of numbers the other storage class of one past 2^53 (the real 2^60 + 256 beside 1152921504606847200)."""
        if "collision" in AVOID:
            return
        table = self._table_among(data, [t for t in self.tables if t.twins or t.numeric_twins])
        existing = self.db.execute(f"SELECT {q(table.key[0])} FROM {q(table.name)}").fetchall()
        if table.numeric_twins:  # the keys that have a twin, if any
            existing = [k for k in existing if numeric_twin(k[0]) is not k[0]] or existing
        if existing:
            of = data.draw(st.sampled_from(existing), label="twin of")[0]
            key = numeric_twin(of) if table.numeric_twins else twin(of)
            if table.numeric_twins and key is not of:
                note("twin past 2^53 inserted")
            self._insert(data, table, key=(key,))

    @rule(data=st.data())
    def flip_zero(self, data: st.DataObject) -> None:
        """0.0 becomes -0.0 or back in a column that keeps the sign (BLOB affinity): equal by ``=``, not the
        same value (double precision, and text, read it back with its sign)."""
        candidates = [(t, c) for t in self.tables for c, decl in self._writable(t).items() if keeps_sign(decl)]
        if "zero_keys" not in AVOID:  # a key too: p's, double precision while it holds no integer past 2^53
            candidates += [(t, t.key[0]) for t in self.tables if t.numeric_twins]
        table, column = candidates[data.draw(st.integers(0, len(candidates) - 1), label="zero column")]
        locate = ", ".join(map(q, table.key)) if table.without_rowid else "rowid"
        zeros = self.db.execute(
            f"SELECT {locate}, {q(column)} FROM {q(table.name)} WHERE typeof({q(column)}) = 'real' AND {q(column)} = 0"
        ).fetchall()
        values: dict[str, object] = {}
        if zeros:
            *params, zero = zeros[data.draw(st.integers(0, len(zeros) - 1), label="zero row")]
            where = " AND ".join(f"{q(k)} = ?" for k in table.key) if table.without_rowid else "rowid = ?"
            row: tuple[str, tuple[object, ...]] | None = (where, tuple(params))
            values[column] = -0.0 if math.copysign(1, zero) > 0 else 0.0
            note("zero flipped")
        else:
            row = self._pick(data, table)
            values[column] = -0.0
        if row is None:
            return
        if table.cursor is not None:
            values[table.cursor] = self._bump(data, table)
        assignments = ", ".join(f"{q(c)} = ?" for c in values)
        if self._execute(f"UPDATE {q(table.name)} SET {assignments} WHERE {row[0]}", [*values.values(), *row[1]]):
            self._wrote(table, values.get(table.cursor or ""))

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        table = self._table(data)
        row = self._pick(data, table)
        if row is not None:
            self._update(data, table, *row)

    @rule(data=st.data())
    def update_many(self, data: st.DataObject) -> None:
        """One statement over every m-th row (all of them for m = 1): one bump for all."""
        table = self._table(data)
        m, r = data.draw(st.integers(1, 3), label="every"), data.draw(st.integers(0, 2), label="offset")
        if table.without_rowid:
            keys = ", ".join(map(q, table.key))
            numbered = f"SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS _n FROM {q(table.name)}"
            where = f"({keys}) IN (SELECT {keys} FROM ({numbered}) WHERE _n % ? = ?)"
        else:
            numbered = f"SELECT rowid AS _r, row_number() OVER (ORDER BY rowid) AS _n FROM {q(table.name)}"
            where = f"rowid IN (SELECT _r FROM ({numbered}) WHERE _n % ? = ?)"
        self._update(data, table, where, (m, r % m))

    @rule(data=st.data())
    def rekey(self, data: st.DataObject) -> None:
        """A row changes its key (and, for a rowid table, its place in the scan)."""
        table = self._table(data)
        row = self._pick(data, table)
        if table.keys is None or row is None:
            return
        values = dict(zip(table.key, data.draw(table.keys, label="new key"), strict=True))
        if table.cursor is not None:
            values[table.cursor] = self._bump(data, table)
        assignments = ", ".join(f"{q(c)} = {_mark(v)}" for c, v in values.items())
        if self._execute(f"UPDATE {q(table.name)} SET {assignments} WHERE {row[0]}", [*values.values(), *row[1]]):
            self._wrote(table, values.get(table.cursor or ""))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        table = self._table(data)
        for _ in range(data.draw(st.integers(1, 3), label="rows")):
            row = self._pick(data, table)
            if row is not None:
                self.db.execute(f"DELETE FROM {q(table.name)} WHERE {row[0]}", row[1])

    @rule(data=st.data())
    def alter_table(self, data: st.DataObject) -> None:
        """A schema migration: one rule for the three kinds, so migrations stay rarer than writes and
        watermarks live across several syncs."""
        if "add_column" in AVOID:
            return
        how = data.draw(st.sampled_from(["add", "add", "drop", "redefine"]), label="alter")
        {"add": self._add_column, "drop": self._drop_column, "redefine": self._redefine_column}[how](data)

    def _add_column(self, data: st.DataObject) -> None:
        table = self._table(data)
        names = [n for n in ADDED_NAMES if n not in table.added]
        if len(table.added) >= MAX_ADDED:
            return
        name = data.draw(st.sampled_from(names), label="name")
        generated = [f"{decl} GENERATED ALWAYS AS ({expr}) VIRTUAL" for decl, expr in table.generated]
        kinds = ADDED_TYPES + generated
        bad = [BAD_ADDED_TYPE] if table.added_as.get(name, "bigint") == "bigint" else kinds
        definition = data.draw(_rarely(st.sampled_from(kinds), st.sampled_from(bad)), label="definition")
        self.db.execute(f"ALTER TABLE {q(table.name)} ADD COLUMN {q(name)} {definition}")
        table.added.append(name)
        table.added_as.setdefault(name, pg_type_of(_declared(definition)))

    def _drop_column(self, data: st.DataObject) -> None:
        """``ALTER TABLE DROP COLUMN`` of an added column: the sync must refuse until a full refresh."""
        altered = [t for t in self.tables if t.added]
        if not altered:
            return
        table = self._table_among(data, altered)
        name = data.draw(st.sampled_from(table.added), label="column")
        self.db.execute(f"ALTER TABLE {q(table.name)} DROP COLUMN {q(name)}")
        table.added.remove(name)

    def _redefine_column(self, data: st.DataObject) -> None:
        """A migration drops the last column and adds it again: same name and type, another DEFAULT or
        expression, so every row changes while no cursor moves and the table keeps its shape."""
        altered = [t for t in self.tables if t.added]
        if "redefine" in AVOID or not altered:
            return
        table = self._table_among(data, altered)
        name, decl, notnull = self.db.execute(
            'SELECT name, type, "notnull" FROM pragma_table_xinfo(?) WHERE hidden <> 1 ORDER BY cid DESC LIMIT 1',
            (table.name,),
        ).fetchone()
        if name not in table.added:
            return
        literal = data.draw(st.sampled_from(["'again'", "7", "2.5", "'café'", "0", "1"]), label="new value")
        generated = not notnull and data.draw(st.booleans(), label="generated")
        definition = f"GENERATED ALWAYS AS ({literal}) VIRTUAL" if generated else f"DEFAULT {literal}"
        TOTALS["columns redefined"] += 1
        self.db.execute(f"ALTER TABLE {q(table.name)} DROP COLUMN {q(name)}")
        self.db.execute(
            f"ALTER TABLE {q(table.name)} ADD COLUMN {q(name)} {decl}{' NOT NULL' if notnull else ''} {definition}"
        )

    @rule(data=st.data())
    def edit_mirror(self, data: st.DataObject) -> None:
        """Someone edits the PostgreSQL mirror behind the sync's back: UPDATE a value (0.0 to -0.0 in a double
        precision column, which only identity tells apart), DELETE a row, INSERT a row under a key SQLite
        never had. The model notes the row's key as drifted (see Table.drift)."""
        if "drift" in AVOID:
            return
        table = self._table(data)
        ident = sql.Identifier(self.schema, pg_identifier(table.name))
        if not self._query("SELECT to_regclass(%s)", (ident.as_string(self.observer),))[0][0]:
            return
        columns = self._query(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (ident.as_string(self.observer),),
        )
        rows = self._query(sql.SQL("SELECT ctid::text, * FROM {} ORDER BY ctid").format(ident))
        how = data.draw(st.sampled_from(["update", "update", "delete", "insert"]), label="mirror edit")
        if not rows:
            return
        ctid, *row = rows[data.draw(st.integers(0, len(rows) - 1), label="mirror row")]
        names = [c for c, _ in columns]
        keys = [pg_identifier(k) for k in table.key]
        where = sql.SQL("ctid = {}::tid").format(sql.Literal(ctid))
        if how == "update":
            others = [(i, c, t) for i, (c, t) in enumerate(columns) if c not in keys]
            if not others:
                return
            i, column, typ = others[data.draw(st.integers(0, len(others) - 1), label="mirror column")]
            col = sql.Identifier(column)
            if typ == "double precision" and row[i] == 0:
                value: sql.Composable = sql.SQL("-{}").format(col)
                note("mirror edited: zero's sign flipped")
            else:  # '1' reads as every type the engine makes; '0' where it is 1 already
                one, zero = (sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(typ)) for v in ("1", "0"))
                value = sql.SQL("CASE WHEN {c} IS NOT DISTINCT FROM {one} THEN {zero} ELSE {one} END").format(
                    c=col, one=one, zero=zero
                )
                note("mirror edited: a value updated")
            self._query(sql.SQL("UPDATE {} SET {} = {} WHERE {}").format(ident, col, value, where))
        elif how == "delete":
            self._query(sql.SQL("DELETE FROM {} WHERE {}").format(ident, where))
            note("mirror edited: a row deleted")
        else:
            self.drifts += 1
            new: dict[str, object] = {}
            for pg in keys:  # a key SQLite never has
                typ = dict(columns)[pg]
                if typ not in ("text", "bigint", "double precision", "numeric"):
                    return
                new[pg] = f"drift {self.drifts}" if typ == "text" else 1000 + self.drifts
            values = [
                sql.SQL("{}::{}").format(sql.Literal(str(new[c])), sql.SQL(t)) if c in new else sql.Identifier(c)
                for c, t in columns
            ]
            self._query(
                sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE {}").format(
                    ident, sql.SQL(", ").join(values), ident, where
                )
            )
            note("mirror edited: a row inserted")
            if table.key:
                table.drift.add(tuple(new[pg] for pg in keys))
            return
        if table.key:
            key = tuple(row[names.index(pg)] for pg in keys)
            raw = self._sqlite_key(table, [dict(columns)[pg] for pg in keys], key)
            table.drift.add(raw)

    def _sqlite_key(self, table: Table, key_types: list[str], key: tuple[object, ...]) -> tuple[object, ...]:
        """The key (as SQLite held it) of a PostgreSQL row: one SQLite once had, or one inserted in the mirror."""
        wanted = tuple(token(bytes(v) if isinstance(v, memoryview) else v) for v in key)
        current = {tuple(r) for r in self.db.execute(f"SELECT {', '.join(map(q, table.key))} FROM {q(table.name)}")}
        for raw in table.ever_keys | table.drift | current:
            try:
                if tuple(token(stored_value(t, v)) for t, v in zip(key_types, raw, strict=True)) == wanted:
                    return raw
            except Unrepresentable:
                continue
        raise AssertionError(f"table {table.name!r}: PostgreSQL holds key {key!r}, which SQLite never had")

    @rule()
    def vacuum(self) -> None:
        self.db.execute("VACUUM")

    @rule()
    def repair(self) -> None:
        """Clear what the mapping cannot hold, as an application fixing its data would."""
        for table in self.tables:
            self._repair(table)

    def _repair(self, table: Table) -> None:
        """Set the values the mapping cannot hold to NULL (bumping the cursor), or delete their rows."""
        for where, params, column in self._problems(table, self.db):
            if column is not None and column in self._writable(table):
                values: dict[str, object] = {column: None}
                if table.cursor is not None and table.high is not None:
                    values[table.cursor] = table.high
                assignments = ", ".join(f"{q(c)} = ?" for c in values)
                if self._execute(
                    f"UPDATE {q(table.name)} SET {assignments} WHERE {where}", [*values.values(), *params]
                ):
                    continue
            self.db.execute(f"DELETE FROM {q(table.name)} WHERE {where}", params)

    def _problems(self, table: Table, source: sqlite3.Connection) -> list[tuple[str, tuple[object, ...], str | None]]:
        """Rows the mapping cannot hold: (WHERE, params, column or None for the whole row)."""
        columns = self._columns(table, source)
        names = [c[0] for c in columns]
        locate = ", ".join(map(q, table.key)) if table.without_rowid else "rowid"
        where = " AND ".join(f"{q(k)} = ?" for k in table.key) if table.without_rowid else "rowid = ?"
        width = len(table.key) if table.without_rowid else 1
        found: list[tuple[str, tuple[object, ...], str | None]] = []
        seen: set[tuple[object, ...]] = set()
        select = ", ".join(map(q, names))
        for row in source.execute(f"SELECT {locate}, {select} FROM {q(table.name)} ORDER BY {locate}"):
            params, values = tuple(row[:width]), row[width:]
            for (name, decl, _), value in zip(columns, values, strict=True):
                try:
                    if f"{table.name}.{name}" in PINS:
                        self._pinned(value)
                    elif not table.typed_by_data:
                        expected_value(pg_type_of(decl), value)
                except Unrepresentable:
                    found.append((where, params, name))
            if table.key:
                key = tuple(values[names.index(k)] for k in table.key)
                mapped = self._key_token(table, columns, key)
                if None in key or mapped in seen:
                    found.append((where, params, None))
                if mapped is not None:
                    seen.add(mapped)
        return found

    @staticmethod
    def _key_token(table: Table, columns: list[tuple[str, str, bool]], key: tuple[object, ...]) -> object:
        decls = {name: decl for name, decl, _ in columns}
        try:
            return tuple(token(expected_value(pg_type_of(decls[k]), v)) for k, v in zip(table.key, key, strict=True))
        except Unrepresentable:
            if not table.typed_by_data:
                return None
        try:  # numbers in a key of the data's type: numeric is the type that can merge them
            return tuple(token(expected_value("numeric", v)) for v in key)
        except Unrepresentable:
            return None

    # --- PostgreSQL side ----------------------------------------------------------------------

    def _connect(self, encoding: str | None) -> psycopg2.extensions.connection:
        if encoding is None:
            return psycopg2.connect(self.dsn)
        return psycopg2.connect(self.dsn, options=f"-c client_encoding={encoding}")

    def _query(self, statement: sql.Composable | str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.observer.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def _pg_state(self, table: Table) -> PgState:
        ident = sql.Identifier(self.schema, pg_identifier(table.name))
        relations = self._query(
            "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            'WHERE n.nspname = %s ORDER BY c.relname COLLATE "C"',
            (self.schema,),
        )
        state: list[tuple[object, ...]] = []
        state_table = sql.Identifier(STATE_SCHEMA, STATE_TABLE)
        if self._query("SELECT to_regclass(%s)", (state_table.as_string(self.observer),))[0][0]:
            state = self._query(
                sql.SQL(
                    "SELECT to_jsonb(s)::text FROM {} AS s WHERE target_schema = %s AND table_name IN (%s, %s)"
                ).format(state_table),
                (self.schema, table.name, pg_identifier(table.name)),
            )
        if (pg_identifier(table.name), "r") not in relations:
            return PgState((relations, state), False, [], 0)
        oid = self._query("SELECT %s::regclass::oid", (ident.as_string(self.observer),))[0][0]
        columns = self._query(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (oid,),
        )
        constraints = self._query(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s ORDER BY 1", (oid,)
        )
        rows = sorted(r[0] for r in self._query(sql.SQL("SELECT t::text FROM {} AS t").format(ident)))
        dump = (relations, state, columns, constraints, rows)
        return PgState(dump, True, [(c[0], c[1]) for c in columns], len(rows))

    def _pinned(self, value: object) -> object:
        """PostgreSQL's own reading of a value of a pinned column (``SELECT '19.99'::numeric``): the text
        the application stored, an integer's digits, a real's shortest decimal (README, "Pinned types");
        Unrepresentable for a value it refuses, and for a blob, which has no text."""
        if value is None:
            return None
        if isinstance(value, bytes):
            raise Unrepresentable(f"blob {value!r} in a column pinned to {PIN}")
        text = value if isinstance(value, str) else _float_text(value) if type(value) is float else str(value)
        if text not in PIN_READINGS:
            try:
                PIN_READINGS[text] = self._query(sql.SQL("SELECT %s::{}").format(sql.SQL(PIN)), (text,))[0][0]
            except psycopg2.DataError:
                PIN_READINGS[text] = Unrepresentable
        read = PIN_READINGS[text]
        if read is Unrepresentable:
            raise Unrepresentable(f"{text!r} is not {PIN}")
        return read

    def _pins(self, table: Table, names: list[str]) -> dict[str, str]:
        return {n: PINS[f"{table.name}.{n}"] for n in names if f"{table.name}.{n}" in PINS}

    def _tokens(
        self, table: Table, names: list[str], pg_types: list[str], row: tuple[object, ...]
    ) -> tuple[object, ...]:
        """A SQLite row as PostgreSQL must return it, as tokens (a pinned value exactly, scale included)."""
        pins = self._pins(table, names)
        return tuple(
            pinned_token(self._pinned(v)) if n in pins else token(stored_value(t, v))
            for n, t, v in zip(names, pg_types, row, strict=True)
        )

    def _pg_tokens(self, table: Table, names: list[str], row: tuple[object, ...]) -> tuple[object, ...]:
        pins = self._pins(table, names)
        return tuple(pinned_token(v) if n in pins else token(v) for n, v in zip(names, row, strict=True))

    def _pg_rows(self, table: Table) -> list[tuple[object, ...]]:
        rows = self._query(sql.SQL("SELECT * FROM {}").format(sql.Identifier(self.schema, pg_identifier(table.name))))
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]

    # --- syncs ------------------------------------------------------------------------------------

    def _pg_holds(self, table: Table, before: PgState) -> tuple[list[bool], list[bool]]:
        """Per PostgreSQL column before the sync: whether it holds a value; whether its integers (a
        bigint column's) are all within 2^53."""
        if not before.columns:
            return [], []
        parts = []
        for name, typ in before.columns:
            ident = sql.Identifier(name)
            parts.append(sql.SQL("coalesce(bool_or({} IS NOT NULL), false)").format(ident))
            within = sql.SQL("true")
            if typ == "bigint":
                within = sql.SQL("coalesce(bool_and({} BETWEEN -9007199254740992 AND 9007199254740992), true)")
            parts.append(within.format(ident))
        row = self._query(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(parts), sql.Identifier(self.schema, pg_identifier(table.name))
            )
        )[0]
        return list(row[0::2]), list(row[1::2])

    def _expect(self, table: Table, before: PgState, options: SyncOptions) -> Expectation:
        """What this table's sync must do under ``options``: fail (and why), or the types it ends with."""
        columns = self._columns(table, self.seen)
        names = [name for name, _, _ in columns]
        pins = self._pins(table, names)  # a pin is the column's mapping, and its type whatever the values
        mapped = {name: pins.get(name) or pg_type_of(decl) for name, decl, _ in columns}
        rows = self.seen.execute(f"SELECT {', '.join(map(q, names))} FROM {q(table.name)}").fetchall()
        profiles = {n: Profile.of([r[i] for r in rows if r[i] is not None]) for i, n in enumerate(names)}
        fresh = options.full_refresh or not before.exists
        strict = options.strict_types
        start = dict(mapped)  # the type each column starts from: the mapping, or PostgreSQL's
        held = dict.fromkeys(names, False)
        within = dict.fromkeys(names, True)
        reasons = []
        if not fresh:
            holds, withins = self._pg_holds(table, before)
            for name, (_, typ), h, w in zip(names, before.columns, holds, withins, strict=False):
                held[name], within[name] = h, w
                if not strict:
                    start[name] = REPAIRED if typ == "text" and name in table.repaired else typ
                elif typ != mapped[name]:  # strict_types: PostgreSQL's types must be the mapping
                    reasons.append(f"column {name!r} is {typ} in PostgreSQL but maps to {mapped[name]}")
        maybe = None
        TOTALS["tables holding values off their mapping"] += any(not fits(mapped[n], profiles[n]) for n in names)
        for name in pins:
            i = names.index(name)
            for row in rows:
                try:
                    self._pinned(row[i])
                except Unrepresentable:
                    reasons.append(f"column {name!r} is pinned to {pins[name]}, which cannot read {row[i]!r}")
                    break
        if not strict:
            types = {}
            for name in names:
                typ, p = start[name], profiles[name]
                if name in pins:
                    types[name] = pins[name]
                    continue
                if fits(typ, p):
                    types[name] = typ
                    continue
                wanted = needed(p, mapped[name])
                types[name] = join(typ, wanted, within[name], p) if held[name] else wanted
        else:
            types = dict(start)
            for name in names:
                if name in pins or fits(start[name], profiles[name]):
                    continue
                if not fresh and start[name] == "text" and name in table.repaired:
                    # Repaired values PostgreSQL already holds, in rows this sync may not read (cursor,
                    # unchanged batches): strict_types fails only if it reads one.
                    maybe = f"column {name!r} holds values repaired by an earlier sync"
                else:
                    reasons.append(f"column {name!r} cannot hold a value ({start[name]}: {profiles[name]})")
        for key in self._key_problems(table, names, rows, types)[:1]:
            reasons.append(f"a key is NULL or meets another (key {key})")
        count = len(rows)
        want = [pg_identifier(name) for name in names]
        have = [name for name, _ in before.columns]
        if before.exists and not options.full_refresh:
            # By name: the types are PostgreSQL's own for the columns it has (widened ones too).
            if not table.key and have != want:
                reasons.append("the columns of a table without a primary key changed")
            elif have != want[: len(have)]:
                reasons.append("a column was dropped or redefined")
        # A verify sync deletes what SQLite lacks too (verify.py), and refuses as delete_orphans does.
        if (options.delete_orphans or options.verify) and not options.full_refresh and count == 0 and before.rows > 0:
            reasons.append("delete_orphans with no SQLite rows")
        return Expectation(
            reasons, None if reasons else maybe, replace(options, strict_types=strict), fresh, names,
            {name: decl for name, decl, _ in columns}, mapped,
            start, types, profiles, held, pins,
        )  # fmt: skip

    def _key_problems(
        self, table: Table, names: list[str], rows: list[tuple[object, ...]], types: dict[str, str]
    ) -> list[tuple[object, ...]]:
        """Keys that are NULL or become one with another under the key columns' types."""
        if not table.key:
            return []
        positions = [names.index(k) for k in table.key]
        found, seen = [], set()
        for row in rows:
            key = tuple(row[i] for i in positions)
            try:
                mapped = tuple(token(stored_value(pg_name(types[k]), v)) for k, v in zip(table.key, key, strict=True))
            except Unrepresentable:
                mapped = None
            if None in key or mapped in seen:
                found.append(key)
            if mapped is not None:
                seen.add(mapped)
        return found

    def _check_types(
        self, table: Table, expect: Expectation, before: PgState, result: TableSyncResult, what: str
    ) -> None:
        """After a successful sync: no column narrower than PostgreSQL had it (but full_refresh), every
        column off its declared mapping or with values changed reported (values_changed counted as
        the model counts them), the columns moved named; then what PostgreSQL now knows as repaired."""
        types, start = expect.types, expect.start
        if not expect.fresh:
            for (pg, old), name in zip(before.columns, expect.names, strict=False):
                new = pg_name(types[name])
                if expect.held[name]:
                    assert not_narrower(new, old), f"{what}: column {pg!r} narrowed from {old} to {new}"
        retyped = {r.column: r for r in result.columns_retyped}
        for name in expect.names:
            mapped, typ = expect.mapped[name], types[name]
            changed = expect.profiles[name].repairs if typ == REPAIRED else 0
            entry = retyped.pop(name, None)
            if name in expect.pins:
                assert entry is None, f"{what}: column {name!r}, pinned, reported: {entry}"
                continue
            if pg_name(typ) == mapped and not changed:
                assert entry is None, f"{what}: column {name!r} ({typ}, as declared) reported: {entry}"
                continue
            assert entry is not None, f"{what}: column {name!r} is {typ} (maps to {mapped}) but not reported"
            declared = expect.declared[name]
            assert (entry.declared, entry.pg_type, entry.mapped, entry.values_changed) == (
                declared,
                pg_name(typ),
                mapped,
                changed,
            ), (
                f"{what}: column {name!r} reported as {entry}; the model: {declared!r} maps to {mapped}, "
                f"{typ}, {changed} changed"
            )
            note("values changed, counted" if changed else "retyped column reported")
        assert not retyped, f"{what}: columns reported that are not SQLite's: {retyped}"
        moved = {name for name in expect.names if types[name] != start[name]}
        widened = set(result.columns_widened)
        assert widened == moved, f"{what}: columns_widened {sorted(widened)}, the model moved {sorted(moved)}"
        for name in sorted(moved):
            held = "held" if expect.held[name] else "empty"
            where = "fresh" if expect.fresh else f"in place, {held}"
            note(f"widened ({where}): {start[name]} -> {types[name]}")
        newly = {name for name in moved if types[name] == REPAIRED}
        # A fresh sync keeps the table (and its COMMENTs) when its shape is unchanged.
        kept = before.exists and before.columns == [(pg_identifier(n), pg_name(types[n])) for n in expect.names]
        if not expect.fresh or kept:
            table.repaired = (table.repaired - moved) | newly
        else:
            table.repaired = newly

    def _cursor_mixed(self, table: Table) -> bool:
        if table.cursor is None:
            return False
        kinds = {
            r[0]
            for r in self.seen.execute(f"SELECT DISTINCT typeof({q(table.cursor)}) FROM {q(table.name)}").fetchall()
        }
        return "text" in kinds and bool(kinds & {"integer", "real"})

    def _check_equal(self, table: Table, exact: bool, what: str, types: dict[str, str], tolerate: bool) -> None:
        """PostgreSQL's columns have ``types`` (SQLite column -> type) and every value is SQLite's under them,
        but (``tolerate``: after a plain sync) in rows edited in PostgreSQL behind the sync's back, which
        stay tolerated while they differ from SQLite."""
        columns = self._columns(table, self.seen)
        pg_columns = self._query(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (sql.Identifier(self.schema, pg_identifier(table.name)).as_string(self.observer),),
        )
        pg_types = [t for _, t in pg_columns]
        want = [(pg_identifier(name), pg_name(types[name])) for name, _, _ in columns]
        assert pg_columns == want, f"{what}: PostgreSQL columns {pg_columns}, the model expects {want}"
        names = [c[0] for c in columns]
        sqlite_rows = self.seen.execute(f"SELECT {', '.join(map(q, names))} FROM {q(table.name)}").fetchall()
        expected = [self._tokens(table, names, pg_types, row) for row in sqlite_rows]
        got = [self._pg_tokens(table, names, row) for row in self._pg_rows(table)]
        if not table.key:  # (a plain sync compares every row of a keyless table: no drift survives it)
            missing = Counter(expected) - Counter(got)
            extra = Counter(got) - Counter(expected)
            assert not missing, f"{what}: rows of SQLite missing from PostgreSQL: {sorted(missing.elements())}"
            assert not (exact and extra), f"{what}: rows PostgreSQL has beyond SQLite: {sorted(extra.elements())}"
            return
        positions = [names.index(k) for k in table.key]
        want = {tuple(row[i] for i in positions): row for row in expected}
        have = {tuple(row[i] for i in positions): row for row in got}
        drift = self._drift_tokens(table, [pg_types[i] for i in positions])
        drifted = set(drift) if tolerate else set()
        wrong = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v and k not in drifted}
        assert not wrong, (
            f"{what}: {len(wrong)} of {len(want)} SQLite rows differ in PostgreSQL (key: (sqlite, postgres)): "
            f"{dict(list(wrong.items())[:5])}"
        )
        extra_keys = set(have) - set(want) - drifted
        assert not (exact and extra_keys), f"{what}: orphans left: {sorted(extra_keys, key=repr)[:5]}"
        # A drifted row stays drifted while PostgreSQL's differs from SQLite's (or is there for no SQLite row).
        table.drift = {raw for k, raw in drift.items() if have.get(k) != want.get(k)}
        table.ever_keys |= {tuple(row[i] for i in positions) for row in sqlite_rows}
        unknown = extra_keys - _stored_keys(table.ever_keys, [pg_types[i] for i in positions]) if extra_keys else set()
        assert not unknown, f"{what}: PostgreSQL has keys SQLite never had: {sorted(unknown, key=repr)[:5]}"

    def _drift_tokens(self, table: Table, key_types: list[str]) -> dict[tuple[object, ...], tuple[object, ...]]:
        """The drifted keys as PostgreSQL returns them under ``key_types`` -> the key as SQLite would hold it."""
        found = {}
        for raw in table.drift:
            try:
                found[tuple(token(stored_value(t, v)) for t, v in zip(key_types, raw, strict=True))] = raw
            except Unrepresentable:
                continue
        return found

    def _differences(self, table: Table, pg_types: list[str]) -> int | None:
        """How many rows PostgreSQL holds otherwise than SQLite under ``pg_types`` (its columns' types now):
        keys that differ, are missing or are extra; for a keyless table, rows missing and extra (as
        multisets). None when a SQLite value does not fit those types (the sync will retype)."""
        names = [c[0] for c in self._columns(table, self.seen)]
        if len(names) != len(pg_types):
            return None
        rows = self.seen.execute(f"SELECT {', '.join(map(q, names))} FROM {q(table.name)}").fetchall()
        try:
            expected = [self._tokens(table, names, pg_types, row) for row in rows]
        except Unrepresentable:
            return None
        got = [self._pg_tokens(table, names, row) for row in self._pg_rows(table)]
        if not table.key:
            return sum(((Counter(expected) - Counter(got)) + (Counter(got) - Counter(expected))).values())
        positions = [names.index(k) for k in table.key]
        want = {tuple(row[i] for i in positions): row for row in expected}
        have = {tuple(row[i] for i in positions): row for row in got}
        return sum(want.get(k) != have.get(k) for k in set(want) | set(have))

    def _sync_tables(
        self,
        tables: list[Table],
        snapshots: list[SqliteSnapshot],
        conn: psycopg2.extensions.connection,
        options: SyncOptions,
        describe: str,
        data: st.DataObject,
    ) -> set[str]:
        """Sync each table and check the invariant; returns the tables whose sync succeeded."""
        succeeded = set()
        for number, table in enumerate(tables):
            snapshot = snapshots[number % len(snapshots)]
            before = self._pg_state(table)
            expect = self._expect(table, before, options)
            reasons, table_options = expect.reasons, expect.options
            what = f"{describe}, table {table.name!r}"
            if table_options.strict_types != options.strict_types:
                what += " (made strict: see _expect)"
            TOTALS["table syncs"] += 1
            TOTALS["strict" if table_options.strict_types else "types from the data"] += 1
            info = snapshot.table(table.name)
            if "row_counts" not in AVOID:  # the asset check's read-only count, on the same session
                count = self.seen.execute(f"SELECT count(*) FROM {q(table.name)}").fetchone()[0]
                counted = row_counts(snapshot, conn, info, self.schema)
                assert counted == (count, before.rows if before.exists else None), f"{what}: row_counts {counted}"
            differing = None  # rows PostgreSQL holds otherwise than SQLite before a verify sync
            if options.verify and before.exists and not options.full_refresh:
                differing = self._differences(table, [t for _, t in before.columns])
            try:
                result = sync_table(snapshot, conn, info, self.schema, table_options)
            except SyncError as exc:
                why = reasons[0].split(" (")[0] if reasons else expect.maybe and "repaired values read (strict)"
                note(f"refused: {why or 'UNEXPECTED'}")
                assert exc.table == table.name, f"{what}: the error names table {exc.table!r}: {exc}"
                assert self._pg_state(table).dump == before.dump, f"{what}: failed ({exc}) but changed PostgreSQL"
                assert reasons or expect.maybe, f"{what}: refused although the model expects success: {exc}"
                if len(reasons) == 1 and reasons[0].startswith("column ") and "is pinned to" in reasons[0]:
                    column = reasons[0].split("'")[1]
                    assert isinstance(exc, ValueMismatchError) and exc.column == column, (
                        f"{what}: a value the pin cannot read, yet the error does not name column {column!r}: {exc!r}"
                    )
                    assert "not found again" not in exc.row_key, f"{what}: the error names no row: {exc}"
                    note("pinned value refused, naming column and key")
                if table.numeric_twins and len(reasons) == 1 and reasons[0].startswith("a key") and not expect.fresh:
                    assert "(real)" in str(exc) and "(integer)" in str(exc), f"{what}: twins not both named: {exc}"
                    note("twins past 2^53 refused, naming both")
                if data.draw(st.booleans(), label=f"repair {table.name} now"):
                    self._repair(table)
                continue
            assert not reasons, f"{what}: succeeded although it must fail: {'; '.join(reasons)}"
            exact = options.delete_orphans or options.full_refresh or options.verify
            drifted = len(table.drift)
            self._check_equal(table, exact, what, expect.types, tolerate=not (options.verify or options.full_refresh))
            if drifted:
                note("drift pending, after a " + ("verify sync" if options.verify else "plain sync"))
            self._check_types(table, expect, before, result, what)
            if options.verify:
                self._check_verified(table, result, differing, before, what)
            count = self.seen.execute(f"SELECT count(*) FROM {q(table.name)}").fetchone()[0]
            assert result.sqlite_rows == count, f"{what}: sqlite_rows {result.sqlite_rows}, SQLite has {count}"
            after = self._pg_state(table).rows
            assert result.pg_rows_after == after, f"{what}: pg_rows_after {result.pg_rows_after}, PostgreSQL {after}"
            assert result.pg_rows_before == before.rows, f"{what}: pg_rows_before {result.pg_rows_before}"
            moved = result.rows_inserted - result.rows_deleted
            # A verify sync's repair writes rows of its own: counted in rows_repaired (inserted, updated or
            # deleted, not told apart), never in the normal pass's counts.
            off = abs(after - before.rows - moved)
            assert off <= (result.rows_repaired if options.verify else 0), (
                f"{what}: {before.rows} -> {after} rows, counted {result}"
            )
            if table.name in options.cursor_columns and self._cursor_mixed(table):
                warnings = getattr(result, "warnings", ())
                assert any(repr(table.cursor) in w or str(table.cursor) in w for w in warnings), (
                    f"{what}: cursor column {table.cursor!r} holds text beside numbers, yet no warning: {warnings}"
                )
            note(f"synced, read path {result.read_path}")
            if result.rows_skipped:
                note("batches skipped as unchanged")
            if result.watermark_before is not None:
                note("cursor read past a watermark")
            succeeded.add(table.name)
        return succeeded

    def _check_verified(
        self, table: Table, result: TableSyncResult, differing: int | None, before: PgState, what: str
    ) -> None:
        """A verify sync's account (verify.py): every SQLite row compared; each row PostgreSQL held otherwise
        than SQLite written once, by the normal pass (SQLite's own changes, counted as ever) or by the
        repair (``rows_repaired``), so that the two add up to the rows that differed, when the sync kept
        the columns' types (``differing`` is counted under them)."""
        count = self.seen.execute(f"SELECT count(*) FROM {q(table.name)}").fetchone()[0]
        assert result.verified and result.rows_verified == count, (
            f"{what}: verified {result.verified}, rows_verified {result.rows_verified}, SQLite has {count}"
        )
        if table.key:
            shown = min(result.rows_repaired, 10)
            assert len(result.repaired_keys) == shown, f"{what}: repaired_keys {result.repaired_keys}, {shown} expected"
        if differing is not None and self._pg_state(table).columns == before.columns:
            written = result.rows_inserted + result.rows_updated + result.rows_deleted + result.rows_repaired
            assert written == differing, (
                f"{what}: {differing} rows differed from SQLite; the normal pass wrote "
                f"{result.rows_inserted}+{result.rows_updated}+{result.rows_deleted}, the repair {result.rows_repaired}"
            )
        if result.rows_repaired:
            note("verify repaired rows")

    def _options(self, data: st.DataObject, verify: bool = False) -> tuple[bool, SyncOptions]:
        if self.last_read is not None and data.draw(st.booleans(), label="same read path and batch size"):
            arrow, batch_size = self.last_read
        else:
            arrow = data.draw(st.booleans(), label="arrow")
            batch_size = data.draw(BATCH_SIZES, label="batch_size")
        self.last_read = (arrow, batch_size)
        names = [t.name for t in self.tables if t.cursor]
        cursors = data.draw(st.sets(st.sampled_from(names)), label="cursor tables")
        options = SyncOptions(
            batch_size=batch_size,
            delete_orphans=data.draw(st.booleans(), label="delete_orphans"),
            full_refresh=data.draw(st.integers(0, 5), label="full_refresh") == 5,
            cursor_columns={t.name: t.cursor for t in self.tables if t.name in cursors and t.cursor},
            strict_types=data.draw(st.booleans(), label="strict_types"),
            column_types=PINS,
            verify=verify or data.draw(st.integers(0, 9), label="verify") == 9,
        )
        return arrow, options

    def _connection(self, data: st.DataObject) -> tuple[psycopg2.extensions.connection, bool]:
        """(connection, whether to close it after the sync)."""
        if data.draw(st.booleans(), label="reuse connection"):
            assert self.kept is not None
            return self.kept, False
        encoding = None if "encoding" in AVOID else data.draw(st.sampled_from(ENCODINGS), label="client_encoding")
        return self._connect(encoding), True

    def _clock(self, data: st.DataObject) -> Callable[..., object] | None:
        if SnapshotClock is None or not data.draw(st.booleans(), label="numbered snapshot"):
            return None
        return SnapshotClock(lambda: psycopg2.connect(self.dsn), self.schema)

    @rule(data=st.data())
    def sync(self, data: st.DataObject, verify: bool = False) -> None:
        arrow, options = self._options(data, verify)
        conn, close = self._connection(data)
        describe = f"sync (arrow={arrow}, {options})"
        TOTALS["syncs"] += 1
        TOTALS["verify syncs"] += options.verify
        readers = data.draw(st.integers(1, 3), label="readers")  # parallel tables read through views
        try:
            with SqliteSnapshot(self.path, arrow=arrow, readers=readers, clock=self._clock(data)) as snapshot:
                order = self._order(data)
                self._sync_tables(order, [snapshot, *snapshot.views], conn, options, describe, data)
        finally:
            if close:
                conn.close()

    @rule(data=st.data())
    def sync_while_writing(self, data: st.DataObject) -> None:
        """The application commits while a sync reads: PostgreSQL gets the snapshot, all of it, nothing later."""
        if not self.wal:
            return  # the model's own read transaction would lock the writer out of a rollback-journal file
        arrow, options = self._options(data)
        readers = data.draw(st.integers(1, 3), label="readers")
        view = _application_connection(self.path)
        view.execute("BEGIN")
        view.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the read transaction starts here
        conn = self._connect(None)
        TOTALS["syncs while writing"] += 1
        try:
            with SqliteSnapshot(self.path, arrow=arrow, readers=readers) as snapshot:
                writes = st.sampled_from(
                    ["insert", "update", "update_many", "rekey", "delete", "insert_twin", "alter_table"]
                )
                for _ in range(data.draw(st.integers(1, 3), label="writes")):
                    getattr(self, data.draw(writes, label="write"))(data)
                self.seen = view
                order = self._order(data)
                describe = f"sync while writing (arrow={arrow}, readers={readers}, {options})"
                self._sync_tables(order, [snapshot, *snapshot.views], conn, options, describe, data)
        finally:
            self.seen = self.db
            view.rollback()
            view.close()
            conn.close()

    @rule(data=st.data())
    def sync_again(self, data: st.DataObject) -> None:
        """A second sync rule: syncs are half the steps, so digests and watermarks meet edits often; half
        of its syncs verify (PostgreSQL must equal SQLite after it, whatever was edited in the mirror)."""
        self.sync(data, verify=data.draw(st.booleans(), label="verify again"))

    @rule(data=st.data())
    def sync_from_an_older_snapshot(self, data: st.DataObject) -> None:
        """Snapshot A, an edit, snapshot B synced; then A, older, must be refused where B succeeded."""
        if SnapshotClock is None:
            return
        clock = SnapshotClock(lambda: psycopg2.connect(self.dsn), self.schema)
        arrow, options = self._options(data)
        table = self._table(data)
        with SqliteSnapshot(self.path, arrow=arrow, clock=clock) as older:
            self._insert(data, table)
            conn = self._connect(None)
            try:
                with SqliteSnapshot(self.path, arrow=arrow, clock=clock) as newer:
                    describe = f"sync of a newer snapshot (arrow={arrow}, {options})"
                    if not self._sync_tables([table], [newer], conn, options, describe, data):
                        return  # PostgreSQL may still be older than snapshot A: nothing to refuse
                before = self._pg_state(table)
                try:
                    sync_table(older, conn, older.table(table.name), self.schema, options)
                except SyncError as exc:
                    assert exc.table == table.name, f"older snapshot: the error names {exc.table!r}"
                    assert self._pg_state(table).dump == before.dump, f"older snapshot: {exc}, yet PG changed"
                    note("older snapshot refused")
                    return
                raise AssertionError(f"table {table.name!r}: a sync from an older snapshot was not refused")
            finally:
                conn.close()


def test_random_edits_and_syncs_keep_postgresql_equal_to_sqlite(pg_dsn: str) -> None:
    TOTALS.clear()
    started = time.perf_counter()
    try:
        run_state_machine_as_test(
            lambda: SyncMachine(pg_dsn),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                derandomize=False,
                print_blob=True,
                suppress_health_check=list(HealthCheck),
                phases=list(Phase) if SHRINK else [p for p in Phase if p is not Phase.shrink],
            ),
        )
    finally:
        print(f"\nstateful sync, {time.perf_counter() - started:.0f} s: {dict(sorted(TOTALS.items()))}")
