"""Real processes for the tests: an ``mlflow server``, ``trackbridge serve`` receivers, and
bounded waiting (``wait_until``), never a fixed sleep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

BIN_DIR = Path(sys.executable).parent


MLFLOW_EXE = BIN_DIR / "mlflow"


TRACKBRIDGE_EXE = BIN_DIR / "trackbridge"


REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS_DIR = Path(__file__).resolve().parent / "clients"
"""Client programs the tests start as processes of their own."""


MLFLOW_START_TIMEOUT_S = 180.0


RECEIVER_START_TIMEOUT_S = 180.0


RECEIVER_STOP_TIMEOUT_S = 60.0


T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout_s: float,
    interval_s: float = 0.1,
    *,
    what: str = "condition",
) -> T:
    """Polls ``predicate`` until it returns something truthy and returns that value.

    Raises AssertionError (naming ``what`` and the last value seen) after ``timeout_s``.
    Exceptions from the predicate propagate: a broken check must not look like a slow one.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}; last={value!r}"
            )
        time.sleep(interval_s)


def free_port() -> int:
    """A port nothing listens on right now (bound to 127.0.0.1:0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-limit:]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "TRACKBRIDGE_LISTEN",
        "TRACKBRIDGE_DATA_DIR",
    ):
        env.pop(name, None)
    env.update(extra)
    return env


@dataclass
class MlflowServer:
    """A running ``mlflow server`` process."""

    uri: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local http
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


def _stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group led by ``proc`` (mlflow server forks uvicorn), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # The group may outlive its leader (an orphaned uvicorn worker).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def launch_mlflow_server(
    root: Path,
    port: int | None = None,
    *,
    backend_uri: str | None = None,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> MlflowServer:
    """Starts a real ``mlflow server`` as its docs do (sqlite store in ``root``, MLflow's own
    artifact defaults: it serves them from ``root/mlartifacts``, its working directory, and
    runs and logged models get ``mlflow-artifacts:/`` locations), 1 worker; waits for health.
    ``backend_uri`` replaces the sqlite store, ``extra_args`` add options (artifact settings),
    ``env`` adds to its environment (S3 credentials)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    log_path = root / f"mlflow-server-{port}.log"
    cmd = [
        str(MLFLOW_EXE),
        "server",
        "--backend-store-uri",
        backend_uri or f"sqlite:///{root / 'mlflow.db'}",
        *extra_args,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **(env or {}))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", port, proc, log_path)
    try:
        health = f"{server.uri}/health"
        deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
        while not _healthy(health):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode}:\n{server.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"mlflow server not healthy after {MLFLOW_START_TIMEOUT_S} s:\n"
                    f"{server.log_tail()}"
                )
            time.sleep(0.2)
    except BaseException:
        stop_mlflow_server(server)
        raise
    return server


def stop_mlflow_server(server: MlflowServer) -> None:
    """Stops an MLflow server and every process it forked (bounded)."""
    _stop_process_group(server.proc, timeout_s=20)


@dataclass
class ReceiverProcess:
    """A running ``trackbridge serve`` process."""

    address: str
    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    tracking_uri: str
    expected_exit_code: int = 0
    """What teardown expects if the test leaves the receiver running."""
    returncode: int | None = field(default=None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def stop(self, timeout_s: float = RECEIVER_STOP_TIMEOUT_S) -> int:
        """SIGTERM, then wait (bounded) for the drain and exit; returns the exit code."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.returncode = self.proc.returncode
            raise AssertionError(
                f"receiver did not exit within {timeout_s} s of SIGTERM\n{self.log_tail()}"
            ) from None
        return self.returncode


def launch_receiver(
    root: Path,
    tracking_uri: str,
    *,
    data_dir: Path | None = None,
    flush_interval_s: float = 0.5,
    shutdown_timeout_s: float | None = None,
    expected_exit_code: int = 0,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ReceiverProcess:
    """Starts ``trackbridge serve`` on 127.0.0.1:0 and waits (bounded) for its ready file;
    ``env`` adds to its environment, ``cwd`` is its working directory (default: this one's)."""
    name = uuid.uuid4().hex[:8]
    data_dir = data_dir if data_dir is not None else root / f"receiver-{name}"
    ready = root / f"ready-{name}.json"
    log_path = root / f"receiver-{name}.log"
    cmd = [
        str(TRACKBRIDGE_EXE),
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str(data_dir),
        "--tracking-uri",
        tracking_uri,
        "--flush-interval",
        str(flush_interval_s),
        "--ready-file",
        str(ready),
    ]
    if shutdown_timeout_s is not None:
        cmd += ["--shutdown-timeout", str(shutdown_timeout_s)]
    cmd += extra_args
    return start_ready(
        cmd, ready, log_path, data_dir, tracking_uri, expected_exit_code, env=env, cwd=cwd
    )


def start_ready(
    cmd: list[str],
    ready: Path,
    log_path: Path,
    data_dir: Path,
    tracking_uri: str,
    expected_exit_code: int = 0,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ReceiverProcess:
    """Starts a ``trackbridge`` command that writes ``ready`` once it serves, and waits
    (bounded) for that file; a command that does not get there is killed and its log shown."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(**(env or {})), cwd=cwd
        )

    def ready_or_dead() -> bool:
        return ready.exists() or proc.poll() is not None

    try:
        wait_until(ready_or_dead, RECEIVER_START_TIMEOUT_S, what="the receiver's ready file")
    except AssertionError:
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(f"receiver not ready:\n{_tail(log_path)}") from None
    if proc.poll() is not None:
        raise AssertionError(f"receiver exited with {proc.returncode}:\n{_tail(log_path)}")
    port = int(json.loads(ready.read_text())["port"])
    assert port > 0
    return ReceiverProcess(
        address=f"127.0.0.1:{port}",
        port=port,
        proc=proc,
        data_dir=data_dir,
        log_path=log_path,
        tracking_uri=tracking_uri,
        expected_exit_code=expected_exit_code,
    )
