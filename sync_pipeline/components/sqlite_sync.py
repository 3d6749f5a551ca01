"""``SqliteSyncComponent``: one SQLite file (or a directory or glob of them) mirrored into one
PostgreSQL schema, declared in a ``defs.yaml``.

It is a thin layer: attributes in, then the same builders ``definitions.py`` always used
(``build_sync_assets``, ``build_sensor``, ``SqliteTableTranslator``, the resources), so a YAML
instance and the Python API behave alike. What it adds is naming: every Dagster name an instance
owns (asset key prefix, group, op, sensor, pool, resource keys, partitions) derives from the
instance's ``name`` (by default its folder under ``defs/``), so a scaffolded instance loads beside
the project's own one without a clash.

An attribute left out falls back to the environment variable the README documents for it
(``SQLITE_PATH``, ``PG_CONN_STR``, ``PG_SCHEMA``, ``SYNC_TABLES``, ``BATCH_SIZE``...), then to the
built-in default: that is how the project's own ``defs.yaml`` keeps every variable working.
"""

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import dagster as dg
from dagster import AssetSelection, DynamicPartitionsDefinition, EnvVar, RetryPolicy
from pydantic import ConfigDict, Field, field_validator

from ..assets import build_sync_assets
from ..config import MAX_PARALLEL_TABLES, SETTINGS_TAG, settings_digest, sync_config_class
from ..demo import DEFAULT_DEMO_PATH, PROJECT_ROOT, generate
from ..engine import MAX_BATCH_SIZE, list_tables
from ..engine.bookkeeping import DEFAULT_STATE_SCHEMA
from ..engine.naming import PgNames
from ..engine.selection import Selection, parse_globs
from ..partitions import PARTITIONS_NAME, SQLITE_FILES, discover, is_many, union_of_tables
from ..resources import PostgresTarget, SQLiteSource
from ..schedule import SETTING as VERIFY_SCHEDULE_SETTING
from ..schedule import build_verify_schedule
from ..sensor import DEFAULT_INTERVAL_S, build_sensor
from ..translator import CHECKS, KINDS, SqliteTableTranslator
from .scaffolder import SqliteSyncScaffolder

_ENV_TEMPLATE = re.compile(r"^\{\{\s*env(?:\.(\w+)|\(\s*['\"](\w+)['\"]\s*\))\s*\}\}$")
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
_OFF = ("off", "0", "false")
CheckName = Literal["row_count_matches_sqlite", "types_match_declared", "mirror_matches_sqlite"]


def _conn_str(context: dg.ResolutionContext, raw: str | None) -> str | EnvVar | None:
    """``{{ env.PG_CONN_STR }}`` (or ``{{ env('X') }}``) becomes ``EnvVar('X')``, so the UI and the run
    config show the variable's name, never the password; with the variable unset it is "" (the embedded server).
    Any other string is rendered as a template and used as written (it then shows in the UI)."""
    if raw is None:
        return None
    match = _ENV_TEMPLATE.match(raw.strip())
    if match:
        variable = match.group(1) or match.group(2)
        # Unset is "no connection string", the embedded server, as for PG_CONN_STR; never another variable's.
        return EnvVar(variable) if os.environ.get(variable) else ""
    return context.resolve_value(raw, as_type=str)


def _raw(context: dg.ResolutionContext, raw: str | None) -> str | None:
    """Kept as written: ``{{ table }}`` is rendered per table later (translator.py), not at load."""
    return raw


class SqliteAttributes(dg.Resolvable, dg.Model):
    path: Annotated[
        str | None,
        dg.Resolver.default(
            description="SQLite file to mirror, or a directory or glob of many (each file a partition). Relative "
            "paths are relative to the project root. Unset: SQLITE_PATH, else the demo file state/demo.sqlite."
        ),
    ] = None
    demo: Annotated[
        bool,
        dg.Resolver.default(
            description="Mirror the demo data: `path` (default state/demo.sqlite) is generated when missing, and "
            "SQLITE_PATH is ignored."
        ),
    ] = False


