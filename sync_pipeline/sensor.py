"""A sensor that asks for a sync when the SQLite file's committed content changes.

Decisions, tick by tick (the cursor keeps the last fingerprint seen and the last one synced;
the run key is the fingerprint, never the clock, so no change is ever skipped or synced twice):

- file missing: skip, saying so;
- rollback journal present (a write in progress): skip, look again next tick;
- fingerprint differs from the one seen last tick: the writer may be mid-burst, so only
  remember it and wait for one quiet tick;
- fingerprint stable since last tick and not yet synced: one run for it;
- otherwise: nothing changed.

The first tick only records the fingerprint and the second one syncs, so a freshly started
sensor brings PostgreSQL up to date once, whatever happened while it was off.
"""

import json
import os
from dataclasses import dataclass

from dagster import (
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from .engine.fingerprint import file_state
from .instance import ensure_pool_limit
from .resources import SQLiteSource

SENSOR_NAME = "sqlite_file_changed"
DEFAULT_INTERVAL_S = 15


@dataclass(frozen=True)
class _Cursor:
    seen: str | None = None
    synced: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(seen=data.get("seen"), synced=data.get("synced"))

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "synced": self.synced}, sort_keys=True)


def evaluate(context: SensorEvaluationContext, sqlite: SQLiteSource) -> SensorResult | SkipReason:
    state = file_state(sqlite.path)
    if state.missing:
        return SkipReason(f"SQLite file {sqlite.path} does not exist; waiting for it")
    if state.writing:
        return SkipReason(f"{sqlite.path}-journal exists: a write is in progress; looking again next tick")
    cursor = _Cursor.parse(context.cursor)
    fingerprint = state.fingerprint
    if fingerprint == cursor.synced:
        return SkipReason("the SQLite file has not changed since the last sync")
    if fingerprint != cursor.seen:
        return SensorResult(
            skip_reason=SkipReason("the SQLite file changed; waiting one tick for the writer to settle"),
            cursor=_Cursor(seen=fingerprint, synced=cursor.synced).dump(),
        )
    return SensorResult(
        run_requests=[RunRequest(run_key=fingerprint, tags={"sqlite_fingerprint": fingerprint})],
        cursor=_Cursor(seen=fingerprint, synced=fingerprint).dump(),
    )


def build_sensor(selection: AssetSelection):
    @sensor(
        name=SENSOR_NAME,
        target=selection,
        minimum_interval_seconds=int(os.environ.get("SYNC_SENSOR_INTERVAL_S", DEFAULT_INTERVAL_S)),
        default_status=DefaultSensorStatus.STOPPED
        if os.environ.get("SYNC_SENSOR", "").lower() in ("off", "0", "false")
        else DefaultSensorStatus.RUNNING,
        description="Sync every table when a commit changes the SQLite file (main file or -wal). "
        "Runs once on start-up so PostgreSQL catches up; turn it off in the UI (Automation) or set "
        "SYNC_SENSOR=off.",
    )
    def _sensor(context: SensorEvaluationContext, sqlite: SQLiteSource) -> SensorResult | SkipReason:
        ensure_pool_limit(context.instance)
        return evaluate(context, sqlite)

    return _sensor
