"""SQLite's indexes of a table, mirrored in PostgreSQL (``SYNC_INDEXES``, on by default).

Why: people query the mirror (joins, lookups, dashboards); without SQLite's indexes every one of them is
a sequential scan. Each index of a synced table (``PRAGMA index_list``; the primary key's is the mirror's
own key) is read with ``PRAGMA index_xinfo`` (columns, ``DESC``, collation) and, for its expressions and
its ``WHERE``, the ``CREATE INDEX`` text in ``sqlite_schema``, then translated:

- a column keeps its order (``DESC``); ``COLLATE NOCASE`` on a text column becomes ``lower(column)``,
  any other collation but ``BINARY`` is refused (PostgreSQL's collations are not SQLite's);
- an expression or a ``WHERE`` goes through :class:`_Translator`, a small and safe one: column references,
  literals, comparisons, ``IS [NOT] NULL``, ``AND``/``OR``/``NOT``, ``lower()``/``upper()``, each checked
  for the types PostgreSQL gives the columns. Anything else skips the index, with a note.

An index that cannot be translated, or that PostgreSQL refuses, is skipped and reported
(:class:`IndexResult`), never a failure. A unique index whose data PostgreSQL finds not unique (NOCASE
folds ASCII only in SQLite, ``lower()`` folds every letter; text keys ``7`` and ``'7'``) is created
non-unique, saying so.

Ours are told apart by their COMMENT (``sqlite_pg_sync index <digest>: ...``): a sync drops only
indexes carrying it, never one a user made. The digest is of the statement that creates the index,
so one query over ``pg_index`` says whether PostgreSQL already holds exactly what SQLite has, and a
sync with nothing new runs no index DDL. Names follow naming.py, from the PostgreSQL names of the
table and columns (``<table>_<columns>_idx``, ``_key`` when unique), so they follow the names the
mirror has. Built after the rows are loaded (a COPY into an indexed table is slower), in the table's
transaction: readers see the rows and their indexes together.

A table many files share (scope.py) holds the union of the files' indexes: a file's sync creates those
it lacks and drops none (another file may still have it); its unique indexes lead with ``_source_file``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from .naming import pg_name
from .pg_target import PgTable
from .scope import SOURCE_FILE_COLUMN

MARK = "sqlite_pg_sync index"
_MARKED = re.compile(r"^sqlite_pg_sync index ([0-9a-f]+):")
_NOT_UNIQUE = "; not unique in PostgreSQL"
_SAVEPOINT = sql.Identifier("_sps_ddl")
# DDL that PostgreSQL refuses for a reason of the index's own: reported, the sync goes on.
REFUSALS: tuple[type[psycopg2.Error], ...] = (
    psycopg2.IntegrityError,  # a unique index the data breaks
    psycopg2.ProgrammingError,  # no such function or operator for these types, a name taken by another relation
    psycopg2.DataError,  # a literal the column's type cannot read
    psycopg2.NotSupportedError,
    psycopg2.errors.LockNotAvailable,  # other sessions kept the table busy past the lock timeout
    psycopg2.errors.DeadlockDetected,
)


# What one of our indexes does to a load that writes what it refuses (sync._load_unblocked drops ours then).
BLOCKING: tuple[type[psycopg2.Error], ...] = (
    psycopg2.errors.UniqueViolation,  # values PostgreSQL finds equal (NOCASE against lower())
    psycopg2.errors.UndefinedFunction,  # a widened column no longer fits a condition (text = integer)
)


@dataclass(frozen=True)
class IndexResult:
    """One SQLite index and what PostgreSQL has for it: ``pg_name`` None when it was skipped (``note``
    says why); ``unique`` is what PostgreSQL enforces; ``note`` also says why a unique one is not."""

    sqlite_name: str
    pg_name: str | None
    columns: tuple[str, ...]  # as PostgreSQL indexes them: "albumid", "lower(name)", "milliseconds DESC"
    unique: bool
    note: str = ""
    where: str = ""


@dataclass(frozen=True)
class Mirrored:
    """What the index step found and did: every SQLite index, and whether it ran any DDL."""

    indexes: tuple[IndexResult, ...]
    ddl: bool


@dataclass(frozen=True)
class _Term:
    expression: sql.Composable
    shown: str
    name_part: str
    descending: bool


@dataclass(frozen=True)
class _Wanted:
    """An index PostgreSQL should have: its terms and predicate translated, and the digest of the
    statement that creates it (which its COMMENT carries)."""

    sqlite_name: str
    name: str
    unique: bool
    terms: tuple[_Term, ...]
    where: sql.Composable | None
    where_shown: str
    digest: str

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(t.shown for t in self.terms)


class Untranslatable(Exception):
    """An index term or predicate this module does not translate; the message says what."""


def mirror_indexes(conn: sqlite3.Connection, target: PgTable, timeout_s: float) -> Mirrored:
    """Bring the PostgreSQL indexes we made on ``target`` in step with SQLite's indexes of its table."""
    cur = target.cur
    wanted, skipped = _wanted(conn, target)
    existing = _existing(cur, target)
    results: list[IndexResult] = list(skipped)
    ddl = False
    have = {name: digest for name, (digest, _) in existing.items()}
    keep_all = target.scope.shared  # other files may still have the indexes this one lacks
    for name in sorted(have):
        if not keep_all and (name not in wanted or wanted[name].digest != have[name]):
            ddl = True
            if try_ddl(cur, [sql.SQL("DROP INDEX {}").format(sql.Identifier(target.schema, name))], timeout_s) is None:
                del have[name]
    if keep_all and any(have.get(n) != w.digest for n, w in wanted.items()):
        target.lock_for_ddl()  # another file's sync may be creating them too: look again under the lock
        existing = _existing(cur, target)
        have = {name: digest for name, (digest, _) in existing.items()}
    built = False
    for name, want in sorted(wanted.items()):
        if have.get(name) == want.digest:
            note = existing[name][1]
            unique = want.unique and _NOT_UNIQUE not in note
            demoted = _NOT_UNIQUE in note
            results.append(_result(want, unique, note[note.index(_NOT_UNIQUE) + 2 :] if demoted else ""))
            continue
        if not built:
            target.for_index_builds()
        ddl = built = True
        results.append(_create(cur, target, want, timeout_s))
    return Mirrored(tuple(sorted(results, key=lambda r: r.sqlite_name)), ddl)


