"""The verify schedule: a daily sync with ``verify: true``, off unless one setting turns it on.

Why a schedule: a plain sync trusts PostgreSQL to hold what the last sync wrote (engine/verify.py),
so an edit made to the mirror by someone else stays until a verify run repairs it. A verify run costs
about 1.5 first loads, too much for every commit but fine once a night; its ``mirror_matches_sqlite``
check then shows drift in the catalog, night after night.

``SYNC_VERIFY_SCHEDULE`` (or the component's ``verify_schedule``): unset or ``0``/``off``: the
schedule exists, stopped (start it in the UI, Automation); ``1``/``on``: running, daily at 03:00
(:data:`DEFAULT_CRON`); any other value is a cron string, the schedule then running on it. With many
files, each tick asks for one run per file (partition) the instance knows.
"""

import os

from dagster import (
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    PartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    schedule,
)

DEFAULT_CRON = "0 3 * * *"
SETTING = "SYNC_VERIFY_SCHEDULE"
_ON = {"1", "on", "true", "yes"}
_OFF = {"", "0", "off", "false", "no"}


def schedule_setting(raw: str | None) -> tuple[str, bool]:
    """(cron, running) from the setting's value (see the module docstring)."""
    value = (raw or "").strip()
    if value.lower() in _OFF:
        return DEFAULT_CRON, False
    if value.lower() in _ON:
        return DEFAULT_CRON, True
    return value, True


def build_verify_schedule(
    assets: AssetsDefinition,
    *,
    name: str,
    op_name: str,
    setting: str | None = None,
    partitions_def: PartitionsDefinition | None = None,
) -> ScheduleDefinition:
    """The schedule ``name`` verifying every table of ``assets`` (run config under ``ops.<op_name>``).
    ``setting``: the component's value, else ``SYNC_VERIFY_SCHEDULE``; ``partitions_def``: many files."""
    cron, running = schedule_setting(setting if setting is not None else os.environ.get(SETTING))
    run_config = {"ops": {op_name: {"config": {"verify": True}}}}

    @schedule(
        name=name,
        cron_schedule=cron,
        target=AssetSelection.assets(assets),
        default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
        description="Verify every table: compare each row with PostgreSQL and repair what differs (edits made to "
        "the mirror by others); the check mirror_matches_sqlite records what was found. About 1.5 first loads."
        f" Off by default: {SETTING}=1 runs it daily at 03:00, or set it to a cron string.",
    )
    def _verify(context: ScheduleEvaluationContext) -> RunRequest | list[RunRequest]:
        if partitions_def is None:
            return RunRequest(run_config=run_config)
        keys = partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
        # A run key each (Dagster asks for them when a tick makes several runs), of this tick's time too.
        tick = context.scheduled_execution_time
        return [RunRequest(run_key=f"verify:{key}:{tick}", partition_key=key, run_config=run_config) for key in keys]

    return _verify
