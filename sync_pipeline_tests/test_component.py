"""SqliteSyncComponent through ``dg`` (issue 13): listed, scaffolded, validated, and two instances
materialized side by side, against real PostgreSQL and real SQLite files.

The ``dg`` tests work on a temporary copy of the project (``PYTHONPATH`` points the copy's
``sync_pipeline`` first), so the scaffolded instance never lands in the repo. ``dg`` calls cost
seconds each: one module-scoped project serves the listing, the check and the materialization.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2.extensions
import pytest
from dagster import AssetKey, DagsterInstance, EnvVar, SensorResult, build_sensor_context, materialize

from sync_pipeline.components import SqliteSyncComponent
from sync_pipeline.demo import PROJECT_ROOT, generate
from sync_pipeline_tests.conftest import ONLY_DEFS_ENV, PROJECT_DEFS, drop_schema, pg_rows, sqlite_rows

DG = Path(sys.executable).parent / "dg"
COMPONENT = "sync_pipeline.components.SqliteSyncComponent"
DEMO_TABLES = ("experiments", "narrative_results", "source_narratives")


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    first_schema: str
    second_schema: str
    first_db: Path
    second_db: Path

    def dg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(DG), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        if check:
            assert result.returncode == 0, f"dg {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result


def copy_project(target: Path) -> Path:
    """The files ``dg``, Dagster and a wheel build read: pyproject.toml, README.md, dagster.yaml and the
    package (no state/, no build leftovers in the repo)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md", "dagster.yaml", "workspace.yaml"):
        shutil.copy(PROJECT_ROOT / name, target / name)
    shutil.copytree(PROJECT_ROOT / "sync_pipeline", target / "sync_pipeline", ignore=_own_files_only)
    return target


def _own_files_only(folder: str, names: list[str]) -> set[str]:
    """``copytree``'s filter: no caches, and under defs/ only the project's own instance (not those a user
    added to the checkout, which would load beside the tests' instances)."""
    ignored = {n for n in names if n == "__pycache__"}
    if Path(folder) == PROJECT_ROOT / "sync_pipeline" / "defs":
        ignored |= {n for n in names if n not in ("__init__.py", PROJECT_DEFS)}
    return ignored


