"""The client's sender and spool under generated fault schedules, in process: every call to the
receiver may succeed, be refused (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED), be
applied with its answer lost, or kill the client process before or after the receiver applied
it; the process may also crash between calls. A crash drops the sender and everything in
memory; the spool file stays, and the next process delivers it as a new writer does
(``spool/finding.adopt_orphans`` + ``spool/delivery.Delivery``, which can crash too).

The invariant, per run, at the receiver (``tests/support/fake_receiver.py`` takes batches by
sequence as ``server/ingest/ingestor.py`` does): its sequence has no hole and no number resent
with another event; its events are exactly the run's logged events, each once and in order,
but for those the full buffer dropped (reported to the receiver in ``Dropped`` events whose
counts add up, except drops not yet reported when the process died) and those still in the
writer's memory when it died (never durable); nothing is left in any spool at the end. And
``close()`` never waits past its deadline: its thread has ended when it returns, and no call
was given more time than the deadline left.

The sender's cycles are driven on the test's thread (so that a schedule replays exactly); a
refused call is not retried in place (``_RETRY_WINDOW_S``), so each failure reaches the cycle.
About 1,200 derandomized schedules a run (1,000 and 200).
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import DROPPED_BUFFER_FULL, Dropped, Event, Metric, RunEnd, RunStart, RunStatus
from client_sdk import _sender
from client_sdk._batches import BufferItem, DropCounter
from client_sdk._sender import Sender
from client_sdk._transport import ArtifactTransport
from client_sdk.config import WriterConfig
from client_sdk.spool.delivery import Delivery
from client_sdk.spool.finding import adopt_orphans, spool_paths
from tests.support.fake_receiver import ACTIONS, Crash, FakeReceiver

pytestmark = pytest.mark.timeout(300)

EXAMPLES = 1000
"""Generated schedules for the exactly-once property (each a few dozen calls)."""
MAX_ROUNDS = 200
"""Cycles and deliveries the end of a schedule may take (far more than any needs)."""

_CLOSE_S = 0.05
"""close()'s budget in the close property."""
_RPC_TIMEOUT_S = 30.0
_SLACK_S = 5.0
"""Scheduling delay allowed between computing a call's timeout and making it (a loaded box);
far below ``_RPC_TIMEOUT_S``, so a call given its full RPC timeout still shows."""

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same schedules on every run: a CI failure replays locally
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class _NoWait(threading.Event):
    """A delivery's interrupt whose pauses pass at once (the test's clock is its call order)."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


@dataclass
class _Logged:
    """One event as the user logged it, and what became of it."""

    run_key: str
    event: Event
    fate: str = "sent"
    """``sent`` (must reach the receiver), ``dropped`` (the full buffer), ``vanished`` (in
    memory when the process died)."""


@dataclass
class _Client:
    """A writer's state across its process's crashes: one sender per process."""

    config: WriterConfig
    receiver: FakeReceiver
    logged: list[_Logged] = field(default_factory=list)
    unreported: dict[str, int] = field(default_factory=dict)
    """Per run: drops counted but not yet reported when a process died."""
    generation: int = 0
    ended: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.buffer: deque[BufferItem] = deque()
        self.items: deque[_Logged] = deque()  # the buffer's items, as logged
        self.drops = DropCounter()
        self.sender = Sender(self.config, self.buffer, self.receiver, self.drops)

    def run_key(self, run: int) -> str:
        return f"g{self.generation}-r{run}"

    def log(self, run: int, event: Event) -> None:
        """What ``Writer._push`` does: a run's start and end are never dropped."""
        key = self.run_key(run)
        if key in self.ended:
            return
        entry = _Logged(key, event)
        self.logged.append(entry)
        if len(self.buffer) >= self.config.max_buffer_events and not isinstance(
            event, RunStart | RunEnd
        ):
            entry.fate = "dropped"
            self.drops.add(key)
            return
        item: BufferItem = (key, event)
        if isinstance(event, Metric) and event.step % 2:  # the hot path's form too
            item = (key, event.key, event.value, event.step, event.timestamp_ms)
        self.buffer.append(item)
        self.items.append(entry)
        if isinstance(event, RunEnd):
            self.ended.add(key)

    def cycle(self) -> None:
        """One pass of the sender's loop; a crash in a call is the process's end."""
        try:
            self.sender._cycle()
        except Crash:
            crashed = True
        else:
            crashed = False
        # What the sender took from the buffer is numbered and spooled: durable.
        while len(self.items) > len(self.buffer):
            self.items.popleft()
        if crashed:
            self.crash()

    def crash(self) -> None:
        """A kill -9: memory is gone, the spool file stays (its lock is free)."""
        for entry in self.items:
            entry.fate = "vanished"
        with self.drops._lock:
            for key, (count, _first, _last) in self.drops._runs.items():
                self.unreported[key] = self.unreported.get(key, 0) + count
        spool = self.sender.keeper._current
        if spool is not None:
            spool.close(delete=False)
        self.generation += 1
        self._start()

    def deliver_orphans(self) -> bool:
        """What the next writer does with the spools dead ones left; False if some are left."""
        assert self.config.spool_dir
        found = adopt_orphans(Path(self.config.spool_dir), lambda _d: True)
        assert not found.problems
        left = False
        for spool in found.adopted:
            delivery = Delivery(
                spool, self.receiver, _no_artifacts, deadline=lambda: float("inf"),
                interrupt=_NoWait(),
            )  # fmt: skip
            try:
                report = delivery.run()
            except Crash:
                spool.close(delete=False)
                left = True
                continue
            assert not report.problems, report.problems
            assert report.complete and report.events_lost == 0
            left |= not spool.close()
        return not left

    def finish(self) -> None:
        """The schedule's end: everything is sent, every orphaned spool delivered."""
        for _ in range(MAX_ROUNDS):
            self.cycle()
            if self.deliver_orphans() and not self.sender._busy():
                self.sender.keeper.close()
                return
        raise AssertionError(f"not delivered in {MAX_ROUNDS} rounds")


