"""A sensor that asks for a sync when the SQLite file's committed content changes.

Decisions, tick by tick (the cursor keeps the last fingerprint seen, the one last requested
and how that request went; run keys are built from the fingerprint, never the clock, so no
change is skipped or synced twice):

- file missing: skip, saying so;
- a live rollback journal (a write in progress): skip, look again next tick;
- fingerprint differs from the one seen last tick: the writer may be mid-burst, so remember
  it and wait for a quiet tick; but after ``MAX_WAIT_TICKS`` ticks of constant change, sync
  anyway (a writer that never pauses must not starve PostgreSQL);
- fingerprint stable and not requested yet: one run for it;
- fingerprint already requested: nothing, unless that run failed or was canceled, in which
  case it is requested again (up to ``MAX_ATTEMPTS`` times; then the next change retries).

The first tick only records the fingerprint and the second one syncs, so a freshly started
sensor brings PostgreSQL up to date once, whatever happened while it was off.
"""

import json
import os
from dataclasses import asdict, dataclass, replace

from dagster import (
    AssetSelection,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
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


MAX_WAIT_TICKS = 4
MAX_ATTEMPTS = 3
_FAILED = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class _Cursor:
    seen: str | None = None  # fingerprint at the last tick
    waited: int = 0  # ticks the current change has been waiting to settle
    requested: str | None = None  # fingerprint of the last run requested
    attempt: int = 0  # how many runs were requested for it

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def run_key(self) -> str:
        return f"{self.requested}#{self.attempt}"


def _last_run_failed(context: SensorEvaluationContext, run_key: str) -> bool:
    runs = context.instance.get_runs(RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return bool(runs) and runs[0].status in _FAILED


def _request(fingerprint: str, attempt: int, reason: str) -> SensorResult:
    cursor = _Cursor(seen=fingerprint, requested=fingerprint, attempt=attempt)
    tags = {"sqlite_fingerprint": fingerprint, "sync_reason": reason}
    return SensorResult(run_requests=[RunRequest(run_key=cursor.run_key, tags=tags)], cursor=cursor.dump())


def evaluate(context: SensorEvaluationContext, sqlite: SQLiteSource) -> SensorResult | SkipReason:
    state = file_state(sqlite.path)
    if state.missing:
        return SkipReason(f"SQLite file {sqlite.path} does not exist; waiting for it")
    if state.writing:
        return SkipReason(f"{sqlite.path}-journal holds a transaction: a write is in progress; looking again next tick")
    cursor = _Cursor.parse(context.cursor)
    fingerprint = state.fingerprint
    if fingerprint == cursor.requested:
        if cursor.attempt < MAX_ATTEMPTS and _last_run_failed(context, cursor.run_key):
            return _request(fingerprint, cursor.attempt + 1, "retry")
        return SkipReason("the SQLite file has not changed since the last sync")
    if fingerprint != cursor.seen and cursor.waited + 1 < MAX_WAIT_TICKS:
        return SensorResult(
            skip_reason=SkipReason("the SQLite file changed; waiting one tick for the writer to settle"),
            cursor=replace(cursor, seen=fingerprint, waited=cursor.waited + 1).dump(),
        )
    return _request(fingerprint, 1, "changed" if fingerprint == cursor.seen else "still changing")


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