def every_instance(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the suite's SPS_DEFS_ONLY (conftest.py): the definitions load every instance of the copy."""
    return {k: v for k, v in env.items() if k != ONLY_DEFS_ENV}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[Project]:
    """A copy of the project with a second instance ``lab_b`` scaffolded by ``dg`` and pointed at a
    second SQLite file and a schema of its own (created by the component, dropped after)."""
    base = tmp_path_factory.mktemp("component")
    root = copy_project(base / "project")
    first_db = generate(base / "first.sqlite", rows=400, seed=3)
    second_db = generate(base / "second.sqlite", rows=250, seed=11)
    with sqlite3.connect(second_db) as conn:  # a table only the second file has
        conn.execute("CREATE TABLE lab_notes (id INTEGER PRIMARY KEY, note TEXT)")
        conn.executemany("INSERT INTO lab_notes VALUES (?, ?)", [(i, f"note {i}") for i in range(1, 31)])
    conn.close()
    first_schema, second_schema = f"t_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{first_schema}"')  # the second one is left to create_schema
    conn.close()
    home = base / "dagster_home"
    home.mkdir()
    env = {
        **every_instance(dict(os.environ)),
        "PYTHONPATH": str(root),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
        "DAGSTER_HOME": str(home),
        # The project's own instance, from the environment as ever; with a password, to see it masked.
        "SQLITE_PATH": str(first_db),
        "PG_CONN_STR": psycopg2.extensions.make_dsn(pg_dsn, password="hunter2"),
        "PG_SCHEMA": first_schema,
    }
    made = Project(root, env, first_schema, second_schema, first_db, second_db)
    made.dg("scaffold", "defs", COMPONENT, "lab_b")
    made.dg("check", "defs")  # as scaffolded, with no edit, it loads beside the project's own instance
    defs_yaml = root / "sync_pipeline" / "defs" / "lab_b" / "defs.yaml"
    text = defs_yaml.read_text()
    assert "    demo: true" in text and "    pg_schema: lab_b" in text
    defs_yaml.write_text(
        text.replace("    demo: true", f"    path: {second_db}").replace(
            "    pg_schema: lab_b", f"    pg_schema: {second_schema}"
        )
    )
    try:
        yield made
    finally:
        drop_schema(pg_dsn, first_schema)
        drop_schema(pg_dsn, second_schema)


def test_dg_lists_the_component_and_both_instances_load_without_a_clash(project: Project):
    listed = project.dg("list", "components", "--json")
    assert COMPONENT in {entry["key"] for entry in json.loads(listed.stdout)["items"]}

    checked = project.dg("check", "defs")
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = project.dg("list", "defs", "--json")
    defs = json.loads(listed.stdout)
    assert "hunter2" not in listed.stdout + listed.stderr
    keys = {asset["asset_key"] for asset in defs["assets"]}
    assert keys == {*DEMO_TABLES, *(f"lab_b/{t}" for t in (*DEMO_TABLES, "lab_notes"))}
    groups = {asset["asset_key"]: asset["group_name"] for asset in defs["assets"]}
    assert groups["experiments"] == "sqlite_pg_sync" and groups["lab_b/experiments"] == "lab_b"
    assert {sensor["name"] for sensor in defs["sensors"]} == {"sqlite_file_changed", "lab_b_file_changed"}
    assert {resource["name"] for resource in defs["resources"]} == {
        "sqlite",
        "postgres",
        "lab_b_sqlite",
        "lab_b_postgres",
    }


def test_two_instances_materialize_side_by_side_into_two_exact_mirrors(project: Project, pg_dsn: str):
    launched = project.dg("launch", "--assets", "*")
    assert "hunter2" not in launched.stdout + launched.stderr

    for table in DEMO_TABLES:
        assert pg_rows(pg_dsn, project.first_schema, table) == sqlite_rows(project.first_db, table)
        assert pg_rows(pg_dsn, project.second_schema, table) == sqlite_rows(project.second_db, table)
    assert pg_rows(pg_dsn, project.second_schema, "lab_notes") == sqlite_rows(project.second_db, "lab_notes")
    # Different files: had one instance written the other's tables, these would be equal.
    assert sqlite_rows(project.first_db, "experiments") != sqlite_rows(project.second_db, "experiments")
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{project.first_schema}".lab_notes',))
        assert cur.fetchone() == (None,), "the first instance must not have the second file's table"
    conn.close()


def test_the_headless_commands_build_only_the_projects_own_instance(project: Project) -> None:
    """``python -m sync_pipeline sync`` and ``db`` use the project's own instance alone
    (defs_builder.project_definitions): no other instance, and not the Docs tab's component-types metadata."""
    script = (
        "import json; from sync_pipeline.defs_builder import project_definitions; defs = project_definitions(); "
        "print(json.dumps([sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()), "
        "sorted(defs.resources or {}), sorted(defs.metadata or {})]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=project.root, env=project.env, check=True, capture_output=True, text=True
    ).stdout
    keys, resources, metadata = json.loads(out.strip().splitlines()[-1])
    assert keys == sorted(DEMO_TABLES)  # lab_b/... is loaded beside them by the code location only
    assert resources == ["postgres", "sqlite"]
    assert metadata == []


# Each expected item: alternatives, one of which the output holds (dg reports an unknown key from its
# YAML schema check or, depending on how it resolved the schema, from loading the component).
@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("  sensor:", "  sensr:"), [("attributes.sensr",), ("Extra inputs are not permitted", "was unexpected")]),
        (
            ("    batch_size: 10000", "    batch_size: 0"),
            [("attributes.run_config",), ("batch_size must be an integer from 1 to 1,000,000, got 0",)],
        ),
    ],
    ids=["unknown key", "batch_size 0"],
)
def test_a_bad_attribute_fails_dg_check_defs_naming_it(
    tmp_path: Path, edit: tuple[str, str], expected: list[tuple[str, ...]]
) -> None:
    root = copy_project(tmp_path / "project")
    env = {
        **every_instance(dict(os.environ)),
        "PYTHONPATH": str(root),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
    }
    bad = Project(root, env, "", "", Path(), Path())
    bad.dg("scaffold", "defs", COMPONENT, "broken")
    defs_yaml = root / "sync_pipeline" / "defs" / "broken" / "defs.yaml"
    old, new = edit
    assert old in defs_yaml.read_text()
    defs_yaml.write_text(defs_yaml.read_text().replace(old, new))

    result = bad.dg("check", "defs", check=False)

    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "broken/defs.yaml" in output
    for alternatives in expected:
        assert any(fragment in output for fragment in alternatives), (alternatives, output)


