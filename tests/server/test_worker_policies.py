"""Each receiver worker's policy under an injected fault, in process (bridge/worker.py):
the aggregator and the history loader restart and lose nothing; the fleet link fails, fails
every call in flight at once and names itself; the embedding helper's loop does not make
``stop`` wait for it. The artifact uploader's: tests/server/test_artifact_uploader.py; the
ingest thread's and the flusher's: tests/server/test_worker_guard.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunStart
from bridge.worker import Worker, Workers
from client_sdk._transport import Transport
from server.aggregate.config import AggregateConfig
from server.background import BackgroundReceiver
from server.cli.status import format_status, read_status
from server.config import ReceiverConfig
from server.fleet.config import FleetConfig
from server.fleet.link import LinkFailed, NatsLink
from server.ingest.backend import NotServing
from server.live import history
from server.live.history import HistoryLoader
from server.live.hub import RestoredRun
from server.queue.sqlite import connect
from tests.server.test_worker_guard import _health
from tests.support.procs import wait_until

pytestmark = pytest.mark.timeout(120)

TS = 1_700_000_000_000


class _Injected(RuntimeError):
    """The fault these tests inject."""


def _fails_first(times: int, then: Callable[..., Any]) -> Callable[..., Any]:
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise _Injected("injected fault")
        return then(*args, **kwargs)

    return call


def _quick(worker: Worker) -> None:
    worker.restart_pause_s = 0.01  # the pause is for a fault that repeats, not for tests


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
        aggregate=AggregateConfig(("eval/*",), deadline_s=60.0),
    )
    background = BackgroundReceiver(config)
    background.start()
    try:
        yield background
    finally:
        if not background._loop.is_closed():
            background.stop()


def _metrics(background: BackgroundReceiver) -> str:
    """``/metrics`` as the live view renders it, on the receiver's loop (its rounds view's
    connection is that thread's)."""

    async def render() -> str:
        return background.receiver.live.exporter.render()[0].decode()

    return asyncio.run_coroutine_threadsafe(render(), background._loop).result(30)


def _publish(port: int, client_id: str, value: float) -> None:
    events = (RunStart(run_name=client_id, start_time_ms=TS), Metric("eval/acc", value, 1, TS))
    batch = EventBatch(client_id, "rounds-job", f"{client_id}-run", 1, events)
    transport = Transport(f"127.0.0.1:{port}", timeout_s=10.0)
    try:
        assert transport.publish(batch_to_proto(batch).SerializeToString()).acked_seq == 2
    finally:
        transport.close()


def test_an_aggregator_fault_restarts_it_and_the_aggregate_is_written(
    receiver: BackgroundReceiver, tmp_path: Path
) -> None:
    r = receiver.receiver
    aggregator = r.aggregator
    assert aggregator is not None
    _quick(aggregator.worker)
    aggregator.write_due = _fails_first(2, aggregator.write_due)  # type: ignore[method-assign]
    _publish(r.port, "site-a", 0.5)
    _publish(r.port, "site-b", 0.7)
    wait_until(lambda: aggregator.aggregates_written, 30, what="the aggregate after restarts")
    assert aggregator.worker.restarts == 2 and aggregator.worker.alive
    metrics = _metrics(receiver)
    assert 'trackbridge_worker_restarts_total{worker="aggregate"} 2.0' in metrics
    assert 'trackbridge_worker_up{worker="aggregate"} 1.0' in metrics
    assert _health(r.port, "") == health_pb2.HealthCheckResponse.SERVING
    data_dir = r.config.data_dir
    wait_until(lambda: read_status(data_dir)["restarted_workers"], 20, what="status")
    shown = format_status(read_status(data_dir))
    assert "workers: restarted after a failure (aggregate 2x, last: _Injected" in shown, shown
    assert "FAILED" not in shown

    assert receiver.stop()
    written = "".join(p.read_text() for p in (tmp_path / "files").rglob("*.jsonl"))
    assert written.count('"eval/acc/mean"') == 1, written  # once: nothing lost, nothing twice


