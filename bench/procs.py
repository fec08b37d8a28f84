"""Processes for ``trackbridge bench``: an MLflow server, receivers and load generators.

Every process is started in its own session so that it and its children (``mlflow server``
runs uvicorn as a child) can be ended together; :class:`Processes` ends them all on exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from bridge import envvars

_logger = logging.getLogger(__name__)

_STOP_GRACE_S = 5.0
_POLL_S = 0.05


T = TypeVar("T")


class BenchError(RuntimeError):
    """Something the benchmark needs did not start or answer in time."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (it is closed again on return)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB, from ``/proc/<pid>/status`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds a process and all its descendants have used so far, those that ended
    included: each live one's own time and that of the children it has reaped."""
    parents: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it ended meanwhile: its parent counts it
                parents[int(entry.name)] = _stat(int(entry.name))
    children: dict[int, list[int]] = {}
    for pid, fields in parents.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ticks, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in parents:
            ticks += sum(int(f) for f in parents[pid][11:15])  # utime stime cutime cstime
            todo.extend(children.get(pid, ()))
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def wait_until(
    done: Callable[[], T | None], what: str, timeout_s: float, poll_s: float = 0.01
) -> T:
    """Polls ``done`` until it answers something true, which it returns.

    Raises:
        BenchError: ``what`` did not happen within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not (value := done()):
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(poll_s)
    return value


def open_sockets(pid: int) -> int:
    """Number of sockets a process holds open."""
    count = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


class Child:
    """A child process; with ``json_lines`` its stdout is read as JSON, one object a line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        json_lines: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self._lines: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if json_lines else subprocess.DEVNULL,
            stdout=subprocess.PIPE if json_lines else self._log,
            stderr=self._log,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
        if json_lines:
            assert self.proc.stdout is not None
            self._reader = threading.Thread(
                target=self._read, args=(self.proc.stdout,), name=f"bench-{name}", daemon=True
            )
            self._reader.start()

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(raw))
        self._lines.put(None)

    def read(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line the child printed; raises BenchError on timeout or exit."""
        try:
            item = self._lines.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout_s:.0f} s") from None
        if item is None:
            self.proc.wait(timeout=_STOP_GRACE_S)
            raise BenchError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
        return item

    def send(self, line: str) -> None:
        """Writes one line to the child's stdin (a start or stop signal)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()

    def log_tail(self, chars: int = 800) -> str:
        """The end of what the child wrote to stderr."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:].strip()

    def stop(self, timeout_s: float = _STOP_GRACE_S) -> None:
        """Ends the child and its process group: SIGTERM, then SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        # Children of the child (uvicorn under mlflow server) may outlive it.
        self._signal(signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=timeout_s)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


class Processes:
    """Every child the benchmark started; ``stop_all`` ends them, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        """Where each child's stderr goes (``<name>.log``)."""
        self._children: list[Child] = []
        self._lock = threading.Lock()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        json_lines: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """Starts and tracks a child; its stderr goes to ``<log_dir>/<name>.log``."""
        child = Child(name, argv, self.log_dir / f"{name}.log", json_lines=json_lines, env=env)
        with self._lock:
            self._children.append(child)
        return child

    def stop(self, child: Child) -> None:
        """Ends one child now."""
        child.stop()
        with self._lock:
            if child in self._children:
                self._children.remove(child)

    def stop_all(self) -> None:
        """Ends every child still tracked."""
        with self._lock:
            children, self._children = self._children[::-1], []
        for child in children:
            child.stop()


def load_generator(procs: Processes, name: str, mode: str, *args: str) -> Child:
    """Starts ``python -m bench.load MODE ARGS`` (the client side runs apart).

    Its Writers spool under the benchmark's directory, never in the user's cache.
    """
    env = dict(os.environ)
    env[envvars.TRACKBRIDGE_SPOOL_DIR] = str(procs.log_dir / "spool" / name)
    argv = [sys.executable, "-m", "bench.load", mode, *args]
    return procs.start(name, argv, json_lines=True, env=env)


def read_all(children: Sequence[Child], timeout_s: float) -> list[dict[str, Any]]:
    """One JSON line from each child, all within one deadline."""
    deadline = time.monotonic() + timeout_s
    return [child.read(deadline - time.monotonic()) for child in children]


@dataclass(frozen=True, slots=True)
class ReceiverProcess:
    """A ``trackbridge serve`` child."""

    child: Child
    address: str


def start_receiver(
    procs: Processes,
    name: str,
    data_dir: Path,
    tracking_uri: str,
    *,
    flush_interval_s: float,
    fsync: str = "normal",
    max_backlog_events: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Child:
    """Starts ``trackbridge serve`` on a free loopback port; see :func:`wait_receiver`."""
    argv = [
        sys.executable,
        "-m",
        "server.cli.main",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--tracking-uri",
        tracking_uri,
        "--flush-interval",
        str(flush_interval_s),
        "--fsync",
        fsync,
        "--shutdown-timeout",
        "1",
        "--ready-file",
        str(data_dir / "ready.json"),
    ]
    if max_backlog_events is not None:
        argv += ["--max-backlog", str(max_backlog_events)]
    argv += extra_args
    data_dir.mkdir(parents=True, exist_ok=True)
    return procs.start(name, argv)


def wait_receiver(child: Child, data_dir: Path, timeout_s: float = 90.0) -> ReceiverProcess:
    """Waits until a receiver started by :func:`start_receiver` serves; returns its address."""
    ready = data_dir / "ready.json"
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited: {child.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} did not start within {timeout_s:.0f} s")
        time.sleep(_POLL_S)
    port = json.loads(ready.read_text())["port"]
    return ReceiverProcess(child, f"127.0.0.1:{port}")


def mlflow_store(work_dir: Path) -> Path:
    """The SQLite file behind the benchmark's MLflow server."""
    return (work_dir / "mlflow.db").resolve()


def start_mlflow_server(
    procs: Processes, work_dir: Path, workers: int | None = None
) -> tuple[Child, str]:
    """Starts ``mlflow server`` on a fresh SQLite file, with ``workers`` worker processes
    (unset: MLflow's own default); see :func:`wait_http`."""
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        *(("--workers", str(workers)) if workers else ()),
        "--backend-store-uri",
        f"sqlite:///{mlflow_store(work_dir)}",
        "--default-artifact-root",
        (work_dir / "mlflow-artifacts").resolve().as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return procs.start("mlflow-server", argv, env=env), f"http://127.0.0.1:{port}"


def wait_http(child: Child, uri: str, timeout_s: float = 120.0) -> None:
    """Polls ``<uri>/health`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise BenchError(f"{child.name} exited: {child.log_tail()}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{uri}/health", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"{child.name} did not answer {uri}/health within {timeout_s:.0f} s")
