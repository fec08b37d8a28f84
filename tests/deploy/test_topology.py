"""The deployed topology, natively: PostgreSQL → ``mlflow server`` (basic auth) → two receivers
→ clients that move between receivers mid-run. MLflow's contents are checked exactly."""

from __future__ import annotations

import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, Metric, RunEnd, RunStart, RunStatus
from client_sdk._transport import Transport
from server.flush.run_creation import TAG_PROVISIONAL
from tests.support.deploy import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    acked_by_run,
    create_database,
    launch_auth_mlflow,
    log_contains,
    start_postgres,
    stop_postgres,
)
from tests.support.faults import (
    TcpProxy,
    expected_points,
    metric_points,
    read_result,
    start_stream_client,
)
from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    TAG_PARENT,
    TAG_RUN_KEY,
    child_runs,
    job_runs,
    parent_runs,
)
from tests.support.procs import (
    MlflowServer,
    ReceiverProcess,
    launch_receiver,
    stop_mlflow_server,
    wait_until,
)

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
# A receiver that takes a client over stamps the run only once it has found it in MLflow, which
# on a busy machine takes seconds (the other receiver may still be creating it); the lease must
# leave room for that, or the receiver the client left ends a run that is alive elsewhere.
LEASE_S = 20
MOVED = "its client now talks to another receiver"


@pytest.fixture(scope="module")
def pg_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """PostgreSQL (fresh cluster) and an MLflow server with basic auth using it as its store."""
    pg = start_postgres()
    try:
        create_database(pg, "mlflow")
        server = launch_auth_mlflow(tmp_path_factory.mktemp("mlflow-pg"), pg.uri("mlflow"))
        try:
            yield server
        finally:
            stop_mlflow_server(server)
    finally:
        stop_postgres(pg)


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow credentials in the environment: receivers inherit them, MlflowClient reads them."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)