def _result(want: _Wanted, unique: bool, note: str = "") -> IndexResult:
    return IndexResult(want.sqlite_name, want.name, want.columns, unique, note, want.where_shown)


def _create(cur: psycopg2.extensions.cursor, target: PgTable, want: _Wanted, timeout_s: float) -> IndexResult:
    """Create one index with its COMMENT; a unique one the data breaks, again without UNIQUE."""
    comment = f"{MARK} {want.digest}: SQLite index {want.sqlite_name!r} of table {target.table.name!r}"
    error = try_ddl(cur, _creation(target, want, want.unique, comment), timeout_s)
    if error is None:
        return _result(want, want.unique)
    if want.unique and isinstance(error, psycopg2.errors.UniqueViolation):
        why = f"{_NOT_UNIQUE}: its values are not unique under PostgreSQL's comparison ({_message(error)})"
        error = try_ddl(cur, _creation(target, want, False, comment + why), timeout_s)
        if error is None:
            return _result(want, False, why[2:])
    note = f"PostgreSQL refused it: {_message(error)}"
    return IndexResult(want.sqlite_name, None, want.columns, False, note, want.where_shown)


def _creation(target: PgTable, want: _Wanted, unique: bool, comment: str) -> list[sql.Composable]:
    ident = sql.Identifier(target.schema, want.name)
    return [_statement(target, want, unique), sql.SQL("COMMENT ON INDEX {} IS {}").format(ident, sql.Literal(comment))]


def _message(error: psycopg2.Error) -> str:
    return (error.diag.message_primary or str(error)).strip()


