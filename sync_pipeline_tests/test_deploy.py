"""The production instance in deploy/: its Kubernetes run launcher config and its PostgreSQL storage.

No cluster is needed. The run launcher block is checked with dagster-k8s's own schema
(``K8sRunLauncher.config_type()``) through Dagster's public config validation, and the Kubernetes
Job it would create is built with dagster-k8s's public ``construct_dagster_k8s_job``. The instance
file is loaded as a real instance whose storage is a database of its own on the test server, and
the project's assets are materialized against it.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import yaml
from dagster import (
    DagsterInstance,
    DagsterInvalidConfigError,
    IntMetadataValue,
    QueuedRunCoordinator,
    job,
    op,
    validate_run_config,
)
from dagster_k8s import DagsterK8sJobConfig, K8sRunLauncher, construct_dagster_k8s_job

from sync_pipeline.demo import generate
from sync_pipeline.history import sync_history
from sync_pipeline.instance import ensure_pool_limit

from .conftest import query, scratch_database, sqlite_rows
from .test_dagster_assets import INT_KEYS, metadata_by_table, run_sync

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
K8S_YAML = DEPLOY / "k8s" / "dagster-k8s.yaml"
MANIFESTS = DEPLOY / "k8s" / "manifests.yaml"
# What the run pod must find in its environment: the sync's settings and Dagster's storage.
RUN_POD_ENV = {
    "PG_CONN_STR",
    "SQLITE_PATH",
    "PG_SCHEMA",
    "PG_STATE_SCHEMA",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
}
IMAGE = "registry.example/sqlite-pg-sync:test"


def production_instance_yaml() -> str:
    """The ConfigMap's dagster.yaml, made as deploy/README.md makes it: the two files, one after
    the other (their top-level keys are disjoint, so the result is one YAML mapping)."""
    return INSTANCE_YAML.read_text() + "\n" + K8S_YAML.read_text()


# --- the Kubernetes run launcher ------------------------------------------------------------------


@op(config_schema=K8sRunLauncher.config_type())
def k8s_run_launcher_config() -> None:
    """Never executed: carries K8sRunLauncher's schema, so the public run-config validation checks it."""


@job
def k8s_run_launcher_schema() -> None:
    k8s_run_launcher_config()


