"""A real ``dagster dev`` started from a script, for the end-to-end tests and ``bench/bench_latency.py``.

Processes on these machines start with SIGINT and SIGTERM ignored, and children inherit that, so
``dagster dev`` is started in a process group of its own with both signals reset, and stopped by
signalling the whole group. It counts as started once GraphQL says the code location is LOADED
(``/server_info`` answers seconds earlier, before the code is loaded).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .demo import PROJECT_ROOT

_LOAD_STATUS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset_signals_new_session() -> None:
    """``preexec_fn`` of a child that must be stoppable: default signal handling, a session of its own."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setsid()


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5) -> object:
    """``condition()``'s first truthy value, polled every ``every_s``; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def graphql(port: int, query_text: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query_text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@contextmanager
def dagster_dev(
    cwd: Path, env: dict[str, str], log_path: Path, timeout_s: float = 120
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``dagster dev`` on the project's workspace and a free port, in a process group of its own, until the
    block ends (or the caller kills it); yields the process and the port once the code location is loaded."""
    port = free_port()
    dagster = str(Path(sys.executable).parent / "dagster")
    command = [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("a") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=reset_signals_new_session
        )

    def loaded() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {log_path.read_text()[-3000:]}")
        try:
            entries = graphql(port, _LOAD_STATUS)["data"]["workspaceOrError"]["locationEntries"]
        except OSError:
            return False
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    try:
        wait_for(loaded, timeout_s, "the code location to load", every_s=1)
        yield process, port
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also ends processes orphaned in the group
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                pass