class _Hub:
    """What the history loader needs of the hub: two runs to read back."""

    def __init__(self) -> None:
        self.restored: list[tuple[str, dict[str, Any]]] = []

    def restorable(self, limit: int) -> list[RestoredRun]:
        return [RestoredRun("job", "site-a", "run-a"), RestoredRun("job", "site-b", "run-b")]

    def restore(self, want: RestoredRun, points: dict[str, Any]) -> None:
        self.restored.append((want.client_id, points))


def test_a_history_fault_restarts_the_loader_and_each_run_is_restored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue_path = tmp_path / "queue.db"
    connect(queue_path, "NORMAL").close()  # the receiver's queue, empty
    monkeypatch.setattr(history, "open_read_only", _fails_first(1, history.open_read_only))
    monkeypatch.setattr(history, "_from_mlflow", lambda _c, run_id: {"loss": [(0, 1.0, TS)]})
    hub = _Hub()
    handed: list[Callable[[], None]] = []
    # The second run's hand-over fails once, after the first run's: the restarted loader goes
    # on after the first, never handing it twice.
    hand_over = _fails_first(1, handed.append)
    loader = HistoryLoader(hub, [], "http://127.0.0.1:9", queue_path)  # type: ignore[arg-type]
    _quick(loader.worker)
    loader.start(lambda f: hand_over(f) if handed else handed.append(f))
    assert loader.worker.join(time.monotonic() + 60)
    assert loader.worker.restarts == 2 and not loader.worker.failure
    for f in handed:
        f()
    assert [client for client, _ in hub.restored] == ["site-a", "site-b"]
    assert loader.restored_runs == 2


def test_a_fleet_link_fault_fails_it_and_every_call_in_flight_at_once() -> None:
    link = NatsLink(FleetConfig(servers=("nats://127.0.0.1:1",)), "test")
    real = link._loop.run_forever

    def run_forever() -> None:
        real()  # until the loop is stopped below, not by stop()
        raise _Injected("the NATS loop broke")

    link._loop.run_forever = run_forever  # type: ignore[method-assign]
    workers = Workers()
    workers.add(link.worker)
    link.worker.start()
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    in_flight = link.submit(forever())
    assert started.wait(30)
    link._loop.call_soon_threadsafe(link._loop.stop)
    # Nobody waits for a dead thread: the call in flight fails with the reason, a new one
    # fails before it is made.
    assert isinstance(in_flight.exception(timeout=30), LinkFailed)
    with pytest.raises(LinkFailed, match=r"fleet worker failed \(_Injected: the NATS loop broke"):
        link.run(asyncio.sleep(0), timeout_s=3600)
    assert issubclass(LinkFailed, NotServing)  # the Ingest service: UNAVAILABLE, with it
    assert workers.failed() == {"fleet": "_Injected: the NATS loop broke"}
    link.stop()  # the thread is gone: returns at once
    # The call left on the dead loop is ended here, not logged by its garbage collection
    # during a later test.
    del link._loop.run_forever  # type: ignore[method-assign]
    tasks = asyncio.all_tasks(link._loop)
    for task in tasks:
        task.cancel()
    link._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    link._loop.close()


def test_the_embedding_helpers_failed_loop_is_not_waited_for(tmp_path: Path) -> None:
    config = ReceiverConfig(
        listen="127.0.0.1:0", data_dir=tmp_path, mlflow_sink=False, jsonl_dir=tmp_path / "f"
    )
    background = BackgroundReceiver(config)
    background._loop.run_forever = _fails_first(1, lambda: None)  # type: ignore[method-assign]
    background.worker.start()
    wait_until(lambda: background.worker.failure, 30, what="the loop to fail")
    assert "_Injected" in background.worker.failure
    assert background.stop() is False  # at once, not after its shutdown budget
    assert background._loop.is_closed()