def try_ddl(
    cur: psycopg2.extensions.cursor, statements: Sequence[sql.Composable], timeout_s: float
) -> psycopg2.Error | None:
    """Run DDL in a savepoint, waiting at most ``timeout_s`` for its locks; on a refusal (see
    :data:`REFUSALS`) roll back to the savepoint, which also restores the session's lock_timeout, and
    return the error. Anything else (a lost connection) propagates."""
    cur.execute("SELECT current_setting('lock_timeout')")
    previous = cur.fetchone()[0]
    cur.execute(sql.SQL("SAVEPOINT {}").format(_SAVEPOINT))
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(timeout_s * 1000))}ms",))
    try:
        for statement in statements:
            cur.execute(statement)
    except REFUSALS as exc:
        cur.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(_SAVEPOINT))
        return exc
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (previous,))
    cur.execute(sql.SQL("RELEASE SAVEPOINT {}").format(_SAVEPOINT))
    return None


def our_indexes(cur: psycopg2.extensions.cursor, target: PgTable) -> list[str]:
    """The names of the indexes on the table that a sync made."""
    return sorted(_existing(cur, target))


def drop_our_indexes(cur: psycopg2.extensions.cursor, target: PgTable, timeout_s: float) -> None:
    """Drop the indexes a sync made on the table (so a load can write what they would refuse)."""
    for name in our_indexes(cur, target):
        try_ddl(cur, [sql.SQL("DROP INDEX {}").format(sql.Identifier(target.schema, name))], timeout_s)


def _existing(cur: psycopg2.extensions.cursor, target: PgTable) -> dict[str, tuple[str, str]]:
    """Our indexes on the table now, name -> (digest, COMMENT), in one query."""
    cur.execute(
        sql.SQL(
            "SELECT c.relname, d.description FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_description d ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0 "
            "WHERE i.indrelid = {}::regclass AND d.description LIKE {}"
        ).format(sql.Literal(target.ident.as_string(cur)), sql.Literal(MARK + " %"))
    )
    found = {}
    for name, comment in cur.fetchall():
        match = _MARKED.match(comment)
        if match:
            found[name] = (match.group(1), comment)
    return found


# --- reading SQLite's indexes -----------------------------------------------------------


def _wanted(conn: sqlite3.Connection, target: PgTable) -> tuple[dict[str, _Wanted], list[IndexResult]]:
    """The indexes PostgreSQL should have (by name), and the SQLite indexes skipped, each with why."""
    table = target.table
    rows = conn.execute(
        "SELECT name, \"unique\", origin FROM pragma_index_list(?) WHERE origin <> 'pk' ORDER BY name", (table.name,)
    ).fetchall()
    wanted: dict[str, _Wanted] = {}
    skipped = []
    taken: set[str] = set()
    for index, unique, _origin in rows:
        (text,) = conn.execute("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?", (index,)).fetchone()
        keys = conn.execute(
            'SELECT cid, name, "desc", coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno', (index,)
        ).fetchall()
        try:
            terms, where, where_shown = _translate(target, keys, text)
        except Untranslatable as why:
            skipped.append(IndexResult(index, None, (), False, f"not mirrored: {why}"))
            continue
        lead = [_Term(sql.Identifier(SOURCE_FILE_COLUMN), SOURCE_FILE_COLUMN, "", False)]
        terms = (lead if unique and target.scope.shared else []) + terms
        name = _name(target, terms, bool(unique), taken)
        taken.add(name)
        want = _Wanted(index, name, bool(unique), tuple(terms), where, where_shown, "")
        text = _statement(target, want, want.unique).as_string(target.cur)
        wanted[name] = replace(want, digest=hashlib.blake2b(text.encode(), digest_size=8).hexdigest())
    return wanted, skipped


def _statement(target: PgTable, want: _Wanted, unique: bool) -> sql.Composable:
    """CREATE [UNIQUE] INDEX of ``want`` (``unique`` False: the same index without UNIQUE)."""
    rendered = sql.SQL(", ").join(t.expression + sql.SQL(" DESC" if t.descending else "") for t in want.terms)
    return sql.SQL("CREATE {}INDEX {} ON {} ({}){}").format(
        sql.SQL("UNIQUE " if unique else ""),
        sql.Identifier(want.name),
        target.ident,
        rendered,
        sql.SQL("") if want.where is None else sql.SQL(" WHERE ") + want.where,
    )


