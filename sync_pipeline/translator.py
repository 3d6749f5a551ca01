"""From a SQLite table to the Dagster asset that stands for its PostgreSQL mirror.

Key rule: the asset key is the SQLite table name with every character outside
``[A-Za-z0-9_]`` replaced by ``_`` (Dagster accepts nothing else in a key), so
``narrative_results`` stays ``narrative_results`` and ``"daily stats"`` becomes
``daily_stats``. Two tables that land on one key (``daily stats`` and ``daily_stats``) are
refused at load time rather than one silently replacing the other.

Op output rule: the op's output for a table is ``t_`` plus its key (``t_config``). Dagster
refuses some names as outputs (``config``, ``context``, ``type``, ``input``, ``output``,
``int``, Python keywords such as ``class``), and an output named after the key would stop the
whole code location from loading; the prefix makes every key a valid output name, and output
names appear nowhere a user looks.
"""

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dagster import (
    AssetCheckSpec,
    AssetKey,
    AssetSpec,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableConstraints,
    TableMetadataValue,
    TableRecord,
    TableSchema,
)

from .engine import TableInfo
from .engine.naming import EXACT, PgNames
from .engine.relations import ForeignKeyResult, synced_foreign_keys

KINDS = {"sqlite", "postgres"}
GROUP_NAME = "sqlite_pg_sync"
ROW_COUNT_CHECK = "row_count_matches_sqlite"
TYPES_CHECK = "types_match_declared"
MIRROR_CHECK = "mirror_matches_sqlite"
_INVALID_KEY_CHARS = re.compile(r"[^A-Za-z0-9_]")


class AssetKeyCollisionError(ValueError):
    """Two SQLite tables would become the same asset."""


def asset_key_for(table_name: str) -> AssetKey:
    return AssetKey([_INVALID_KEY_CHARS.sub("_", table_name) or "_"])


def output_name(key: AssetKey) -> str:
    return "t_" + key.to_python_identifier()


def render_description(template: str, table: TableInfo, pg_schema: str, names: PgNames = EXACT) -> str:
    """An asset description from a Jinja template (the component's ``translation.description``); an
    unknown variable is an error at load time, naming it, rather than an empty string in the catalog."""
    import jinja2  # here: most projects set no template, and the headless command's start need not pay 18 ms

    try:
        return (
            jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
            .from_string(template)
            .render(
                table=table.name,
                pg_table=f"{pg_schema}.{names.name(table.name)}",
                schema=pg_schema,
                columns=[c.name for c in table.columns],
                primary_key=list(table.primary_key),
            )
        )
    except jinja2.TemplateError as exc:
        raise ValueError(
            f"translation.description {template!r}: {exc} (known: table, pg_table, schema, columns, primary_key)"
        ) from None


def column_schema(table: TableInfo, pg_types: Mapping[str, str] | None = None, names: PgNames = EXACT) -> TableSchema:
    """The PostgreSQL columns, by their PostgreSQL names (``names``: engine/naming.py), each described with the
    SQLite column and type it came from; ``pg_types`` (SQLite column -> PostgreSQL type, from a sync)
    overrides the declared mapping."""
    pg_types = pg_types or {}
    key = [names.name(k) for k in table.primary_key]
    other = [f"PRIMARY KEY ({', '.join(key)})"] if key else []
    other += [f"FOREIGN KEY {fk.describe()}" for fk in synced_foreign_keys(table)]
    constraints = TableConstraints(other=other) if other else None
    return TableSchema(
        columns=[
            TableColumn(
                name=names.name(c.name),
                type=pg_types.get(c.name, c.pg_type.name),
                description=f"SQLite declared type: {c.declared_type or '(none)'}"
                + ("" if names.name(c.name) == c.name else f" (SQLite column {c.name!r})"),
                constraints=TableColumnConstraints(
                    nullable=not (c.not_null or c.pk_position),
                    unique=table.primary_key == (c.name,),
                ),
            )
            for c in table.columns
        ],
        constraints=constraints,
    )


def foreign_keys_line(table: TableInfo) -> str:
    """The description's line on relationships: SQLite's foreign keys, which the lineage graph does not
    show (an edge there means "computed from", and a table that refers to another is not computed from it)."""
    keys = synced_foreign_keys(table)
    if not keys:
        return ""
    return "\n\nForeign keys (SQLite's): " + "; ".join(fk.describe() for fk in keys) + "."


FOREIGN_KEYS_SCHEMA = TableSchema(
    columns=[
        TableColumn("table", "string", description="the referring table (SQLite name)"),
        TableColumn("columns", "string", description="its columns"),
        TableColumn("ref_table", "string", description="the table referred to"),
        TableColumn("ref_columns", "string", description="its columns"),
        TableColumn("constraint", "string", description="the NOT VALID constraint in PostgreSQL (SYNC_FOREIGN_KEYS)"),
        TableColumn("note", "string", description="why there is no constraint, if there is none"),
    ]
)


def foreign_keys_table(keys: Iterable[ForeignKeyResult]) -> TableMetadataValue:
    """``foreign_keys``: as the definitions know them (from the file when they load), or as a sync left
    them (with their constraints)."""
    return MetadataValue.table(
        records=[
            TableRecord(
                {
                    "table": f.table,
                    "columns": ", ".join(f.columns),
                    "ref_table": f.ref_table,
                    "ref_columns": ", ".join(f.ref_columns),
                    "constraint": f.constraint or "",
                    "note": f.note,
                }
            )
            for f in keys
        ],
        schema=FOREIGN_KEYS_SCHEMA,
    )


