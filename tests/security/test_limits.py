"""Per-client limits on a real receiver: message size, events per batch, rate, calls in
flight. Each violation gets a clear status, and the other clients do not notice."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.protocol import RETRY_AFTER_KEY
from client_sdk._transport import TransportError
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.mlflow_reads import all_points, wait_for_children
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until
from tests.support.security import (
    LEDGER,
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    issue_token,
    metric_event,
    no_secret_leaks,
    start_event,
)

__all__ = ["no_secret_leaks"]
pytestmark = pytest.mark.usefixtures("no_secret_leaks")

CLIENTS = ("bystander", "big", "fast", "busy", "writer")
UPLOAD = "/trackbridge.v1.Artifacts/Upload"


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[tuple[ReceiverProcess, dict[str, str]]]:
    root = tmp_path_factory.mktemp("limits")
    LEDGER.roots.add(root)
    data_dir = root / "receiver-data"
    tokens = {cid: issue_token(data_dir, cid) for cid in CLIENTS}
    receiver = launch_receiver(
        root,
        mlflow_server.uri,
        data_dir=data_dir,
        extra_args=(
            "--max-message-bytes", "65536", "--max-batch-events", "2000",
            "--rate-limit", "200", "--rate-burst", "1000", "--max-calls-per-client", "1",
        ),
    )  # fmt: skip
    yield receiver, tokens
    code = receiver.stop()
    assert code == 0, receiver.log_tail()
    LEDGER.roots.discard(root)


@pytest.fixture
def channel(limited: tuple[ReceiverProcess, dict[str, str]]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(limited[0].address) as chan:
        yield chan


def metrics(n: int, key: str = "m") -> list[Any]:
    """``n`` events: a run start (each raw batch opens a new run), then metric points."""
    return [start_event(), *(metric_event(key, float(i), i) for i in range(n - 1))]


def bystander_is_fine(channel: grpc.Channel, tokens: dict[str, str]) -> None:
    outcome = call(
        channel, PUBLISH, batch("bystander", events=metrics(5)), bearer(tokens["bystander"])
    )
    assert outcome.code == grpc.StatusCode.OK, outcome


@pytest.mark.timeout(120)
def test_oversized_messages_and_batches_are_refused_with_a_reason(
    channel: grpc.Channel, limited: tuple[ReceiverProcess, dict[str, str]]
) -> None:
    _, tokens = limited
    big = bearer(tokens["big"])
    huge = batch("big", events=metrics(700, key="k" * 90))
    assert huge.ByteSize() > 65536
    outcome = call(channel, PUBLISH, huge, big)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert "larger than max" in outcome.details, outcome.details
    bystander_is_fine(channel, tokens)

    outcome = call(channel, PUBLISH, batch("big", events=metrics(2001)), big)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert "2001 events; this receiver takes at most 2000 per batch" in outcome.details
    bystander_is_fine(channel, tokens)
    assert call(channel, PUBLISH, batch("big", events=metrics(500)), big).code == grpc.StatusCode.OK


@pytest.mark.timeout(120)
def test_a_client_over_its_rate_is_told_when_to_come_back(
    channel: grpc.Channel, limited: tuple[ReceiverProcess, dict[str, str]]
) -> None:
    _, tokens = limited
    fast = bearer(tokens["fast"])
    # The whole burst, then more: 900 more events at 200/s are 4.5 s away.
    first = call(channel, PUBLISH, batch("fast", events=metrics(1000)), fast)
    assert first.code == grpc.StatusCode.OK, first
    outcome = call(channel, PUBLISH, batch("fast", events=metrics(900)), fast)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert "'fast' is over its rate limit" in outcome.details
    retry_after_ms = int(outcome.trailers[RETRY_AFTER_KEY])
    assert 0 < retry_after_ms <= 4501, retry_after_ms
    bystander_is_fine(channel, tokens)

    def admitted() -> bool:
        again = call(channel, PUBLISH, batch("fast", events=metrics(900)), fast)
        return again.code == grpc.StatusCode.OK

    wait_until(admitted, 30, interval_s=retry_after_ms / 1000, what="the bucket to refill")


@pytest.mark.timeout(120)
def test_calls_in_flight_are_bounded_per_client(
    channel: grpc.Channel, limited: tuple[ReceiverProcess, dict[str, str]]
) -> None:
    receiver, tokens = limited
    busy = bearer(tokens["busy"])
    release = threading.Event()

    def held_open() -> Iterator[bytes]:
        release.wait(60)
        return
        yield b""  # a generator that sends nothing until released

    upload = channel.stream_unary(UPLOAD, request_serializer=None, response_deserializer=None)
    held = [upload.future(held_open(), metadata=busy, timeout=60)]
    try:

        def refused() -> Any:
            if held[-1].done():
                # Our own Publish reached the receiver first and took the one slot: the upload
                # was refused for it (the limit at work, the other way round). Hold another.
                assert held[-1].exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                held.append(upload.future(held_open(), metadata=busy, timeout=60))
                return None
            outcome = call(channel, PUBLISH, batch("busy"), busy)
            return outcome if outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED else None

        outcome = wait_until(refused, 30, what="the held call to count against 'busy'")
        assert "'busy' already has 1 calls in flight" in outcome.details
        assert RETRY_AFTER_KEY in outcome.trailers
        bystander_is_fine(channel, tokens)
    finally:
        release.set()
    with pytest.raises(grpc.RpcError):
        held[-1].result(timeout=30)  # an upload with no header is refused
    assert call(channel, PUBLISH, batch("busy"), busy).code == grpc.StatusCode.OK
    assert receiver.alive()


@pytest.mark.timeout(180)
def test_a_throttled_writer_waits_as_told_and_delivers_everything(
    tmp_path: Path,
    limited: tuple[ReceiverProcess, dict[str, str]],
    mlflow_client: Any,
    job: str,
) -> None:
    receiver, tokens = limited
    writer = Writer(
        config=WriterConfig(
            receiver=receiver.address, client_id="writer", job=job,
            spool_dir=str(tmp_path / "spool"), token=tokens["writer"], max_batch_events=400,
        )
    )  # fmt: skip
    transport = writer._sender._transport
    publish = transport.publish
    refusals: list[TransportError] = []

    def tapped(payload: bytes, timeout_s: float | None = None) -> Any:
        try:
            return publish(payload, timeout_s)
        except TransportError as exc:
            refusals.append(exc)
            raise

    transport.publish = tapped  # type: ignore[method-assign]
    writer.start_run()
    for step in range(2500):
        writer.log_metric("y", float(step), step=step, timestamp=TS + step)
    assert writer.flush(timeout_s=90)
    assert writer.close(timeout_s=30) == 0
    assert refusals, "2500 events at 200/s past a burst of 1000 must have been throttled"
    assert {r.code for r in refusals} == {"RESOURCE_EXHAUSTED"}
    assert all(r.retry_after_s > 0 for r in refusals)
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert len(all_points(mlflow_client, run)["y"]) == 2500