def _name(target: PgTable, terms: list[_Term], unique: bool, taken: set[str]) -> str:
    """``<table>_<columns>_idx`` (``_key`` when unique) from PostgreSQL names, shortened by naming.py's
    rule when long; a second index of the same columns gets ``_2``, and so on, in SQLite name order."""
    parts = "_".join(t.name_part for t in terms if t.name_part) or "expr"
    suffix = "key" if unique else "idx"
    name = pg_name(f"{target.pg.name}_{parts}_{suffix}")
    number = 2
    while name in taken:
        name = pg_name(f"{target.pg.name}_{parts}_{suffix}{number}")
        number += 1
    return name


def _translate(
    target: PgTable, keys: list[tuple[int, str | None, int, str]], text: str | None
) -> tuple[list[_Term], sql.Composable | None, str]:
    """The index's terms and ``WHERE`` in PostgreSQL, or :class:`Untranslatable`."""
    parsed = _parse_index(text) if text else None
    if parsed is not None and len(parsed[0]) != len(keys):
        raise Untranslatable("its CREATE INDEX text does not match its columns")
    translator = _Translator(target)
    terms = []
    for position, (cid, column, descending, collation) in enumerate(keys):
        if cid == -1 and target.table.rowid_key:  # the rowid by its alias, the INTEGER PRIMARY KEY
            cid, column = 0, target.table.primary_key[0]
        elif cid == -1:
            raise Untranslatable("it indexes the rowid, which PostgreSQL has no column for")
        if cid >= 0:
            if column not in target.table.column_names:
                raise Untranslatable(f"column {column!r} is not synced (excluded)")
            expression, kind = translator.column(column)
            shown, part = target.pg_column(column).name, target.pg_column(column).name
        else:
            if parsed is None:
                raise Untranslatable("an expression without its CREATE INDEX text")
            expression, kind = translator.expression(parsed[0][position])
            expression = sql.SQL("(") + expression + sql.SQL(")")
            shown, part = translator.shown(parsed[0][position]), translator.name_part(parsed[0][position])
        collation = (collation or "BINARY").upper()
        if collation == "NOCASE" and kind == "text":
            expression = sql.SQL("(lower(") + expression + sql.SQL("))")
            shown, part = f"lower({shown})", f"lower_{part}"
        elif collation not in ("BINARY", "NOCASE"):
            raise Untranslatable(f"collation {collation} has no PostgreSQL counterpart")
        terms.append(_Term(expression, shown + (" DESC" if descending else ""), part, bool(descending)))
    where, where_shown = None, ""
    if parsed is not None and parsed[1] is not None:
        predicate, kind = translator.expression(parsed[1])
        if kind != "bool":
            raise Untranslatable("its WHERE is not a condition PostgreSQL reads as one")
        where, where_shown = predicate, translator.shown(parsed[1])
    return terms, where, where_shown


# --- a small SQL tokenizer and translator -------------------------------------------------

