"""README.md as a user meets it: every command of its ``sh`` blocks is run as printed and must exit 0,
except the few listed in ``NOT_RUN`` with the reason; its length stays within 300 lines; and every relative
link of README.md and docs/ leads to a file (and heading) that exists.

The commands run in order, with ``bash -c``, in a copy of the project (so ``cp .env.example .env``, ``rm -rf
state/`` and ``dg scaffold`` touch the copy, never the checkout), against a demo SQLite file, the test server
(a schema of this test's own) and a Dagster instance of its own. ``.venv/bin/`` is the venv running the tests
(in CI that is ``<repo>/.venv/bin``, in a worktree without a venv the one of ``sys.executable``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from sync_pipeline.demo import generate

from .test_cli import dagster_home
from .test_component import copy_project

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAX_README_LINES = 300
SHELL = {"sh", "bash", "shell"}  # blocks whose lines are commands
NOT_COMMANDS = {"", "sql", "cron", "yaml", "python", "text"}  # the cron line is a crontab entry, not a command

# README commands that are not run here, each with why. Every other command line of an sh block is run.
NOT_RUN = {
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/dg dev": (
        "installs, then starts the UI and never returns; test_e2e.py runs the real dagster dev"
    ),
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest": (
        "the whole suite, exactly as .ci/run calls it (it would run this test again)"
    ),
    "PG_TEST_DSN=postgresql://user@host:5432/postgres .venv/bin/pytest": "the whole suite, on a placeholder server",
}
CI_TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = re.match(r"^\s*```(\S*)\s*$", lines[i])
        i += 1
        if not opening:
            continue
        body = []
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1
        blocks.append((opening.group(1), "\n".join(body)))
    return blocks


def commands(body: str) -> list[str]:
    """The command lines of an sh block: continuation lines joined, blank lines and comment lines left out."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def readme_commands() -> list[str]:
    return [c for lang, body in fenced_blocks(README.read_text()) if lang in SHELL for c in commands(body)]


def venv_bin() -> Path:
    own = REPO / ".venv" / "bin"
    return own if own.is_dir() else Path(sys.executable).parent


def as_run(command: str) -> str:
    """The command with ``.venv/bin/`` pointing at the venv that runs the tests (nothing else changed)."""
    return re.sub(r"(?<![\w./-])\.venv/bin/", f"{venv_bin()}/", command)


def test_every_block_is_of_a_known_kind() -> None:
    """A new kind of block (```bash, ```console...) must be either run or declared not to hold commands."""
    kinds = {lang for lang, _ in fenced_blocks(README.read_text())}
    assert kinds <= SHELL | NOT_COMMANDS, f"blocks of unknown kind: {kinds - SHELL - NOT_COMMANDS}"


def test_the_readme_is_short_and_keeps_cis_test_command() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, more than {MAX_README_LINES}"
    ci = (REPO / ".ci" / "run").read_text()
    assert f'TEST_COMMAND="{CI_TEST_COMMAND}"' in ci
    assert CI_TEST_COMMAND in readme_commands(), "the README's test command is not .ci/run's"


def test_every_readme_command_runs(tmp_path: Path, pg_dsn: str, schema: str) -> None:
    listed = readme_commands()
    stale = [c for c in NOT_RUN if c not in listed]
    assert not stale, f"NOT_RUN names commands the README no longer has: {stale}"
    to_run = [c for c in listed if c not in NOT_RUN]
    assert to_run, "no README command found to run"

    root = copy_project(tmp_path / "project")
    (root / ".env.example").write_text((REPO / ".env.example").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNC_", "PG_", "DAGSTER_", "SQLITE_"))}
    for name in ("FULL_REFRESH", "DELETE_ORPHANS", "BATCH_SIZE"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=str(root),
        VIRTUAL_ENV=str(venv_bin().parent),
        SQLITE_PATH=str(generate(tmp_path / "demo.sqlite", rows=300, seed=5)),
        PG_CONN_STR=pg_dsn,
        PG_SCHEMA=schema,
        DAGSTER_HOME=str(dagster_home(tmp_path)),
        SYNC_SENSOR="off",
    )
    failures = []
    for command in to_run:
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", as_run(command)],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,  # `db --psql` reads no statement and exits
            capture_output=True,
            text=True,
            timeout=180,
        )
        print(f"{done.returncode}  {time.monotonic() - started:5.1f} s  {command}")
        if done.returncode != 0:
            failures.append(f"{command}\n  exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    assert not failures, "README commands failed:\n\n" + "\n\n".join(failures)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)  # no headings inside code
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_resolves() -> None:
    pages = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "deploy" / "README.md"]
    broken = []
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
