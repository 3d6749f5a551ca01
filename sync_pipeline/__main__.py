"""``python -m sync_pipeline sync [--full-refresh] [--delete-orphans] [--verify] [--batch-size N] [--tables GLOB]
[--files GLOB]``: see sync_pipeline/cli.py and the README's "Headless" section.
``python -m sync_pipeline db [--psql]``: the target's connection string, or psql on it (db_command.py)."""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m sync_pipeline", description="Keep PostgreSQL in step with SQLite, through Dagster."
    )
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sync = commands.add_parser(
        "sync",
        help="materialize the table assets now, in this process, recorded in the project's Dagster instance",
        description="Materialize the selected tables (every partition in multi-file mode) against the project's "
        "Dagster instance. Exit 0: every table synced; 1: a table or the run failed; 2: bad arguments; "
        "3: every table synced, but an asset check failed (each failed check is printed on stderr).",
    )
    sync.add_argument("--full-refresh", action="store_true", help="replace every row (one transaction per table)")
    sync.add_argument("--delete-orphans", action="store_true", help="delete rows whose key is gone from SQLite")
    sync.add_argument(
        "--verify",
        action="store_true",
        help="compare every row with PostgreSQL and repair what differs (edits made to the mirror by others)",
    )
    sync.add_argument("--batch-size", type=int, metavar="N", help="rows per batch (1 to 1,000,000)")
    sync.add_argument("--tables", metavar="GLOB", help="only tables whose SQLite name matches (e.g. 'exp*')")
    sync.add_argument("--files", metavar="GLOB", help="multi-file mode: only the files (partition keys) matching")
    db = commands.add_parser(
        "db",
        help="print the target PostgreSQL's connection string (password masked), or open psql on it",
        description="Print the connection string of the database the syncs write to: a configured one with its "
        "password masked, or the embedded server in state/pgdata (started if needed, left running).",
    )
    db.add_argument("--psql", action="store_true", help="open an interactive psql on it instead")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a malformed command line
    warnings.filterwarnings("ignore")  # Dagster's preview/supersession warnings would mail cron on every run
    if args.command == "sync":
        # Off while Dagster and the definitions load: some 220,000 objects and next to no garbage, and each
        # full pass walks all of them (0.1 s of the imports). cli.sync turns the collector on, blind to these
        # objects, before it opens the instance (collecting_new_objects_only).
        gc.disable()
    try:  # config.py reads the environment's settings as it is imported
        from .cli import SyncRequest, sync
        from .db_command import db
    except ValueError as exc:  # a setting that cannot be read (BATCH_SIZE=abc): bad arguments, nothing touched
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "db":
        return db(psql=args.psql)

    request = SyncRequest(
        full_refresh=args.full_refresh,
        delete_orphans=args.delete_orphans,
        verify=args.verify,
        batch_size=args.batch_size,
        tables=args.tables,
        files=args.files,
    )
    return sync(request, live=sys.stdout.isatty())


if __name__ == "__main__":
    code = main()
    # At exit the interpreter's last collections walk every object still tracked (Dagster's modules, the
    # definitions: 0.2-0.3 s here); frozen, they are released with the process instead. Open files and
    # connections are closed already (context managers), and logging flushes in its atexit handler.
    gc.freeze()
    sys.exit(code)