_TOKEN = re.compile(
    r"""\s+|--[^\n]*|/\*.*?\*/
    |(?P<str>'(?:[^']|'')*')
    |(?P<qid>"(?:[^"]|"")*")
    |(?P<bid>\[[^\]]*\]|`(?:[^`]|``)*`)
    |(?P<num>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<id>[A-Za-z_\u0080-\U0010ffff][\w$\u0080-\U0010ffff]*)
    |(?P<op>==|!=|<>|<=|>=|\|\||[=<>(),.+\-*/%~&|])""",
    re.S | re.X,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, qid, bid, num, id, op
    text: str

    @property
    def word(self) -> str:
        return self.text.upper() if self.kind == "id" else ""

    @property
    def identifier(self) -> str | None:
        if self.kind == "id":
            return self.text
        if self.kind == "qid":
            return self.text[1:-1].replace('""', '"')
        if self.kind == "bid":
            return self.text[1:-1].replace("``", "`")
        return None


def _tokens(text: str) -> list[_Tok]:
    out = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise Untranslatable(f"cannot read {text[position : position + 20]!r}")
        position = match.end()
        if match.lastgroup:
            out.append(_Tok(match.lastgroup, match.group(match.lastgroup)))
    return out


def _parse_index(text: str) -> tuple[list[list[_Tok]], list[_Tok] | None]:
    """The terms (each its tokens, ``COLLATE``/``ASC``/``DESC`` left out: index_xinfo says those) and the
    ``WHERE`` tokens of a ``CREATE INDEX`` statement."""
    tokens = _tokens(text)
    start = next((i for i, t in enumerate(tokens) if t.word == "ON"), None)
    if start is None:
        raise Untranslatable("no ON in its CREATE INDEX text")
    open_at = next((i for i in range(start, len(tokens)) if tokens[i].text == "("), None)
    if open_at is None:
        raise Untranslatable("no column list in its CREATE INDEX text")
    terms: list[list[_Tok]] = [[]]
    depth, i = 0, open_at + 1
    while i < len(tokens):
        token = tokens[i]
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            if depth == 0:
                break
            depth -= 1
        if depth == 0 and token.text == ",":
            terms.append([])
        else:
            terms[-1].append(token)
        i += 1
    rest = tokens[i + 1 :]
    where = rest[1:] if rest and rest[0].word == "WHERE" else None
    return [_strip_order(term) for term in terms], where


def _strip_order(term: list[_Tok]) -> list[_Tok]:
    if term and term[-1].word in ("ASC", "DESC"):
        term = term[:-1]
    if len(term) >= 2 and term[-2].word == "COLLATE":
        term = term[:-2]
    return term


_COMPARISONS = {"=": "=", "==": "=", "!=": "<>", "<>": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_FUNCTIONS = {"LOWER": "lower", "UPPER": "upper"}
_NUMBERS = {"bigint", "integer", "smallint", "double precision", "real", "numeric"}


class _Translator:
    """SQLite expression tokens -> (PostgreSQL expression, its kind: text, number, bool or a type name).

    Recursive descent over: OR, AND, NOT, a comparison (``=``, ``<>``, ``<`` ...; ``IS [NOT] NULL``,
    ``ISNULL``, ``NOTNULL``, ``NOT NULL``), and primaries (a column, a string or number, ``( ... )``,
    ``lower(x)``/``upper(x)`` of text). Both sides of a comparison must be of one kind, so PostgreSQL
    never meets ``text = integer``. Everything else is :class:`Untranslatable`.
    """

    def __init__(self, target: PgTable) -> None:
        self.target = target
        self.by_lower = {name.lower(): name for name in target.table.column_names}

    def column(self, name: str) -> tuple[sql.Composable, str]:
        pg = self.target.pg_column(name)
        kind = pg.pg_type.name
        return sql.Identifier(pg.name), "text" if kind == "text" else "number" if kind in _NUMBERS else kind

    def shown(self, tokens: list[_Tok]) -> str:
        def one(token: _Tok) -> str:
            name = token.identifier
            if name is not None and name.lower() in self.by_lower:
                return self.target.pg_column(self.by_lower[name.lower()]).name
            return token.text

        text = " ".join(one(t) for t in tokens)
        return re.sub(r"(\w) \(", r"\1(", text).replace("( ", "(").replace(" )", ")")

    def name_part(self, tokens: list[_Tok]) -> str:
        """An expression's part of an index name: its words and columns (PostgreSQL names), joined by ``_``."""
        words = [
            self.target.pg_column(self.by_lower[name.lower()]).name if name.lower() in self.by_lower else name.lower()
            for token in tokens
            if token.kind in ("id", "qid", "bid") and (name := token.identifier)
        ]
        return "_".join(words) or "expr"

    def expression(self, tokens: list[_Tok]) -> tuple[sql.Composable, str]:
        self.tokens, self.at = tokens, 0
        result = self._or()
        if self.at != len(self.tokens):
            raise Untranslatable(f"{self.shown(tokens)!r} is beyond what is translated")
        return result

    def _peek(self, offset: int = 0) -> _Tok | None:
        at = self.at + offset
        return self.tokens[at] if at < len(self.tokens) else None

    def _take(self) -> _Tok:
        token = self._peek()
        if token is None:
            raise Untranslatable("the expression ends early")
        self.at += 1
        return token

    def _logical(self, word: str, operand: Callable[[], tuple[sql.Composable, str]]) -> tuple[sql.Composable, str]:
        left, kind = operand()
        while (token := self._peek()) is not None and token.word == word:
            self.at += 1
            right, right_kind = operand()
            if kind != "bool" or right_kind != "bool":
                raise Untranslatable(f"{word} of values that are not conditions")
            left = sql.SQL("({} {} {})").format(left, sql.SQL(word), right)
        return left, kind

    def _or(self) -> tuple[sql.Composable, str]:
        return self._logical("OR", self._and)

    def _and(self) -> tuple[sql.Composable, str]:
        return self._logical("AND", self._not)

    def _not(self) -> tuple[sql.Composable, str]:
        token = self._peek()
        if token is not None and token.word == "NOT":
            self.at += 1
            inner, kind = self._not()
            if kind != "bool":
                raise Untranslatable("NOT of a value that is not a condition")
            return sql.SQL("(NOT {})").format(inner), "bool"
        return self._comparison()

    def _comparison(self) -> tuple[sql.Composable, str]:
        left, kind = self._primary()
        token = self._peek()
        if token is None:
            return left, kind
        if token.text in _COMPARISONS:
            self.at += 1
            right, right_kind = self._primary()
            if kind != right_kind or kind in ("null", "bool"):
                raise Untranslatable(f"it compares a {kind} with a {right_kind}")
            return sql.SQL("({} {} {})").format(left, sql.SQL(_COMPARISONS[token.text]), right), "bool"
        words = [t.word for t in self.tokens[self.at : self.at + 3]]
        for pattern, test in (
            (["IS", "NOT", "NULL"], "IS NOT NULL"),
            (["IS", "NULL"], "IS NULL"),
            (["NOT", "NULL"], "IS NOT NULL"),
            (["NOTNULL"], "IS NOT NULL"),
            (["ISNULL"], "IS NULL"),
        ):
            if words[: len(pattern)] == pattern:
                self.at += len(pattern)
                return sql.SQL("({} {})").format(left, sql.SQL(test)), "bool"
        return left, kind

    def _primary(self) -> tuple[sql.Composable, str]:
        token = self._take()
        if token.text == "(":
            inner = self._or()
            if self._take().text != ")":
                raise Untranslatable("unbalanced parentheses")
            return sql.SQL("({})").format(inner[0]), inner[1]
        if token.kind == "str":
            return sql.Literal(token.text[1:-1].replace("''", "'")), "text"
        if token.kind == "num":
            value: int | float = (
                int(token.text, 16)
                if token.text[:2].lower() == "0x"
                else (float(token.text) if any(c in token.text for c in ".eE") else int(token.text))
            )
            return sql.Literal(value), "number"
        if (
            token.kind == "op"
            and token.text == "-"
            and (following := self._peek()) is not None
            and following.kind == "num"
        ):
            number, _ = self._primary()
            return sql.SQL("(-{})").format(number), "number"
        if token.word == "NULL":
            return sql.SQL("NULL"), "null"
        following = self._peek()
        if token.kind == "id" and following is not None and following.text == "(":
            function = _FUNCTIONS.get(token.word)
            if function is None:
                raise Untranslatable(f"function {token.text}() is not translated")
            self.at += 1
            argument, kind = self._or()
            if self._take().text != ")" or kind != "text":
                raise Untranslatable(f"{token.text}() of anything but one text value")
            return sql.SQL("{}({})").format(sql.SQL(function), argument), "text"
        name = token.identifier
        if name is not None and name.lower() in self.by_lower:
            return self.column(self.by_lower[name.lower()])
        if name is not None and token.kind == "id":
            raise Untranslatable(f"{name!r} is not a synced column of the table")
        raise Untranslatable(f"{token.text!r} is not translated")
