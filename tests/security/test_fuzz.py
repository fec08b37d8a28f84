"""Fuzzing a live receiver: over 10,000 generated messages (hypothesis strategies over every
EventBatch field, mutated encodings and raw random bytes, with good, missing and bogus tokens)
while a well-behaved client logs through the same receiver. Every message must get the status
its content calls for, with a readable message; the receiver must not crash; the good client
must never see a single refusal."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.convert import check_batch
from bridge.errors import BatchRejected
from bridge.pb.v1 import events_pb2 as pb
from client_sdk._transport import TransportError
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.procs import ReceiverProcess, free_port, launch_receiver
from tests.support.security import (
    LEDGER,
    PUBLISH,
    bearer,
    call,
    issue_token,
    no_secret_leaks,
    trackbridge,
)

__all__ = ["no_secret_leaks"]
pytestmark = [pytest.mark.usefixtures("no_secret_leaks"), pytest.mark.slow]

MESSAGES_PER_EXAMPLE = 10
EXAMPLES = 1050
MAX_BATCH_EVENTS = 50
GOOD_RUN = "<the good client's run>"
FUZZ_CLIENT = "fuzz-a"
Code = grpc.StatusCode

# -- strategies -------------------------------------------------------------------------------

int64 = st.integers(-(2**63), 2**63 - 1)
texts = st.text(max_size=300)
good_keys = st.sampled_from(["loss", "acc", "a/b", "x.y", "lr"])
# Mostly well-formed, so that much of the traffic gets past validation to the deeper checks.
keys = st.one_of(good_keys, good_keys, good_keys, st.sampled_from(["../up", "", "a b!"]), texts)
long_values = st.integers(5990, 8010).map(lambda n: "v" * n)
values = st.one_of(st.text(max_size=40), long_values)

metrics = st.builds(
    pb.Metric,
    key=keys,
    value=st.floats(allow_nan=True, allow_infinity=True),
    step=int64,
    timestamp_ms=st.one_of(st.integers(0, 2**45), int64),
)
run_starts = st.builds(
    pb.RunStart,
    experiment=st.one_of(st.just(""), texts),
    run_name=st.text(max_size=40),
    tags=st.dictionaries(keys, values, max_size=3),
    description=st.text(max_size=40),
    start_time_ms=int64,
    parent_run_key=st.text(max_size=40),
    resume_run_id=st.one_of(st.just(""), st.text(max_size=40)),
)
events = st.one_of(
    metrics.map(lambda m: pb.Event(metric=m)),
    st.builds(pb.Param, key=keys, value=values).map(lambda p: pb.Event(param=p)),
    st.builds(pb.Tag, key=keys, value=values).map(lambda t: pb.Event(tag=t)),
    run_starts.map(lambda r: pb.Event(run_start=r)),
    st.builds(pb.RunEnd, status=st.integers(0, 7), end_time_ms=int64).map(
        lambda e: pb.Event(run_end=e)
    ),
    st.builds(pb.DeleteTag, key=keys).map(lambda d: pb.Event(delete_tag=d)),
    st.just(pb.Event()),
)
event_lists = st.one_of(
    st.lists(events, min_size=1, max_size=8),
    st.lists(metrics.map(lambda m: pb.Event(metric=m)), min_size=1, max_size=40),
    # Past the receiver's per-batch limit, cheaply: one event many times.
    st.tuples(events, st.integers(MAX_BATCH_EVENTS - 2, MAX_BATCH_EVENTS + 30)).map(
        lambda t: [t[0]] * t[1]
    ),
)
batches = st.builds(
    pb.EventBatch,
    client_id=st.one_of(*[st.just(FUZZ_CLIENT)] * 4, st.sampled_from(["good", ""]), texts),
    job=st.one_of(st.just("fuzz-job"), st.just("fuzz-job"), texts),
    run_key=st.one_of(
        *[st.sampled_from(["fuzz-run-1", "fuzz-run-2", "fuzz-run-3"])] * 3, st.just(GOOD_RUN), texts
    ),
    first_seq=st.one_of(st.integers(1, 1000), st.integers(1, 1000), st.integers(0, 2**64 - 1)),
    events=event_lists,
    client_pending_events=st.integers(0, 2**64 - 1),
    client_spool_bytes=st.integers(0, 2**64 - 1),
)


def _mutate(encoded: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(encoded)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data[: cut % (len(data) + 1)]) if cut else bytes(data)


payloads = st.one_of(
    batches.map(lambda b: ("batch", b)),
    st.tuples(
        batches,
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
        st.integers(0, 10**6),
    ).map(lambda t: ("mutated", t)),
    st.binary(max_size=600).map(lambda b: ("raw", b)),
)
credentials = st.sampled_from(["fuzz"] * 18 + ["none", "bogus"])
messages = st.tuples(credentials, payloads)


def _encode(kind: str, item: Any, good_run: str) -> bytes:
    def real(b: pb.EventBatch) -> pb.EventBatch:
        if b.run_key == GOOD_RUN:
            b.run_key = good_run
        return b

    if kind == "batch":
        return real(item).SerializeToString()
    if kind == "mutated":
        b, flips, cut = item
        return _mutate(real(b).SerializeToString(), flips, cut)
    return bytes(item)


def expected_codes(credential: str, payload: bytes) -> set[grpc.StatusCode]:
    """The statuses a message may be answered with; the oracle follows the receiver's order:
    credential, decoding, size, (rate), validation, run key, claimed client. (A run key is the
    caller's own: the good client's key names another run of the fuzzer's.)"""
    if credential != "fuzz":
        return {Code.UNAUTHENTICATED}
    try:
        msg = pb.EventBatch.FromString(payload)
    except DecodeError:
        return {Code.INVALID_ARGUMENT}
    if len(msg.events) > MAX_BATCH_EVENTS:
        return {Code.INVALID_ARGUMENT}
    # Past the size check every batch is charged to the client's rate (and the backlog).
    allowed = {Code.RESOURCE_EXHAUSTED}
    try:
        check_batch(msg)
        valid = "/" not in msg.run_key  # run keys are scoped as "<client>/<key>"
    except BatchRejected:
        valid = False
    if not valid:
        return allowed | {Code.INVALID_ARGUMENT}
    if msg.client_id != FUZZ_CLIENT:
        return allowed | {Code.PERMISSION_DENIED}
    return allowed | {Code.OK}


# -- the good client ----------------------------------------------------------------------------


@dataclass
class GoodClient:
    """Logs steadily through the real client SDK; records every failed send."""

    writer: Writer
    logged: int = 0
    failures: list[TransportError] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        transport = self.writer._sender._transport
        publish = transport.publish

        def tapped(payload: bytes, timeout_s: float | None = None) -> Any:
            try:
                return publish(payload, timeout_s)
            except TransportError as exc:
                self.failures.append(exc)
                raise

        transport.publish = tapped  # type: ignore[method-assign]
        self.run = self.writer.start_run("good")
        self.thread = threading.Thread(target=self._log, daemon=True)

    def _log(self) -> None:
        while not self.stop.wait(0.005):
            self.writer.log_metric("g", float(self.logged), step=self.logged)
            self.logged += 1


@pytest.fixture(scope="module")
def fuzz_setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ReceiverProcess, dict[str, str]]]:
    """A receiver with tokens for the fuzzer and the good client, tight limits, and an MLflow
    that is not there (nothing here is about MLflow; the queue only grows)."""
    root = tmp_path_factory.mktemp("fuzz")
    LEDGER.roots.add(root)
    data_dir = root / "receiver-data"
    tokens = {cid: issue_token(data_dir, cid) for cid in (FUZZ_CLIENT, "good")}
    receiver = launch_receiver(
        root,
        f"http://127.0.0.1:{free_port()}",
        data_dir=data_dir,
        shutdown_timeout_s=2,
        expected_exit_code=1,
        extra_args=(
            "--max-batch-events", str(MAX_BATCH_EVENTS),
            "--rate-limit", "3000", "--rate-burst", "1500",
            "--max-backlog", "50000000",
        ),
    )  # fmt: skip
    yield receiver, tokens
    code = receiver.stop()
    assert code == 1, f"a clean stop with MLflow away exits 1:\n{receiver.log_tail()}"
    LEDGER.roots.discard(root)


