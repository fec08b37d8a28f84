"""``/metrics`` read with prometheus_client's parser, and gRPC health following MLflow."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from bridge.pb.v1 import events_pb2
from bridge.protocol import INGEST_SERVICE
from tests.support.faults import TcpProxy
from tests.support.live import LIVE_ARGS, get, http_port, live_writers, publish_raw
from tests.support.procs import MlflowServer, wait_until

# client id -> metric points it logs (plus its run start and run end)
TRAFFIC = {"site-a": 30, "site-b": 55}
FLUSHED = "trackbridge_events_flushed_total"


def _scrape(base: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``/metrics`` as ``{sample name: {sorted labels: value}}``."""
    response = get(f"{base}/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def _per_client(samples: dict[str, Any], name: str, job: str) -> dict[str, float]:
    return {
        dict(labels)["client"]: value
        for labels, value in samples.get(name, {}).items()
        if dict(labels).get("job") == job
    }


@pytest.mark.timeout(180)
def test_metrics_count_the_traffic_sent(
    start_receiver: Callable[..., Any], job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, list(TRAFFIC), tmp_path) as writers:
        for client, points in TRAFFIC.items():
            writers[client].start_run()
            for step in range(points):
                writers[client].log_metric("loss", 1.0 / (step + 1), step=step)
            writers[client].end_run("FINISHED")
            assert writers[client].flush(30)
    # One more client whose second value of the same param MLflow refuses for good (sent once
    # the first is in MLflow: a flush may merge batches, and MLflow takes both in one call).
    for first_seq, value in ((1, "1"), (3, "2")):
        batch = events_pb2.EventBatch(
            client_id="site-d", job=job, run_key=f"{job}-d", first_seq=first_seq
        )
        if first_seq == 1:
            batch.events.add().run_start.run_name = "site-d"
        param = batch.events.add().param
        param.key, param.value = "lr", value
        last = first_seq + len(batch.events) - 1
        assert publish_raw(receiver.address, batch).acked_seq == last
        wait_until(
            lambda last=last: _per_client(_scrape(base), FLUSHED, job).get("site-d") == last,
            60,
            interval_s=0.2,
            what=f"site-d's events up to {last} in MLflow",
        )

    expected = {client: points + 2 for client, points in TRAFFIC.items()} | {"site-d": 3}

    def settled() -> dict[str, Any] | None:
        samples = _scrape(base)
        flushed = _per_client(samples, FLUSHED, job)
        return samples if flushed == expected else None

    samples = wait_until(settled, 60, interval_s=0.3, what="every event flushed, per /metrics")
    for name in ("trackbridge_events_received_total", "trackbridge_events_acked_total"):
        assert _per_client(samples, name, job) == expected, name
    dead = _per_client(samples, "trackbridge_events_dead_lettered_total", job)
    assert dead == {"site-a": 0, "site-b": 0, "site-d": 1}
    backlog = _per_client(samples, "trackbridge_client_backlog_events", job)
    assert backlog == dict.fromkeys(expected, 0)
    assert samples["trackbridge_queue_batches"][()] == 0
    assert samples["trackbridge_backlog_events"][()] == 0
    assert samples["trackbridge_mlflow_up"][()] == 1
    assert samples["trackbridge_events_duplicate_total"][()] == 0
    assert samples["trackbridge_batches_rejected_total"][()] == 0
    # site-a and site-b ended their runs: finished, no longer connected; site-d goes on.
    assert samples["trackbridge_connected_clients"][()] == 1
    connected = _per_client(samples, "trackbridge_client_connected", job)
    assert connected == {"site-a": 0, "site-b": 0, "site-d": 1}
    refused = {dict(k)["reason"]: v for k, v in samples["trackbridge_calls_refused_total"].items()}
    assert refused == dict.fromkeys(
        ("unauthenticated", "permission_denied", "calls_in_flight", "rate_limit", "disk_reserve"), 0
    )
    assert samples["process_resident_memory_bytes"][()] > 0
    # Each stored batch was timed once; the buckets are cumulative up to +Inf.
    count = samples["trackbridge_flush_duration_seconds_count"][()]
    buckets = samples["trackbridge_flush_duration_seconds_bucket"]
    assert count >= 3
    assert buckets[(("le", "+Inf"),)] == count
    values = [buckets[k] for k in sorted(buckets, key=lambda k: float(k[0][1]))]
    assert values == sorted(values)
    assert samples["trackbridge_flush_duration_seconds_sum"][()] > 0


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=INGEST_SERVICE)
        return int(stub.Check(request, timeout=5).status)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_health_is_not_serving_while_mlflow_is_unreachable(
    start_receiver: Callable[..., Any], mlflow_server: MlflowServer, job: str, tmp_path: Path
) -> None:
    # The session's MLflow behind a proxy that refuses every connection until restored: the
    # receiver sees MLflow unreachable, then back (no MLflow server of its own to start).
    mlflow = TcpProxy(upstream_port=int(urllib.parse.urlsplit(mlflow_server.uri).port or 0))
    mlflow.cut()
    try:
        _health_follows_mlflow(start_receiver, mlflow, job, tmp_path)
    finally:
        mlflow.close()


def _health_follows_mlflow(
    start_receiver: Callable[..., Any], mlflow: TcpProxy, job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(tracking_uri=f"http://127.0.0.1:{mlflow.port}", extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _health(receiver.address) == serving
    with live_writers(receiver.address, job, ["site-a"], tmp_path) as writers:
        writers["site-a"].log_metric("loss", 0.5, step=1)
        assert writers["site-a"].flush(30)  # acked: stored durably, MLflow or not

        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        wait_until(
            lambda: _health(receiver.address) == not_serving,
            60,
            interval_s=0.3,
            what="NOT_SERVING while MLflow is down",
        )
        samples = _scrape(base)
        assert samples["trackbridge_mlflow_up"][()] == 0
        assert samples["trackbridge_mlflow_errors_total"][()] >= 1
        assert samples["trackbridge_backlog_events"][()] == 2

        mlflow.restore()
        try:
            wait_until(
                lambda: _health(receiver.address) == serving,
                90,
                interval_s=0.3,
                what="SERVING once MLflow is back",
            )
            wait_until(
                lambda: _scrape(base)["trackbridge_backlog_events"][()] == 0,
                60,
                interval_s=0.3,
                what="the backlog delivered",
            )
            assert _scrape(base)["trackbridge_mlflow_up"][()] == 1
        finally:
            writers["site-a"].close(timeout_s=10)
            assert receiver.stop() == 0, receiver.log_tail()