class PostgresAttributes(dg.Resolvable, dg.Model):
    # EnvVar (a str) must stay an EnvVar once resolved, so that the resource shows the variable's name.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    conn_str: Annotated[
        EnvVar | str | None,
        dg.Resolver(
            _conn_str,
            model_field_type=str | None,
            inject_before_resolve=False,
            description="libpq URI or key=value string. Write `{{ env.PG_CONN_STR }}` (any variable name) so the "
            "UI shows the variable's name, never the password; that variable unset means the embedded PostgreSQL "
            "in state/pgdata. Attribute unset: PG_CONN_STR, else the embedded PostgreSQL in state/pgdata.",
        ),
    ] = None
    embedded: Annotated[
        bool, dg.Resolver.default(description="Use the embedded PostgreSQL in state/pgdata, whatever PG_CONN_STR says.")
    ] = False
    pg_schema: Annotated[
        str | None, dg.Resolver.default(description="Target schema. Unset: PG_SCHEMA, else `public`.")
    ] = None
    state_schema: Annotated[
        str | None,
        dg.Resolver.default(
            description="Schema of the sync's bookkeeping, apart from the mirrored tables; several instances may "
            "share it. Unset: PG_STATE_SCHEMA, else `sqlite_pg_sync`."
        ),
    ] = None
    create_schema: Annotated[
        bool, dg.Resolver.default(description="Create the target schema on the first sync when it is missing.")
    ] = False


class TableOptions(dg.Resolvable, dg.Model):
    cursor_column: Annotated[
        str | None,
        dg.Resolver.default(
            description="Cursor mode: a column the application bumps on every write (updated_at-like); only rows "
            "at or past the last sync's watermark are read."
        ),
    ] = None
    column_types: Annotated[
        dict[str, str],
        dg.Resolver.default(
            description="Pinned PostgreSQL types by column, e.g. {config: jsonb}: the column never widens, and a "
            "value it cannot hold fails the table."
        ),
    ] = Field(default_factory=dict)
    exclude_columns: Annotated[
        list[str],
        dg.Resolver.default(
            description="Columns (globs) never read from SQLite nor created in PostgreSQL; not a key column."
        ),
    ] = Field(default_factory=list)
    full_refresh: Annotated[
        bool,
        dg.Resolver.default(
            description="Replace this table in full on every sync, whatever the run's full_refresh says (e.g. a "
            "small table without a stable key)."
        ),
    ] = False
    verify: Annotated[
        bool,
        dg.Resolver.default(
            description="Verify this table on every sync, whatever the run's verify says: every row compared with "
            "PostgreSQL, and what differs repaired."
        ),
    ] = False


class TablesAttributes(dg.Resolvable, dg.Model):
    include: Annotated[
        list[str] | None,
        dg.Resolver.default(description="Globs on SQLite table names to mirror. Unset: SYNC_TABLES, else every table."),
    ] = None
    exclude: Annotated[
        list[str] | None,
        dg.Resolver.default(description="Globs on SQLite table names left out. Unset: SYNC_EXCLUDE_TABLES."),
    ] = None
    exclude_columns: Annotated[
        list[str] | None,
        dg.Resolver.default(
            description="`table.column` globs never read, in every table. Unset: SYNC_EXCLUDE_COLUMNS."
        ),
    ] = None
    options: Annotated[
        dict[str, TableOptions], dg.Resolver.default(description="Per-table options, by SQLite table name.")
    ] = Field(default_factory=dict)


