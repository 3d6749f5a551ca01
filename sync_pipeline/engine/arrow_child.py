"""The Arrow reader in a process of its own, so that each process has one SQLite library.

ADBC's SQLite driver bundles its own SQLite (3.53 here) while Python's ``sqlite3`` uses the
system one (3.40). POSIX file locks belong to the process, not to the connection, so when two
copies of SQLite have the same file open in one process, closing it in one drops the locks the
other one's read transaction relies on (https://www.sqlite.org/howtocorrupt.html, "multiple
copies of SQLite linked into the same application"). Reproduced with a writer committing to
four tables in one transaction while syncs ran with four readers: mixed snapshots in
PostgreSQL, false "database disk image is malformed", and SIGBUS. So the syncing process reads
the file only with ``sqlite3``, and each Arrow reader is a child process that reads it only
with the driver.

The child (:func:`serve`, started as ``python -c _BOOT ENGINE_DIR PATH``, which imports only
this module and :mod:`.adbc_sqlite`, so it has no ``sqlite3``, no second SQLite library at all)
opens the file read-only itself (it is never handed a connection; for a rollback-journal file
PATH is the snapshot's private copy), answers OPENED, then obeys commands read from stdin:

* ``begin``: end any read transaction, start one and read, so its snapshot is fixed; BEGUN.
* ``query``: a SELECT whose columns are COPY text of the given PostgreSQL types plus the guard
  of :mod:`.arrow_reader`; a frame per chunk, then END, or UNFIT with the reason
  (:class:`ArrowUnfit`), or ERROR with any other error. Batches are cut by row count or by key
  range (``key_index``, ``shift``: see change_detection.py) and each frame carries its batch id.
  Each batch's digest is taken here, from its Arrow buffers (``adbc_sqlite.batch_digest``): a
  batch whose digest is the one the command lists for its id (``skip``: the last sync's) is a
  SKIPPED frame holding only the digest, its COPY text never built nor sent; any other is a
  CHUNK frame, the digest then the text. With ``binary`` (copy_format.py) a batch sent is a ROWS
  frame instead: the digest, each row's size (8 bytes a row), then the tuples.
* ``close``, or the end of stdin: exit.

Commands are a 4-byte length and a JSON object; replies are a header (kind, rows, batch id,
payload length) and the payload. A reader that stops reading a stream before its end (the COPY failed)
kills the child instead of resynchronising the pipe; the snapshot then has no Arrow reader
for the rest of the run, and tables take the exact path.

The parent side, :class:`ArrowChild`, imports neither pyarrow nor the driver: the syncing
process saves their memory and import time (its peak for 1M rows fell from 141 to 60 MB; the
child's is about 100 MB, 57 MB of it before the first batch).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import IO

from .copy_format import BinaryRows

# Generous: the child imports pyarrow first (0.09 s on an idle machine), and it may be busy.
OPEN_TIMEOUT_S = 60.0
# The child waits up to adbc_sqlite.BUSY_TIMEOUT_MS for a lock before it answers.
BEGIN_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0

_HEADER = struct.Struct("<cqqQ")  # kind, rows, batch id, payload length
_COMMAND = struct.Struct("<I")  # length of the JSON command that follows
OPENED, BEGUN, CHUNK, ROWS, SKIPPED, END, UNFIT, ERROR = b"O", b"B", b"C", b"R", b"S", b"E", b"U", b"X"
_DIGEST_HEX = 32  # a batch digest (adbc_sqlite.batch_digest) as hex, at the head of a CHUNK or ROWS frame
_ROW_SIZE = 8  # bytes of a row's size in a ROWS frame


# The child imports this module and adbc_sqlite without running the packages' __init__ (which
# imports sqlite3, psycopg2 and the rest of the engine): 0.05 s and 12 MB less per child, and
# no second SQLite library in its process at all. Nor numpy, which pyarrow (16+) can do without
# and would import for nothing here: 0.06 s and 12 MB less again.
_BOOT = """
import os, sys, types
sys.modules["numpy"] = None
engine = sys.argv[1]
for name, path in (("sync_pipeline", os.path.dirname(engine)), ("sync_pipeline.engine", engine)):
    package = types.ModuleType(name)
    package.__path__ = [path]
    sys.modules[name] = package