def test_the_python_api_builds_what_the_yaml_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's Python equivalent of a defs.yaml: the same attributes as a dict, then ``build``."""
    path = generate(tmp_path / "lab.sqlite", rows=50, seed=5)
    monkeypatch.setenv("LAB_PG", "postgresql://sync:s3cret@db.example/lab")
    component = SqliteSyncComponent.resolve_from_dict(
        {
            "sqlite": {"path": str(path)},
            "postgres": {"conn_str": "{{ env.LAB_PG }}", "pg_schema": "lab"},
            "tables": {"exclude": ["source_*"], "options": {"experiments": {"exclude_columns": ["config"]}}},
            "run_config": {"batch_size": 500},
            "translation": {"description": "{{ table }} of the lab, in {{ pg_table }}", "owners": ["team:lab"]},
            "checks": ["row_count_matches_sqlite"],
            "op": {"tags": {"team": "lab"}, "retry_policy": {"max_retries": 2}},
            "sensor": {"enabled": False, "interval_s": 30},
        }
    )
    defs = component.build("lab")

    postgres = defs.resources["lab_postgres"]
    assert isinstance(postgres.conn_str, EnvVar) and postgres.conn_str.env_var_name == "LAB_PG"
    (assets,) = defs.assets
    assert set(assets.keys) == {AssetKey(["lab", "experiments"]), AssetKey(["lab", "narrative_results"])}
    spec = assets.specs_by_key[AssetKey(["lab", "experiments"])]
    assert spec.description == "experiments of the lab, in lab.experiments"
    assert spec.owners == ["team:lab"] and spec.group_name == "lab"
    assert "config" not in [c.name for c in spec.metadata["dagster/column_schema"].columns]
    assert "s3cret" not in spec.metadata["sync_target"]
    assert {check.name for check in assets.check_specs} == {"row_count_matches_sqlite"}
    assert assets.op.name == "lab_tables" and assets.op.pool == "lab" and assets.op.tags["team"] == "lab"
    assert assets.op.retry_policy is not None and assets.op.retry_policy.max_retries == 2
    config_field = assets.op.config_schema.config_type.fields["batch_size"]
    assert config_field.default_value == 500
    (sensor,) = defs.sensors
    assert (sensor.name, sensor.minimum_interval_seconds, sensor.default_status.value) == (
        "lab_file_changed",
        30,
        "STOPPED",
    )