class RunConfigAttributes(dg.Resolvable, dg.Model):
    """Defaults of the Launchpad's run config; a field left out keeps the environment's default."""

    full_refresh: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Replace every row instead of merging changes. Unset: FULL_REFRESH, else false."
        ),
    ] = None
    delete_orphans: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Also delete PostgreSQL rows whose key is gone from SQLite. Unset: DELETE_ORPHANS, else false."
        ),
    ] = None
    verify: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Compare every row with PostgreSQL and repair what differs (edits made to the mirror by "
            "others). Unset: SYNC_VERIFY, else false."
        ),
    ] = None
    batch_size: Annotated[
        int | None,
        dg.Resolver.default(
            description=f"Rows read and sent per step, 1 to {MAX_BATCH_SIZE:,}. Unset: BATCH_SIZE, else 10000."
        ),
    ] = None
    strict_types: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Fail a table on a value that does not fit its declared type instead of widening the column. "
            "Unset: SYNC_STRICT_TYPES, else false."
        ),
    ] = None
    pg_names: Annotated[
        Literal["exact", "lower"] | None,
        dg.Resolver.default(
            description="PostgreSQL names of tables and columns: exact (SQLite's) or lower (lowercased; asset keys "
            "and COMMENTs keep the SQLite names). Unset: SYNC_PG_NAMES, else exact."
        ),
    ] = None
    infer_types: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Columns declared as dates, times, timestamps, JSON or UUIDs take that PostgreSQL type while "
            "every value reads exactly as it, else text. Unset: SYNC_INFER_TYPES, else false."
        ),
    ] = None
    indexes: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Create SQLite's indexes in PostgreSQL after the load. Unset: SYNC_INDEXES, else true."
        ),
    ] = None
    foreign_keys: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Create SQLite's foreign keys as NOT VALID constraints (never enforced between tables). "
            "Unset: SYNC_FOREIGN_KEYS, else false."
        ),
    ] = None
    parallel_tables: Annotated[
        int | None,
        dg.Resolver.default(
            description="Tables synced at once, each on its own connection. Unset: SYNC_PARALLEL_TABLES, else one "
            "per two cores."
        ),
    ] = Field(default=None, ge=1, le=MAX_PARALLEL_TABLES)

    @field_validator("batch_size")
    @classmethod
    def _batch_size_in_range(cls, value: int | None) -> int | None:
        """Checked here, not in the YAML schema: the schema's error would only say that the whole
        run_config block is "not valid under any of the given schemas" (every field also takes a template)."""
        if value is not None and not 0 < value <= MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE:,}, got {value} (rows read and sent per step)"
            )
        return value


class TranslationAttributes(dg.Resolvable, dg.Model):
    key_prefix: Annotated[
        list[str] | None,
        dg.Resolver.default(
            description="Asset key prefix; the key is the prefix plus the table name with characters outside "
            "[A-Za-z0-9_] made `_`. Unset: [<name>]; [] gives bare table names."
        ),
    ] = None
    group_name: Annotated[str | None, dg.Resolver.default(description="Asset group. Unset: the instance's name.")] = (
        None
    )
    tags: Annotated[dict[str, str], dg.Resolver.default(description="Tags on every asset.")] = Field(
        default_factory=dict
    )
    kinds: Annotated[list[str], dg.Resolver.default(description="Kinds shown on every asset.")] = Field(
        default_factory=lambda: sorted(KINDS)
    )
    owners: Annotated[list[str], dg.Resolver.default(description="Owners (emails or `team:name`) of every asset.")] = (
        Field(default_factory=list)
    )
    description: Annotated[
        str | None,
        dg.Resolver(
            _raw,
            model_field_type=str | None,
            inject_before_resolve=False,
            description="Asset description, a template rendered per table with {{ table }}, {{ pg_table }}, "
            "{{ schema }}, {{ columns }}, {{ primary_key }}. Unset: a description of the mirror.",
        ),
    ] = None


class SensorAttributes(dg.Resolvable, dg.Model):
    enabled: Annotated[
        bool | None,
        dg.Resolver.default(
            description="Whether the file sensor starts running (it can be toggled in the UI). Unset: on, unless "
            "SYNC_SENSOR=off."
        ),
    ] = None
    interval_s: Annotated[
        int | None, dg.Resolver.default(description="Seconds between ticks. Unset: SYNC_SENSOR_INTERVAL_S, else 3.")
    ] = Field(default=None, ge=1)
    name: Annotated[str | None, dg.Resolver.default(description="Sensor name. Unset: <name>_file_changed.")] = None


