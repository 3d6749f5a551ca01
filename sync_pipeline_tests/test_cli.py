"""``python -m sync_pipeline sync``: run as cron runs it (a subprocess, output piped), against a
Dagster instance of the test's own (DAGSTER_HOME) and the test's PostgreSQL schema."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2.extensions
import pytest
from dagster import (
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    DagsterInstance,
    DagsterInvariantViolationError,
    Definitions,
    DynamicPartitionsDefinition,
    EnvVar,
    MaterializeResult,
    multi_asset,
)

from sync_pipeline.assets import OP_NAME
from sync_pipeline.cli import (
    EXIT_CHECK_FAILED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    SINGLE_FILE_ERROR,
    RunLog,
    SyncRequest,
    sync,
)
from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline.embedded_pg import PGDATA_ENV, embedded_server, prune_dead_handles
from sync_pipeline.resources import PostgresTarget, SQLiteSource, read_now
from sync_pipeline.run_reaper import CLI_HOST_TAG
from sync_pipeline.translator import ROW_COUNT_CHECK

from .conftest import query

TABLES = ("experiments", "narrative_results", "source_narratives")


def dagster_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME holding the repo's dagster.yaml, its storage moved under the temp dir."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    text = (PROJECT_ROOT / "dagster.yaml").read_text()
    assert "base_dir: state/dagster" in text
    (home / "dagster.yaml").write_text(text.replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}"))
    return home


@pytest.fixture
def cli_env(tmp_path: Path, pg_dsn: str, schema: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "PG_", "DAGSTER_", "SQLITE_"))}
    env.pop("FULL_REFRESH", None)
    env.pop("DELETE_ORPHANS", None)
    env.pop("BATCH_SIZE", None)
    env.update(
        SQLITE_PATH=str(generate(tmp_path / "demo.sqlite", rows=500, seed=11)),
        PG_CONN_STR=pg_dsn,
        PG_SCHEMA=schema,
        DAGSTER_HOME=str(dagster_home(tmp_path)),
    )
    return env


def run_cli(
    env: dict[str, str], *args: str, command: str = "sync", stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sync_pipeline", command, *args],
        env=env,
        cwd=cwd or Path(env["DAGSTER_HOME"]).parent,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pg_tables(dsn: str, schema: str) -> set[str]:
    rows = query(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {str(r[0]) for r in rows}


def test_sync_prints_the_summary_and_records_the_runs_in_the_instance(
    cli_env: dict[str, str], pg_dsn: str, schema: str
) -> None:
    done = run_cli(cli_env)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stderr == ""  # piped: quiet (no Dagster console log, no warnings)
    assert "INCREMENTAL mode" in done.stdout
    assert "PostgreSQL before/after:" in done.stdout
    assert "  narrative_results: 0 -> 500 (processed 500 rows, 500 changed)" in done.stdout
    assert "📥" not in done.stdout and "…" not in done.stdout  # no live lines when piped
    assert query(pg_dsn, f'SELECT count(*) FROM "{schema}".narrative_results') == [(500,)]
    assert pg_tables(pg_dsn, schema) == set(TABLES)

    with DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        for table in TABLES:
            records = instance.fetch_materializations(AssetKey(table), limit=10).records
            assert len(records) == 1, table
            metadata = records[0].asset_materialization.metadata
            assert metadata["dagster/table_name"].value == f"{schema}.{table}"
            run = instance.get_run_by_id(records[0].run_id)
            assert run is not None and run.is_success
            assert CLI_HOST_TAG in run.tags  # the run reaper can judge it if this process dies
            assert run.run_op_concurrency is not None and "sqlite_pg_sync" in run.run_op_concurrency.all_pools

    again = run_cli(cli_env, "--delete-orphans")
    assert again.returncode == EXIT_OK, again.stderr
    assert "delete_orphans=on" in again.stdout
    assert re.search(r"⚡ Incremental sync: processed \d+ rows, 0 actually changed/inserted/deleted", again.stdout)


def test_a_failed_check_exits_3_and_names_the_table_and_the_check(cli_env: dict[str, str]) -> None:
    assert run_cli(cli_env).returncode == EXIT_OK
    with sqlite3.connect(cli_env["SQLITE_PATH"]) as conn:
        conn.execute("DELETE FROM narrative_results WHERE rowid <= 200")
    conn.close()

    plain = run_cli(cli_env)  # without delete_orphans the 200 rows stay in PostgreSQL: the row-count check fails

    assert plain.returncode == EXIT_CHECK_FAILED, plain.stderr
    assert (
        f"⚠ narrative_results: {ROW_COUNT_CHECK} failed: PostgreSQL 500 rows, SQLite 300 (+200); "
        "run with delete_orphans" in plain.stderr
    )
    assert "experiments" not in plain.stderr  # only the failed check is printed
    cleaned = run_cli(cli_env, "--delete-orphans")
    assert cleaned.returncode == EXIT_OK, cleaned.stderr
    assert "⚠" not in cleaned.stderr


def test_compute_logs_go_under_state_not_into_the_working_directory(cli_env: dict[str, str], tmp_path: Path) -> None:
    # As in a checkout without DAGSTER_HOME: the instance's root is the folder holding the repo's dagster.yaml,
    # unchanged, and the working directory (relative paths in it resolve there).
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", checkout / "dagster.yaml")

    done = run_cli({**cli_env, "DAGSTER_HOME": str(checkout)}, cwd=checkout)

    assert done.returncode == EXIT_OK, done.stderr
    assert not (checkout / "storage").exists()  # Dagster's default compute-log folder, $DAGSTER_HOME/storage
    logs = list((checkout / "state" / "dagster" / "storage").glob("*/compute_logs/*"))
    assert logs, sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*"))


@pytest.fixture
def embedded_pgdata() -> Iterator[Path]:
    """A data directory for the embedded server outside the checkout (and outside pytest's basetemp, which a
    concurrent session may prune); the server is stopped and its data deleted at the end."""
    pgdata = Path(tempfile.mkdtemp(prefix="sps-test-db-")) / "pgdata"
    yield pgdata
    if (pgdata / "postmaster.pid").exists():  # left running by `db`, as it should be: stop it
        prune_dead_handles(pgdata)
        embedded_server(pgdata, cleanup_mode="delete").cleanup()
    shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_db_prints_the_embedded_servers_connection_string_and_opens_psql_on_it(
    cli_env: dict[str, str], embedded_pgdata: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("PG_CONN_STR", "PG_SCHEMA")}
    env[PGDATA_ENV] = str(embedded_pgdata)
    assert run_cli(env).returncode == EXIT_OK  # into the embedded server, which stops when the sync exits

    printed = run_cli(env, command="db")

    assert printed.returncode == EXIT_OK, printed.stderr
    dsn = printed.stdout.strip()
    assert str(embedded_pgdata) in dsn
    assert query(dsn, "SELECT count(*) FROM public.narrative_results") == [(500,)]  # still running: it connects
    shell = run_cli(env, "--psql", command="db", stdin="SELECT count(*) AS n FROM experiments;\n")
    assert shell.returncode == EXIT_OK, shell.stderr
    assert re.search(r"^\s*n\s*$", shell.stdout, re.M) and re.search(r"^\s*\d+\s*$", shell.stdout, re.M)


def test_db_prints_a_configured_target_with_its_password_masked_and_psql_gets_the_password(
    cli_env: dict[str, str], pg_dsn: str
) -> None:
    env = {**cli_env, "PG_CONN_STR": pg_dsn + " password=s3cret-pw"}  # trust auth: the password is not checked

    printed = run_cli(env, command="db")

    assert printed.returncode == EXIT_OK, printed.stderr
    assert "s3cret-pw" not in printed.stdout + printed.stderr and "***" in printed.stdout
    # psql's own environment holds the password, its command line (which `ps` shows) does not.
    script = "SELECT current_database();\n\\! echo \"env:$PGPASSWORD\"; tr '\\0' ' ' < /proc/$PPID/cmdline; echo\n"
    shell = run_cli(env, "--psql", command="db", stdin=script)
    assert shell.returncode == EXIT_OK, shell.stderr
    assert psycopg2.extensions.parse_dsn(pg_dsn)["dbname"] in shell.stdout
    assert "env:s3cret-pw" in shell.stdout
    command_line = shell.stdout.strip().splitlines()[-1]
    assert "psql" in command_line and "s3cret-pw" not in command_line


def test_tables_glob_syncs_only_the_matching_tables(cli_env: dict[str, str], pg_dsn: str, schema: str) -> None:
    done = run_cli(cli_env, "--tables", "exp*", "--full-refresh", "--batch-size", "2")
    assert done.returncode == EXIT_OK, done.stderr
    assert pg_tables(pg_dsn, schema) == {"experiments"}
    assert "FULL REFRESH mode" in done.stdout and "batch_size=2" in done.stdout
    assert "SQLite source: experiments=" in done.stdout and "narrative_results" not in done.stdout
    again = run_cli(cli_env, "--tables", "exp*", "--full-refresh")  # every row deleted and inserted: replaced once
    assert again.returncode == EXIT_OK, again.stderr
    assert re.search(r"⚡ Full refresh: processed (\d+) rows, \1 rows replaced", again.stdout), again.stdout
    assert re.search(r"experiments: (\d+) -> \1 \(processed \1 rows, all replaced\)", again.stdout), again.stdout

    nothing = run_cli(cli_env, "--tables", "nope*")
    assert nothing.returncode == EXIT_USAGE
    assert "no table matches --tables 'nope*'" in nothing.stderr


def test_a_failing_table_exits_1_naming_it_without_the_password(
    cli_env: dict[str, str], pg_dsn: str, schema: str
) -> None:
    with sqlite3.connect(cli_env["SQLITE_PATH"]) as conn:
        conn.execute(
            "UPDATE experiments SET prompt_version = 'seven' WHERE rowid = (SELECT min(rowid) FROM experiments)"
        )
    conn.close()
    secret = "s3cret-pw"
    with_password = pg_dsn.replace("postgres@", f"postgres:{secret}@") if "postgres@" in pg_dsn else pg_dsn
    done = run_cli({**cli_env, "SYNC_STRICT_TYPES": "1", "PG_CONN_STR": with_password})
    assert done.returncode == EXIT_FAILED
    assert "✗ failed: experiments" in done.stdout  # the summary names it
    assert "tables failed to sync: experiments" in done.stderr
    assert "'seven'" in done.stderr and "prompt_version" in done.stderr
    assert secret not in done.stdout + done.stderr
    assert pg_tables(pg_dsn, schema) == {"narrative_results", "source_narratives"}  # the others synced


def test_bad_arguments_exit_2_before_anything_is_touched(cli_env: dict[str, str]) -> None:
    unreachable = {**cli_env, "PG_CONN_STR": "postgresql://nobody@127.0.0.1:1/none"}
    done = run_cli(unreachable, "--batch-size", "0")
    assert done.returncode == EXIT_USAGE
    assert "batch_size must be between 1 and 1,000,000" in done.stderr
    assert not (Path(cli_env["DAGSTER_HOME"]) / "storage").exists()  # the instance was not even opened

    files = run_cli(cli_env, "--files", "*.sqlite")
    assert files.returncode == EXIT_USAGE
    assert SINGLE_FILE_ERROR in files.stderr

    assert run_cli(cli_env, "--batch-size", "ten").returncode == EXIT_USAGE  # argparse

    for setting in ({"BATCH_SIZE": "abc"}, {"SYNC_PG_NAMES": "upper"}):  # a setting of the environment
        bad = run_cli({**cli_env, **setting})
        assert bad.returncode == EXIT_USAGE and "Traceback" not in bad.stderr
        assert bad.stderr.startswith("error: environment variable ") and next(iter(setting)) in bad.stderr


def test_a_terminal_shows_live_lines_per_table(cli_env: dict[str, str]) -> None:
    parent, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "sync_pipeline", "sync"],
        env=cli_env,
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=Path(cli_env["DAGSTER_HOME"]).parent,
    )
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(parent)
    assert process.wait(timeout=120) == EXIT_OK
    text = output.decode()
    for table in TABLES:
        assert f"📥 Syncing {table}..." in text
        assert text.count(f"✓ {table}: ") == 1  # live, not once more at the end
    assert text.index("INCREMENTAL mode") < text.index("📥 Syncing") < text.index("PostgreSQL before/after:")
    assert text.count("INCREMENTAL mode") == 1


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("x", level, __file__, 1, message, (), None)
    record.dagster_meta = {"dagster_event": None, "orig_message": message}  # as Dagster's log manager sets it
    return record


def test_progress_lines_are_printed_live_on_a_terminal_only() -> None:
    progress = "… narrative_results: 20,000 of 100,000 rows (20%), 4,000 rows/s"
    terminal, piped = io.StringIO(), io.StringIO()
    for out, live in ((terminal, True), (piped, False)):
        log = RunLog(out, live)
        log.handle(_record(progress))
        log.handle(_record("SQLite source: x; PostgreSQL target: y"))
        log.handle(_record("✗ table 'x': boom", logging.ERROR))
        assert log.errors == ["✗ table 'x': boom"]
    assert terminal.getvalue() == progress + "\n"
    assert piped.getvalue() == ""


# Multi-file mode, against the contract (DESIGN.md section 6) with a hand-built partitioned multi-asset.

FILES = DynamicPartitionsDefinition(name="sqlite_files")


def _partitioned_defs(single_run: bool) -> Definitions:
    @multi_asset(
        name=OP_NAME,
        specs=[AssetSpec("experiments", metadata={"sqlite_table": "experiments"})],
        partitions_def=FILES,
        backfill_policy=BackfillPolicy.single_run() if single_run else None,
    )
    def _sync(context):  # type: ignore[no-untyped-def]
        for key in context.partition_keys:
            context.log.info(f"📥 Syncing experiments of {key}...")
        yield MaterializeResult(
            asset_key="experiments",
            metadata={
                "mode": "incremental",
                "rows_changed": 0,
                "sqlite_rows": len(context.partition_keys),
                "pg_rows_after": len(context.partition_keys),
            },
        )

    return Definitions(assets=[_sync])


@pytest.mark.parametrize("single_run", [False, True])
def test_files_glob_syncs_the_matching_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_run: bool
) -> None:
    home = dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("sqlite_files", ["lab-a-1", "lab-a-2", "lab-b-1", "lab-a-3"])
    out, err = io.StringIO(), io.StringIO()
    code = sync(SyncRequest(files="lab-a-*"), out=out, err=err, defs=_partitioned_defs(single_run))
    assert code == EXIT_OK, err.getvalue()
    with DagsterInstance.get() as instance:
        records = instance.fetch_materializations(AssetKey("experiments"), limit=10).records
        runs = {r.run_id for r in records}
        assert sorted(r.partition_key for r in records) == ["lab-a-1", "lab-a-2", "lab-a-3"]
    # Without a backfill policy, one run per partition; with a single-run policy, one run per
    # contiguous range of the selected keys (lab-b-1 splits them in two).
    assert len(runs) == (2 if single_run else 3)
    assert "[lab-a-1]" in out.getvalue() or "[lab-a-1...lab-a-2 (2 files)]" in out.getvalue()

    none = sync(SyncRequest(files="lab-z-*"), out=out, err=err, defs=_partitioned_defs(single_run))
    assert none == EXIT_USAGE and "no file (partition) matches --files 'lab-z-*'" in err.getvalue()


def test_a_directory_of_files_syncs_every_file_as_its_partition_and_files_selects_some(
    cli_env: dict[str, str], tmp_path: Path, pg_dsn: str, schema: str
):
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, key in enumerate(("lab_a", "lab_b", "other")):
        generate(runs / f"{key}.sqlite", rows=120 + 10 * i, seed=i)
    env = {**cli_env, "SQLITE_PATH": str(runs)}

    every = run_cli(env, "--files", "lab_*")

    assert every.returncode == EXIT_OK, every.stderr
    counts = query(pg_dsn, f'SELECT _source_file, count(*) FROM "{schema}".narrative_results GROUP BY 1 ORDER BY 1')
    assert [key for key, _ in counts] == ["lab_a", "lab_b"]
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert sorted(instance.get_dynamic_partitions("sqlite_files")) == ["lab_a", "lab_b", "other"]
        partitions = {r.tags.get("dagster/partition") for r in instance.get_runs()}
    assert partitions == {"lab_a", "lab_b"}

    rest = run_cli(env)  # lab_a and lab_b are unchanged since their sync: only `other` runs
    assert rest.returncode == EXIT_OK, rest.stderr
    counts = dict(query(pg_dsn, f'SELECT _source_file, count(*) FROM "{schema}".narrative_results GROUP BY 1'))
    assert sorted(counts) == ["lab_a", "lab_b", "other"]

    def partitions_run() -> list[str]:
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            return sorted(r.tags["dagster/partition"] for r in instance.get_runs())

    assert partitions_run() == ["lab_a", "lab_b", "other"]
    conn = sqlite3.connect(runs / "lab_b.sqlite")
    conn.execute("UPDATE experiments SET notes = 'changed' WHERE experiment_id = 1")
    conn.commit()
    conn.close()
    assert run_cli(env).returncode == EXIT_OK
    assert partitions_run() == ["lab_a", "lab_b", "lab_b", "other"]  # only the changed file ran again
    assert query(
        pg_dsn, f"SELECT notes FROM \"{schema}\".experiments WHERE _source_file = 'lab_b' AND experiment_id = 1"
    ) == [("changed",)]
    assert run_cli(env, "--delete-orphans").returncode == EXIT_OK  # asked to clean: every file runs
    assert len(partitions_run()) == 7


def test_resources_read_outside_a_run_are_what_dagster_would_initialize(monkeypatch: pytest.MonkeyPatch) -> None:
    """The headless command reads its resources' settings before any run (read_now), without the ephemeral
    instance that Dagster's initialization opens: it must see what that initialization would have seen."""
    monkeypatch.setenv("SPS_TEST_PATH", "/data/a.sqlite")
    monkeypatch.setenv("SPS_TEST_DSN", "postgresql://u:secret@h/db")
    for resource in (
        SQLiteSource(path=EnvVar("SPS_TEST_PATH")),
        PostgresTarget(conn_str=EnvVar("SPS_TEST_DSN"), pg_schema="s", state_schema=EnvVar("SPS_TEST_PATH")),
        PostgresTarget(pg_schema="plain"),
    ):
        assert read_now(resource) == resource.process_config_and_initialize()
    monkeypatch.delenv("SPS_TEST_PATH")
    with pytest.raises(DagsterInvariantViolationError, match="SPS_TEST_PATH is not set"):
        read_now(SQLiteSource(path=EnvVar("SPS_TEST_PATH")))
