"""Run configuration shown in the Launchpad: one block for the whole sync.

The seed's environment variables ``FULL_REFRESH``, ``DELETE_ORPHANS`` and ``BATCH_SIZE`` (and
``SYNC_CURSOR_COLUMNS`` for cursor mode, ``SYNC_VERIFY`` for verify) set the defaults when present, so a team that
scripted the old tool keeps its habits; the Launchpad can still override them per run.
"""

import copy
import hashlib
import json
import os
from typing import Literal

from dagster import Config
from pydantic import Field, field_validator

from .engine import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, SyncOptions
from .engine.naming import PgNames
from .engine.selection import Selection

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"environment variable {name} must be 0 or 1 (or true/false), got {raw!r}")


def env_batch_size() -> int:
    raw = os.environ.get("BATCH_SIZE", "").strip()
    if not raw:
        return DEFAULT_BATCH_SIZE
    if not raw.isdigit() or not 0 < int(raw) <= MAX_BATCH_SIZE:
        raise ValueError(f"environment variable BATCH_SIZE must be an integer from 1 to {MAX_BATCH_SIZE}, got {raw!r}")
    return int(raw)


def env_cursor_columns() -> dict[str, str]:
    """``SYNC_CURSOR_COLUMNS=narrative_results=updated_at,source_narratives=updated_at``."""
    raw = os.environ.get("SYNC_CURSOR_COLUMNS", "").strip()
    pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise ValueError(
            f"environment variable SYNC_CURSOR_COLUMNS must look like 'table=column,table2=column2', got {raw!r}"
        )
    return {table.strip(): column.strip() for table, column in pairs}


def env_column_types() -> dict[str, str]:
    """``SYNC_COLUMN_TYPES=experiments.config=jsonb,narrative_results.created_at=timestamptz``.

    Each item splits at its last ``=``, so a table or column name may hold one; a type name cannot.
    """
    raw = os.environ.get("SYNC_COLUMN_TYPES", "").strip()
    pairs = [item.rsplit("=", 1) for item in raw.split(",") if item.strip()]
    if any(len(pair) != 2 or "." not in pair[0].strip(".") or not pair[1].strip() for pair in pairs):
        raise ValueError(
            "environment variable SYNC_COLUMN_TYPES must look like 'table.column=pgtype,table2.column=pgtype', "
            f"got {raw!r}"
        )
    return {column.strip(): pg_type.strip() for column, pg_type in pairs}


def env_pg_names() -> Literal["exact", "lower"]:
    """``SYNC_PG_NAMES``: ``exact`` (unset) or ``lower`` (engine/naming.py)."""
    raw = os.environ.get("SYNC_PG_NAMES", "")
    try:
        return "lower" if PgNames.parse(raw or "exact").lower else "exact"
    except ValueError:
        raise ValueError(f"environment variable SYNC_PG_NAMES must be 'exact' or 'lower', got {raw!r}") from None


MAX_PARALLEL_TABLES = 16


