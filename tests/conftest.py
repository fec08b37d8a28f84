"""Shared fixtures: one real ``mlflow server`` per session, real receiver processes per test.

Everything runs for real on 127.0.0.1: the MLflow server (sqlite backend in a temp dir), the
``trackbridge serve`` daemon on port 0, and client processes. The helpers behind them live in
``tests/support``.
"""

from __future__ import annotations

import platform
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import scheduling
from tests.support.nats import NatsCluster
from tests.support.procs import (
    MlflowServer,
    ReceiverProcess,
    launch_mlflow_server,
    launch_receiver,
    stop_mlflow_server,
)

PROCESS_FIXTURES = frozenset(
    {"mlflow_server", "nats_cluster", "own_nats_cluster", "one_nats_node", "start_receiver"}
)
"""Fixtures that start real processes: a test using one (directly or through another fixture)
is marked ``slow``. Tests that start processes themselves say ``pytest.mark.slow``."""


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    """Marks every test that uses a process-starting fixture ``slow`` (before ``-m`` selects);
    on an xdist worker, once pytest has ordered the items for its fixtures, puts the long
    poles' tests first (tests/support/scheduling.py; a stable sort: work units stay whole)."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    yield
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: scheduling.rank(item.nodeid))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` (.ci/test): whole files, the deployment matrix split by deployment,
    long poles first (tests/support/scheduling.py)."""
    if config.getoption("dist") == "loadfile":
        return scheduling.scheduler(config, log)
    return None


def _no_process(*_args: object, **_kwargs: object) -> None:
    raise AssertionError(
        "a test not marked slow starts a process: mark it @pytest.mark.slow (the fast tier,"
        " pytest -m 'not slow', runs in-process only)"
    )


def _in_process_only(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("slow") is not None:
        yield
        return
    # Python's platform module runs `uname -p` once per process and caches it; MLflow asks for
    # it on first use (its telemetry). Asked here first, so that a fast test that happens to be
    # the first to load that part of MLflow (a file run alone) is not taken for one starting a
    # process.
    platform.platform()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "__init__", _no_process)
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """The fast tier starts no process: a test not marked slow that tries (in its fixtures or
    its body) fails, saying so. Teardown is left alone: a module or session fixture a slow test
    set up (a server, a PostgreSQL cluster) ends in the teardown of the last test of its scope,
    which is a fast one where both tiers run in one session (``pytest file.py``); refused, its
    stop leaked the cluster."""
    yield from _in_process_only(item)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """As ``pytest_runtest_setup``, for the test's body."""
    yield from _in_process_only(item)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real ``mlflow server`` (sqlite backend, 1 worker) shared by the whole session."""
    server = launch_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_mlflow_server(server)


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One real 3-node NATS JetStream cluster on loopback, shared by the session's tests that
    run receivers in fleet mode (tests that kill nodes start their own)."""
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), n=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-node NATS cluster of this test's own (for tests that kill its nodes)."""
    cluster = NatsCluster(tmp_path / "nats", n=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def one_nats_node(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 1-node NATS server of this test's own (its stream made with this test's options)."""
    cluster = NatsCluster(tmp_path / "nats", n=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


# Four lanes and a 5 s ack wait keep a 3-node cluster light on a small machine, and a dead
# flusher's batches come back within a test's patience.
FLEET_OPTIONS = {"partitions": 4, "ack_wait_s": 5}


@pytest.fixture
def queue_backend(request: pytest.FixtureRequest) -> str:
    """The receivers' queue: ``sqlite`` (the default), or ``nats`` when a test is parametrized
    with ``@pytest.mark.parametrize("queue_backend", ["sqlite", "nats"], indirect=True)``:
    then every receiver ``start_receiver`` starts is a fleet receiver on ``nats_cluster``."""
    backend = str(getattr(request, "param", "sqlite"))
    assert backend in ("sqlite", "nats"), backend
    return backend


@pytest.fixture
def start_receiver(
    tmp_path: Path, mlflow_server: MlflowServer, queue_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ReceiverProcess]]:
    """Factory: ``start_receiver(tracking_uri=..., data_dir=..., flush_interval_s=...)``.

    Defaults to the session's MLflow server. At teardown every receiver still running gets
    SIGTERM and must exit with its ``expected_exit_code`` (0: drained) within a bound.
    """
    started: list[ReceiverProcess] = []
    fleet: tuple[str, ...] = ()
    if queue_backend == "nats":
        cluster: NatsCluster = request.getfixturevalue("nats_cluster")
        fleet = ("--queue", cluster.queue_url(**FLEET_OPTIONS))

    def start(tracking_uri: str | None = None, **kwargs: Any) -> ReceiverProcess:
        kwargs["extra_args"] = (*kwargs.get("extra_args", ()), *fleet)
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


@pytest.fixture
def mlflow_client(mlflow_server: MlflowServer) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_server.uri)
