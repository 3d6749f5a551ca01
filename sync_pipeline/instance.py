"""The Dagster instance this project records its runs in, and the pool that serialises syncs.

    python -m sync_pipeline.instance     # set the pool limit up front, and fail runs left "running"
                                         # by a dagster dev that was killed (optional, see below)

Every sync asset is in the pool ``sqlite_pg_sync``; ``dagster.yaml`` gives pools a default limit
of one run. Dagster creates a pool's limit lazily, when it first sees a queued run in it, and
in that very first pass it does not yet enforce it: two runs submitted together both started.
Setting the limit before any run closes that gap. ``dagster dev`` does it by itself: its code
server builds the sensor when it loads the code, before the UI or the daemon can launch a run,
and that calls ``prepare_dev_instance``; the sensor also checks it on every tick. The command
above remains for other set-ups (and for scripts that want to see the limit).
"""

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from pathlib import Path

from dagster import DagsterInstance

from .assets import POOL
from .demo import PROJECT_ROOT
from .partitions import is_many
from .run_reaper import fail_runs_whose_processes_died


@contextmanager
def project_instance() -> Iterator[DagsterInstance]:
    """``DAGSTER_HOME``'s instance when set, else the repo's ``dagster.yaml`` (history in state/).

    That file's storage path is relative, as ``dagster dev`` in the project root reads it, so
    the instance is used from the project root whatever the caller's working directory.
    """
    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance:
            yield instance
        return
    with chdir(PROJECT_ROOT), DagsterInstance.from_config(str(PROJECT_ROOT)) as instance:
        yield instance


def max_concurrent_runs(many_files: bool) -> tuple[int, bool]:
    """(the pool's limit, whether it was asked for explicitly). One file: one sync at a time, always.
    Many files: ``SYNC_MAX_CONCURRENT_RUNS``, by default the number of cores (runs of different files
    touch different rows, and each waits on PostgreSQL about as much as it computes)."""
    if not many_files:
        return 1, False
    raw = os.environ.get("SYNC_MAX_CONCURRENT_RUNS", "").strip()
    if not raw:
        return max(1, os.cpu_count() or 1), False
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"environment variable SYNC_MAX_CONCURRENT_RUNS must be a positive integer, got {raw!r}")
    return int(raw), True


def ensure_pool_limit(instance: DagsterInstance, pool: str = POOL, limit: int = 1, force: bool = False) -> bool:
    """Give ``pool`` an explicit limit unless someone set one already (``force``: set it anyway, for
    a limit the user asked for); True when it was set here."""
    existing = {p.name: p for p in instance.event_log_storage.get_pool_limits()}
    if pool in existing and not existing[pool].from_default and (not force or existing[pool].limit == limit):
        return False
    instance.event_log_storage.set_concurrency_slots(pool, limit)
    return True


def prepare_dev_instance(pool: str = POOL, many: bool = False) -> bool:
    """Under ``dagster dev``, set ``pool``'s limit and fail its runs whose processes died, as the code
    loads; True when it did. ``many``: the source is many files (the limit is then how many run at once).

    Only where the instance is known to be the one ``dagster dev`` uses: ``DAGSTER_HOME``, or, without
    it, the repo's ``dagster.yaml`` when ``dagster dev`` runs in the project root (elsewhere it would use
    a throwaway instance this process cannot reach; the sensor's first tick covers that case). Skipped in
    a run's worker process, which loads the same code once per run: the code server did it already, and a
    run should not pay for opening a second instance.
    """
    if not os.environ.get("DAGSTER_IS_DEV_CLI"):  # set by `dagster dev` for itself and its children
        return False
    if multiprocessing.parent_process() is not None:  # the code server spawns each run's worker this way
        return False
    if not os.environ.get("DAGSTER_HOME") and Path.cwd().resolve() != PROJECT_ROOT.resolve():
        return False
    limit, asked = max_concurrent_runs(many)
    with project_instance() as instance:
        ensure_pool_limit(instance, pool=pool, limit=limit, force=asked)
        fail_runs_whose_processes_died(instance, pool=pool)
    return True


def main() -> None:
    limit, asked = max_concurrent_runs(is_many(os.environ.get("SQLITE_PATH", "")))
    with project_instance() as instance:
        changed = ensure_pool_limit(instance, limit=limit, force=asked)
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
        failed = fail_runs_whose_processes_died(instance)
    print(f"concurrency pool {POOL}: limit {limits.get(POOL)}" + (" (set now)" if changed else ""))
    for run in failed:
        print(f"run {run.run_id} failed: {run.message}")


if __name__ == "__main__":
    main()