def test_the_installed_package_loads_its_defs_yaml_without_the_repo(tmp_path: Path) -> None:
    """The deploy image installs the package (deploy/Dockerfile: ``pip install '.[deploy]'``): its
    defs.yaml must be in the wheel, and the definitions must load where there is no pyproject.toml."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q"]
    project = copy_project(tmp_path / "project")
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(project)], check=True, timeout=300)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    source = generate(tmp_path / "source.sqlite", rows=20, seed=1)
    script = (
        "import json, sync_pipeline; from sync_pipeline.definitions import defs; "
        "print(json.dumps([sync_pipeline.__file__, "
        "sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())]))"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "SQLITE_PATH": str(source)}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout
    loaded_from, keys = json.loads(out.strip().splitlines()[-1])
    assert loaded_from.startswith(str(site))
    assert keys == sorted(DEMO_TABLES)


def test_every_attribute_has_a_description_in_the_schema_dg_and_the_docs_tab_show(tmp_path: Path) -> None:
    schema = SqliteSyncComponent.model().model_json_schema()
    models = [schema, *schema.get("$defs", {}).values()]
    fields = [
        (model.get("title"), name, spec) for model in models for name, spec in model.get("properties", {}).items()
    ]
    assert len(fields) > 40  # every nested block is in the schema, not only the top level
    assert [(model, name) for model, name, spec in fields if not spec.get("description")] == []

    # The UI's Docs tab reads the component types from the code location's metadata.
    script = (
        "from sync_pipeline.definitions import defs; "
        "print(defs.metadata['plugin_component_types_json'].value is not None); "
        "print(str(defs.metadata['plugin_component_types_json'].value))"
    )
    # The whole tree (Dagster adds the Docs tab's metadata only then): a copy holding only the project's instance.
    root = copy_project(tmp_path / "project")
    env = {
        **every_instance(dict(os.environ)),
        "PYTHONPATH": str(root),
        "SQLITE_PATH": str(generate(tmp_path / "s.sqlite", rows=5, seed=1)),
    }
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert COMPONENT.rsplit(".", 1)[1] in out
    assert "Rows read and sent per step" in out  # batch_size's description


def test_an_instances_sensor_reads_its_own_resources_and_sets_its_own_pool(tmp_path: Path) -> None:
    path = generate(tmp_path / "lab.sqlite", rows=20, seed=2)
    defs = SqliteSyncComponent.resolve_from_dict({"sqlite": {"path": str(path)}}).build("lab")
    (sensor,) = defs.sensors
    instance = DagsterInstance.ephemeral()
    # The file is quiet, so the first tick asks for the sync (the sensor settles within a tick).
    context = build_sensor_context(instance=instance, resources=dict(defs.resources or {}))
    first = sensor(context)
    assert isinstance(first, SensorResult) and len(first.run_requests or []) == 1
    limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits.get("lab") == 1 and "sqlite_pg_sync" not in limits


def test_a_conn_str_template_of_an_unset_variable_means_the_embedded_server_not_pg_conn_str(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Falling back to PG_CONN_STR would sync into another database than the one the YAML names."""
    monkeypatch.setenv("PG_CONN_STR", "postgresql://sync:s3cret@elsewhere/db")
    monkeypatch.delenv("LAB_PG", raising=False)
    path = generate(tmp_path / "lab.sqlite", rows=5, seed=3)
    component = SqliteSyncComponent.resolve_from_dict(
        {"sqlite": {"path": str(path)}, "postgres": {"conn_str": "{{ env.LAB_PG }}"}}
    )
    assert component.build("lab").resources["lab_postgres"].conn_str == ""
    # Left out, the attribute follows PG_CONN_STR, by name.
    plain = SqliteSyncComponent.resolve_from_dict({"sqlite": {"path": str(path)}}).build("lab")
    conn_str = plain.resources["lab_postgres"].conn_str
    assert isinstance(conn_str, EnvVar) and conn_str.env_var_name == "PG_CONN_STR"


def test_a_table_marked_full_refresh_is_replaced_on_every_sync_and_the_others_merged(
    tmp_path: Path, pg_dsn: str, schema: str
) -> None:
    path = generate(tmp_path / "lab.sqlite", rows=30, seed=4)
    component = SqliteSyncComponent.resolve_from_dict(
        {
            "sqlite": {"path": str(path)},
            "postgres": {"conn_str": pg_dsn, "pg_schema": schema},
            "tables": {"options": {"experiments": {"full_refresh": True}}},
        }
    )
    defs = component.build("lab")
    (assets,) = defs.assets
    instance = DagsterInstance.ephemeral()
    for _ in range(2):
        result = materialize([assets], resources=dict(defs.resources or {}), instance=instance)
        assert result.success
    modes = {
        event.asset_key.path[-1]: event.materialization.metadata["mode"].value
        for event in result.get_asset_materialization_events()
    }
    assert modes == {
        "experiments": "full_refresh",
        "narrative_results": "incremental",
        "source_narratives": "incremental",
    }
    for table in modes:
        assert sorted(pg_rows(pg_dsn, schema, table)) == sorted(sqlite_rows(path, table))