from sync_pipeline.engine.arrow_child import serve
serve(sys.argv[2])
"""
_ENGINE_DIR = str(Path(__file__).resolve().parent)


class ArrowUnfit(Exception):
    """This table holds values the Arrow path cannot send exactly; the exact path must read it.

    Also raised when the Arrow reader failed for any other reason: the exact path then either
    loads the table or says what is wrong with it.
    """


def _encode_param(value: object) -> list[object]:
    if isinstance(value, bool) or not isinstance(value, int | float | str | bytes):
        raise ArrowUnfit(f"no Arrow parameter for a {type(value).__name__}")
    if isinstance(value, bytes):
        return ["b", value.hex()]
    if isinstance(value, float):
        return ["f", value.hex()]  # exact, and JSON has no infinities
    return ["i" if isinstance(value, int) else "s", value]


def _decode_param(tagged: list[object]) -> object:
    tag, value = tagged
    if tag == "b":
        return bytes.fromhex(str(value))
    if tag == "f":
        return float.fromhex(str(value))
    return value


# --- the parent side ------------------------------------------------------------------------


class ArrowChild:
    """A handle on one Arrow reader process: one ADBC connection, one read transaction."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._stdin: IO[bytes] = proc.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = proc.stdout  # type: ignore[assignment]
        self.usable = True  # False once killed, dead or closed: it answers nothing any more
        self.failure = ""  # why it stopped being usable, when it is known

    @classmethod
    def spawn(cls, path: Path) -> ArrowChild:
        """Start the process; :meth:`wait_opened` waits for its imports and its open."""
        proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, _ENGINE_DIR, str(path.resolve())],  # this very engine's code
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,  # no SQLite file descriptor or PostgreSQL socket of ours goes with it
        )
        child = cls(proc)
        _grow_pipe(child._stdout)
        return child

    @classmethod
    def start(cls, path: Path) -> ArrowChild | None:
        """Spawn and wait until opened; None if the child cannot open the file."""
        try:
            child = cls.spawn(path)
        except OSError:
            return None
        return child if child.wait_opened() else None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_opened(self, timeout: float = OPEN_TIMEOUT_S) -> bool:
        """True once the child has opened the file; else it is closed and False."""
        return self._expect(OPENED, timeout)

    def begin(self) -> None:
        """Ask for a new read transaction (ending any current one); :meth:`begun` waits for it."""
        self._send({"op": "begin"})

    def begun(self, timeout: float = BEGIN_TIMEOUT_S) -> bool:
        """True once the read transaction has its snapshot; else the child is closed and False."""
        return self._expect(BEGUN, timeout)

    def query(
        self,
        query: str,
        params: tuple[object, ...],
        pg_types: list[str],
        batch_rows: int,
        skip: Mapping[int, str] | None = None,
        key_index: int | None = None,
        shift: int = 0,
        binary: bool = False,
    ) -> Generator[tuple[bytes | BinaryRows | None, int, str, int], None, None]:
        """(COPY data, rows, digest, batch id) chunks of ``query``'s result, or :class:`ArrowUnfit`:
        text, or with ``binary`` the binary format's tuples (copy_format.py); None for a chunk whose
        digest is ``skip``'s for its id (it stayed in the child).

        Closing the generator before its end kills the child (see the module docstring).
        """
        command = {
            "op": "query",
            "sql": query,
            "params": [_encode_param(p) for p in params],
            "types": pg_types,
            "batch_rows": batch_rows,
            "skip": {str(k): v for k, v in (skip or {}).items()},
            "key_index": key_index,
            "shift": shift,
            "binary": binary,
        }
        self._send(command)
        finished = False
        try:
            while True:
                kind, rows, batch_id, payload, digest, sizes = self._frame()
                if kind == CHUNK:
                    yield payload, rows, digest, batch_id
                elif kind == ROWS:
                    yield BinaryRows(payload, sizes), rows, digest, batch_id
                elif kind == SKIPPED:
                    yield None, rows, payload.decode(), batch_id
                elif kind == END:
                    finished = True
                    return
                elif kind in (UNFIT, ERROR):
                    finished = True
                    raise ArrowUnfit(payload.decode("utf-8", "replace"))
                else:
                    raise ArrowUnfit(f"the Arrow reader sent an unexpected {kind!r} frame")
        finally:
            if not finished:
                self.kill("its stream was not read to the end")

    def peak_rss_kb(self) -> int | None:
        """The child's peak resident memory so far (Linux's VmHWM), while it runs."""
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return None
        return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)

    def close(self) -> None:
        """Ask the child to exit, kill it if it does not, and reap it; idempotent."""
        if self._proc.returncode is None and self.usable:
            try:
                self._send({"op": "close"})
                self._stdin.close()
                self._proc.wait(timeout=CLOSE_TIMEOUT_S)
            except (ArrowUnfit, OSError, subprocess.TimeoutExpired):
                pass
        self.kill("closed")

    def kill(self, why: str) -> None:
        if self.usable:
            self.usable, self.failure = False, why
        if self._proc.returncode is None:
            self._proc.kill()
            self._proc.wait()
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass  # a broken pipe's unflushed bytes: nobody is reading them

    # --- plumbing --------------------------------------------------------------------------

    def _send(self, command: dict[str, object]) -> None:
        if not self.usable:
            raise ArrowUnfit(f"the Arrow reader is gone ({self.failure})")
        data = json.dumps(command).encode()
        try:
            self._stdin.write(_COMMAND.pack(len(data)) + data)
            self._stdin.flush()
        except OSError as exc:
            self.kill(f"it stopped taking commands: {exc}")
            raise ArrowUnfit(f"the Arrow reader is gone ({self._ended()})") from None

    def _expect(self, kind: bytes, timeout: float) -> bool:
        if not self.usable:
            return False
        # A reply is expected only when everything sent before was read, so the buffered
        # reader holds nothing yet and select() on the pipe tells whether the reply is there.
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        if not ready:
            self.kill(f"no answer within {timeout:.0f} s")
            return False
        try:
            got, _, _, payload, _, _ = self._frame()
        except ArrowUnfit:
            return False
        if got == kind:
            return True
        self.kill(payload.decode("utf-8", "replace") if got in (UNFIT, ERROR) else f"unexpected {got!r} frame")
        return False

    def _frame(self) -> tuple[bytes, int, int, bytes, str, bytes]:
        """(kind, rows, batch id, payload, digest, row sizes): a CHUNK's or ROWS's digest, and a ROWS's
        row sizes, are read apart from its data, which is then handed on as read, without a copy; other
        frames have no digest ('') and no row sizes (b'')."""
        header = self._stdout.read(_HEADER.size)
        if len(header) == _HEADER.size:
            kind, rows, batch_id, length = _HEADER.unpack(header)
            digest, sizes = "", b""
            if kind in (CHUNK, ROWS) and length >= _DIGEST_HEX:
                digest, length = self._stdout.read(_DIGEST_HEX).decode("ascii", "replace"), length - _DIGEST_HEX
            if kind == ROWS and length >= rows * _ROW_SIZE:
                sizes, length = self._stdout.read(rows * _ROW_SIZE), length - rows * _ROW_SIZE
            payload = self._stdout.read(length) if length else b""
            if len(payload) == length:
                return kind, rows, batch_id, payload, digest, sizes
        self.kill(self._ended())
        raise ArrowUnfit(f"the Arrow reader stopped ({self.failure})")

    def _ended(self) -> str:
        try:
            code = self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "its output ended"
        if code < 0:
            return f"its process was killed by {signal.Signals(-code).name}"
        return f"its process exited with code {code}"


