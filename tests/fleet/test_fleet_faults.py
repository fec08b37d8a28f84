"""Fleet mode under faults, on a real 3-node NATS cluster of the test's own: 8 clients stream
through 2 receivers while a NATS node, then a receiver, then a flusher are killed with
SIGKILL and clients are cut off from their receiver; MLflow ends up holding every point
exactly once, every run FINISHED."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FLEET_OPTIONS
from tests.support.faults import (
    TcpProxy,
    expected_points,
    metric_points,
    start_stream_client,
)
from tests.support.fleet import (
    launch_flusher,
    live_clients,
    points_in_mlflow,
    wait_delivered_and_finished,
)
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.nats import NatsCluster
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
CLIENTS = 8
POINTS = 2000
RATE = 50.0  # points per second per client: about 40 s of streaming
STEP = 500  # points that must reach MLflow between two faults


@pytest.fixture
def proxies() -> Iterator[list[TcpProxy]]:
    made = [TcpProxy(upstream_port=1) for _ in range(4)]
    yield made
    for proxy in made:
        proxy.close()


def _kill(process: ReceiverProcess) -> None:
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(timeout=20)
    process.returncode = -9


@pytest.mark.timeout(600)
def test_8_clients_2_receivers_nats_node_receiver_and_flusher_killed_nothing_lost_or_doubled(
    own_nats_cluster: NatsCluster,
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    proxies: list[TcpProxy],
    job: str,
    tmp_path: Path,
) -> None:
    url = own_nats_cluster.queue_url(**FLEET_OPTIONS)
    fleet = ("--queue", url)
    processes: list[ReceiverProcess] = []
    clients: list[Any] = []
    try:
        r1 = launch_receiver(tmp_path, mlflow_server.uri, extra_args=fleet)
        r2 = launch_receiver(tmp_path, mlflow_server.uri, extra_args=fleet)
        flusher = launch_flusher(tmp_path, mlflow_server.uri, url)
        processes += [r1, r2, flusher]
        # Clients 0-3 dial "a,b", 4-7 "c,d"; a and d lead to r1, b and c to r2. b and d refuse
        # at first, so clients 0-3 start on r1 and 4-7 on r2, each with a way to the other.
        a, b, c, d = proxies
        for proxy, receiver in ((a, r1), (b, r2), (c, r2), (d, r1)):
            proxy.set_upstream(receiver.port)
        b.cut()
        d.cut()
        outs = {f"site-{i}": tmp_path / f"out-{i}.json" for i in range(CLIENTS)}
        for i, (cid, out) in enumerate(outs.items()):
            dial = f"{a.address},{b.address}" if i < 4 else f"{c.address},{d.address}"
            clients.append(
                start_stream_client(
                    dial, cid, job, tmp_path / f"spool-{cid}", out, points=POINTS, rate=RATE
                )
            )

        def progress(what: str) -> None:
            before = points_in_mlflow(mlflow_client, job)
            wait_until(
                lambda: (
                    points_in_mlflow(mlflow_client, job) >= min(before + STEP, CLIENTS * POINTS)
                ),
                180,
                interval_s=1.0,
                what=f"{STEP} more points in MLflow {what}",
            )

        # Either receiver's page shows all 8 clients, though each has 4 of them.
        for receiver in (r1, r2):
            wait_until(
                lambda r=receiver: live_clients(r, job) == set(outs),
                90,
                what=f"all clients on the live page of {receiver.address}",
            )
        progress("at first")

        own_nats_cluster.kill(0)  # kill -9 one NATS node: the other two keep a quorum
        progress("with a NATS node dead")

        b.restore()
        a.cut()  # clients 0-3 are cut off from r1: they fail over to r2
        wait_until(lambda: not a.has_connections(), 30, what="the cut connections gone")
        progress("after clients 0-3 failed over to r2")

        d.restore()
        a.restore()
        _kill(r2)  # kill -9 the receiver all 8 clients now talk to (and its flusher)
        progress("with r2 dead")

        _kill(flusher)  # kill -9 the flusher alone
        progress("with the lone flusher dead")

        wait_delivered_and_finished(clients, outs, mlflow_client, job, POINTS)
        runs = child_runs(job_runs(mlflow_client, job))
        assert sorted(r.data.tags[TAG_CLIENT_ID] for r in runs) == sorted(outs)
        for run in runs:  # exactly: none lost, none doubled
            assert metric_points(mlflow_client, run.info.run_id, "x") == expected_points(
                POINTS, BASE_TS
            ), run.data.tags[TAG_CLIENT_ID]
        assert r1.stop() == 0, r1.log_tail()
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for process in processes:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.wait(timeout=10)
