"""A fault in a post-commit callback of the ingest thread, in process: the batch it followed is
acknowledged and kept, the receiver turns NOT_SERVING with the worker named in health,
``status`` and ``/metrics``, and later batches are refused at once (nothing waits for a dead
thread). A real receiver (gRPC on 127.0.0.1:0, its SQLite queue, JSON-lines files), in this
process, so that the fault can be injected where it is wanted."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunEnd, RunStart, RunStatus
from bridge.protocol import INGEST_SERVICE
from client_sdk._transport import Transport, TransportError
from server.background import BackgroundReceiver
from server.cli.status import format_status, read_status
from server.config import ReceiverConfig
from server.ingest.ingestor import Ingestor
from server.queue.aggregates import Observed
from tests.support.procs import wait_until

pytestmark = pytest.mark.timeout(120)

TS = 1_700_000_000_000


class _Injected(RuntimeError):
    """The fault this test injects."""


def _payload(first_seq: int, events: list[Any]) -> bytes:
    batch = EventBatch("site-a", "guard-job", "run-1", first_seq, tuple(events))
    return batch_to_proto(batch).SerializeToString()


def _health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(answer.status)


class _FailingAggregates:
    """Aggregate inputs whose ``committed`` fails (the others are the real ones' shape)."""

    def observe(self, stored: list[tuple[str, Any, int]]) -> Observed:
        return Observed(points=[], opened=[(stored[0][0], "guard-job", "site-a")], ended=[])

    def record(self, conn: sqlite3.Connection, seen: Observed) -> None:
        pass

    def committed(self, seen: Observed) -> None:
        raise _Injected("aggregates.committed failed")


def _inject(ingestor: Ingestor, callback: str) -> None:
    def fail(*_args: object) -> None:
        raise _Injected(f"{callback} failed")

    if callback == "on_stored":
        ingestor._on_stored = fail
    elif callback == "backlog":
        ingestor._backlog.add = fail  # type: ignore[method-assign,assignment]
    else:
        ingestor._aggregates = _FailingAggregates()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[BackgroundReceiver]:
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        mlflow_sink=False,
        http_listen="off",  # /metrics is read from its exporter
        jsonl_dir=tmp_path / "files",
        flush_interval_s=0.2,
        shutdown_timeout_s=20.0,
    )
    background = BackgroundReceiver(config)
    background.start()
    try:
        yield background
    finally:
        if not background._loop.is_closed():
            background.stop()


@pytest.mark.parametrize("callback", ["on_stored", "backlog", "aggregates_committed"])
def test_a_post_commit_fault_is_visible_and_loses_nothing(
    receiver: BackgroundReceiver, tmp_path: Path, callback: str
) -> None:
    r = receiver.receiver
    ingestor = r.ingestor
    assert isinstance(ingestor, Ingestor)
    transport = Transport(f"127.0.0.1:{r.port}", timeout_s=10.0)
    try:
        first = transport.publish(
            _payload(1, [RunStart(run_name="guarded", start_time_ms=TS), Metric("x", 1.0, 1, TS)])
        )
        assert first.acked_seq == 2
        _inject(ingestor, callback)
        # The faulty commit's batch is acknowledged: it is durable.
        assert transport.publish(_payload(3, [Metric("x", 2.0, 2, TS + 2)])).acked_seq == 3
        wait_until(lambda: ingestor.worker.failure, 20, what="the ingest worker to fail")
        assert "_Injected" in ingestor.worker.failure

        # Later batches are refused at once, with the reason, not left to their deadline.
        with pytest.raises(TransportError) as refused:
            transport.publish(_payload(4, [RunEnd(RunStatus.FINISHED, TS + 3)]), timeout_s=30)
        assert refused.value.code == "UNAVAILABLE"
        assert refused.value.retryable
        assert "ingest worker failed" in str(refused.value)
    finally:
        transport.close()

    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    wait_until(lambda: _health(r.port, "") == not_serving, 20, what="health NOT_SERVING")
    assert _health(r.port, INGEST_SERVICE) == not_serving
    metrics = r.live.exporter.render()[0].decode()
    assert 'trackbridge_worker_up{worker="ingest"} 0.0' in metrics
    assert 'trackbridge_worker_up{worker="flusher"} 1.0' in metrics
    data_dir = r.config.data_dir
    status = wait_until(lambda: read_status(data_dir)["failed_workers"], 20, what="status")
    assert "ingest" in status
    assert "workers: FAILED (ingest: _Injected" in format_status(read_status(data_dir))

    # Nothing lost: both acknowledged batches reach the files when the receiver drains.
    assert receiver.stop()
    lines = [
        json.loads(line)
        for path in (tmp_path / "files").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [line["seq"] for line in lines if line["seq"]] == [1, 2, 3]


def test_a_flusher_fault_restarts_it_and_nothing_is_lost(
    receiver: BackgroundReceiver, tmp_path: Path
) -> None:
    r = receiver.receiver
    flusher = r.flusher
    original = flusher._cycle
    faults = iter(range(2))

    def cycle(*args: bool) -> bool:
        if next(faults, None) is not None:
            raise _Injected("flusher cycle failed")
        return original(*args)

    flusher._cycle = cycle  # type: ignore[method-assign]
    transport = Transport(f"127.0.0.1:{r.port}", timeout_s=10.0)
    try:
        start = [RunStart(run_name="restarted", start_time_ms=TS), Metric("x", 1.0, 1, TS)]
        assert transport.publish(_payload(1, start)).acked_seq == 2
        flusher.flush_soon()
        wait_until(lambda: flusher.worker.restarts == 2, 30, what="two restarts")
        assert flusher.worker.alive and not flusher.worker.failure
        metrics = r.live.exporter.render()[0].decode()
        assert 'trackbridge_worker_restarts_total{worker="flusher"} 2.0' in metrics
        assert 'trackbridge_worker_up{worker="flusher"} 1.0' in metrics
        assert _health(r.port, "") == health_pb2.HealthCheckResponse.SERVING
    finally:
        transport.close()
    assert receiver.stop()
    lines = [
        json.loads(line)
        for path in (tmp_path / "files").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [line["seq"] for line in lines if line["seq"]] == [1, 2]
