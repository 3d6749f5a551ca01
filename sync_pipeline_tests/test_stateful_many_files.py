"""Stateful, model-based: a folder of SQLite files under random churn, synced by the headless command
and by the sensor, with ``SYNC_DELETE_REMOVED_FILES=1``.

The rules do to the folder what happens to real ones: a file added, edited, removed, renamed, moved
away and back (its fingerprint unchanged: the folder holding it moves), replaced by an older copy of
itself; a stray text file or a half-written copy dropped in; one file's schema moving apart from the
others' (a column only some files have, a column dropped from one file, a REAL column that gains a
text value in one file so the shared column widens, a column excluded by ``SYNC_EXCLUDE_COLUMNS``
and let in again). Syncs go through the headless command's code path (``cli.sync``) or through the
sensor's evaluation, whose run requests are then executed as Dagster would (same run keys and tags).

Invariant after every sync, which must succeed: for every file that is a partition, every row of it is
in PostgreSQL, equal (a column the file lacks, or that is excluded, is NULL; a REAL value in a column
widened to text reads back as the engine's exact text, ``repr``), and after a sync with
``delete_orphans`` PostgreSQL holds exactly the file's rows; no row of a file no longer there remains.

Budget: ``SPS_MANY_FILES_EXAMPLES`` (default 3) and ``SPS_MANY_FILES_STEPS`` (default 14); a long hunt is
``SPS_MANY_FILES_EXAMPLES=60 SPS_MANY_FILES_STEPS=30``.
"""

from __future__ import annotations

import collections
import io
import os
import shutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

import psycopg2
from dagster import AssetKey, DagsterInstance, SensorResult, build_sensor_context
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from psycopg2 import sql

from sync_pipeline.cli import EXIT_CHECK_FAILED, EXIT_OK, SyncRequest, sync
from sync_pipeline.defs_builder import build_definitions
from sync_pipeline.demo import PROJECT_ROOT
from sync_pipeline.partitions import discover
from sync_pipeline.resources import PostgresTarget, SQLiteSource
from sync_pipeline.sensor import Settle, evaluate

from .conftest import drop_schema

EXAMPLES = int(os.environ.get("SPS_MANY_FILES_EXAMPLES", "3"))
STEPS = int(os.environ.get("SPS_MANY_FILES_STEPS", "14"))
KEYS = ("a", "b", "c", "d")
FAST = Settle(listen_s=0, quiet_s=0.05, budget_s=1, poll_s=0.02)
REALS = st.sampled_from([0.5, 100.0, 1e292, 2.5e-7, 123456789.125, -3.0, 1e16])


class ManyFilesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sps-many-"))
        self.runs = self.tmp / "runs"
        (self.runs / "lab").mkdir(parents=True)
        self.away = self.tmp / "away"
        self.copies: dict[str, Path] = {}
        self.schema = f"many_{uuid.uuid4().hex[:10]}"
        self.next_id = 1
        home = self.tmp / "home"
        home.mkdir()
        text = (PROJECT_ROOT / "dagster.yaml").read_text()
        (home / "dagster.yaml").write_text(text.replace("base_dir: state/dagster", f"base_dir: {home / 'storage'}"))
        self.env = {
            "DAGSTER_HOME": str(home),
            "SQLITE_PATH": str(self.runs),
            "PG_CONN_STR": DSN,
            "PG_SCHEMA": self.schema,
            "SYNC_DELETE_REMOVED_FILES": "1",
            "SYNC_SENSOR": "off",
        }
        RAN["examples"] += 1
        self.saved = {name: os.environ.get(name) for name in (*self.env, "SYNC_EXCLUDE_COLUMNS")}
        os.environ.update(self.env)
        os.environ.pop("SYNC_EXCLUDE_COLUMNS", None)
        with psycopg2.connect(DSN) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        conn.close()
        self.cursor: str | None = None
        self.synced = False
        self.exact = False  # the last sync deleted orphans: PostgreSQL holds exactly each file's rows

    def teardown(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        drop_schema(DSN, self.schema)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # The folder ------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.runs / ("lab" if key == "a" else "") / f"{key}.sqlite"

    def _present(self) -> dict[str, Path]:
        return {k: p for k, p in ((k, self._path(k)) for k in KEYS) if p.is_file()}

    def _execute(self, key: str, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        conn = sqlite3.connect(self._path(key))
        try:
            with conn:
                for statement, params in statements:
                    conn.execute(statement, params)
        finally:
            conn.close()

    @rule(key=st.sampled_from(KEYS), extra=st.booleans(), values=st.lists(REALS, min_size=1, max_size=4))
    def add_file(self, key: str, extra: bool, values: list[float]) -> None:
        path = self._path(key)
        if path.exists() or not path.parent.is_dir():  # `a`'s folder may be away
            return
        columns = "id INTEGER PRIMARY KEY, v REAL, s TEXT" + (", e TEXT" if extra else "")
        statements: list[tuple[str, tuple[object, ...]]] = [(f"CREATE TABLE m ({columns})", ())]
        for value in values:
            row = (self.next_id, value, f"s{self.next_id}") + ((f"e{self.next_id}",) if extra else ())
            statements.append((f"INSERT INTO m VALUES ({', '.join('?' * len(row))})", row))
            self.next_id += 1
        self._execute(key, statements)

    @precondition(lambda self: self._present())
    @rule(data=st.data(), value=REALS)
    def edit_file(self, data: st.DataObject, value: float) -> None:
        key = data.draw(st.sampled_from(sorted(self._present())))
        action = data.draw(st.sampled_from(["insert", "update", "delete"]))
        statement = {
            "insert": ("INSERT INTO m (id, v, s) VALUES (?, ?, 'new')", (self.next_id, value)),
            "update": ("UPDATE m SET v = ?, s = s || '!' WHERE id = (SELECT min(id) FROM m)", (value,)),
            "delete": ("DELETE FROM m WHERE id = (SELECT max(id) FROM m)", ()),
        }[action]
        self.next_id += 1
        self._execute(key, [statement])

    @precondition(lambda self: self._present())
    @rule(data=st.data())
    def widen_in_one_file(self, data: st.DataObject) -> None:
        """A text value in the REAL column of one file: the shared column becomes text for every file."""
        key = data.draw(st.sampled_from(sorted(self._present())))
        self._execute(key, [("INSERT INTO m (id, v, s) VALUES (?, 'n/a', 'text')", (self.next_id,))])
        self.next_id += 1

    @precondition(lambda self: self._present())
    @rule(data=st.data())
    def drop_column_in_one_file(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self._present())))
        conn = sqlite3.connect(self._path(key))
        try:
            if "e" in [row[1] for row in conn.execute("PRAGMA table_info(m)")]:
                conn.execute("ALTER TABLE m DROP COLUMN e")
            else:
                conn.execute("ALTER TABLE m ADD COLUMN e TEXT DEFAULT 'added'")
            conn.commit()
        finally:
            conn.close()

    @rule(exclude=st.booleans())
    def exclude_column(self, exclude: bool) -> None:
        if exclude:
            os.environ["SYNC_EXCLUDE_COLUMNS"] = "m.e"
        else:
            os.environ.pop("SYNC_EXCLUDE_COLUMNS", None)

    @precondition(lambda self: self._present())
    @rule(data=st.data())
    def remove_file(self, data: st.DataObject) -> None:
        self._path(data.draw(st.sampled_from(sorted(self._present())))).unlink()

    @precondition(lambda self: self._present())
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self._present())))
        free = [k for k in KEYS if not self._path(k).exists() and self._path(k).parent.is_dir()]
        if free:
            self._path(key).rename(self._path(data.draw(st.sampled_from(free))))

    @rule()
    def move_lab_away_or_back(self) -> None:
        """The folder of file ``a`` moves away or back: the file's own stat is unchanged."""
        if (self.runs / "lab").exists():
            (self.runs / "lab").rename(self.away)
        elif self.away.exists():
            self.away.rename(self.runs / "lab")

    @precondition(lambda self: self._present())
    @rule(data=st.data())
    def keep_or_restore_an_older_copy(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self._present())))
        if key in self.copies:
            os.replace(self.copies.pop(key), self._path(key))
        else:
            self.copies[key] = self.tmp / f"copy-{key}.sqlite"
            shutil.copy2(self._path(key), self.copies[key])

    @rule(kind=st.sampled_from(["text", "half"]))
    def stray_file(self, kind: str) -> None:
        present = self._present()
        if kind == "half" and present:
            source = next(iter(present.values())).read_bytes()
            (self.runs / "half.sqlite").write_bytes(source[:100])
        else:
            (self.runs / "junk.sqlite").write_text("not a database\n")

    # Syncs -------------------------------------------------------------------------------------------

    @rule(delete_orphans=st.booleans())
    def sync_headless(self, delete_orphans: bool) -> None:
        err = io.StringIO()
        code = sync(SyncRequest(delete_orphans=delete_orphans), out=io.StringIO(), err=err, defs=build_definitions())
        # 3: synced, and a check failed (a widened column fails types_match_declared; kept orphans, the counts)
        assert code in (EXIT_OK, EXIT_CHECK_FAILED), err.getvalue()
        self.synced, self.exact = True, delete_orphans

    @rule()
    def sync_by_sensor(self) -> None:
        defs = build_definitions()
        postgres = PostgresTarget(conn_str=DSN, pg_schema=self.schema)
        with DagsterInstance.get() as instance:
            result = evaluate(
                build_sensor_context(instance=instance, cursor=self.cursor),
                SQLiteSource(path=str(self.runs)),
                postgres=postgres,
                settle=FAST,
            )
            assert isinstance(result, SensorResult)
            self.cursor = result.cursor
            keys = [AssetKey(["m"])] if defs.resolve_all_asset_specs() else []
            if not keys:
                return
            job = defs.resolve_implicit_job_def_def_for_assets(keys)
            assert job is not None
            for request in result.run_requests:
                run = job.execute_in_process(
                    instance=instance,
                    partition_key=request.partition_key,
                    asset_selection=keys,
                    tags={**request.tags, "dagster/run_key": request.run_key or ""},
                    raise_on_error=False,
                )
                assert run.success, [e.message for e in run.all_events if e.is_failure]
        self.synced, self.exact = True, False

    # Syncs are a third of the rules, so that most changes meet a sync before the next one.
    @rule()
    def sync_headless_again(self) -> None:
        self.sync_headless(delete_orphans=False)

    @rule()
    def sync_headless_deleting_orphans(self) -> None:
        self.sync_headless(delete_orphans=True)

    @rule()
    def sync_by_sensor_again(self) -> None:
        self.sync_by_sensor()

    # The invariant -----------------------------------------------------------------------------------

    @invariant()
    def postgres_equals_the_folder(self) -> None:
        RAN["steps"] += 1
        if not self.synced:
            return
        RAN["syncs checked"] += 1
        self.synced = False
        files = discover(str(self.runs))
        with psycopg2.connect(DSN) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'm'",
                (self.schema,),
            )
            pg_types = dict(cur.fetchall())
            if not pg_types:
                assert not any(_rows(p) for p in files.values())
                return
            columns = [c for c in ("id", "v", "s", "e") if c in pg_types]
            cur.execute(
                sql.SQL("SELECT _source_file, {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(self.schema, "m")
                )
            )
            held: dict[str, list[tuple[object, ...]]] = {}
            for key, *row in cur.fetchall():
                held.setdefault(key, []).append(tuple(row))
        conn.close()
        excluded = os.environ.get("SYNC_EXCLUDE_COLUMNS") == "m.e"
        assert set(held) <= set(files), f"rows of files no longer there: {sorted(set(held) - set(files))}"
        for key, path in files.items():
            want = sorted((_expected(row, columns, pg_types, excluded) for row in _rows(path)), key=repr)
            have = sorted(held.get(key, []), key=repr)
            if self.exact:
                assert have == want, (key, pg_types)
            else:  # without delete_orphans a row deleted in SQLite may stay (README); every SQLite row is there
                missing = [row for row in want if row not in have]
                assert not missing, (key, pg_types, missing)


def _rows(path: Path) -> list[dict[str, object]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM m")]
    finally:
        conn.close()


def _expected(row: dict[str, object], columns: list[str], pg_types: dict[str, str], excluded: bool) -> tuple:
    values = []
    for column in columns:
        value = None if column == "e" and excluded else row.get(column)
        if value is not None and pg_types[column] == "text" and not isinstance(value, str):
            value = repr(value) if isinstance(value, float) else str(value)
        values.append(value)
    return tuple(values)


DSN = ""
RAN: collections.Counter[str] = collections.Counter()  # what the run did, printed at its end (pytest -s)


def test_many_files_under_churn_stay_equal_to_the_folder(pg_dsn: str) -> None:
    global DSN
    DSN = pg_dsn
    run_state_machine_as_test(
        ManyFilesMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )
    print(f"many-files machine: {dict(RAN)}")