class VerifyScheduleAttributes(dg.Resolvable, dg.Model):
    # A bool too: YAML reads an unquoted `on` or `off` as one.
    when: Annotated[
        bool | str | None,
        dg.Resolver.default(
            description="`off` (the schedule exists, stopped), `on` (daily at 03:00) or a cron string (running on it). "
            f"Unset: {VERIFY_SCHEDULE_SETTING}, else off."
        ),
    ] = None
    name: Annotated[str | None, dg.Resolver.default(description="Schedule name. Unset: <name>_verify.")] = None


class RetryPolicyAttributes(dg.Resolvable, dg.Model):
    max_retries: Annotated[int, dg.Resolver.default(description="Runs of the op after a failure.")] = Field(
        default=1, ge=0
    )
    delay_s: Annotated[float | None, dg.Resolver.default(description="Seconds before a retry.")] = Field(
        default=None, ge=0
    )


class OpAttributes(dg.Resolvable, dg.Model):
    name: Annotated[
        str | None,
        dg.Resolver.default(description="The op (run config goes under ops.<name>.config). Unset: <name>_tables."),
    ] = None
    pool: Annotated[
        str | None,
        dg.Resolver.default(
            description="Concurrency pool of the sync (dagster.yaml limits pools to one run). Unset: the instance's "
            "name, so two instances sync side by side and each one alone."
        ),
    ] = None
    tags: Annotated[dict[str, str], dg.Resolver.default(description="Op tags (e.g. dagster-k8s/config).")] = Field(
        default_factory=dict
    )
    retry_policy: Annotated[
        RetryPolicyAttributes | None,
        dg.Resolver.default(
            description="Retry the whole op on failure; lost connections are already retried per table."
        ),
    ] = None