# Readers started ahead of their snapshot (prestart), by the resolved path they opened; taken by the next
# snapshot of that path in this process (sqlite_source._open_arrows), closed at exit if none comes.
_SPARES: dict[str, ArrowChild] = {}


def prestart(path: Path) -> None:
    """Start an Arrow reader of ``path`` now, for a snapshot this process opens soon: its start (0.13 s of
    interpreter and pyarrow imports) then overlaps the caller's own work, not the snapshot's opening. The
    reader only opens the file; its read transaction begins with the snapshot's (:meth:`ArrowChild.begin`)."""
    key = str(path.resolve())
    if key in _SPARES:
        return
    try:
        _SPARES[key] = ArrowChild.spawn(path)
    except OSError:
        return  # the snapshot starts its own, or reads through the exact path
    if len(_SPARES) == 1:
        atexit.register(_close_spares)


def take_spare(path: Path) -> ArrowChild | None:
    """The reader :func:`prestart` started for ``path``, if there is one; the caller owns it from now on."""
    return _SPARES.pop(str(path.resolve()), None)


def _close_spares() -> None:
    while _SPARES:
        _SPARES.popitem()[1].close()


def _grow_pipe(pipe: IO[bytes]) -> None:
    """A bigger pipe means fewer reads per chunk (a chunk is a few MB); Linux only, best effort."""
    if sys.platform != "linux":
        return
    import fcntl

    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default 64 kB works too


