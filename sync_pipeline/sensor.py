"""A sensor that asks for a sync when the SQLite file's committed content changes.

Decisions, tick by tick (the cursor keeps the last fingerprint seen, the one last requested,
how many runs were requested for it and how many syncs failed in a row; run keys are built
from the fingerprint and the attempt number, never the clock, so no change is skipped or synced
twice, and each retry gets a key of its own because Dagster dedupes a run key forever):

- file missing: skip, saying so;
- nothing pending (the file holds the content last requested): the tick listens for a commit for
  ``Settle.listen_s`` before it ends, polling the fingerprint, and a commit it hears is handled in
  this tick, as below (Dagster starts a sensor tick at most every 5 s; see ``Settle``);
- fingerprint differs from the one last requested and from the one seen last tick (a new
  change): the writer may be mid-burst, so the tick watches the file itself, polling its
  fingerprint every ``Settle.poll_s``, until it has stayed the same for ``Settle.quiet_s`` (then:
  one run for it, in this very tick), for at most ``Settle.budget_s`` (far below the 60 s after
  which Dagster abandons a tick). Waiting a whole extra tick instead, as this sensor once did, cost
  a tick interval of latency on every change;
- a live rollback journal (a write in progress) is not quiet: it is polled like a change, and
  if it is still live when the budget ends, the tick skips and looks again next tick;
- still changing when the budget ends: remember it and look again next tick; but after
  ``MAX_WAIT_TICKS`` ticks of constant change, sync anyway (a writer that never pauses must not
  starve PostgreSQL);
- fingerprint unchanged since the last tick and not requested yet: it has been quiet for a whole
  tick, so one run for it at once;
- fingerprint already requested: nothing while its run is queued or running, nothing once it
  succeeded; if it failed or was canceled, it is requested again. Up to ``MAX_ATTEMPTS`` runs
  in a row come on consecutive ticks (a blip); after ``MAX_ATTEMPTS`` failures in a row the
  retries back off (``BACKOFF_S``, the last step repeating until a sync succeeds), so a
  PostgreSQL outage of any length ends in a sync without a new SQLite write, and without a run
  every tick meanwhile. The skip reason says how many times it failed and when the next try is.

The failure count runs across content: a new change is requested at once (one run per settled
change), but if PostgreSQL is still down its failure continues the backoff instead of starting
three quick retries again. Only a successful sync resets it.

The first tick after the sensor starts sees a fingerprint it never saw, so it settles and syncs
once: PostgreSQL is brought up to date with whatever happened while the sensor was off.
"""

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    AssetSelection,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from .assets import POOL
from .config import SETTINGS_TAG
from .engine.fingerprint import FileState, file_state
from .instance import ensure_pool_limit, max_concurrent_runs, prepare_dev_instance
from .partitions import SQLITE_FILES, survey
from .removed_files import reconcile, removed_at
from .resources import PostgresTarget, SQLiteSource
from .run_reaper import fail_runs_whose_processes_died

SENSOR_NAME = "sqlite_file_changed"
# Dagster's sensor daemon evaluates sensors at most once per pass, and a pass starts at most every 5 s
# (dagster/_daemon/sensor.py, MIN_INTERVAL_LOOP_TIME). Any interval under that means "every pass"; 3 s leaves
# room for the jitter of the pass start, which would otherwise make some ticks wait a second pass (10 s).
DEFAULT_INTERVAL_S = 3


