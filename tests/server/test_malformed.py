"""Malformed batches sent straight to a running receiver over raw gRPC."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from tests.support.mlflow_reads import (
    all_points,
    child_runs,
    children_by_client,
    job_runs,
    wait_for_children,
)
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

PUBLISH = "/trackbridge.v1.Ingest/Publish"
TS = 1_700_000_500_000


@pytest.fixture(scope="module")
def shared_receiver(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[ReceiverProcess]:
    """One receiver for the whole module: malformed input must not hurt it."""
    receiver = launch_receiver(tmp_path_factory.mktemp("malformed"), mlflow_server.uri)
    yield receiver
    code = receiver.stop()
    assert code == 0, receiver.log_tail()


@pytest.fixture
def channel(shared_receiver: ReceiverProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(shared_receiver.address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


def _start_event() -> events_pb2.Event:
    event = events_pb2.Event()
    event.run_start.run_name = "raw"
    return event


def _metric_event(key: str, value: float = 1.0, step: int = 0) -> events_pb2.Event:
    event = events_pb2.Event()
    event.metric.key = key
    event.metric.value = value
    event.metric.step = step
    event.metric.timestamp_ms = TS + step
    return event


def _batch(
    *,
    client_id: str = "raw-client",
    job: str = "raw-job",
    run_key: str | None = None,
    first_seq: int = 1,
    events: list[events_pb2.Event] | None = None,
) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(
        client_id=client_id,
        job=job,
        run_key=run_key if run_key is not None else uuid.uuid4().hex,
        first_seq=first_seq,
    )
    batch.events.extend(events if events is not None else [_start_event()])
    return batch


def _start_in(experiment: str, description: str = "") -> events_pb2.Event:
    event = _start_event()
    event.run_start.experiment = experiment
    event.run_start.description = description
    return event


def _negative_timestamp_event() -> events_pb2.Event:
    event = _metric_event("loss")
    event.metric.timestamp_ms = -1  # MLflow: "Timestamp must be a nonnegative long"
    return event


def _no_kind_event() -> events_pb2.Event:
    return events_pb2.Event()


def _unspecified_end_event() -> events_pb2.Event:
    event = events_pb2.Event()
    event.run_end.status = events_pb2.RUN_STATUS_UNSPECIFIED
    event.run_end.end_time_ms = TS
    return event


# name -> (batch, pattern the status details must match)
MALFORMED: dict[str, tuple[Any, str]] = {
    "empty client_id": (lambda: _batch(client_id=""), r"client_id"),
    "empty job": (lambda: _batch(job=""), r"\bjob\b"),
    "empty run_key": (lambda: _batch(run_key=""), r"run_key"),
    "first_seq 0": (lambda: _batch(first_seq=0), r"first_seq"),
    "no events": (lambda: _batch(events=[]), r"event"),
    "event with no kind": (lambda: _batch(events=[_start_event(), _no_kind_event()]), r"kind"),
    "metric with an invalid key": (
        lambda: _batch(events=[_start_event(), _metric_event("bad key!")]),
        r"bad key!.*Names may only contain",
    ),
    "metric with a path trick": (
        lambda: _batch(events=[_start_event(), _metric_event("../x")]),
        r"\.\./x",
    ),
    "metric with a negative timestamp": (
        lambda: _batch(events=[_start_event(), _negative_timestamp_event()]),
        r"(?i)timestamp",
    ),
    "run end without a status": (
        lambda: _batch(events=[_start_event(), _unspecified_end_event()]),
        r"status",
    ),
    # What the client refuses at the call, refused again by the receiver.
    "experiment name over MLflow's limit": (
        lambda: _batch(events=[_start_in("e" * 501)]),
        r"'name' exceeds the maximum length of 500 characters",
    ),
    "run start larger than one event may be": (
        lambda: _batch(events=[_start_in("big", description="d" * (2 << 20))]),
        r"at most \d+ bytes per event",
    ),
    # The last sequence number would not fit the receiver's 64-bit sequence marks.
    "first_seq beyond int64": (lambda: _batch(first_seq=2**63), r"first_seq|seq"),
}

GARBAGE = {
    "invalid wire type": b"\xff\xff\xff\xff",
    "truncated field": b"\x0a\x05ab",
    "invalid utf-8 in a string": b"\x0a\x02\xff\xfe",
    "truncated varint": b"\x20\xff",
}


def _publish_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as excinfo:
        call(request, timeout=10)
    return excinfo.value  # type: ignore[return-value]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_batch_is_invalid_argument(
    case: str, channel: grpc.Channel, shared_receiver: ReceiverProcess
) -> None:
    make, pattern = MALFORMED[case]
    stub = ingest_pb2_grpc.IngestStub(channel)
    error = _publish_error(stub.Publish, make())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    details = error.details() or ""
    assert re.search(pattern, details), details
    assert shared_receiver.alive(), shared_receiver.log_tail()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(GARBAGE))
def test_undecodable_bytes_are_invalid_argument(
    case: str, channel: grpc.Channel, shared_receiver: ReceiverProcess
) -> None:
    raw_publish = channel.unary_unary(PUBLISH, request_serializer=None, response_deserializer=None)
    error = _publish_error(raw_publish, GARBAGE[case])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert re.search(r"(?i)decod|pars", error.details() or ""), error.details()
    assert shared_receiver.alive(), shared_receiver.log_tail()


@pytest.mark.timeout(120)
def test_a_good_client_is_unaffected_by_malformed_traffic(
    channel: grpc.Channel,
    shared_receiver: ReceiverProcess,
    make_writer: Any,
    mlflow_client: Any,
    job: str,
) -> None:
    writer = make_writer(shared_receiver.address, "good-client", job)
    writer.start_run("good")
    writer.log_metric("loss", 0.5, step=0, timestamp=TS)
    assert writer.flush(timeout_s=20)

    stub = ingest_pb2_grpc.IngestStub(channel)
    raw_publish = channel.unary_unary(PUBLISH, request_serializer=None, response_deserializer=None)
    # How each one is answered is checked above; here only its effect on others matters.
    for round_ in range(3):
        for make, _ in MALFORMED.values():
            with contextlib.suppress(grpc.RpcError):
                stub.Publish(make(), timeout=10)
        for garbage in GARBAGE.values():
            with contextlib.suppress(grpc.RpcError):
                raw_publish(garbage, timeout=10)
        writer.log_metric("loss", 0.25 / (round_ + 1), step=round_ + 1, timestamp=TS + round_ + 1)

    # A well-formed raw batch is still accepted and acknowledged.
    ack = stub.Publish(
        _batch(client_id="raw-good", job=f"{job}-raw", events=[_start_event(), _metric_event("m")]),
        timeout=10,
    )
    assert ack.acked_seq == 2

    writer.end_run("FINISHED")
    assert writer.close(timeout_s=30) == 0
    assert shared_receiver.alive(), shared_receiver.log_tail()

    wait_for_children(mlflow_client, job, 1, timeout_s=30)
    good = children_by_client(mlflow_client, job)["good-client"]
    assert good.info.status == "FINISHED"
    assert all_points(mlflow_client, good) == {
        "loss": sorted(
            [("loss", 0.5, 0, TS)] + [("loss", 0.25 / (r + 1), r + 1, TS + r + 1) for r in range(3)]
        )
    }
    assert shared_receiver.alive(), shared_receiver.log_tail()


@pytest.mark.timeout(120)
def test_a_run_key_names_a_run_of_the_client_that_uses_it(
    channel: grpc.Channel, shared_receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    stub = ingest_pb2_grpc.IngestStub(channel)
    run_key = uuid.uuid4().hex
    ack = stub.Publish(
        _batch(
            client_id="owner-a",
            job=job,
            run_key=run_key,
            events=[_start_event(), _metric_event("m", 1.0, 0)],
        ),
        timeout=10,
    )
    assert ack.acked_seq == 2

    # Another client with the same run key writes a run of its own, never owner-a's.
    intruder = _batch(
        client_id="intruder-b",
        job=job,
        run_key=run_key,
        events=[_start_event(), _metric_event("m", 666.0, 1)],
    )
    assert stub.Publish(intruder, timeout=10).acked_seq == 2
    query = ingest_pb2.RunQuery(client_id="intruder-b", run_key=run_key)
    assert stub.GetRun(query, timeout=10).acked_seq == 2

    # The owner carries on where it was.
    mine = stub.GetRun(ingest_pb2.RunQuery(client_id="owner-a", run_key=run_key), timeout=10)
    assert mine.acked_seq == 2
    end = events_pb2.Event()
    end.run_end.status = events_pb2.RUN_STATUS_FINISHED
    end.run_end.end_time_ms = TS + 10
    ack = stub.Publish(
        _batch(
            client_id="owner-a",
            job=job,
            run_key=run_key,
            first_seq=3,
            events=[_metric_event("m", 2.0, 1), end],
        ),
        timeout=10,
    )
    assert ack.acked_seq == 4
    # A run key with a '/' cannot be scoped: refused.
    error = _publish_error(stub.Publish, _batch(client_id="owner-a", job=job, run_key="a/b"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "run_key may not contain '/'" in (error.details() or "")

    def both() -> dict[str, Any] | None:
        runs = {
            r.data.tags["trackbridge.client_id"]: r
            for r in child_runs(job_runs(mlflow_client, job))
        }
        owner, intruder = runs.get("owner-a"), runs.get("intruder-b")
        if owner is None or intruder is None or owner.info.status != "FINISHED":
            return None
        return runs if all_points(mlflow_client, intruder) else None

    runs = wait_until(both, 30, what="both clients' runs, the owner's finished")
    assert all_points(mlflow_client, runs["owner-a"]) == {
        "m": [("m", 1.0, 0, TS), ("m", 2.0, 1, TS + 1)]
    }
    assert all_points(mlflow_client, runs["intruder-b"]) == {"m": [("m", 666.0, 1, TS + 1)]}
    assert {r.data.tags["trackbridge.run_key"] for r in runs.values()} == {run_key}
    assert shared_receiver.alive()