@dg.scaffold_with(SqliteSyncScaffolder)
class SqliteSyncComponent(dg.Component, dg.Resolvable, dg.Model):
    """Mirror a SQLite file (or many) into a PostgreSQL schema: one asset per table, a file sensor,
    row-count and type checks. Each materialization writes only the rows that changed, one
    transaction per table."""

    name: Annotated[
        str | None,
        dg.Resolver.default(
            description="Instance name; asset key prefix, group, op, sensor, pool and resource keys derive from it. "
            "Unset: the folder of this defs.yaml."
        ),
    ] = None
    sqlite: Annotated[SqliteAttributes, dg.Resolver.default(description="The source.")] = Field(
        default_factory=SqliteAttributes
    )
    postgres: Annotated[PostgresAttributes, dg.Resolver.default(description="The target.")] = Field(
        default_factory=PostgresAttributes
    )
    tables: Annotated[
        TablesAttributes, dg.Resolver.default(description="Which tables and columns, and options per table.")
    ] = Field(default_factory=TablesAttributes)
    run_config: Annotated[
        RunConfigAttributes, dg.Resolver.default(description="Defaults of the Launchpad's run config.")
    ] = Field(default_factory=RunConfigAttributes)
    translation: Annotated[TranslationAttributes, dg.Resolver.default(description="How tables become assets.")] = Field(
        default_factory=TranslationAttributes
    )
    sensor: Annotated[SensorAttributes, dg.Resolver.default(description="The file sensor.")] = Field(
        default_factory=SensorAttributes
    )
    verify_schedule: Annotated[
        VerifyScheduleAttributes,
        dg.Resolver.default(description="A daily sync with verify: true (every row compared and repaired)."),
    ] = Field(default_factory=VerifyScheduleAttributes)
    checks: Annotated[
        list[CheckName], dg.Resolver.default(description="Asset checks attached to every table (all WARN).")
    ] = Field(default_factory=lambda: list(CHECKS))
    op: Annotated[OpAttributes, dg.Resolver.default(description="The op that syncs the tables.")] = Field(
        default_factory=OpAttributes
    )
    resource_keys: Annotated[
        dict[Literal["sqlite", "postgres"], str],
        dg.Resolver.default(description="Keys of the two resources. Unset: <name>_sqlite and <name>_postgres."),
    ] = Field(default_factory=dict)
    partitions_name: Annotated[
        str | None, dg.Resolver.default(description="Dynamic partitions of many files. Unset: <name>_files.")
    ] = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return self.build(self.name or context.path.name, Path(context.project_root))

    def build(self, name: str | None = None, project_root: Path = PROJECT_ROOT) -> dg.Definitions:
        """The definitions of the instance ``name`` (default: the ``name`` attribute), for ``defs.yaml``
        and for Python alike (README, "Declaring syncs in YAML"); relative SQLite paths resolve
        against ``project_root``."""
        if not (name or self.name):
            raise ValueError("SqliteSyncComponent.build() needs a name: pass one or set the `name` attribute")
        name = instance_name(name or self.name or "")
        path, sqlite = self._source(project_root)
        schema, label, postgres = self._target()
        selection = self._selection()
        translation = self.translation
        config_class = sync_config_class(name, **self._run_config_defaults())
        translator = SqliteTableTranslator(
            pg_schema=schema,
            target_label=label,
            key_prefix=tuple([name] if translation.key_prefix is None else translation.key_prefix),
            group_name=translation.group_name or name,
            tags=dict(translation.tags),
            kinds=frozenset(translation.kinds),
            owners=tuple(translation.owners),
            description=translation.description,
            checks=tuple(self.checks),
            pg_names=PgNames.parse(config_class.model_fields["pg_names"].default),
        )
        keys = (
            self.resource_keys.get("sqlite", f"{name}_sqlite"),
            self.resource_keys.get("postgres", f"{name}_postgres"),
        )
        pool = self.op.pool or name
        files_name = self.partitions_name or f"{name}_files"
        files = SQLITE_FILES if files_name == PARTITIONS_NAME else DynamicPartitionsDefinition(name=files_name)
        retry = self.op.retry_policy
        settings = settings_digest(selection, config_class)
        options = {
            "selection": selection,
            "pool": pool,
            "config_class": config_class,
            "resource_keys": keys,
            "op_tags": {**self.op.tags, SETTINGS_TAG: settings},
            "retry_policy": RetryPolicy(max_retries=retry.max_retries, delay=retry.delay_s) if retry else None,
        }
        op_name = self.op.name or f"{name}_tables"
        if is_many(path):  # every file a partition of the same assets (partitions.py)
            found = union_of_tables(discover(path))  # a file that cannot be read fails only itself
            assets = build_sync_assets(selection.apply(found), translator, op_name, partitions_def=files, **options)
        else:
            assets = build_sync_assets(selection.apply(list_tables(path)), translator, op_name, **options)
        sensor = self.sensor
        interval = sensor.interval_s or int(os.environ.get("SYNC_SENSOR_INTERVAL_S") or DEFAULT_INTERVAL_S)
        # SYNC_SENSOR=off (or 0/false) starts the sensor stopped, as before the component.
        enabled = (
            sensor.enabled if sensor.enabled is not None else os.environ.get("SYNC_SENSOR", "").lower() not in _OFF
        )
        return dg.Definitions(
            assets=[assets],
            sensors=[
                build_sensor(
                    AssetSelection.assets(assets),
                    name=sensor.name or f"{name}_file_changed",
                    interval_s=interval,
                    enabled=enabled,
                    pool=pool,
                    resource_keys=keys,
                    files=files,
                    many=is_many(path),
                    settings=settings,
                )
            ],
            schedules=[
                build_verify_schedule(
                    assets,
                    name=self.verify_schedule.name or f"{name}_verify",
                    op_name=op_name,
                    setting=_setting(self.verify_schedule.when),
                    partitions_def=files if is_many(path) else None,
                )
            ],
            resources={keys[0]: sqlite, keys[1]: postgres},
        )

    def _source(self, project_root: Path) -> tuple[str, SQLiteSource]:
        """(the path, the resource). From SQLITE_PATH, the resource keeps the ``EnvVar``."""
        if self.sqlite.path is None and not self.sqlite.demo and os.environ.get("SQLITE_PATH"):
            return os.environ["SQLITE_PATH"], SQLiteSource(path=EnvVar("SQLITE_PATH"))
        path = Path(self.sqlite.path) if self.sqlite.path is not None else DEFAULT_DEMO_PATH
        path = path if path.is_absolute() else project_root / path
        if (self.sqlite.demo or self.sqlite.path is None) and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            generate(path)
        return str(path), SQLiteSource(path=str(path))

    def _target(self) -> tuple[str, str, PostgresTarget]:
        """(schema, where the data goes with the password masked, the resource). Values from the
        environment reach the resource as ``EnvVar``s, so the UI shows variable names, never values."""
        pg = self.postgres
        conn: str | EnvVar = ""
        if not pg.embedded:
            if pg.conn_str is not None:
                conn = pg.conn_str
            elif os.environ.get("PG_CONN_STR"):
                conn = EnvVar("PG_CONN_STR")
        schema_value = pg.pg_schema or _env_var("PG_SCHEMA") or "public"
        state_value = pg.state_schema or _env_var("PG_STATE_SCHEMA") or DEFAULT_STATE_SCHEMA
        schema = _value(schema_value)
        label = PostgresTarget(conn_str=_value(conn), pg_schema=schema).describe()
        resource = PostgresTarget(
            conn_str=conn, pg_schema=schema_value, state_schema=state_value, create_schema=pg.create_schema
        )
        return schema, label, resource

    def _selection(self) -> Selection:
        tables = self.tables
        per_table = [f"{table}.{column}" for table, opts in tables.options.items() for column in opts.exclude_columns]
        return Selection(
            tables=tuple(
                tables.include if tables.include is not None else parse_globs(os.environ.get("SYNC_TABLES", ""))
            ),
            exclude_tables=tuple(
                tables.exclude if tables.exclude is not None else parse_globs(os.environ.get("SYNC_EXCLUDE_TABLES", ""))
            ),
            exclude_columns=tuple(
                tables.exclude_columns
                if tables.exclude_columns is not None
                else parse_globs(os.environ.get("SYNC_EXCLUDE_COLUMNS", ""))
            )
            + tuple(per_table),
        )

    def _run_config_defaults(self) -> dict[str, object]:
        """The run config fields this instance sets; the others keep SyncConfig's (environment) defaults."""
        defaults: dict[str, object] = {
            field: value for field, value in self.run_config.model_dump().items() if value is not None
        }
        options = self.tables.options
        cursors = {table: opts.cursor_column for table, opts in options.items() if opts.cursor_column}
        pins = {
            f"{table}.{column}": pg_type
            for table, opts in options.items()
            for column, pg_type in opts.column_types.items()
        }
        if cursors:
            defaults["cursor_columns"] = cursors
        if full := sorted(table for table, opts in options.items() if opts.full_refresh):
            defaults["full_refresh_tables"] = full
        if verified := sorted(table for table, opts in options.items() if opts.verify):
            defaults["verify_tables"] = verified
        if pins:
            defaults["column_types"] = pins
        return defaults


def instance_name(name: str) -> str:
    """Dagster names accept ``[A-Za-z0-9_]`` only: a folder ``my-sync`` is the instance ``my_sync``."""
    return _NOT_IDENTIFIER.sub("_", name) or "_"


def _globs(given: list[str] | None, variable: str) -> tuple[str, ...]:
    """The YAML's globs, else the environment variable's (comma-separated)."""
    return tuple(given) if given is not None else parse_globs(os.environ.get(variable, ""))


def _setting(value: bool | str | None) -> str | None:
    """A YAML value as the environment variable would hold it (``on`` unquoted is True in YAML)."""
    return value if value is None or isinstance(value, str) else ("1" if value else "0")


def _env_var(variable: str) -> EnvVar | None:
    return EnvVar(variable) if os.environ.get(variable) else None


def _value(value: "str | EnvVar") -> str:
    return value.get_value() or "" if isinstance(value, EnvVar) else value
