"""Sync history as a DataFrame, read from the Dagster instance (the catalog's own records).

from sync_pipeline.history import sync_history
sync_history()                      # every table, newest first
sync_history("narrative_results")   # one table
"""

import pandas as pd
from dagster import AssetKey, DagsterInstance

from .assets import SYNC_NUMBERS
from .instance import project_instance
from .translator import asset_key_for

# partition: the file's key when SQLITE_PATH names many files (None for one file).
COLUMNS = ["timestamp", "table", "partition", "run_id", "mode", *SYNC_NUMBERS, "duration_s"]


def _sync_keys(instance: DagsterInstance) -> list[AssetKey]:
    return sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string())


def sync_history(table: str | None = None, instance: DagsterInstance | None = None, limit: int = 1000) -> pd.DataFrame:
    """One row per sync (materialization) of ``table``, or of every synced table; newest first.

    ``instance`` defaults to this project's (``DAGSTER_HOME``, else the repo's dagster.yaml).
    """
    if instance is None:
        with project_instance() as owned:
            return sync_history(table, owned, limit)
    keys = [asset_key_for(table)] if table else _sync_keys(instance)
    rows = []
    for key in keys:
        for record in instance.fetch_materializations(key, limit=limit).records:
            materialization = record.asset_materialization
            if materialization is None or "rows_changed" not in materialization.metadata:
                continue  # not a sync of ours
            metadata = {name: value.value for name, value in materialization.metadata.items()}
            rows.append(
                {
                    "timestamp": pd.Timestamp(record.timestamp, unit="s", tz="UTC"),
                    "table": metadata.get("dagster/table_name", key.to_user_string()),
                    "partition": materialization.partition,
                    "run_id": record.run_id,
                    **{c: metadata.get(c) for c in COLUMNS[4:]},
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values("timestamp", ascending=False, ignore_index=True)