# --- the child side -----------------------------------------------------------------------


def serve(path: str) -> None:
    """The child's main: open ``path`` and obey commands until ``close`` or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by mistake goes to stderr, not into the frames
    try:
        code = _serve(Path(path), sys.stdin.buffer, out)
    except BrokenPipeError:
        code = 0  # the parent stopped reading (it kills this process) or went away
    try:
        out.close()
    except OSError:
        pass
    sys.stderr.flush()
    # Without the interpreter's teardown (unloading pyarrow: 25-30 ms the parent waits for at close): the
    # connection is closed and the frames are flushed, so nothing is left to do.
    os._exit(code)


def _reply(out: IO[bytes], kind: bytes, rows: int = 0, payload: object = b"", batch_id: int = 0) -> None:
    """One frame; ``payload`` is text, bytes, or a list of byte strings sent one after another."""
    parts = [p.encode() if isinstance(p, str) else p for p in (payload if isinstance(payload, list) else [payload])]
    out.write(_HEADER.pack(kind, rows, batch_id, sum(memoryview(p).nbytes for p in parts)))  # type: ignore[arg-type]
    for part in parts:
        out.write(part)  # type: ignore[arg-type]
    out.flush()


def _command(stdin: IO[bytes]) -> dict[str, object] | None:
    head = stdin.read(_COMMAND.size)
    if len(head) < _COMMAND.size:
        return None
    (length,) = _COMMAND.unpack(head)
    return json.loads(stdin.read(length))


def _serve(path: Path, stdin: IO[bytes], out: IO[bytes]) -> int:
    try:
        from .adbc_sqlite import ArrowConnection, copy_data

        conn = ArrowConnection.open(path)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which reads the exact path
        _reply(out, ERROR, payload=f"cannot open {str(path)!r} with the Arrow reader: {exc}")
        return 1
    try:
        _reply(out, OPENED)
        while (command := _command(stdin)) is not None:
            if command["op"] == "close":
                break
            if command["op"] == "begin":
                try:
                    conn.begin()
                except Exception as exc:  # noqa: BLE001 - reported
                    _reply(out, ERROR, payload=f"cannot begin a read transaction: {exc}")
                else:
                    _reply(out, BEGUN)
            elif command["op"] == "query":
                params = tuple(_decode_param(p) for p in command["params"])  # type: ignore[attr-defined]
                skip = {int(k): v for k, v in (command.get("skip") or {}).items()}  # type: ignore[attr-defined]
                chunks = copy_data(
                    conn,
                    str(command["sql"]),
                    params,
                    command["types"],  # type: ignore[arg-type]
                    command["batch_rows"],  # type: ignore[arg-type]
                    skip,
                    command.get("key_index"),  # type: ignore[arg-type]
                    command.get("shift") or 0,  # type: ignore[arg-type]
                    bool(command.get("binary")),
                )
                try:
                    for data, rows, digest, batch_id, sizes in chunks:
                        if data is None:
                            _reply(out, SKIPPED, rows, digest, batch_id)
                        elif sizes is None:
                            _reply(out, CHUNK, rows, [digest.encode(), data], batch_id)
                        else:
                            _reply(out, ROWS, rows, [digest.encode(), sizes, data], batch_id)
                except BrokenPipeError:
                    raise
                except ArrowUnfit as exc:
                    _reply(out, UNFIT, payload=str(exc))
                except Exception as exc:  # noqa: BLE001 - reported
                    _reply(out, ERROR, payload=f"the Arrow reader failed: {type(exc).__name__}: {exc}")
                else:
                    _reply(out, END)
                finally:
                    chunks.close()
            else:
                _reply(out, ERROR, payload=f"unknown command {command['op']!r}")
    finally:
        conn.close()
    return 0