def _readable(details: str) -> bool:
    return bool(details) and len(details) <= 4000 and details.isprintable()


@pytest.mark.timeout(600)
def test_fuzzed_traffic_is_answered_precisely_and_harms_no_one(
    fuzz_setup: tuple[ReceiverProcess, dict[str, str]], tmp_path: Path
) -> None:
    receiver, tokens = fuzz_setup
    metadata = {
        "fuzz": bearer(tokens[FUZZ_CLIENT]),
        "none": (),
        "bogus": bearer(f"tbt_{uuid.uuid4().hex[:12]}.{uuid.uuid4().hex}"),
    }
    good = GoodClient(
        Writer(
            config=WriterConfig(
                receiver=receiver.address, client_id="good", job="good-job",
                spool_dir=str(tmp_path / "spool"), token=tokens["good"], linger_s=0.05,
                max_batch_events=MAX_BATCH_EVENTS,  # a loaded machine gathers more per send
            )
        )
    )  # fmt: skip
    good.thread.start()
    sent: dict[grpc.StatusCode, int] = {}
    channel = grpc.insecure_channel(receiver.address)
    started = time.monotonic()
    try:
        assert good.writer.flush(timeout_s=30), "the good client's run exists before fuzzing"

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(messages, min_size=MESSAGES_PER_EXAMPLE, max_size=MESSAGES_PER_EXAMPLE))
        def fuzz(batch_of_messages: list[tuple[str, tuple[str, Any]]]) -> None:
            for credential, (kind, item) in batch_of_messages:
                payload = _encode(kind, item, good.run.run_key)
                outcome = call(channel, PUBLISH, payload, metadata[credential])
                allowed = expected_codes(credential, payload)
                assert outcome.code in allowed, (credential, kind, payload[:200], outcome)
                if outcome.code != Code.OK:
                    assert _readable(outcome.details), outcome
                sent[outcome.code] = sent.get(outcome.code, 0) + 1

        fuzz()
    finally:
        good.stop.set()
        good.thread.join(timeout=10)
        channel.close()
    elapsed = time.monotonic() - started

    total = sum(sent.values())
    assert total >= 10_000, sent
    # RESOURCE_EXHAUSTED depends on speed; tests/security/test_limits.py covers it.
    for code in (Code.OK, Code.INVALID_ARGUMENT, Code.UNAUTHENTICATED, Code.PERMISSION_DENIED):
        assert sent.get(code, 0) > 0, f"the fuzzer never produced {code}: {sent}"

    # The good client: never refused, everything acknowledged, stored as its own.
    assert good.writer.flush(timeout_s=60)
    assert good.failures == [], good.failures[:3]
    logged = good.logged
    assert good.writer.close(timeout_s=30) == 0
    status = json.loads(
        trackbridge("status", "--data-dir", str(receiver.data_dir), "--json").stdout
    )
    (run,) = [r for r in status["runs"] if r["run_key"] == f"good/{good.run.run_key}"]
    assert (run["client_id"], run["acked_seq"]) == ("good", logged + 2)

    assert receiver.alive(), receiver.log_tail()
    log = receiver.log_path.read_text()
    assert "Traceback" not in log and "could not store" not in log, receiver.log_tail()
    print(f"fuzz: {total} messages in {elapsed:.0f} s, {sent}; good client logged {logged}")
