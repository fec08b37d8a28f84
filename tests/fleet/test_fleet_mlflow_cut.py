"""Fleet mode with a flusher cut off from MLflow: it gives the batches it took back to the fleet
(after two ack waits of failing calls) instead of holding their lanes, so a second flusher that
reaches MLflow writes every point while the first is still cut off; once the first reaches
MLflow again it writes its copies too, and MLflow still holds every point once. A real 1-node
NATS server, real gateway, flusher and client processes, a TCP proxy the first flusher reaches
MLflow through, the real MLflow server."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults import (
    TcpProxy,
    expected_points,
    metric_points,
    queue_drained,
    start_stream_client,
)
from tests.support.fleet import launch_flusher, points_in_mlflow, wait_delivered_and_finished
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.nats import NatsCluster
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
CLIENTS = 4
POINTS = 1500
RATE = 50.0  # points per second per client: about 30 s of streaming


@pytest.fixture
def mlflow_cut(mlflow_server: MlflowServer) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the MLflow server (``cut()`` refuses every connection)."""
    proxy = TcpProxy(upstream_port=int(urllib.parse.urlsplit(mlflow_server.uri).port or 0))
    yield proxy
    proxy.close()


def _exact(client: Any, job: str, cids: list[str]) -> None:
    runs = child_runs(job_runs(client, job))
    assert sorted(r.data.tags[TAG_CLIENT_ID] for r in runs) == sorted(cids)
    for run in runs:  # exactly: none lost, none doubled
        assert run.info.status == "FINISHED", run.data.tags[TAG_CLIENT_ID]
        assert metric_points(client, run.info.run_id, "x") == expected_points(POINTS, BASE_TS), (
            run.data.tags[TAG_CLIENT_ID]
        )


@pytest.mark.timeout(480)
def test_a_flusher_cut_off_from_mlflow_gives_its_lanes_to_one_that_is_not(
    one_nats_node: NatsCluster,
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    mlflow_cut: TcpProxy,
    job: str,
    tmp_path: Path,
) -> None:
    url = one_nats_node.queue_url(partitions=4, ack_wait_s=5)
    processes: list[ReceiverProcess] = []
    clients: list[Any] = []
    try:
        gateway = launch_receiver(
            tmp_path, mlflow_server.uri, extra_args=("--queue", url, "--no-flush")
        )
        cut_off = launch_flusher(tmp_path, f"http://127.0.0.1:{mlflow_cut.port}", url)
        processes += [gateway, cut_off]
        outs = {f"site-{i}": tmp_path / f"out-{i}.json" for i in range(CLIENTS)}
        for cid, out in outs.items():
            spool = tmp_path / f"spool-{cid}"
            clients.append(
                start_stream_client(gateway.address, cid, job, spool, out, points=POINTS, rate=RATE)
            )
        wait_until(
            lambda: points_in_mlflow(mlflow_client, job) >= 200,
            120,
            interval_s=0.5,
            what="the first flusher writing",
        )
        mlflow_cut.cut()  # the only flusher so far holds whatever lanes have batches
        reaching = launch_flusher(tmp_path, mlflow_server.uri, url)
        processes.append(reaching)

        # Every point arrives while the first flusher still cannot reach MLflow.
        wait_delivered_and_finished(clients, outs, mlflow_client, job, POINTS)
        assert not queue_drained(cut_off.data_dir), "the cut-off flusher was to hold copies"
        _exact(mlflow_client, job, list(outs))

        mlflow_cut.restore()  # its copies go to MLflow too: the same points, kept once
        wait_until(
            lambda: queue_drained(cut_off.data_dir),
            120,
            interval_s=0.5,
            what="the first flusher writing what it held",
        )
        _exact(mlflow_client, job, list(outs))
        for process in processes:
            assert process.stop() == 0, process.log_tail()
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        for process in processes:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.wait(timeout=10)