def validated_launcher_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` checked against dagster-k8s's schema, ``env:`` fields resolved and defaults filled in.

    Dagster has no public function that validates a configurable class's config by itself, but
    ``validate_run_config`` applies an op's config schema with the same machinery; the op above
    takes ``K8sRunLauncher.config_type()`` as its schema. Raises ``DagsterInvalidConfigError``.
    """
    run_config = {"ops": {"k8s_run_launcher_config": {"config": dict(config)}}}
    return validate_run_config(k8s_run_launcher_schema, run_config)["ops"]["k8s_run_launcher_config"]["config"]


def run_worker_job(config: Mapping[str, Any]) -> Any:
    """The Kubernetes Job the launcher would create for a run, built offline by dagster-k8s.

    ``DagsterK8sJobConfig`` checks volumes and mounts against the Kubernetes API models.
    """
    job_config = DagsterK8sJobConfig(**{k: config[k] for k in DagsterK8sJobConfig._fields if k in config})
    return construct_dagster_k8s_job(
        job_config, ["dagster", "api", "execute_run", "{}"], "dagster-run-0123abcd", component="run_worker"
    )


@pytest.fixture
def launcher_block(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("SYNC_IMAGE", IMAGE)
    return yaml.safe_load(production_instance_yaml())["run_launcher"]


def test_k8s_run_launcher_config_is_valid_for_dagster_k8s_and_gives_run_pods_the_sync_environment(
    launcher_block: dict[str, Any],
) -> None:
    assert (launcher_block["module"], launcher_block["class"]) == ("dagster_k8s", "K8sRunLauncher")
    config = validated_launcher_config(launcher_block["config"])
    assert config["job_namespace"] == "sqlite-pg-sync"
    assert config["job_image"] == IMAGE  # from the environment

    pod = run_worker_job(config).spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE
    assert pod.service_account_name == "dagster"
    # The SQLite files: the shared claim, mounted where SQLITE_PATH points.
    (volume,) = pod.volumes
    assert volume.persistent_volume_claim.claim_name == "sqlite-files"
    (mount,) = container.volume_mounts
    assert mount.name == volume.name
    # Every variable a run needs comes from the ConfigMap and Secret that manifests.yaml declares
    # (the Secret by name only: it is created by hand, deploy/README.md).
    env_from = {(s.config_map_ref or s.secret_ref).name for s in container.env_from}
    assert env_from == {"sqlite-pg-sync-env", "sqlite-pg-sync-secrets"}
    manifests = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(MANIFESTS.read_text())}
    settings = manifests["ConfigMap", "sqlite-pg-sync-env"]["data"]
    assert RUN_POD_ENV - set(settings) == {"PG_CONN_STR", "DAGSTER_PG_PASSWORD"}  # the two secrets
    assert "SYNC_IMAGE" in settings  # every process that builds the launcher resolves job_image
    # The three long-lived processes get the same environment, and the instance file in dagster_home.
    for name in ("sqlite-pg-sync-code", "dagster-daemon", "dagster-webserver"):
        (server,) = manifests["Deployment", name]["spec"]["template"]["spec"]["containers"]
        assert {next(iter(ref.values()))["name"] for ref in server["envFrom"]} == env_from, name
        assert {
            "name": "instance",
            "mountPath": f"{config['dagster_home']}/dagster.yaml",
            "subPath": "dagster.yaml",
        } in server["volumeMounts"], name
    assert f"DAGSTER_HOME={config['dagster_home']}" in (DEPLOY / "Dockerfile").read_text()
    assert settings["SQLITE_PATH"].startswith(mount.mount_path + "/")
    code_server = manifests["Deployment", "sqlite-pg-sync-code"]["spec"]["template"]["spec"]
    assert {"name": "sqlite-files", "persistentVolumeClaim": {"claimName": "sqlite-files"}} in code_server["volumes"]
    assert {"name": "sqlite-files", "mountPath": mount.mount_path} in code_server["containers"][0]["volumeMounts"]


def test_a_misspelled_or_broken_k8s_run_launcher_config_is_refused(launcher_block: dict[str, Any]) -> None:
    misspelled = dict(launcher_block["config"])
    misspelled["job_namspace"] = misspelled.pop("job_namespace")
    with pytest.raises(DagsterInvalidConfigError, match='unexpected config entry "job_namspace"'):
        validated_launcher_config(misspelled)

    missing = dict(launcher_block["config"])
    del missing["instance_config_map"]
    with pytest.raises(DagsterInvalidConfigError, match="instance_config_map"):
        validated_launcher_config(missing)

    wrong_type = {**launcher_block["config"], "env_secrets": "sqlite-pg-sync-secrets"}  # a string, not a list
    with pytest.raises(DagsterInvalidConfigError, match="env_secrets"):
        validated_launcher_config(wrong_type)

    # volumes are free-form for Dagster's schema; dagster-k8s checks them against the Kubernetes model.
    bad_volume = {
        **launcher_block["config"],
        "volumes": [{"name": "sqlite-files", "persistentVolumeClame": {"claimName": "sqlite-files"}}],
    }
    with pytest.raises(Exception, match="persistentVolumeClame"):
        run_worker_job(validated_launcher_config(bad_volume))


def test_k8s_run_launcher_config_needs_the_image_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNC_IMAGE", raising=False)
    block = yaml.safe_load(production_instance_yaml())["run_launcher"]
    with pytest.raises(DagsterInvalidConfigError, match="SYNC_IMAGE"):
        validated_launcher_config(block["config"])


# --- the instance on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def instance_db(server_dsn: str) -> Iterator[dict[str, str]]:
    """A database of its own for Dagster's storage, dropped at the end; its libpq parameters."""
    params = psycopg2.extensions.parse_dsn(server_dsn)
    with scratch_database(server_dsn, "sps_instance") as name:
        yield {**params, "dbname": name}


@pytest.fixture
def production_instance(
    instance_db: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterInstance]:
    """``DagsterInstance.get()`` as every pod of the deployment calls it: DAGSTER_HOME holding the
    ConfigMap's dagster.yaml, the storage named by the DAGSTER_PG_* variables."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(production_instance_yaml())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    host = instance_db.get("host", "")
    if host.startswith("/"):
        # The embedded server listens on a Unix socket only, which a URL's host part cannot name
        # (dagster-postgres builds scheme://user:password@host:port/db). With the host left empty
        # libpq falls back to PGHOST, which may be a socket directory.
        monkeypatch.setenv("PGHOST", host)
        host = ""
    monkeypatch.setenv("DAGSTER_PG_HOST", host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(instance_db.get("port") or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", instance_db.get("user") or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", instance_db.get("password") or "")
    monkeypatch.setenv("DAGSTER_PG_DB", instance_db["dbname"])
    monkeypatch.setenv("SYNC_IMAGE", IMAGE)
    with DagsterInstance.get() as instance:
        yield instance


def test_the_project_materializes_and_keeps_its_history_on_the_postgres_instance(
    production_instance: DagsterInstance, instance_db: dict[str, str], pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    instance = production_instance
    # What the file asks for, as Dagster read it.
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert not instance.telemetry_enabled and not instance.nux_enabled
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.pool_granularity.value == "run"
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.run_queue_config.max_concurrent_runs == 10
    assert instance.run_monitoring_enabled

    demo = generate(tmp_path / "demo.sqlite", rows=500, seed=3)
    result = run_sync(demo, pg_dsn, schema, instance=instance)
    assert result.success
    synced = metadata_by_table(result)
    assert set(synced) == {"experiments", "narrative_results", "source_narratives"}

    # The pool limit the sensor sets on every tick, in this storage.
    assert ensure_pool_limit(instance)
    assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}["sqlite_pg_sync"] == 1

    # The history comes back from PostgreSQL, numbers as numbers.
    history = sync_history(instance=instance)
    assert sorted(history["table"]) == sorted(f"{schema}.{t}" for t in synced)
    assert set(history["run_id"]) == {result.run_id}
    for row in history.itertuples():
        table = row.table.split(".", 1)[1]
        assert row.sqlite_rows == row.rows_inserted == len(sqlite_rows(demo, table)) > 0
        assert row.rows_changed == row.rows_inserted and row.rows_updated == row.rows_deleted == 0
        assert row.duration_s > 0
    # ... and the materializations themselves, with every contract number as an int.
    for key in instance.get_asset_keys():
        (record,) = instance.fetch_materializations(key, limit=10).records
        metadata = record.asset_materialization.metadata
        for name in INT_KEYS:
            assert isinstance(metadata[name], IntMetadataValue), (key, name)
        assert metadata["rows_inserted"] == synced[key.path[-1]]["rows_inserted"]

    # Dagster's tables really are in that database, and the run is in them.
    dsn = psycopg2.extensions.make_dsn(**instance_db)
    tables = {
        t for (t,) in query(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    }
    assert {"runs", "event_logs", "asset_keys", "concurrency_limits", "jobs", "instigators"} <= tables
    assert query(dsn, "SELECT status FROM runs WHERE run_id = %s", (result.run_id,)) == [("SUCCESS",)]
    (materialized,) = query(
        dsn,
        "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (result.run_id,),
    )[0]
    assert materialized == 3
    # ... and not in a SQLite file next to dagster.yaml.
    assert not list(Path(os.environ["DAGSTER_HOME"]).rglob("*.db"))


# --- the image ------------------------------------------------------------------------------------


def test_the_image_installs_the_deploy_extra_and_serves_the_location_the_workspace_names() -> None:
    """No Docker here: check that the Dockerfile, pyproject.toml and deploy/workspace.yaml agree."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install '.[deploy]'" in dockerfile
    extras = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {r.split("==")[0] for r in extras["deploy"]} == {"dagster-postgres", "dagster-k8s"}
    assert set(extras["deploy"]) <= set(extras["dev"])  # so CI tests what the image installs

    cmd_line = dockerfile[dockerfile.index("CMD [") + 4 :].replace("\\\n", "")
    cmd = json.loads(cmd_line[: cmd_line.index("]") + 1])
    assert cmd[:3] == ["dagster", "code-server", "start"]
    args = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    assert args["--module-name"] == "sync_pipeline.definitions"
    (location,) = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())["load_from"]
    assert location["grpc_server"]["location_name"] == args["--location-name"]
    assert location["grpc_server"]["port"] == int(args["--port"])


def test_a_multi_file_sync_keeps_each_files_history_on_the_postgres_instance(
    production_instance: DagsterInstance, instance_db: dict[str, str], pg_dsn: str, schema: str, tmp_path: Path
) -> None:
    from sync_pipeline.partitions import PARTITIONS_NAME, discover

    from .test_partitions import _directory, _materialize

    instance = production_instance
    runs = _directory(tmp_path, ("lab_a", "lab_b"))
    instance.add_dynamic_partitions(PARTITIONS_NAME, list(discover(str(runs))))
    for key in ("lab_a", "lab_b"):
        assert _materialize(runs, pg_dsn, schema, instance, key).success

    history = sync_history("narrative_results", instance=instance)
    assert sorted(history["partition"]) == ["lab_a", "lab_b"]
    dsn = psycopg2.extensions.make_dsn(**instance_db)
    partitions = query(
        dsn, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s ORDER BY 1", (PARTITIONS_NAME,)
    )
    assert partitions == [("lab_a",), ("lab_b",)]
