"""The one place where events meet protobuf: conversion both ways, and wire validation."""

from __future__ import annotations

from bridge.errors import BatchRejected, MlflowException
from bridge.events import (
    DeleteTag,
    Dropped,
    Event,
    EventBatch,
    Metric,
    MlflowCall,
    Param,
    RunEnd,
    RunStart,
    RunStatus,
    Tag,
)
from bridge.limits import MAX_EVENT_BYTES
from bridge.pb.v1 import events_pb2 as pb
from bridge.protocol import JOURNALED_CALLS, MAX_CALL_BYTES
from bridge.validation import (
    MAX_INT64,
    SDK_TAGS,
    validate_experiment_name,
    validate_metric_key,
    validate_param,
    validate_run_id,
    validate_step_and_timestamp,
    validate_tag,
)

MAX_ID_LENGTH = 256

_STATUS_TO_PB = {
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.FINISHED: pb.RUN_STATUS_FINISHED,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
    RunStatus.KILLED: pb.RUN_STATUS_KILLED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


def metric_to_proto(  # noqa: PLR0917 - the point's fields, in the wire's order
    key: str,
    value: object,
    step: int,
    timestamp_ms: int,
    out: pb.Event,
    round_: int = 0,
    num_examples: int = 0,
) -> None:
    """Fills ``out`` (a fresh ``pb.Event``) with a metric point given as its fields."""
    m = out.metric
    m.key = key
    m.value = value if type(value) is float else _as_float(value)
    m.step = step
    m.timestamp_ms = timestamp_ms
    if round_:
        m.round = round_
    if num_examples:
        m.num_examples = num_examples


def event_to_proto(event: Event, out: pb.Event) -> None:
    """Fills ``out`` (a fresh ``pb.Event``) from an event."""
    if isinstance(event, Metric):
        metric_to_proto(
            event.key,
            event.value,
            event.step,
            event.timestamp_ms,
            out,
            event.round,
            event.num_examples,
        )
    elif isinstance(event, Param):
        out.param.key = event.key
        out.param.value = event.value
    elif isinstance(event, Tag):
        out.tag.key = event.key
        out.tag.value = event.value
    elif isinstance(event, RunStart):
        rs = out.run_start
        rs.experiment = event.experiment
        rs.run_name = event.run_name
        rs.tags.update(event.tags)
        rs.description = event.description
        rs.start_time_ms = event.start_time_ms
        rs.parent_run_key = event.parent_run_key
        rs.resume_run_id = event.resume_run_id
        rs.experiment_id = event.experiment_id
        rs.top_level = event.top_level
    elif isinstance(event, DeleteTag):
        out.delete_tag.key = event.key
    elif isinstance(event, Dropped):
        d = out.dropped
        d.count = event.count
        d.reason = event.reason
        d.first_seq = event.first_seq
        d.last_seq = event.last_seq
        d.first_ms = event.first_ms
        d.last_ms = event.last_ms
    elif isinstance(event, MlflowCall):
        out.mlflow_call.method = event.method
        out.mlflow_call.request = event.request
    else:
        out.run_end.status = _STATUS_TO_PB[event.status]
        out.run_end.end_time_ms = event.end_time_ms


def _as_float(value: object) -> float:
    # A deferred device scalar (see Metric.value) is read here, on the sender thread.
    try:
        return float(value)  # type: ignore[arg-type]
    except Exception as exc:
        raise ValueError(f"metric value {type(value).__name__} is not a number: {exc}") from exc


def batch_to_proto(batch: EventBatch) -> pb.EventBatch:
    """Converts a batch to its wire form."""
    msg = pb.EventBatch(
        client_id=batch.client_id,
        job=batch.job,
        run_key=batch.run_key,
        first_seq=batch.first_seq,
        experiment=batch.experiment,
        experiment_id=batch.experiment_id,
    )
    add = msg.events.add
    for event in batch.events:
        event_to_proto(event, add())
    return msg


def event_from_proto(msg: pb.Event) -> Event:  # noqa: PLR0911 - one return per kind
    """Converts one wire event; raises BatchRejected for an empty or unknown kind."""
    kind = msg.WhichOneof("kind")
    if kind == "metric":
        m = msg.metric
        return Metric(m.key, m.value, m.step, m.timestamp_ms, m.round, m.num_examples)
    if kind in ("param", "tag"):
        pair = msg.param if kind == "param" else msg.tag
        return (Param if kind == "param" else Tag)(pair.key, pair.value)
    if kind == "run_start":
        rs = msg.run_start
        return RunStart(
            experiment=rs.experiment,
            run_name=rs.run_name,
            tags=dict(rs.tags),
            description=rs.description,
            start_time_ms=rs.start_time_ms,
            parent_run_key=rs.parent_run_key,
            resume_run_id=rs.resume_run_id,
            experiment_id=rs.experiment_id,
            top_level=rs.top_level,
        )
    if kind == "mlflow_call":
        return MlflowCall(msg.mlflow_call.method, msg.mlflow_call.request)
    if kind == "delete_tag":
        return DeleteTag(msg.delete_tag.key)
    if kind == "dropped":
        d = msg.dropped
        return Dropped(d.count, d.reason, d.first_seq, d.last_seq, d.first_ms, d.last_ms)
    if kind == "run_end":
        status = _STATUS_FROM_PB.get(msg.run_end.status)
        if status is None:
            raise BatchRejected(f"run_end has an invalid status ({msg.run_end.status})")
        return RunEnd(status, msg.run_end.end_time_ms)
    raise BatchRejected("event has no kind set (or a kind this receiver does not know)")


def check_batch(msg: pb.EventBatch) -> None:
    """Validates a wire batch without building events; raises BatchRejected with the reason.

    Metrics, nearly all of the traffic, take a fast path: each distinct key is checked once
    per batch, and step and value need no check (int64 and double on the wire). Everything
    else is decoded and checked in full.
    """
    for name in ("client_id", "job", "run_key"):
        value = getattr(msg, name)
        if not value or len(value) > MAX_ID_LENGTH:
            raise BatchRejected(f"{name} must be 1 to {MAX_ID_LENGTH} characters")
    if msg.first_seq < 1:
        raise BatchRejected("first_seq must be at least 1")
    _check_experiment(msg)
    if not msg.events:
        raise BatchRejected("a batch must carry at least one event")
    if msg.first_seq + len(msg.events) - 1 > MAX_INT64:
        raise BatchRejected(f"sequence numbers must stay below 2**63 (first_seq {msg.first_seq})")
    good_keys: set[str] = set()
    for i, raw in enumerate(msg.events):
        try:
            if raw.HasField("metric"):
                m = raw.metric
                if m.key not in good_keys:
                    validate_metric_key(m.key)
                    good_keys.add(m.key)
                if m.timestamp_ms < 0 or m.round < 0 or m.num_examples < 0:
                    validate_step_and_timestamp(m.key, m.value, m.step, m.timestamp_ms)
                    _check_round(m.round, m.num_examples)
            else:
                if raw.HasField("run_start"):
                    _check_size(raw.ByteSize())
                check_event(event_from_proto(raw))
        except MlflowException as exc:
            raise BatchRejected(f"events[{i}]: {exc.message}") from None


def _check_experiment(msg: pb.EventBatch) -> None:
    """The run's experiment choice a batch carries follows the run start's rules."""
    if len(msg.experiment_id) > MAX_ID_LENGTH:
        raise BatchRejected(f"experiment_id must be at most {MAX_ID_LENGTH} characters")
    if msg.experiment:
        try:
            validate_experiment_name(msg.experiment)
        except MlflowException as exc:
            raise BatchRejected(f"experiment: {exc.message}") from None


def check_event(event: Event) -> None:
    """Applies MLflow's rules to a decoded event (keys, lengths, tags of run starts)."""
    if isinstance(event, Metric):
        validate_metric_key(event.key)
        validate_step_and_timestamp(event.key, event.value, event.step, event.timestamp_ms)
        _check_round(event.round, event.num_examples)
    elif isinstance(event, Param):
        validate_param(event.key, event.value, truncate=False)
    elif isinstance(event, Tag):
        validate_tag(event.key, event.value, truncate=False)
    elif isinstance(event, RunStart):
        if event.experiment:
            validate_experiment_name(event.experiment)
        for key, value in event.tags.items():
            validate_tag(key, value, truncate=False, allowed_reserved=SDK_TAGS)
        if event.resume_run_id:
            validate_run_id(event.resume_run_id, "resume_run_id")
    elif isinstance(event, DeleteTag):
        validate_tag(event.key, "")
    elif isinstance(event, Dropped) and (event.count < 1 or len(event.reason) > MAX_ID_LENGTH):
        raise MlflowException.invalid_parameter_value(
            f"a dropped-events report needs a count of at least 1 and a reason of at most"
            f" {MAX_ID_LENGTH} characters (got {event.count}, {len(event.reason)})"
        )
    elif isinstance(event, MlflowCall):
        if event.method not in JOURNALED_CALLS:
            raise MlflowException.invalid_parameter_value(
                f"mlflow_call {event.method[:100]!r} is not a call the event stream carries"
            )
        if len(event.request) > MAX_CALL_BYTES:
            raise MlflowException.invalid_parameter_value(
                f"mlflow_call {event.method} is {len(event.request)} bytes (at most"
                f" {MAX_CALL_BYTES})"
            )


def check_run_start(start: RunStart) -> None:
    """The checks a run start must pass before it is queued: an experiment name MLflow accepts,
    and a size that one message (and one MLflow request) can carry.

    Raises:
        MlflowException: INVALID_PARAMETER_VALUE, with MLflow's wording for the name.
    """
    if start.experiment:
        validate_experiment_name(start.experiment)
    out = pb.Event()
    event_to_proto(start, out)
    _check_size(out.ByteSize())


def _check_round(round_: int, num_examples: int) -> None:
    if round_ < 0 or num_examples < 0:
        raise MlflowException.invalid_parameter_value(
            f"a metric's round and num_examples must be 0 (none) or positive (got {round_},"
            f" {num_examples})"
        )


def _check_size(size: int) -> None:
    if size > MAX_EVENT_BYTES:
        raise MlflowException.invalid_parameter_value(
            f"The run start (its name, description and tags) takes {size} bytes; trackbridge"
            f" carries at most {MAX_EVENT_BYTES} bytes per event: shorten the description or"
            " log large text as an artifact"
        )
