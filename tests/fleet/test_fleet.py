"""Fleet mode on a real 3-node NATS JetStream cluster: receivers as gateways, flushers alone,
one run registry, the whole fleet on every receiver's live page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from tests.conftest import FLEET_OPTIONS
from tests.support.fleet import launch_flusher, live_clients
from tests.support.isolation import expected, log_points, wait_finished, writer_for
from tests.support.live import publish_raw
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.nats import NatsCluster
from tests.support.procs import MlflowServer, ReceiverProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("queue_backend", ["nats"], indirect=True)]

POINTS = 600


def _get_run(address: str, client_id: str, run_key: str) -> Any:
    with grpc.insecure_channel(address) as channel:
        stub: Any = ingest_pb2_grpc.IngestStub(channel)
        return stub.GetRun(ingest_pb2.RunQuery(client_id=client_id, run_key=run_key), timeout=10)


@pytest.mark.timeout(240)
def test_two_receivers_one_queue_every_point_once_and_the_whole_fleet_on_each_page(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    receivers = [start_receiver(), start_receiver()]
    clients = [f"site-{i}" for i in range(4)]
    writers = [writer_for(receivers[i % 2], c, job, tmp_path) for i, c in enumerate(clients)]
    keys = []
    for writer in writers:
        keys.append(writer.start_run(writer.config.client_id).run_key)
        writer.log_param("lr", "0.1")
        log_points(writer, 0, POINTS)
    # Both pages show all four clients, though each receiver has only two of them.
    for receiver in receivers:
        wait_until(
            lambda r=receiver: live_clients(r, job) == set(clients),
            60,
            what=f"every client on the live page of {receiver.address}",
        )
    for writer in writers:
        writer.end_run("FINISHED")
        assert writer.flush(timeout_s=120)
        assert writer.close(timeout_s=10) == 0
    for client_id, key in zip(clients, keys, strict=True):
        run = wait_finished(mlflow_client, key, POINTS)
        got = sorted(
            ("x", m.value, m.step, m.timestamp)
            for m in mlflow_client.get_metric_history(run.info.run_id, "x")
        )
        assert got == expected(0, POINTS), client_id
        assert run.data.params == {"lr": "0.1"}
        assert run.data.tags[TAG_CLIENT_ID] == client_id
        # The other receiver knows the run too: how far it got and its MLflow run (registry).
        other = receivers[(clients.index(client_id) + 1) % 2]
        ack = _get_run(other.address, client_id, key)
        assert ack.acked_seq >= POINTS + 2 and ack.mlflow_run_id == run.info.run_id
    runs = child_runs(job_runs(mlflow_client, job))
    assert sorted(r.data.tags[TAG_CLIENT_ID] for r in runs) == clients


@pytest.mark.timeout(180)
def test_a_run_stays_in_its_job_whichever_receiver_a_batch_goes_to(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str
) -> None:
    first, second = start_receiver(), start_receiver()
    run_key = f"run-{job[-8:]}"  # job ends in a fresh uuid part

    def batch(job_name: str, seq: int) -> events_pb2.EventBatch:
        b = events_pb2.EventBatch(client_id="site-1", job=job_name, run_key=run_key, first_seq=seq)
        if seq == 1:
            b.events.add().run_start.run_name = "a"
        else:
            b.events.add().param.key = f"p{seq}"
            b.events[0].param.value = "v"
            b.events.add().run_end.status = events_pb2.RUN_STATUS_FINISHED
        return b

    assert publish_raw(first.address, batch(job, 1)).acked_seq == 1
    for receiver in (second, first):
        with pytest.raises(grpc.RpcError) as refused:
            publish_raw(receiver.address, batch(f"{job}-other", 2))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"belongs to job {job!r}" in str(refused.value.details())
    assert publish_raw(second.address, batch(job, 2)).acked_seq == 3  # its owner goes on
    run = wait_finished(mlflow_client, run_key, 0)
    assert run.data.params == {"p2": "v"}


@pytest.mark.timeout(240)
def test_gateways_that_do_not_flush_and_a_flusher_alone(
    start_receiver: Callable[..., ReceiverProcess],
    nats_cluster: NatsCluster,
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    gateways = [start_receiver(extra_args=("--no-flush",)) for _ in range(2)]
    flusher = launch_flusher(tmp_path, mlflow_server.uri, nats_cluster.queue_url(**FLEET_OPTIONS))
    try:
        writers = [writer_for(gateways[i], f"site-{i}", job, tmp_path) for i in range(2)]
        keys = [w.start_run(w.config.client_id).run_key for w in writers]
        for writer in writers:
            log_points(writer, 0, POINTS)
            writer.end_run("FINISHED")
            assert writer.flush(timeout_s=120)
            assert writer.close(timeout_s=10) == 0
        for key in keys:
            run = wait_finished(mlflow_client, key, POINTS)
            got = sorted(
                ("x", m.value, m.step, m.timestamp)
                for m in mlflow_client.get_metric_history(run.info.run_id, "x")
            )
            assert got == expected(0, POINTS)
        assert "trackbridge.flush" not in flusher.log_tail()  # no traceback
    finally:
        assert flusher.stop() == 0, flusher.log_tail()
