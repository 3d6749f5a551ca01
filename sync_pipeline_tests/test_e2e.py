"""End to end: the real `dagster dev`, driven the three ways a person uses it.

One `dagster dev` (webserver + daemon) runs for the module, on a free port, with a temporary
DAGSTER_HOME, a WAL-mode SQLite file and a PostgreSQL schema of its own. Processes here start
with SIGINT/SIGTERM ignored, so it is spawned with both reset, in its own session, and
stopped by process group.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster_graphql import DagsterGraphQLClient
from psycopg2 import sql

if TYPE_CHECKING:
    from playwright.sync_api import Page

from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline.dev_server import dagster_dev as dagster_dev_process
from sync_pipeline.dev_server import graphql, wait_for
from sync_pipeline.sensor import SENSOR_NAME

from .conftest import drop_schema, pg_rows, query, sqlite_rows

TABLES = ("experiments", "narrative_results", "source_narratives")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
SENSOR_INTERVAL_S = 3


@dataclass
class DagsterDev:
    port: int
    home: Path
    sqlite_path: Path
    writer: sqlite3.Connection
    pg_dsn: str
    schema: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_config(str(self.home))

    def graphql(self, query: str) -> dict:
        return graphql(self.port, query)

    def wait_for_run(self, run_id: str, timeout_s: float = 120) -> str:
        client = self.client()

        def finished() -> str | None:
            status = client.get_run_status(run_id)
            return status.value if status.value in ("SUCCESS", "FAILURE", "CANCELED") else None

        return str(wait_for(finished, timeout_s, f"run {run_id}"))

    def sensor_runs(self) -> list:
        with self.instance() as instance:
            return instance.get_runs(RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}))


@contextmanager
def running_dagster_dev(cwd: Path, env: dict[str, str], log_path: Path) -> Iterator[int]:
    """``dagster dev`` on a free port until the block ends; yields the port once the code is loaded."""
    with dagster_dev_process(cwd, env, log_path) as (_, port):
        yield port


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        (PROJECT_ROOT / "dagster.yaml").read_text().replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}")
    )
    sqlite_path = generate(root / "experiments.sqlite", rows=2000, seed=11)
    writer = sqlite3.connect(sqlite_path, isolation_level=None)  # held open: commits stay in the -wal file
    writer.execute("PRAGMA wal_autocheckpoint=0")
    schema = f"e2e_{os.getpid()}"
    query(pg_dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SQLITE_PATH": str(sqlite_path),
        "PG_CONN_STR": pg_dsn,
        "PG_SCHEMA": schema,
        "SYNC_SENSOR_INTERVAL_S": str(SENSOR_INTERVAL_S),
    }
    # No `python -m sync_pipeline.instance` first: `dagster dev` sets the pool limit as it loads the code.
    try:
        # In the test's folder, not the checkout: dagster dev reads .env from its working directory.
        with running_dagster_dev(root, env, root / "dagster-dev.log") as port:
            yield DagsterDev(port, home, sqlite_path, writer, pg_dsn, schema)
    finally:
        writer.close()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(root / "dagster-dev.log", ARTIFACTS / "dagster-dev.log")
        drop_schema(pg_dsn, schema)


def test_without_dagster_home_run_history_survives_a_restart_of_dagster_dev(tmp_path, demo_db, pg_dsn, schema):
    # As the Quick start runs it: no DAGSTER_HOME, the repo's dagster.yaml in the working directory.
    project = tmp_path / "checkout"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", project / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(SQLITE_PATH=str(demo_db), PG_CONN_STR=pg_dsn, PG_SCHEMA=schema, SYNC_SENSOR="off")
    log = tmp_path / "dagster-dev.log"
    runs = "{ runsOrError { ... on Runs { results { runId status } } } }"

    with running_dagster_dev(project, env, log) as port:
        run_id = DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
            "__ASSET_JOB", asset_selection=[AssetKey("experiments")], run_config={}
        )
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        wait_for(lambda: client.get_run_status(run_id).value == "SUCCESS", 120, "the run to succeed")
    with running_dagster_dev(project, env, log) as port:
        after_restart = graphql(port, runs)["data"]["runsOrError"]["results"]

    assert {"runId": run_id, "status": "SUCCESS"} in after_restart
    assert (project / "state" / "dagster").is_dir()
    # The run's captured output too (dagster.yaml's compute_logs), not in the temporary DAGSTER_HOME it deletes.
    assert list((project / "state" / "dagster" / "storage" / run_id).glob("compute_logs/*"))
    assert pg_rows(pg_dsn, schema, "experiments") == sqlite_rows(demo_db, "experiments")


def test_even_the_first_two_runs_launched_together_never_overlap(dagster_dev: DagsterDev):
    client = dagster_dev.client()
    keys = [AssetKey(t) for t in TABLES]
    run_ids = [client.submit_job_execution("__ASSET_JOB", asset_selection=keys, run_config={}) for _ in range(2)]

    assert [dagster_dev.wait_for_run(r) for r in run_ids] == ["SUCCESS", "SUCCESS"]
    with dagster_dev.instance() as instance:
        records = sorted(
            (instance.get_run_record_by_id(r) for r in instance.get_run_ids()), key=lambda r: r.start_time or 0
        )
    windows = [(r.start_time, r.end_time) for r in records if r.start_time]
    assert len(windows) >= 2
    for (_, end), (next_start, _) in itertools.pairwise(windows):
        assert end <= next_start, f"two sync runs overlapped: {windows}"


def test_the_materialize_launch_syncs_tables_and_records_metadata_in_the_catalog(dagster_dev: DagsterDev):
    run_id = dagster_dev.client().submit_job_execution(
        "__ASSET_JOB", asset_selection=[AssetKey(t) for t in TABLES], run_config={}
    )

    assert dagster_dev.wait_for_run(run_id) == "SUCCESS"
    for table in TABLES:
        assert pg_rows(dagster_dev.pg_dsn, dagster_dev.schema, table) == sqlite_rows(dagster_dev.sqlite_path, table)
    with dagster_dev.instance() as instance:
        for table in TABLES:
            event = instance.get_latest_materialization_event(AssetKey(table))
            assert event is not None
            metadata = event.asset_materialization.metadata
            assert metadata["dagster/table_name"].value == f"{dagster_dev.schema}.{table}"
            assert metadata["sqlite_rows"].value == len(sqlite_rows(dagster_dev.sqlite_path, table))
            assert metadata["dagster/row_count"].value == metadata["sqlite_rows"].value


def test_a_commit_to_the_wal_file_starts_exactly_one_sensor_run(dagster_dev: DagsterDev):
    # The sensor syncs once on start-up; wait for that run to finish first.
    wait_for(lambda: dagster_dev.sensor_runs(), 90, "the sensor's start-up run")
    for run in dagster_dev.sensor_runs():
        assert dagster_dev.wait_for_run(run.run_id) == "SUCCESS"
    before = {r.run_id for r in dagster_dev.sensor_runs()}

    dagster_dev.writer.execute("UPDATE experiments SET notes = 'seen by the sensor' WHERE experiment_id = 1")

    new_runs = wait_for(lambda: [r for r in dagster_dev.sensor_runs() if r.run_id not in before], 90, "a sensor run")
    assert len(new_runs) == 1
    assert dagster_dev.wait_for_run(new_runs[0].run_id) == "SUCCESS"
    notes = query(
        dagster_dev.pg_dsn,
        sql.SQL("SELECT notes FROM {} WHERE experiment_id = 1").format(
            sql.Identifier(dagster_dev.schema, "experiments")
        ),
    )
    assert notes == [("seen by the sensor",)]
    time.sleep(4 * SENSOR_INTERVAL_S)  # several more ticks with nothing committed
    assert len(dagster_dev.sensor_runs()) == len(before) + 1


# The README's pictures: taken on every run into the gitignored test-artifacts/ (a test run leaves `git status`
# clean); `SPS_UPDATE_SCREENSHOTS=1` writes them over docs/screenshots/ instead, to refresh the README.
UPDATE_SCREENSHOTS_ENV = "SPS_UPDATE_SCREENSHOTS"
SCREENSHOTS = (
    PROJECT_ROOT / "docs" / "screenshots"
    if os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1"
    else ARTIFACTS / "screenshots"
)


def _screenshot_for_the_readme(page: Page, url: str) -> None:
    """The pictures the README shows: the asset page (metadata, the checks), its plots, and the Launchpad
    with the run config (into SCREENSHOTS)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 2300})  # the page scrolls inside, so full_page would cut it
    page.goto(f"{url}/assets/source_narratives", wait_until="networkidle")
    page.get_by_text("columns_retyped").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "asset-page.png"))
    page.get_by_role("button", name="Plots").first.click()
    page.get_by_text("rows_changed").first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(SCREENSHOTS / "asset-plots.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{url}/assets/source_narratives", wait_until="networkidle")
    page.keyboard.down("Shift")
    page.get_by_role("button", name="Materialize").first.click()
    page.keyboard.up("Shift")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Loading pipeline").first.wait_for(state="detached")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)  # the config editor renders after the last response
    page.screenshot(path=str(SCREENSHOTS / "launchpad.png"))


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
def test_clicking_materialize_in_the_browser_syncs_the_asset(dagster_dev: DagsterDev):
    from playwright.sync_api import sync_playwright

    with dagster_dev.instance() as instance:
        runs_before = {r.run_id for r in instance.get_runs()}
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{dagster_dev.url}/assets/source_narratives", wait_until="networkidle")
            with page.expect_response(lambda r: "LaunchPipelineExecution" in r.url or "LaunchMultipleRuns" in r.url):
                page.get_by_role("button", name="Materialize").first.click()

            def new_run() -> str | None:
                with dagster_dev.instance() as instance:
                    fresh = [
                        r.run_id
                        for r in instance.get_runs()
                        if r.run_id not in runs_before and "dagster/sensor_name" not in r.tags  # not the sensor's
                    ]
                return fresh[0] if fresh else None

            run_id = str(wait_for(new_run, 60, "the run the button launched"))
            assert dagster_dev.wait_for_run(run_id) == "SUCCESS"
            page.goto(f"{dagster_dev.url}/runs/{run_id}", wait_until="networkidle")
            page.screenshot(path=str(ARTIFACTS / "materialize-run.png"), full_page=True)
            _screenshot_for_the_readme(page, dagster_dev.url)
        finally:
            browser.close()
    with dagster_dev.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert run.asset_selection == {AssetKey("source_narratives")}
    assert pg_rows(dagster_dev.pg_dsn, dagster_dev.schema, "source_narratives") == sqlite_rows(
        dagster_dev.sqlite_path, "source_narratives"
    )
