"""Shared fixtures: one real ``mlflow server`` per session, real receiver processes per test.

Everything runs for real on 127.0.0.1: the MLflow server (sqlite backend in a temp dir), the
``trackbridge serve`` daemon on port 0, and client processes. Waiting is always a bounded poll
(``wait_until``), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

BIN_DIR = Path(sys.executable).parent
MLFLOW_EXE = BIN_DIR / "mlflow"
TRACKBRIDGE_EXE = BIN_DIR / "trackbridge"
REPO_ROOT = Path(__file__).resolve().parent.parent

MLFLOW_START_TIMEOUT_S = 60.0
RECEIVER_START_TIMEOUT_S = 60.0
RECEIVER_STOP_TIMEOUT_S = 60.0

# Tags the receiver and MLflow add themselves; "user tags" are everything else.
SYSTEM_TAG_PREFIXES = ("trackbridge.", "mlflow.")
TAG_ROLE = "trackbridge.role"
TAG_JOB = "trackbridge.job"
TAG_CLIENT_ID = "trackbridge.client_id"
TAG_RUN_KEY = "trackbridge.run_key"
TAG_PARENT = "mlflow.parentRunId"

T = TypeVar("T")


# -- polling ---------------------------------------------------------------------------------


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


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "TRACKBRIDGE_LISTEN", "TRACKBRIDGE_DATA_DIR"):
        env.pop(name, None)
    env.update(extra)
    return env


# -- the MLflow server -------------------------------------------------------------------------


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


def launch_mlflow_server(root: Path, port: int | None = None) -> MlflowServer:
    """Starts a real ``mlflow server`` (sqlite store in ``root``, 1 worker), waits for health."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    log_path = root / f"mlflow-server-{port}.log"
    cmd = [
        str(MLFLOW_EXE),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = _child_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real ``mlflow server`` (sqlite backend, 1 worker) shared by the whole session."""
    server = launch_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_mlflow_server(server)


# -- receivers ---------------------------------------------------------------------------------


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
) -> ReceiverProcess:
    """Starts ``trackbridge serve`` on 127.0.0.1:0 and waits (bounded) for its ready file."""
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
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())

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


@pytest.fixture
def start_receiver(
    tmp_path: Path, mlflow_server: MlflowServer
) -> Iterator[Callable[..., ReceiverProcess]]:
    """Factory: ``start_receiver(tracking_uri=..., data_dir=..., flush_interval_s=...)``.

    Defaults to the session's MLflow server. At teardown every receiver still running gets
    SIGTERM and must exit with its ``expected_exit_code`` (0: drained) within a bound.
    """
    started: list[ReceiverProcess] = []

    def start(tracking_uri: str | None = None, **kwargs: Any) -> ReceiverProcess:
        receiver = launch_receiver(
            tmp_path, tracking_uri if tracking_uri is not None else mlflow_server.uri, **kwargs
        )
        started.append(receiver)
        return receiver

    yield start
    problems = []
    for receiver in started:
        if receiver.returncode is not None:
            continue  # the test stopped it and checked the exit code itself
        try:
            code = receiver.stop()
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        if code != receiver.expected_exit_code:
            problems.append(
                f"receiver exited with {code}, expected {receiver.expected_exit_code}:\n"
                f"{receiver.log_tail()}"
            )
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def receiver(start_receiver: Callable[..., ReceiverProcess]) -> ReceiverProcess:
    """A receiver against the session's MLflow server, flushing every 0.5 s."""
    return start_receiver()


# -- clients -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_client_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps every client's on-disk state (spool, caches) inside this test's tmp_path."""
    monkeypatch.setenv("TRACKBRIDGE_SPOOL_DIR", str(tmp_path / "client-spool"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for name in ("TRACKBRIDGE_RECEIVER", "TRACKBRIDGE_CLIENT_ID", "TRACKBRIDGE_JOB"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def job(request: pytest.FixtureRequest) -> str:
    """A job name (MLflow experiment) no other test uses."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_writer() -> Iterator[Callable[..., Any]]:
    """Factory for in-process Writers; each is closed (bounded) at teardown."""
    from client_sdk.writer import Writer

    writers: list[Writer] = []

    def make(receiver: str, client_id: str, job: str) -> Writer:
        writer = Writer(receiver=receiver, client_id=client_id, job=job)
        writers.append(writer)
        return writer

    yield make
    for writer in writers:
        writer.close(timeout_s=5)


# -- reading MLflow back -----------------------------------------------------------------------


@pytest.fixture
def mlflow_client(mlflow_server: MlflowServer) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_server.uri)


def job_runs(client: Any, job: str) -> list[Any]:
    """Every run in the job's experiment (empty while the experiment does not exist)."""
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def parent_runs(runs: list[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) == "parent"]


def child_runs(runs: list[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) != "parent"]


def children_by_client(client: Any, job: str) -> dict[str, Any]:
    """The job's client runs keyed by client id (later duplicates would be lost: count first)."""
    return {r.data.tags.get(TAG_CLIENT_ID): r for r in child_runs(job_runs(client, job))}


def wait_for_children(
    client: Any, job: str, count: int, timeout_s: float, *, terminal: bool = True
) -> list[Any]:
    """Polls until the job has ``count`` client runs (all ended, if ``terminal``)."""

    def ready() -> list[Any] | None:
        children = child_runs(job_runs(client, job))
        if len(children) < count:
            return None
        if terminal and any(r.info.status == "RUNNING" for r in children):
            return None
        return children

    return wait_until(
        ready,
        timeout_s,
        interval_s=0.2,
        what=f"{count} {'ended ' if terminal else ''}client runs of job {job!r} in MLflow",
    )


def metric_points(client: Any, run_id: str, key: str) -> list[tuple[str, float, int, int]]:
    """A metric's full history as sorted ``(key, value, step, timestamp)`` tuples."""
    return sorted(
        (m.key, m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, key)
    )


def all_points(client: Any, run: Any) -> dict[str, list[tuple[str, float, int, int]]]:
    """Every metric history of a run, by key."""
    return {key: metric_points(client, run.info.run_id, key) for key in run.data.metrics}


def user_tags(run: Any) -> dict[str, str]:
    return {k: v for k, v in run.data.tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)}


def group_points(
    points: list[tuple[str, float, int, int]],
) -> dict[str, list[tuple[str, float, int, int]]]:
    """Expected points grouped by key and sorted, for comparison with ``all_points``."""
    grouped: dict[str, list[tuple[str, float, int, int]]] = {}
    for point in points:
        grouped.setdefault(point[0], []).append(point)
    return {key: sorted(values) for key, values in grouped.items()}


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)