def declared_foreign_keys(table: TableInfo) -> list[ForeignKeyResult]:
    """The table's foreign keys as SQLite declares them, before any sync made a constraint."""
    return [ForeignKeyResult(table.name, fk.columns, fk.ref_table, fk.ref_columns) for fk in synced_foreign_keys(table)]


CHECKS = (ROW_COUNT_CHECK, TYPES_CHECK, MIRROR_CHECK)


@dataclass(frozen=True)
class SqliteTableTranslator:
    """Maps tables to specs; subclass and override a method to change one aspect.

    The fields after ``target_label`` are the component's ``translation`` and ``checks``
    (components/); their defaults are what the project had before it, so ``key_prefix=()`` keeps
    the bare key rule above. ``description``, when given, is a Jinja template rendered per table
    with ``table`` (SQLite name), ``pg_table`` (``schema.table``), ``schema``, ``columns`` and
    ``primary_key``.
    """

    pg_schema: str = "public"
    target_label: str = ""  # where the data goes, password masked (shown in the catalog)
    key_prefix: tuple[str, ...] = ()
    group_name: str = GROUP_NAME
    tags: Mapping[str, str] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset(KINDS)
    owners: tuple[str, ...] = ()
    description: str | None = None
    checks: tuple[str, ...] = CHECKS
    pg_names: PgNames = EXACT  # SYNC_PG_NAMES: PostgreSQL's spelling of the names (engine/naming.py)

    def get_asset_key(self, table: TableInfo) -> AssetKey:
        return AssetKey([*self.key_prefix, *asset_key_for(table.name).path])

    def get_description(self, table: TableInfo) -> str:
        if self.description is not None:
            return render_description(self.description, table, self.pg_schema, self.pg_names)
        key = (
            f"primary key ({', '.join(table.primary_key)}): incremental syncs update changed rows by key"
            if table.primary_key
            else "no primary key: rows are compared as whole values (see README)"
        )
        mirror = self.pg_names.name(table.name)
        return (
            f"PostgreSQL table `{self.pg_schema}.{mirror}`, a mirror of the SQLite table `{table.name}` "
            f"({len(table.columns)} columns; {key})." + foreign_keys_line(table)
        )

    def get_asset_spec(self, table: TableInfo) -> AssetSpec:
        return AssetSpec(
            key=self.get_asset_key(table),
            description=self.get_description(table),
            kinds=set(self.kinds),
            group_name=self.group_name,
            tags=dict(self.tags),
            owners=list(self.owners),
            metadata={
                "dagster/table_name": f"{self.pg_schema}.{self.pg_names.name(table.name)}",
                "dagster/column_schema": column_schema(table, names=self.pg_names),
                "sqlite_table": table.name,
                **({"foreign_keys": foreign_keys_table(keys)} if (keys := declared_foreign_keys(table)) else {}),
                **({"sync_target": self.target_label} if self.target_label else {}),
            },
        )

    def get_check_specs(self, table: TableInfo) -> list[AssetCheckSpec]:
        key = self.get_asset_key(table)
        specs = [
            AssetCheckSpec(
                ROW_COUNT_CHECK,
                asset=key,
                description="PostgreSQL has as many rows as SQLite had in the snapshot the sync read "
                "(fails when orphans are kept, i.e. rows deleted in SQLite without delete_orphans).",
            ),
            AssetCheckSpec(
                TYPES_CHECK,
                asset=key,
                description="Every column has the PostgreSQL type its SQLite declaration maps to, and holds SQLite's "
                "values unchanged (fails, as a warning, while a column was widened to hold values its declared "
                "type cannot, or holds values changed to fit: see columns_retyped).",
            ),
            AssetCheckSpec(
                MIRROR_CHECK,
                asset=key,
                description="Evaluated on verify runs only (verify: true, --verify, the verify schedule): every row "
                "of PostgreSQL was compared with SQLite. Fails, as a warning, when rows had to be repaired (edited, "
                "deleted or inserted in the mirror by someone else), with the counts and example keys.",
            ),
        ]
        return [spec for spec in specs if spec.name in self.checks]


def specs_by_table(tables: Sequence[TableInfo], translator: SqliteTableTranslator) -> dict[str, AssetSpec]:
    """One spec per table, keyed by table name; refuses two tables that share an asset key or a
    PostgreSQL name (names over 63 bytes are shortened, lowercased with SYNC_PG_NAMES=lower: engine/naming.py)."""
    owners: dict[AssetKey, str] = {}
    pg_owners: dict[str, str] = {}
    specs: dict[str, AssetSpec] = {}
    names = translator.pg_names
    for table in tables:
        mirror = names.name(table.name)
        if mirror in pg_owners:
            raise AssetKeyCollisionError(
                f"SQLite tables {pg_owners[mirror]!r} and {table.name!r} would both be the PostgreSQL table "
                f"{mirror!r} ({names.why()}); rename one of them in SQLite"
            )
        pg_owners[mirror] = table.name
        spec = translator.get_asset_spec(table)
        if spec.key in owners:
            raise AssetKeyCollisionError(
                f"SQLite tables {owners[spec.key]!r} and {table.name!r} both map to asset key "
                f"{spec.key.to_user_string()!r} (characters outside A-Z, a-z, 0-9 and _ become _); "
                "rename one of them in SQLite"
            )
        owners[spec.key] = table.name
        specs[table.name] = spec
    return specs