def _no_artifacts() -> ArtifactTransport:
    raise AssertionError("no artifact was staged")


def _config(
    spool_dir: str, *, max_buffer: int, batch: int, memory: int, heartbeat_s: float
) -> WriterConfig:
    return WriterConfig(
        receiver="127.0.0.1:9", client_id="c", job="j", spool_dir=spool_dir,
        max_buffer_events=max_buffer, max_batch_events=batch, max_memory_bytes=memory,
        heartbeat_s=heartbeat_s,
    )  # fmt: skip


steps = st.lists(
    st.one_of(
        st.tuples(st.just("log"), st.integers(0, 2), st.integers(1, 30)),
        st.tuples(st.just("end"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("cycle"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.just(0), st.just(0)),
        st.tuples(st.just("recover"), st.just(0), st.just(0)),
    ),
    max_size=25,
)
schedules = st.one_of(
    st.lists(st.sampled_from(ACTIONS), max_size=40),
    st.dictionaries(st.integers(0, 60), st.sampled_from(ACTIONS[1:]), max_size=8).map(
        lambda at: [at.get(i, "ok") for i in range(max(at, default=-1) + 1)]
    ),
).map(lambda s: _few_kills(s, 3))


def _few_kills(schedule: list[str], most: int) -> list[str]:
    """At most ``most`` crashes from calls: later kills become plain refusals."""
    out: list[str] = []
    for action in schedule:
        if action.startswith("kill"):
            most -= 1
        out.append("unavailable" if action.startswith("kill") and most < 0 else action)
    return out


@pytest.fixture(autouse=True)
def _no_retry_in_place(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_sender, "_RETRY_WINDOW_S", -1.0)
    yield


def _play(client: _Client, plan: list[tuple[str, int, int]]) -> None:
    step_no = 0
    for kind, run, count in plan:
        if kind == "log":
            key = client.run_key(run)
            if not any(e.run_key == key for e in client.logged):
                client.log(run, RunStart(experiment="j", run_name=key))
            for _ in range(count):
                step_no += 1
                client.log(run, Metric("m", float(step_no), step_no, 1000 + step_no))
        elif kind == "end":
            if any(e.run_key == client.run_key(run) for e in client.logged):
                client.log(run, RunEnd(RunStatus.FINISHED, 5000))
        elif kind == "cycle":
            client.cycle()
        elif kind == "crash":
            client.crash()
        else:
            client.deliver_orphans()
    client.finish()


def _check(client: _Client) -> None:
    receiver = client.receiver
    keys = dict.fromkeys(e.run_key for e in client.logged)
    for key in keys:
        want = [e.event for e in client.logged if e.run_key == key and e.fate == "sent"]
        run = receiver.runs.get(key)
        if run is None:
            assert not want, f"run {key}: nothing reached the receiver"
            continue
        assert not run.resent_differently, f"run {key}: sequence numbers reused"
        assert sorted(run.events) == list(range(1, run.mark + 1)), f"run {key}: a hole"
        stored = [run.events[s] for s in sorted(run.events)]
        got = [e for e in stored if not isinstance(e, Dropped)]
        assert got == want, f"run {key}: not exactly once in order"
        reports = [e for e in stored if isinstance(e, Dropped)]
        assert all(r.reason == DROPPED_BUFFER_FULL for r in reports)
        dropped = sum(e.fate == "dropped" for e in client.logged if e.run_key == key)
        assert sum(r.count for r in reports) == dropped - client.unreported.get(key, 0)
    assert not any(k not in keys for k in receiver.runs)
    assert client.config.spool_dir
    assert spool_paths(Path(client.config.spool_dir)) == [], "a spool was left behind"


@given(
    plan=steps,
    schedule=schedules,
    max_buffer=st.sampled_from([8, 40, 10_000]),
    batch=st.sampled_from([3, 16, 5000]),
    memory=st.sampled_from([1, 64 << 20]),  # 1: payloads are read back from the spool
    heartbeat_s=st.sampled_from([1e-9, 60.0]),  # tiny: quiet runs send a GetRun each cycle
)
@_SETTINGS
def test_every_logged_event_reaches_the_receiver_once_in_order_or_is_counted(
    plan: list[tuple[str, int, int]],
    schedule: list[str],
    max_buffer: int,
    batch: int,
    memory: int,
    heartbeat_s: float,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(
            tmp, max_buffer=max_buffer, batch=batch, memory=memory, heartbeat_s=heartbeat_s
        )
        client = _Client(config, FakeReceiver(schedule))
        _play(client, plan)
        _check(client)


@given(
    logged=st.integers(0, 60),
    schedule=st.lists(st.sampled_from(ACTIONS[:5]), max_size=30),
    heartbeat_s=st.sampled_from([1e-9, 60.0]),
)
@settings(_SETTINGS, max_examples=200)
def test_close_returns_by_its_deadline_with_its_thread_ended(
    logged: int, schedule: list[str], heartbeat_s: float
) -> None:
    """The real thread and ``close``: a receiver that refuses, or does not answer at all
    (``deadline`` calls take all the time they are given), never keeps it past its deadline."""
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(tmp, max_buffer=10_000, batch=16, memory=64 << 20, heartbeat_s=heartbeat_s)
        config = dataclasses.replace(config, rpc_timeout_s=_RPC_TIMEOUT_S)
        never = threading.Event()
        receiver = FakeReceiver(schedule, hang=never)
        buffer: deque[BufferItem] = deque(
            [("r", RunStart(experiment="j", run_name="r"))]
            + [("r", "m", float(i), i, 1000 + i) for i in range(logged)]
        )
        sender = Sender(config, buffer, receiver, DropCounter())
        sender.start()
        sender.wake()
        closing = time.monotonic()
        sender.close(_CLOSE_S)
        assert not sender._worker.alive, "close returned with its thread still running"
        # No call was given more time than the deadline left (a call given its full RPC
        # timeout would keep the thread, and close, past it).
        deadline = closing + _CLOSE_S
        late = [(at, t) for at, t in receiver.timeouts if t is None or at + t > deadline + _SLACK_S]
        assert not late, f"calls given more time than close's deadline left: {late}"
        sender.close_spool()
