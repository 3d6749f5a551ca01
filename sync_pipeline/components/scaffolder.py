"""What ``dg scaffold defs sync_pipeline.components.SqliteSyncComponent <path>`` writes: a working,
commented ``defs.yaml`` that mirrors the demo data into a schema named after the instance.

It loads beside the project's own instance as it is: every Dagster name derives from the folder's
name (asset keys ``<name>/<table>``, group, op, sensor, pool, resource keys, partitions), and the
target schema is the instance's own (created on the first sync), so the two never share a table.
"""

from pathlib import Path

import dagster as dg

TEMPLATE = """\
# A SQLite-to-PostgreSQL sync (sync_pipeline.components.SqliteSyncComponent); README, "Declaring syncs in YAML".
# Every Dagster name derives from this folder's name, `{name}`: asset keys {name}/<table>, group and pool
# `{name}`, sensor `{name}_file_changed`, op `{name}_tables` (run config under ops.{name}_tables.config).
# `dg check defs` validates this file; `dg list defs` shows what it builds.
type: {type_name}

attributes:
  sqlite:
    demo: true                        # the demo data (state/demo.sqlite, generated when missing)
    # path: /data/experiments.sqlite  # or a file of yours, a directory or a glob (one partition per file)

  postgres:
    conn_str: "{{{{ env.PG_CONN_STR }}}}"  # the UI shows the variable's name only; unset: embedded PostgreSQL
    pg_schema: {name}
    create_schema: true               # create `{name}` on the first sync
    # state_schema: sqlite_pg_sync    # bookkeeping, may be shared with other instances

  tables:
    include: ["*"]                    # globs on SQLite table names
    exclude: []
    # options:
    #   narrative_results:
    #     cursor_column: updated_at   # read only rows at or past the last sync's watermark
    #     column_types: {{created_at: timestamptz}}
    #     exclude_columns: [notes]    # never read, never in PostgreSQL

  run_config:                         # defaults of the Launchpad's run config
    batch_size: 10000
    delete_orphans: false
    strict_types: false
    # full_refresh: false
    # parallel_tables: 1

  translation:
    group_name: {name}
    # key_prefix: [{name}]
    # tags: {{team: data}}
    # owners: [team:data]
    # description: "Mirror of SQLite table {{{{ table }}}} in {{{{ pg_table }}}}"

  sensor:
    enabled: true
    interval_s: 15

  checks: [row_count_matches_sqlite, types_match_declared]

  op:
    pool: {name}                      # one sync of this instance at a time (dagster.yaml limits pools to 1 run)
    # tags: {{dagster/priority: "1"}}
    # retry_policy: {{max_retries: 1, delay_s: 30}}
"""


class SqliteSyncScaffolder(dg.Scaffolder):
    """Writes the commented ``defs.yaml`` above (``dg``'s default would be an empty ``attributes:``)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        from .sqlite_sync import instance_name

        target = Path(request.target_path)
        target.mkdir(parents=True, exist_ok=True)
        text = TEMPLATE.format(name=instance_name(target.name), type_name=request.type_name)
        (target / "defs.yaml").write_text(text, encoding="utf-8")