@pytest.fixture
def mlflow(pg_mlflow: MlflowServer, creds: None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(pg_mlflow.uri)


@pytest.fixture
def receivers(
    tmp_path: Path, pg_mlflow: MlflowServer, creds: None
) -> Iterator[Callable[[], ReceiverProcess]]:
    """Starts receivers on the PostgreSQL-backed MLflow; each must drain and exit 0 at the end."""
    started: list[ReceiverProcess] = []

    def start() -> ReceiverProcess:
        receiver = launch_receiver(
            tmp_path,
            pg_mlflow.uri,
            flush_interval_s=0.5,
            extra_args=("--run-lease", str(LEASE_S)),
        )
        started.append(receiver)
        return receiver

    yield start
    codes = [(r.stop(), r) for r in started]
    assert all(code == 0 for code, _ in codes), [r.log_tail() for c, r in codes if c != 0]


@pytest.fixture
def clients() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _ahead(lead: ReceiverProcess, behind: ReceiverProcess, runs: int) -> bool:
    """Every run's events reached ``lead`` past all that ``behind`` stored of it."""
    a, b = acked_by_run(lead.data_dir), acked_by_run(behind.data_dir)
    return len(a) == runs and all(seq > b.get(key, 0) for key, seq in a.items())


def _queued(receiver: ReceiverProcess) -> int:
    import sqlite3

    conn = sqlite3.connect(f"{(receiver.data_dir / 'queue.db').as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    finally:
        conn.close()


def test_the_mlflow_server_requires_login(pg_mlflow: MlflowServer) -> None:
    url = f"{pg_mlflow.uri}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - loopback
    assert refused.value.code == 401
    refused.value.close()


@pytest.mark.timeout(420)
def test_clients_move_between_two_receivers_and_keep_their_runs(
    receivers: Callable[[], ReceiverProcess],
    clients: list[subprocess.Popen[bytes]],
    mlflow: Any,
    tmp_path: Path,
    job: str,
) -> None:
    a, b = receivers(), receivers()
    proxy_a, proxy_b = TcpProxy(a.port), TcpProxy(b.port)
    try:
        _move_clients_around(a, b, proxy_a, proxy_b, clients, mlflow, tmp_path, job)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- A ---\n{a.log_tail()}\n--- B ---\n{b.log_tail()}"
        ) from None
    finally:
        proxy_a.close()
        proxy_b.close()


def _move_clients_around(
    a: ReceiverProcess,
    b: ReceiverProcess,
    proxy_a: TcpProxy,
    proxy_b: TcpProxy,
    clients: list[subprocess.Popen[bytes]],
    mlflow: Any,
    tmp_path: Path,
    job: str,
) -> None:
    # The clients log until the moves below are done (the stop file), at 50 points/s.
    stop = tmp_path / "stop-logging"
    outs = {f"site-{i}": tmp_path / f"out-{i}.json" for i in range(4)}
    for cid, out in outs.items():
        clients.append(
            start_stream_client(
                f"{proxy_a.address},{proxy_b.address}",
                cid, job, tmp_path / f"spool-{cid}", out, points=1_000_000, rate=50,
                extra=("--until-file", str(stop)),
            )
        )  # fmt: skip

    def started() -> bool:
        return len(set(acked_by_run(a.data_dir)) | set(acked_by_run(b.data_dir))) == 4

    wait_until(started, 90, what="every client's first events at a receiver")
    proxy_a.cut()  # the clients on A move to B
    wait_until(lambda: _ahead(b, a, 4), 90, what="every run going on at receiver B")
    proxy_a.restore()
    proxy_b.cut()  # now every client moves to A
    wait_until(lambda: _ahead(a, b, 4), 90, what="every run going on at receiver A")
    keys = set(acked_by_run(b.data_dir))

    # B no longer hears the clients: once its lease runs out it reads A's stamp on each
    # run and leaves the runs running.
    def b_saw_them_move() -> bool:
        return all(log_contains(b.log_path, f"run {key}: {MOVED}") for key in keys)

    wait_until(b_saw_them_move, 90, interval_s=0.5, what="B noticing the runs moved")
    live = job_runs(mlflow, job)
    assert all(r.info.status == "RUNNING" for r in live), [r.info.status for r in live]
    assert all(p.poll() is None for p in clients), "clients ended before the check"
    stop.touch()
    proxy_b.restore()

    for proc in clients:
        assert proc.wait(timeout=240) == 0, proc.args
    wait_until(lambda: _queued(a) == 0 and _queued(b) == 0, 120, what="both queues drained")

    runs = job_runs(mlflow, job)
    parents, children = parent_runs(runs), child_runs(runs)
    assert len(parents) == 1 and len(children) == 4
    assert sorted(r.data.tags[TAG_CLIENT_ID] for r in children) == sorted(outs)
    # A receiver keeps each run under its client and run key (server/security/ownership.py).
    assert {f"{r.data.tags[TAG_CLIENT_ID]}/{r.data.tags[TAG_RUN_KEY]}" for r in children} == keys
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags[TAG_PARENT] == parents[0].info.run_id
        assert TAG_PROVISIONAL not in run.data.tags
        logged = read_result(outs[run.data.tags[TAG_CLIENT_ID]])["points"]
        assert metric_points(mlflow, run.info.run_id, "x") == expected_points(logged, BASE_TS)
    wait_until(
        lambda: parent_runs(job_runs(mlflow, job))[0].info.status == "FINISHED",
        30,
        what="the job's parent run FINISHED",
    )


def _batch(run_key: str, client_id: str, job: str, first_seq: int, events: list[Event]) -> bytes:
    batch = EventBatch(client_id, job, run_key, first_seq, tuple(events))
    return bytes(batch_to_proto(batch).SerializeToString())


def _points(first: int, count: int) -> list[Event]:
    return [Metric("x", float(i), i, BASE_TS + i) for i in range(first, first + count)]


@pytest.mark.timeout(300)
def test_receivers_racing_to_create_the_same_runs_make_each_run_once(
    receivers: Callable[[], ReceiverProcess], mlflow: Any, job: str
) -> None:
    """The same first batch of each run reaches both receivers at once (as when an ack is lost
    and the client resends to another receiver): both try to create the job's parent run and
    every client run."""
    a, b = receivers(), receivers()
    runs = {f"site-{i}": uuid.uuid4().hex for i in range(6)}
    payloads = [
        _batch(
            key,
            cid,
            job,
            1,
            [
                RunStart(run_name=f"race-{cid}", tags={"site": cid}, start_time_ms=BASE_TS),
                *_points(0, 50),
                RunEnd(RunStatus.FINISHED, BASE_TS + 100),
            ],
        )
        for cid, key in runs.items()
    ]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def publish(receiver: ReceiverProcess) -> None:
        transport = Transport(receiver.address, 30.0)
        try:
            barrier.wait(timeout=30)
            for payload in payloads:
                transport.publish(payload)
        except BaseException as exc:
            errors.append(exc)
        finally:
            transport.close()

    threads = [threading.Thread(target=publish, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors

    def settled() -> list[Any] | None:
        children = child_runs(job_runs(mlflow, job))
        done = len(children) >= 6 and all(r.info.status == "FINISHED" for r in children)
        return children if done and _queued(a) == 0 and _queued(b) == 0 else None

    children = wait_until(settled, 120, interval_s=0.5, what="six finished runs, queues empty")
    assert len(parent_runs(job_runs(mlflow, job))) == 1
    assert len(children) == 6
    for run in children:
        cid = run.data.tags[TAG_CLIENT_ID]
        assert run.data.tags[TAG_RUN_KEY] == runs[cid]
        assert run.info.run_name == f"race-{cid}"
        assert run.data.tags["site"] == cid
        assert TAG_PROVISIONAL not in run.data.tags
        assert metric_points(mlflow, run.info.run_id, "x") == expected_points(50, BASE_TS)


@pytest.mark.timeout(300)
def test_a_receiver_without_the_runs_start_waits_for_the_run_it_belongs_to(
    receivers: Callable[[], ReceiverProcess], mlflow: Any, job: str
) -> None:
    """B gets the later events of a run whose start (with its own experiment) A holds: B must
    not make a run of its own in the job's experiment, but find A's run wherever it is."""
    a, b = receivers(), receivers()
    key, cid, experiment = uuid.uuid4().hex, "moved-site", f"{job}-own"
    start = RunStart(experiment=experiment, run_name="moved", tags={"site": cid})
    first = _batch(key, cid, job, 1, [start, *_points(0, 30)])
    rest = _batch(key, cid, job, 32, [*_points(30, 30), RunEnd(RunStatus.FINISHED, BASE_TS)])

    later = Transport(b.address, 30.0)
    try:
        assert later.publish(rest).acked_seq == 62
    finally:
        later.close()
    wait_until(
        lambda: log_contains(b.log_path, f"run {cid}/{key}: its start went to another receiver"),
        60,
        what="B waiting for the run's start",
    )
    assert mlflow.get_experiment_by_name(experiment) is None
    assert child_runs(job_runs(mlflow, job)) == []

    opener = Transport(a.address, 30.0)
    try:
        assert opener.publish(first).acked_seq == 31
    finally:
        opener.close()

    # The job's parent run sits in each experiment its runs go to (the MLflow UI shows the tree).
    def finished() -> list[Any] | None:
        runs = child_runs(job_runs(mlflow, experiment))
        if len(runs) == 1 and runs[0].info.status == "FINISHED" and _queued(b) == 0:
            return runs
        return None

    try:
        (run,) = wait_until(finished, 90, interval_s=0.5, what="the run FINISHED in its experiment")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- A ---\n{a.log_tail()}\n--- B ---\n{b.log_tail()}"
        ) from None
    assert child_runs(job_runs(mlflow, job)) == []  # nothing was made in the job's experiment
    assert run.data.tags[TAG_RUN_KEY] == key and run.info.run_name == "moved"
    assert run.data.tags[TAG_PARENT] == parent_runs(job_runs(mlflow, experiment))[0].info.run_id
    assert metric_points(mlflow, run.info.run_id, "x") == expected_points(60, BASE_TS)


def test_receiver_list_targets_reach_either_receiver() -> None:
    """A client given two addresses uses gRPC's pick_first over both (see client_sdk/_targets)."""
    from client_sdk._targets import SERVICE_CONFIG, channel_target

    target, options = channel_target("127.0.0.1:7001, localhost:7002")
    assert target.startswith("ipv4:127.0.0.1:7001,")
    assert "127.0.0.1:7002" in target
    assert ("grpc.service_config", SERVICE_CONFIG) in options
    assert channel_target("receivers.example:50551")[0] == "receivers.example:50551"
    with pytest.raises(ValueError, match="host:port"):
        channel_target("127.0.0.1:7001,nope")


def test_health_command_reports_a_serving_receiver_and_fails_on_none(
    receivers: Callable[[], ReceiverProcess],
) -> None:
    from tests.support.procs import TRACKBRIDGE_EXE, free_port

    receiver = receivers()
    ok = subprocess.run(
        [str(TRACKBRIDGE_EXE), "health", "--address", receiver.address],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok
    down = subprocess.run(
        [str(TRACKBRIDGE_EXE), "health", "--address", f"127.0.0.1:{free_port()}", "--timeout", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout, down