def env_parallel_tables() -> int:
    """``SYNC_PARALLEL_TABLES``; by default one table per two cores, because each table's sync
    already keeps two busy (the SQLite reader thread, and the PostgreSQL backend parsing COPY)."""
    raw = os.environ.get("SYNC_PARALLEL_TABLES", "").strip()
    if not raw:
        return max(1, min(MAX_PARALLEL_TABLES, (os.cpu_count() or 2) // 2))
    if not raw.isdigit() or not 0 < int(raw) <= MAX_PARALLEL_TABLES:
        raise ValueError(
            f"environment variable SYNC_PARALLEL_TABLES must be an integer from 1 to {MAX_PARALLEL_TABLES}, got {raw!r}"
        )
    return int(raw)


class SyncConfig(Config):
    full_refresh: bool = Field(
        default=env_flag("FULL_REFRESH"),
        description="Replace every row in one transaction instead of merging changes: in place when the schema "
        "is unchanged, rebuilt and swapped in when it changed.",
    )
    full_refresh_tables: list[str] = Field(
        default=[],
        description="Tables (SQLite names) replaced in full on every sync, whatever full_refresh says: "
        "e.g. small tables without a stable key.",
    )
    delete_orphans: bool = Field(
        default=env_flag("DELETE_ORPHANS"),
        description="Also delete PostgreSQL rows whose primary key no longer exists in SQLite.",
    )
    verify: bool = Field(
        default=env_flag("SYNC_VERIFY"),
        description="Also compare every row with what PostgreSQL holds, and rewrite the rows that differ, are "
        "missing or are extra (edits made to the mirror by others); about 1.5 first loads. The check "
        "mirror_matches_sqlite then says whether anything had to be repaired.",
    )
    verify_tables: list[str] = Field(
        default=[],
        description="Tables (SQLite names) verified on every sync, whatever verify says.",
    )
    batch_size: int = Field(
        default=env_batch_size(),
        description=f"Rows read from SQLite and encoded per step (1 to {MAX_BATCH_SIZE:,}); "
        "memory holds a few batches.",
    )

    cursor_columns: dict[str, str] = Field(
        default=env_cursor_columns(),
        description="Cursor mode, per table: {table: column} where the application bumps the column on every "
        "write (updated_at-like). Such a table reads only rows at or past the watermark of its last sync; "
        "the watermark is stored in PostgreSQL (the state schema, PG_STATE_SCHEMA) in the same transaction as the "
        "rows.",
    )

    strict_types: bool = Field(
        default=env_flag("SYNC_STRICT_TYPES"),
        description="Fail a table, naming column and row key, on a value that does not fit its column's declared "
        "type, instead of widening the column to a type that holds it (see README, Real-world files).",
    )
    column_types: dict[str, str] = Field(
        default=env_column_types(),
        description='Pinned PostgreSQL types: {"table.column": "pg type"} (SQLite names), e.g. '
        '{"experiments.config": "jsonb"}. A pinned column never widens; a value it cannot hold fails the table.',
    )
    infer_types: bool = Field(
        default=env_flag("SYNC_INFER_TYPES"),
        description="Columns declared as a date, time, timestamp/datetime, JSON or UUID become date, time, timestamp "
        "(timestamptz when every value has an offset), jsonb or uuid while every value reads exactly as that type "
        "(ISO-8601 text, JSON objects or arrays, UUIDs); else text, reported (see docs/guarantees.md).",
    )

    pg_names: Literal["exact", "lower"] = Field(
        default=env_pg_names(),
        description="PostgreSQL names of tables and columns: exact (SQLite's, quoted where needed) or lower "
        "(lowercased, so `select count(*) from track` works unquoted; COMMENTs keep the SQLite names). A table "
        "mirrored under the other mode is refused until a full_refresh moves it.",
    )

    indexes: bool = Field(
        default=env_flag("SYNC_INDEXES", default=True),
        description="Create SQLite's indexes of each table in PostgreSQL too (after the load; an index that cannot "
        "be translated is skipped and reported in the metadata `indexes`).",
    )
    foreign_keys: bool = Field(
        default=env_flag("SYNC_FOREIGN_KEYS"),
        description="Also create SQLite's foreign keys as NOT VALID constraints in PostgreSQL, once both tables "
        "exist. Never enforced between tables (each commits on its own): a sync they would refuse drops and "
        "re-creates them. The metadata `foreign_keys` lists them either way.",
    )

    parallel_tables: int = Field(
        default=env_parallel_tables(),
        ge=1,
        le=MAX_PARALLEL_TABLES,
        description="Tables synced at the same time, each on its own PostgreSQL connection and all from one "
        "SQLite snapshot. Default: one per two CPU cores.",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size_in_range(cls, value: int) -> int:
        if not 0 < value <= MAX_BATCH_SIZE:
            raise ValueError(
                f"batch_size must be between 1 and {MAX_BATCH_SIZE:,} rows: it is the number of rows held in "
                f"memory and sent per COPY, so {value:,} is "
                + ("not a batch at all" if value <= 0 else "more memory than a batch should take")
            )
        return value

    def to_options(self) -> SyncOptions:
        return SyncOptions(
            full_refresh=self.full_refresh,
            full_refresh_tables=frozenset(self.full_refresh_tables),
            delete_orphans=self.delete_orphans,
            verify=self.verify,
            verify_tables=frozenset(self.verify_tables),
            batch_size=self.batch_size,
            cursor_columns=dict(self.cursor_columns),
            strict_types=self.strict_types,
            column_types=dict(self.column_types),
            pg_names=PgNames.parse(self.pg_names),
            infer_types=self.infer_types,
            indexes=self.indexes,
            foreign_keys=self.foreign_keys,
        )


def sync_config_class(name: str, **defaults: object) -> type[SyncConfig]:
    """A ``SyncConfig`` whose defaults are ``defaults`` (the fields a component instance sets in its
    ``defs.yaml``); the others keep the environment's. Run config is a class in Dagster, and its
    defaults are what the Launchpad shows, so each instance with defaults of its own gets its own class.
    ``name`` only labels the class (``SyncConfig_<name>``); validation is ``SyncConfig``'s.
    """
    unknown = set(defaults) - set(SyncConfig.model_fields)
    if unknown:
        raise ValueError(f"not run config fields: {', '.join(sorted(unknown))}")
    if not defaults:
        return SyncConfig
    fields = {}
    for field, value in defaults.items():
        info = copy.deepcopy(SyncConfig.model_fields[field])  # keeps description and constraints (le, ge)
        info.default = value
        fields[field] = info
    annotations = {field: SyncConfig.model_fields[field].annotation for field in defaults}
    cls = type(f"SyncConfig_{name}", (SyncConfig,), {"__annotations__": annotations, **fields})
    # Defaults are not validated by pydantic: run the class's own checks on them now (load time).
    cls(**defaults)
    return cls


SETTINGS_TAG = "sync_pipeline/settings"  # on the op, and on every sync run: the digest of settings_digest()


# Settings that decide content, added after digests were first recorded, with their defaults: in the digest
# only when set otherwise.
_LATER_SETTINGS: dict[str, object] = {"pg_names": "exact", "infer_types": False, "indexes": True, "foreign_keys": False}


def settings_digest(selection: Selection, config_class: type[SyncConfig]) -> str:
    """A digest of the settings that decide what PostgreSQL holds for a file that did not change: which tables
    and columns (``selection``) and the run config's pins and strictness. A file "synced already" (the
    sensor's unchanged fingerprint, the headless command's skip) is so only under the same digest: a column
    excluded now must leave PostgreSQL at the next sync even if no file changes. The later settings only when
    not at their default, so that the digest of every deployment that never set them stays what it was."""
    fields = config_class.model_fields
    defaults = {field: fields[field].default for field in ("column_types", "strict_types")}
    defaults |= {field: value for field, usual in _LATER_SETTINGS.items() if (value := fields[field].default) != usual}
    raw = json.dumps([selection.tables, selection.exclude_tables, selection.exclude_columns, defaults], sort_keys=True)
    return hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()
