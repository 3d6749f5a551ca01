"""The seed script's human summary, rebuilt from structured results (never the other way)."""

from __future__ import annotations

from collections.abc import Sequence

from .sync import MODE_FULL_REFRESH, SyncOptions, TableSyncResult

RULE = "=" * 60


def human_bytes(n: float) -> str:
    """Sizes as the seed printed them: MB below a GiB, GB above (1024-based)."""
    if abs(n) >= 1024**3:
        return f"{n / 1024**3:.2f} GB"
    return f"{n / 1024**2:.2f} MB"


def signed_bytes(n: float) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


def mode_line(options: SyncOptions) -> str:
    settings = f"delete_orphans={'on' if options.delete_orphans else 'off'}, batch_size={options.batch_size:,}"
    if options.verify:
        settings += ", verify=on (every row compared with PostgreSQL)"
    if options.pg_names.lower:
        settings += ", names lowercased (SYNC_PG_NAMES=lower)"
    if options.cursor_columns:
        settings += ", cursor: " + ", ".join(f"{t}.{c}" for t, c in sorted(options.cursor_columns.items()))
    if options.mode == MODE_FULL_REFRESH:
        return f"🔄 FULL REFRESH mode: rebuilding each table and swapping it in ({settings})"
    return f"⚡ INCREMENTAL mode: merging only changed rows into existing tables ({settings})"


def table_line(r: TableSyncResult) -> str:
    added = f"; added column(s) {', '.join(r.columns_added)}" if r.columns_added else ""
    if r.cursor_column is not None and r.watermark_before is not None:
        added += f"; read {r.cursor_column} >= {r.watermark_before!r} only"
    if r.rows_verified or r.rows_repaired:
        added += f"; verified {r.rows_verified:,}, repaired {r.rows_repaired:,}"
    return (
        f"✓ {r.table}: {r.rows_processed:,} rows synced ({r.rows_inserted:,} inserted, {r.rows_updated:,} updated, "
        f"{r.rows_deleted:,} deleted, {r.rows_unchanged:,} unchanged{added}) in {r.duration_s:.2f} s"
    )


def size_line(r: TableSyncResult) -> str:
    return (
        f"{human_bytes(r.table_bytes_before)} -> {human_bytes(r.table_bytes_after)} "
        f"(delta {signed_bytes(r.table_bytes_delta)})"
    )


def rows_written(r: TableSyncResult) -> int:
    """Rows a sync changed, as a person counts them: a full refresh replaces the table's rows, which its
    numbers say as every old row deleted plus every new one inserted (``rows_changed`` twice the table)."""
    return r.rows_inserted if r.mode == MODE_FULL_REFRESH else r.rows_changed


def _changed(r: TableSyncResult) -> str:
    return "all replaced" if r.mode == MODE_FULL_REFRESH else f"{r.rows_changed} changed"


def run_summary(results: Sequence[TableSyncResult], options: SyncOptions, failed: Sequence[str] = ()) -> str:
    """The before/after block and totals the seed printed at the end of a run."""
    ordered = sorted(results, key=lambda r: r.table)
    processed = sum(r.rows_processed for r in ordered)
    changed = sum(rows_written(r) for r in ordered)
    before = sum(r.table_bytes_before for r in ordered)
    after = sum(r.table_bytes_after for r in ordered)
    lines = [
        RULE,
        "SQLite source: " + " ".join(f"{r.table}={r.sqlite_rows}" for r in ordered),
        "PostgreSQL before/after:",
        *(
            f"  {r.table}: {r.pg_rows_before} -> {r.pg_rows_after} (processed {r.rows_processed} rows, {_changed(r)})"
            for r in ordered
        ),
        f"  size: {human_bytes(before)} -> {human_bytes(after)} (delta {signed_bytes(after - before)})",
        "",
    ]
    if options.mode == MODE_FULL_REFRESH:
        lines.append(f"⚡ Full refresh: processed {processed} rows, {changed} rows replaced")
    else:
        lines.append(f"⚡ Incremental sync: processed {processed} rows, {changed} actually changed/inserted/deleted")
    if failed:
        lines.append(f"✗ failed: {', '.join(failed)}")
    lines.append(RULE)
    return "\n".join(lines)
