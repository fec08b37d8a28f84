"""Fleet mode with a full stream: a receiver that only accepts (``serve --no-flush``) in front of
a small JetStream stream (``?max_bytes=``) and no flusher. The client logs more than the stream
holds; JetStream refuses the rest, the client is told RESOURCE_EXHAUSTED and keeps every batch
not acked in its spool; once ``trackbridge flush`` drains the stream every point is in MLflow
exactly once. A real 1-node NATS server, real receiver and flusher processes, a real writer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import events_pb2
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.faults import expected_points, metric_points, spooled_events
from tests.support.fleet import launch_flusher
from tests.support.live import publish_raw
from tests.support.mlflow_reads import child_runs, job_runs
from tests.support.nats import NatsCluster
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
STREAM_BYTES = 1 << 20  # the smallest stream fleet mode takes: one message of the most
POINTS = 40_000  # in batches of 500: about twice what the stream holds


def _refused_code(address: str, job: str) -> grpc.StatusCode | None:
    """What the receiver answers a new, tiny batch of another client in another job now (None:
    it took it; a tiny one fits where a client's batch may not, so a refusal means full)."""
    batch = events_pb2.EventBatch(
        client_id="probe", job=f"{job}-probe", run_key=f"probe-{uuid.uuid4().hex}", first_seq=1
    )
    batch.events.add().run_start.run_name = "probe"
    try:
        publish_raw(address, batch)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return None


@pytest.mark.timeout(420)
def test_a_full_stream_refuses_the_client_which_keeps_its_spool_and_loses_nothing(
    one_nats_node: NatsCluster,
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    url = one_nats_node.queue_url(partitions=4, ack_wait_s=5, max_bytes=STREAM_BYTES)
    processes: list[ReceiverProcess] = []
    spool = tmp_path / "spool-full"
    writer = None
    try:
        receiver = launch_receiver(
            tmp_path, mlflow_server.uri, extra_args=("--queue", url, "--no-flush")
        )
        processes.append(receiver)
        config = WriterConfig.resolve(receiver.address, "site-full", job, str(spool))
        writer = Writer(config=config.overridden(max_batch_events=500))
        writer.start_run()
        for i in range(POINTS):
            writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
        sender = writer._sender
        logged = POINTS + 1  # and the run start

        # The stream fills: whatever is not acked is in the client's spool, none of it lost.
        wait_until(
            lambda: _refused_code(receiver.address, job) is not None,
            120,
            what="the receiver refusing batches",
        )
        assert _refused_code(receiver.address, job) == grpc.StatusCode.RESOURCE_EXHAUSTED
        wait_until(
            lambda: sender.stats.events_acked + spooled_events(spool) == logged,
            120,
            what="every event acked or spooled",
        )
        acked = sender.stats.events_acked
        assert 0 < acked < logged, acked  # some fitted, the rest waits
        assert spooled_events(spool) == logged - acked
        assert sender.stats.events_lost == 0 and writer.dropped_events == 0
        assert child_runs(job_runs(mlflow_client, job)) == []  # nobody flushes yet

        writer.end_run("FINISHED")
        flusher = launch_flusher(tmp_path, mlflow_server.uri, url)
        processes.append(flusher)
        assert writer.flush(240), "the client's spool was not acked once the stream drained"
        assert spooled_events(spool) == 0
        result = writer.close(timeout_s=30)
        writer = None
        assert int(result) == 0 and result.dropped_events == 0

        def finished() -> bool:
            runs = child_runs(job_runs(mlflow_client, job))
            return (
                len(runs) == 1
                and runs[0].info.status == "FINISHED"
                and len(mlflow_client.get_metric_history(runs[0].info.run_id, "x")) >= POINTS
            )

        wait_until(finished, 180, interval_s=1.0, what="the run FINISHED with every point")
        (run,) = child_runs(job_runs(mlflow_client, job))
        assert metric_points(mlflow_client, run.info.run_id, "x") == expected_points(
            POINTS, BASE_TS
        )
        assert receiver.stop() == 0, receiver.log_tail()
        assert flusher.stop() == 0, flusher.log_tail()
    finally:
        if writer is not None:
            writer.close(timeout_s=5)
        for process in processes:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.wait(timeout=10)