MAX_WAIT_TICKS = 2  # ticks of constant change (each watched for Settle.budget_s) before a sync anyway
MAX_ATTEMPTS = 3  # runs on consecutive ticks (a try and its quick retries) before the retries back off
BACKOFF_S = (60, 120, 300, 900)  # waits after the MAX_ATTEMPTS-th failure in a row, the next, ...; the last repeats
_FAILED = {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Settle:
    """How a tick watches the file: every ``poll_s`` (three ``stat`` calls and one 28-byte read per file,
    see fingerprint.py), within bounds that keep a tick far inside Dagster's 60 s tick timeout.

    - ``listen_s``: when nothing is pending (every file holds the content last requested), the tick keeps
      polling for this long, and a commit in that window is handled at once instead of at the next tick.
      Dagster's sensor daemon starts a pass at most every 5 s whatever the interval, so a commit would
      otherwise wait 2.5 s on average for the next tick; listening 4 s of those 5 cuts that to about
      0.3 s. The daemon sleeps only the rest of its 5 s after a long tick, so this costs no extra ticks.
    - ``quiet_s``: a change is settled once the file has kept one fingerprint this long; a writer's burst
      of commits closer together than that gives one run. Every commit waits this long before its run.
    - ``budget_s``: the longest a tick watches a change that does not settle; it then looks again next
      tick (see ``MAX_WAIT_TICKS``).
    """

    listen_s: float = 4.0
    quiet_s: float = 0.5
    budget_s: float = 6.0
    poll_s: float = 0.2


def _needs_watching(state: FileState, cursor: "_Cursor") -> bool:
    """A change this tick must watch settle: not missing, not what was requested, not already quiet since
    the last tick (or a write in progress)."""
    if state.missing:
        return False
    return state.writing or state.fingerprint not in (cursor.requested, cursor.seen)


def listen_for_change(paths: Iterable[Path], states: dict[Path, FileState], settle: Settle) -> set[Path]:
    """Poll until one of the files no longer has the state in ``states`` or ``settle.listen_s`` passes:
    the files that changed (none when the time ran out)."""
    deadline = time.monotonic() + settle.listen_s
    paths = list(paths)
    while time.monotonic() < deadline:
        time.sleep(min(settle.poll_s, max(0.0, deadline - time.monotonic())))
        changed = {path for path in paths if file_state(path) != states[path]}
        if changed:
            return changed
    return set()


def _observe(
    files: dict[str | None, Path], cursors: dict[str | None, "_Cursor"], settle: Settle
) -> tuple[dict[str | None, FileState], set[str | None]]:
    """This tick's look at the files (keyed by partition, ``None`` for the single file): the state of each
    at the end, and which were quiet then (unchanged for ``settle.quiet_s``, or since the last tick)."""
    states = {key: file_state(path) for key, path in files.items()}
    quiet = {key for key, state in states.items() if state.fingerprint == cursors[key].seen and not state.writing}
    watched = {key for key in files if _needs_watching(states[key], cursors[key])}
    idle = all(state.missing or state.fingerprint == cursors[key].requested for key, state in states.items())
    if files and not watched and idle and settle.listen_s > 0:
        changed = listen_for_change(files.values(), {files[key]: states[key] for key in files}, settle)
        watched = {key for key, path in files.items() if path in changed}
    if watched:
        last, settled = watch_until_quiet([files[key] for key in watched], settle)
        for key in watched:
            states[key] = last[files[key]]
            quiet.discard(key)
            if files[key] in settled:
                quiet.add(key)
    return states, quiet


def watch_until_quiet(paths: Iterable[Path], settle: Settle) -> tuple[dict[Path, FileState], set[Path]]:
    """Poll the files together until each has kept one fingerprint for ``settle.quiet_s`` or the budget is
    spent: (the last state of each, those that settled). A live rollback journal is never quiet."""
    start = time.monotonic()
    deadline = start + settle.budget_s
    states = {path: file_state(path) for path in paths}
    since = dict.fromkeys(states, start)
    quiet: set[Path] = set()
    while True:
        now = time.monotonic()
        for path, state in states.items():
            if not state.writing and not state.missing and now - since[path] >= settle.quiet_s:
                quiet.add(path)
        pending = [path for path in states if path not in quiet and not states[path].missing]
        if not pending or now >= deadline:
            return states, quiet
        time.sleep(min(settle.poll_s, max(0.0, deadline - now)))
        for path in pending:
            state = file_state(path)
            if state != states[path]:
                states[path] = state
                since[path] = time.monotonic()


@dataclass(frozen=True)
class _Cursor:
    seen: str | None = None  # fingerprint at the last tick
    waited: int = 0  # ticks the current change has been waiting to settle
    requested: str | None = None  # fingerprint of the last run requested
    attempt: int = 0  # how many runs were requested for it (each one after the previous one failed)
    failures: int = 0  # syncs that failed in a row before the run `run_key` (whatever their content)
    retry_at: str | None = None  # ISO time of the next try once `run_key` failed past the quick retries
    # The life of the file's sync inputs: the settings' digest (config.settings_digest) and, many files, when
    # the file's rows were last deleted as a removed file (removed_files.py). A new life (settings changed, a
    # file back from its removal) gets run keys of its own, since Dagster dedupes a run key forever.
    generation: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor":
        return cls(**json.loads(raw)) if raw else cls()  # cursors written before a field existed get its default

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def run_key(self) -> str:
        return f"{self.requested}#{self.attempt}"


def _run_key(cursor: _Cursor, key: str | None) -> str:
    """Run keys are per file when there are many (a partition key never holds a ``|``-free clash:
    it is followed by the fingerprint), and per life of the file (see ``_Cursor.generation``)."""
    life = f"|{cursor.generation}" if cursor.generation else ""
    return f"{cursor.run_key}{life}" if key is None else f"{key}|{cursor.run_key}{life}"


def _last_run(instance: DagsterInstance, cursor: _Cursor, key: str | None) -> DagsterRun | None:
    """The run the last request became; None before any request or if the instance has no such run."""
    if cursor.requested is None:
        return None
    runs = instance.get_runs(RunsFilter(tags={"dagster/run_key": _run_key(cursor, key)}), limit=1)
    return runs[0] if runs else None


def _failures_in_a_row(cursor: _Cursor, last: DagsterRun | None) -> int:
    """Failed syncs in a row up to now: the cursor's count plus the last run's outcome, once it has one."""
    if last is None or not last.is_finished:
        return cursor.failures
    return cursor.failures + 1 if last.status in _FAILED else 0


def _backoff(failures: int) -> timedelta:
    return timedelta(seconds=BACKOFF_S[min(failures - MAX_ATTEMPTS, len(BACKOFF_S) - 1)])


def _times(n: int) -> str:
    return "1 time" if n == 1 else f"{n} times"


def _request(
    fingerprint: str, attempt: int, failures: int, reason: str, key: str | None, generation: str | None = None
) -> SensorResult:
    cursor = _Cursor(seen=fingerprint, requested=fingerprint, attempt=attempt, failures=failures, generation=generation)
    tags = {"sqlite_fingerprint": fingerprint, "sync_reason": reason, **_settings_tag(generation)}
    request = RunRequest(run_key=_run_key(cursor, key), tags=tags, partition_key=key)
    return SensorResult(run_requests=[request], cursor=cursor.dump())


def _unchanged(
    fingerprint: str, cursor: _Cursor, run: DagsterRun | None, failures: int, now: datetime, key: str | None
) -> SensorResult | SkipReason:
    """The file still holds the content last requested: wait for that run, or retry it."""
    if run is None:
        return SkipReason(
            f"the SQLite file has not changed since its sync was requested (no run with key {cursor.run_key} "
            "is recorded)"
        )
    if run.status == DagsterRunStatus.SUCCESS:
        return SkipReason("the SQLite file has not changed since the last successful sync")
    if not run.is_finished:
        return SkipReason(
            f"the sync of this content is {run.status.value.lower()} (run {run.run_id[:8]}); "
            "no new request until it ends"
        )
    if failures < MAX_ATTEMPTS:
        return _request(fingerprint, cursor.attempt + 1, failures, "retry", key, cursor.generation)

    # The wait counts from the first tick that sees this failure (one interval after it while the sensor runs); the
    # cursor keeps its end so that every later tick, and the skip reason, agree on it.
    wait = _backoff(failures)
    retry_at = datetime.fromisoformat(cursor.retry_at) if cursor.retry_at else None
    if retry_at is not None and retry_at - now > wait:
        retry_at = None  # the clock went back: never wait longer than one backoff step from now
    new_retry_at = retry_at is None
    if retry_at is None:
        retry_at = now + wait
    elif now >= retry_at:
        return _request(fingerprint, cursor.attempt + 1, failures, "retry after backoff", key, cursor.generation)

    how = "was canceled" if run.status == DagsterRunStatus.CANCELED else "failed"
    reason = (
        f"last sync of this content failed {_times(cursor.attempt)}; "
        f"next try at {retry_at.astimezone(UTC):%H:%M:%S} (UTC); its last run {run.run_id[:8]} {how}"
    )
    if failures > cursor.attempt:
        reason += f"; {failures} syncs in a row have failed, counting those of earlier content"
    if new_retry_at:
        return SensorResult(
            skip_reason=SkipReason(reason), cursor=replace(cursor, retry_at=retry_at.isoformat()).dump()
        )
    return SkipReason(reason)


def _life(settings: str | None, removed: float | None = None) -> str | None:
    """``_Cursor.generation`` for these settings and this removal time."""
    parts = ([f"settings {settings}"] if settings else []) + (
        [f"back after removal at {removed:.6f}"] if removed else []
    )
    return "; ".join(parts) or None


def _settings_tag(generation: str | None) -> dict[str, str]:
    """The settings' digest as the run tag the headless command compares (config.SETTINGS_TAG)."""
    for part in (generation or "").split("; "):
        if part.startswith("settings "):
            return {SETTINGS_TAG: part.removeprefix("settings ")}
    return {}


def _in_life(cursor: _Cursor, life: str | None) -> _Cursor:
    """The cursor for this life of the file's inputs: as it is, or a fresh one (keeping the failure count)."""
    return cursor if cursor.generation == life else _Cursor(failures=cursor.failures, generation=life)


def evaluate(
    context: SensorEvaluationContext,
    sqlite: SQLiteSource,
    now: datetime | None = None,
    postgres: PostgresTarget | None = None,
    settle: Settle = Settle(),
    files: DynamicPartitionsDefinition = SQLITE_FILES,
    settings: str | None = None,
) -> SensorResult | SkipReason:
    """One tick's decision; ``now`` (UTC) is injectable so tests can step through the backoff.
    ``postgres`` is needed only to delete a removed file's rows (many files, SYNC_DELETE_REMOVED_FILES=1);
    ``files``: the partitions of many files (each instance of the component has its own); ``settings``: the
    digest of the settings (config.settings_digest): a change is a change of every file."""
    if sqlite.many:
        return evaluate_many(context, sqlite, now, postgres, settle, files, settings)
    path = Path(sqlite.path)
    cursor = _in_life(_Cursor.parse(context.cursor), _life(settings))
    states, quiet = _observe({None: path}, {None: cursor}, settle)
    return _decide(context.instance, path, states[None], None in quiet, cursor, now or _utc_now(), None)


def _decide(
    instance: DagsterInstance,
    path: str | Path,
    state: FileState,
    quiet: bool,
    cursor: _Cursor,
    now: datetime,
    key: str | None,
) -> SensorResult | SkipReason:
    """The decision for one file (``key``: its partition, when there are many), given its state at the end
    of this tick's watch and whether it was quiet then (unchanged for ``Settle.quiet_s``, or since last tick)."""
    if state.missing:
        return SkipReason(f"SQLite file {path} does not exist; waiting for it")
    if state.writing:
        return SkipReason(f"{path}-journal holds a transaction: a write is in progress; looking again next tick")
    fingerprint = state.fingerprint
    assert fingerprint is not None
    last = _last_run(instance, cursor, key)
    failures = _failures_in_a_row(cursor, last)
    if fingerprint == cursor.requested:
        return _unchanged(fingerprint, cursor, last, failures, now, key)
    if quiet:
        return _request(fingerprint, 1, failures, "changed", key, cursor.generation)
    if cursor.waited + 1 < MAX_WAIT_TICKS:
        return SensorResult(
            skip_reason=SkipReason(
                "the SQLite file changed and kept changing while this tick watched it; looking again next tick"
            ),
            cursor=replace(cursor, seen=fingerprint, waited=cursor.waited + 1).dump(),
        )
    return _request(fingerprint, 1, failures, "still changing", key, cursor.generation)


def evaluate_many(
    context: SensorEvaluationContext,
    sqlite: SQLiteSource,
    now: datetime | None = None,
    postgres: PostgresTarget | None = None,
    settle: Settle = Settle(),
    files_def: DynamicPartitionsDefinition = SQLITE_FILES,
    settings: str | None = None,
) -> SensorResult | SkipReason:
    """Every file of a directory or glob, each decided as the single file is (settling, retries,
    backoff), with a cursor of its own; the changed files are watched together, within one budget.
    A new file becomes a partition and gets its first sync once it is quiet; a file that is not a
    partition (partitions.py: not a database, a symlink, a clash of keys) is named in the skip reason
    and holds up no other. A removed file keeps its rows, or loses them with
    ``SYNC_DELETE_REMOVED_FILES=1``; one back after that is synced again (removed_files.py)."""
    now = now or _utc_now()
    folder = survey(sqlite.path)
    files = folder.files
    changes = reconcile(context.instance, files_def.name, folder, postgres, say=context.log.info)
    removed = removed_at(context.instance, files_def.name, files)
    raw_cursors: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    cursors: dict[str | None, _Cursor] = {}
    for key in files:  # new settings, or back after its rows were deleted: its history no longer holds
        cursors[key] = _in_life(_Cursor.parse(raw_cursors.get(key)), _life(settings, removed.get(key)))
    states, quiet = _observe(dict(files), cursors, settle)
    requests: list[RunRequest] = []
    skipped: list[str] = []
    out: dict[str, str] = {}
    for key, path in files.items():
        decision = _decide(context.instance, path, states[key], key in quiet, cursors[key], now, key)
        if isinstance(decision, SkipReason):
            skipped.append(f"{key}: {decision.skip_message}")
            out[key] = cursors[key].dump()
            continue
        requests += decision.run_requests or []
        if decision.skip_reason is not None:
            skipped.append(f"{key}: {decision.skip_reason.skip_message}")
        out[key] = decision.cursor or cursors[key].dump()
    skipped += [f"not synced: {refusal}" for refusal in folder.refusals()]
    if changes.kept:
        skipped.append(
            f"gone from {sqlite.path}, rows kept (SYNC_DELETE_REMOVED_FILES=1 deletes them): {', '.join(changes.kept)}"
        )
    return SensorResult(
        run_requests=requests,
        skip_reason=None if requests else SkipReason("; ".join(skipped) or f"no SQLite file matches {sqlite.path}"),
        cursor=json.dumps(out, sort_keys=True),
    )


def build_sensor(
    selection: AssetSelection,
    clock: Callable[[], datetime] = _utc_now,
    settle: Settle = Settle(),
    *,
    name: str = SENSOR_NAME,
    interval_s: int = DEFAULT_INTERVAL_S,
    enabled: bool = True,
    pool: str = POOL,
    resource_keys: tuple[str, str] = ("sqlite", "postgres"),
    files: DynamicPartitionsDefinition = SQLITE_FILES,
    many: bool = False,
    settings: str | None = None,
):
    """The sensor; ``clock`` (returning an aware UTC time) is there for tests of the backoff, ``settle`` for
    tests that cannot spend a second per change.

    The keyword arguments are explicit so that two instances (components/) each get their own
    name, pool, resources and partitions; the environment (``SYNC_SENSOR_INTERVAL_S``,
    ``SYNC_SENSOR``) is read by the caller (components/sqlite_sync.py). ``many``: the source is many
    files (its pool's limit is then the number of files synced at once).

    Building it (at code load) also prepares the ``dagster dev`` instance: the pool limit exists before the
    first run can be launched, whoever launches it, so the Quick start needs no separate step for it."""
    prepare_dev_instance(pool=pool, many=many)
    sqlite_key, postgres_key = resource_keys

    @sensor(
        name=name,
        target=selection,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        required_resource_keys={sqlite_key, postgres_key},
        description="Sync every table when a commit changes the SQLite file (main file or -wal), once the file "
        "has been quiet for half a second. Runs once on start-up so PostgreSQL catches up; retries a failed sync, "
        "backing off up to every 15 minutes, until one succeeds. Turn it off in the UI (Automation) or set "
        "SYNC_SENSOR=off.",
    )
    def _sensor(context: SensorEvaluationContext, **_resources: object) -> SensorResult | SkipReason:
        # Called directly (tests), Dagster passes the required resources as keyword arguments too.
        sqlite: SQLiteSource = getattr(context.resources, sqlite_key)
        postgres: PostgresTarget = getattr(context.resources, postgres_key)
        limit, asked = max_concurrent_runs(sqlite.many)
        ensure_pool_limit(context.instance, pool=pool, limit=limit, force=asked)
        # A run whose processes died with their code server would hold the pool for ever.
        for failed in fail_runs_whose_processes_died(context.instance, pool=pool):
            context.log.warning(f"run {failed.run_id}: {failed.message}")
        return evaluate(context, sqlite, now=clock(), postgres=postgres, settle=settle, files=files, settings=settings)

    return _sensor
