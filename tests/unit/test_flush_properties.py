"""The flusher under generated fault schedules, in process: every MLflow call may fail, succeed
with its answer lost, or kill the receiver before or after MLflow applied it, in every order,
and batches arrive between cycles. The invariant: every event in MLflow exactly once (an
identical metric point resent collapses, as in MLflow; no point missing, no distinct point
doubled), in order per run, each run ended with its status; one run's trouble delays nobody
else; a cycle always returns.

The flusher (server/flush/flusher.py) is built as the receiver builds it, over a real SQLite
queue, with a fake MLflow client (tests/support/fake_mlflow.py) behind the real ``MlflowSink``.
A restart is a new flusher on the same queue file and the same fake MLflow. Cycles are driven
directly on the test's thread with one writer (so a schedule replays exactly); the flusher's
clock is a fake one that passes every backoff between cycles, and calls are not retried in
place (``RETRY_WINDOW_S``), so each failure reaches the cycle's own handling.

A fourth property: a run's huge batch is written in slices between the others' turns, and
delays no other run's batch by more than one slice of its entries.

About 2,000 schedules a run (800, 800, 400 and 40), derandomized so that CI and a laptop try the
same ones; under a minute on a busy 2-core box.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.events import (
    DeleteTag,
    Event,
    EventBatch,
    Metric,
    Param,
    RunEnd,
    RunStart,
    RunStatus,
    Tag,
)
from server.flush import backoff, pool
from server.queue.sqlite import Queue
from tests.support.fake_mlflow import ACTIONS, FakeMlflow, FakeRun
from tests.support.queued_flusher import QueuedFlusher, fast_clock

pytestmark = pytest.mark.timeout(300)

JOB = "job"
MAX_CYCLES = 60
"""Cycles a schedule may take to write everything (far more than any needs)."""
EXAMPLES = 800
"""Generated schedules per property (each a few dozen MLflow calls)."""

_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same schedules on every run: a CI failure replays locally
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Plan:
    """One client run: its events, stored in batches that arrive at given cycles."""

    name: str
    events: tuple[Event, ...]
    cuts: tuple[int, ...]
    """Where its events are cut into batches (ascending indices)."""
    arrivals: tuple[int, ...]
    """The cycle before which each batch is stored (non-decreasing)."""
    status: RunStatus

    def batches(self) -> Iterator[tuple[int, EventBatch]]:
        bounds = (0, *self.cuts, len(self.events))
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            batch = EventBatch("site", JOB, self.name, lo + 1, self.events[lo:hi])
            yield self.arrivals[i], batch


@st.composite
def plans(draw: st.DrawFn, name: str) -> Plan:
    # Few, or past TAGGED_METRICS (a call that large carries the exactly-once mark).
    metrics = draw(st.one_of(st.integers(0, 12), st.integers(100, 130)))
    values = draw(st.lists(st.integers(0, 3), min_size=metrics, max_size=metrics))
    events: list[Event] = [RunStart(experiment=JOB, run_name=name)]
    # Steps repeat and values repeat: identical points are legal, and collapse in MLflow.
    events += [Metric("loss" if s % 3 else "acc", float(v), s // 2, 1000 + s) for s, v in
               enumerate(values)]  # fmt: skip
    for i in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(1, len(events))), Param(f"p{i}", f"v{i}"))
    # Tags set and deleted, in that order (a client deletes only what it set).
    changes: list[Event] = []
    for i in range(draw(st.integers(0, 3))):
        changes.append(Tag("t", f"v{i}"))
        if draw(st.booleans()):
            changes.append(DeleteTag("t"))
    at = sorted(draw(st.lists(st.integers(1, len(events)), min_size=len(changes),
                              max_size=len(changes))))  # fmt: skip
    for offset, (index, change) in enumerate(zip(at, changes, strict=True)):
        events.insert(index + offset, change)
    status = draw(st.sampled_from([RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED]))
    events.append(RunEnd(status, 5000))
    cuts = sorted(draw(st.sets(st.integers(1, len(events) - 1), max_size=4)))
    arrivals = sorted(draw(st.lists(st.integers(0, 4), min_size=len(cuts) + 1,
                                    max_size=len(cuts) + 1)))  # fmt: skip
    return Plan(name, tuple(events), tuple(cuts), tuple(arrivals), status)


schedules = st.one_of(
    st.lists(st.sampled_from(ACTIONS), max_size=40),  # faults early: creating the runs
    st.dictionaries(st.integers(0, 80), st.sampled_from(ACTIONS[1:]), max_size=10).map(
        lambda at: [at.get(i, "ok") for i in range(max(at, default=-1) + 1)]
    ),  # faults spread over the writes
).map(lambda s: _few_kills(s, 3))


def _few_kills(schedule: list[str], most: int) -> list[str]:
    """At most ``most`` restarts: later kills become plain failures."""
    out: list[str] = []
    for action in schedule:
        if action.startswith("kill"):
            most -= 1
        out.append("fail" if action.startswith("kill") and most < 0 else action)
    return out


@pytest.fixture(autouse=True)
def _fast_clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Every backoff and pause has passed by the next cycle; no call is retried in place."""
    return fast_clock(monkeypatch)


def _run_all(receiver: QueuedFlusher, runs: list[Plan], clock: SimpleNamespace) -> int:
    """Stores each batch at its cycle and cycles until nothing is left; returns the cycles."""
    arriving = sorted(
        ((at, i, b) for p in runs for i, (at, b) in enumerate(p.batches())), key=lambda x: x[0]
    )
    for cycle in range(MAX_CYCLES):
        while arriving and arriving[0][0] <= cycle:
            receiver.store(arriving.pop(0)[2])
        receiver.cycle()
        clock.ahead_s += backoff.BACKOFF_MAX_S * 1.3
        if not arriving and receiver.left() == 0:
            return cycle + 1
    raise AssertionError(f"not written in {MAX_CYCLES} cycles: {receiver.left()} batches left")


def _check(run: FakeRun, plan: Plan) -> None:
    """The run in MLflow holds the plan's events exactly once, in order, and its end."""
    points = [
        (e.key, e.value, e.timestamp_ms, e.step) for e in plan.events if isinstance(e, Metric)
    ]
    distinct = list(dict.fromkeys(points))
    assert run.metrics == distinct  # none missing, none doubled, first stored in client order
    params = {e.key: e.value for e in plan.events if isinstance(e, Param)}
    assert run.params == params
    changes = [e for e in plan.events if isinstance(e, Tag | DeleteTag)]
    if changes and isinstance(changes[-1], Tag):
        assert run.tags["t"] == changes[-1].value
    elif changes:
        assert "t" not in run.tags
    assert run.status == plan.status.value
    assert run.end_time == 5000


def _client_runs(mlflow: FakeMlflow) -> dict[str, FakeRun]:
    live = [
        r
        for r in mlflow.runs.values()
        if r.lifecycle_stage == "active" and r.tags.get("trackbridge.role") == "client"
    ]
    by_key = {r.tags["trackbridge.run_key"]: r for r in live}
    assert len(by_key) == len(live), "a client run was made twice"
    return by_key


@given(runs=st.integers(1, 3).flatmap(lambda n: st.tuples(*(plans(f"r{i}") for i in range(n)))),
       schedule=schedules, alone=st.booleans())  # fmt: skip
@_SETTINGS
def test_every_event_reaches_mlflow_once_in_order_under_any_schedule(
    _fast_clock: SimpleNamespace, runs: tuple[Plan, ...], schedule: list[str], alone: bool
) -> None:
    """Alone (``serve --alone``) a run no create_run ever left for is created in one call, with
    no look: its queue mark, set before each create_run, makes the next try look first."""
    mlflow = FakeMlflow(schedule)
    with tempfile.TemporaryDirectory() as tmp:
        receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow, alone=alone)
        _run_all(receiver, list(runs), _fast_clock)
        assert receiver.flusher.stats.dead_letters == 0
        receiver.close()
    made = _client_runs(mlflow)
    assert sorted(made) == sorted(p.name for p in runs)
    for plan in runs:
        _check(made[plan.name], plan)


@given(runs=st.tuples(plans("bad"), plans("r1"), plans("r2")), schedule=schedules)
@_SETTINGS
def test_a_run_that_always_fails_delays_no_other_run(
    _fast_clock: SimpleNamespace, runs: tuple[Plan, ...], schedule: list[str]
) -> None:
    mlflow = FakeMlflow(schedule, bad_runs=frozenset({"bad"}))
    others = [p for p in runs if p.name != "bad"]
    with tempfile.TemporaryDirectory() as tmp:
        receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow)
        arriving = sorted(((at, b) for p in runs for at, b in p.batches()), key=lambda x: x[0])
        for cycle in range(MAX_CYCLES):
            while arriving and arriving[0][0] <= cycle:
                receiver.store(arriving.pop(0)[1])
            receiver.cycle()
            _fast_clock.ahead_s += backoff.BACKOFF_MAX_S * 1.3
            made = _client_runs(mlflow)
            if not arriving and all(
                p.name in made and made[p.name].status == p.status.value for p in others
            ):
                break
        else:
            raise AssertionError(f"the others not written in {MAX_CYCLES} cycles")
        receiver.close()
    for plan in others:
        _check(made[plan.name], plan)


@given(runs=st.tuples(plans("r0"), plans("r1")), schedule=schedules)
@settings(_SETTINGS, max_examples=EXAMPLES // 2)
def test_stop_returns_within_its_deadline_and_drains_under_any_schedule(
    _fast_clock: SimpleNamespace, runs: tuple[Plan, ...], schedule: list[str]
) -> None:
    """The flusher's own thread and ``stop``: it returns within its deadline, having written
    everything (a schedule's failures end; kills are plain failures here)."""
    mlflow = FakeMlflow(["fail" if a.startswith("kill") else a for a in schedule])
    with tempfile.TemporaryDirectory() as tmp:
        # A cycle that failed while stopping waits an interval before the next one.
        receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow, interval_s=0.02)
        for plan in runs:
            for _, batch in plan.batches():
                receiver.store(batch)
        receiver.flusher.start()
        # stop() joins with its deadline: True means the thread ended in time, drained.
        drained = receiver.flusher.stop(30.0)
        assert drained and not receiver.flusher.running
        receiver.close()
    made = _client_runs(mlflow)
    for plan in runs:
        _check(made[plan.name], plan)


HUGE_KEYS = 2 * pool.SLICE_ENTRIES + 700
"""Distinct metric keys in the huge run's one batch: three slices."""


class _Timeline(FakeMlflow):
    """Keeps, in order, each write MLflow applied: (run name, metric points, last step); and
    calls ``after_huge(calls)`` after each of the huge run's log_batch calls."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[str, int, int]] = []
        self.after_huge: Callable[[int], None] = lambda calls: None
        self._huge_calls = 0

    def log_batch(self, run_id: str, metrics: Sequence[Any] = (), *args: Any, **kw: Any) -> None:
        super().log_batch(run_id, metrics, *args, **kw)
        name = self.runs[run_id].name
        self.timeline.append((name, len(metrics), max((m.step for m in metrics), default=-1)))
        if name == "huge" and metrics:
            self._huge_calls += 1
            self.after_huge(self._huge_calls)

    def set_terminated(self, run_id: str, status: str | None = None,
                       end_time: int | None = None) -> None:  # fmt: skip
        super().set_terminated(run_id, status, end_time)
        self.timeline.append((self.runs[run_id].name, 0, -2))


def _small_batches(name: str, sizes: Sequence[int]) -> list[EventBatch]:
    """A small run's batches of ``sizes`` distinct points (steps 0, 1, ...); the last ends it."""
    batches, step, seq = [], 0, 1
    for i, size in enumerate(sizes):
        events: list[Event] = [RunStart(experiment=JOB, run_name=name)] if i == 0 else []
        events += [Metric("x", float(s), s, 1000 + s) for s in range(step, step + size)]
        step += size
        if i == len(sizes) - 1:
            events.append(RunEnd(RunStatus.FINISHED, 5000))
        batches.append(EventBatch("site", JOB, name, seq, tuple(events)))
        seq += len(events)
    return batches


@given(
    smalls=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=3), min_size=1, max_size=3),
    moments=st.lists(st.integers(0, 7), min_size=9, max_size=9),
)
@settings(_SETTINGS, max_examples=40)
def test_a_huge_batch_delays_no_other_run_beyond_one_slice(
    _fast_clock: SimpleNamespace, smalls: list[list[int]], moments: list[int]
) -> None:
    """The huge run's batch is stored first. Each small batch arrives before a cycle (moment 0
    to 3) or while the huge run's turn writes (after its 1st to 4th call): however they
    arrive, at most a slice of the huge run's points reaches MLflow between a small batch's
    arrival and its last event's, and everything reaches MLflow once."""
    mlflow = _Timeline()
    big = [Metric(f"k{i:05d}", float(i), 0, 1000) for i in range(HUGE_KEYS)]
    events: list[Event] = [RunStart(experiment=JOB, run_name="huge"), *big,
                           RunEnd(RunStatus.FINISHED, 5000)]  # fmt: skip
    arrivals: list[tuple[int, str, int, EventBatch]] = []  # (moment, run, its last step, batch)
    for r, sizes in enumerate(smalls):
        batches = _small_batches(f"s{r}", sizes)
        at = sorted(moments[3 * r : 3 * r + len(batches)])  # a run's batches come in order
        for moment, batch in zip(at, batches, strict=False):
            last = batch.events[-1]
            step = -2 if isinstance(last, RunEnd) else last.step  # type: ignore[union-attr]
            arrivals.append((moment, f"s{r}", step, batch))
    arrivals.sort(key=lambda a: a[0])
    arrived: dict[tuple[str, int], int] = {}  # (run, last step) -> timeline position at arrival
    with tempfile.TemporaryDirectory() as tmp:
        receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow)
        receiver.store(EventBatch("site", JOB, "huge", 1, tuple(events)))

        def arrive(moment: int) -> None:
            while arrivals and arrivals[0][0] <= moment:
                _, name, step, batch = arrivals.pop(0)
                arrived[(name, step)] = len(mlflow.timeline)
                receiver.store(batch)

        mlflow.after_huge = lambda calls: arrive(3 + calls)
        for cycle in range(MAX_CYCLES):
            if cycle <= 3:
                arrive(cycle)
            receiver.cycle()
            _fast_clock.ahead_s += backoff.BACKOFF_MAX_S * 1.3
            if not arrivals and receiver.left() == 0:
                break
        else:
            raise AssertionError(f"not written in {MAX_CYCLES} cycles")
        receiver.close()
    for (name, step), start in arrived.items():
        end = next(i for i, (n, _, s) in enumerate(mlflow.timeline)
                   if n == name and (s >= step if step >= 0 else s == -2))  # fmt: skip
        huge_between = sum(p for n, p, _ in mlflow.timeline[start:end] if n == "huge")
        assert huge_between <= pool.SLICE_ENTRIES, (name, step, huge_between)
    huge_calls = [points for n, points, _ in mlflow.timeline if n == "huge" and points]
    assert set(huge_calls[:-1]) == {pool.CALL_ENTRIES}, huge_calls  # slices end on whole calls
    made = _client_runs(mlflow)
    assert len(made["huge"].metrics) == HUGE_KEYS and made["huge"].status == "FINISHED"
    for r, sizes in enumerate(smalls):
        run = made[f"s{r}"]
        assert [p[3] for p in run.metrics] == list(range(sum(sizes)))
        assert run.status == "FINISHED"


class _Creations(FakeMlflow):
    """Also notes when (the call's index) each client run's create_run came, and every search's
    filter in order."""

    def __init__(self, schedule: Sequence[str] = ()) -> None:
        super().__init__(schedule)
        self.client_creates: list[int] = []
        self.searches: list[tuple[int, str]] = []
        self.keeps: list[int] = []
        """When each delete of a provisional tag (a run's keep) came."""

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        run_name: str | None = None,
    ) -> Any:
        if (tags or {}).get("trackbridge.role") == "client":
            self.client_creates.append(self.calls)
        return super().create_run(experiment_id, start_time, tags, run_name)

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Any:
        self.searches.append((self.calls, filter_string))
        return super().search_runs(experiment_ids, filter_string, max_results, page_token)

    def delete_tag(self, run_id: str, key: str) -> None:
        if key == "trackbridge.provisional":
            self.keeps.append(self.calls)
        super().delete_tag(run_id, key)


def _simple(name: str) -> Plan:
    events = (RunStart(experiment=JOB, run_name=name), Metric("x", 1.0, 0, 1000),
              RunEnd(RunStatus.FINISHED, 5000))  # fmt: skip
    return Plan(name, events, (), (0,), RunStatus.FINISHED)


@pytest.mark.parametrize("alone", [False, True])
@pytest.mark.parametrize("count", [1, 2])  # 2: created together (server/flush/batch_creation.py)
@pytest.mark.parametrize("fault", ["kill", "kill_after", "lost"])
def test_a_fault_at_a_runs_create_run_leaves_the_run_once(
    _fast_clock: SimpleNamespace, alone: bool, count: int, fault: str
) -> None:
    """``kill``: the receiver dies after the run's "creation attempted" mark, before its
    create_run leaves; ``kill_after`` and ``lost``: MLflow made the run and the answer never
    came back. At each client run's create_run in turn: every run once, whole."""
    plans_ = [_simple(f"r{i}") for i in range(count)]
    dry = _Creations()
    with tempfile.TemporaryDirectory() as tmp:
        receiver = QueuedFlusher(Path(tmp) / "queue.db", dry, alone=alone)
        _run_all(receiver, plans_, _fast_clock)
        marks = [Queue(receiver.connection).run(p.name) for p in plans_]
        assert all(m is not None and m.create_tried for m in marks)
        receiver.close()
    assert len(dry.client_creates) == count
    first = dry.client_creates[0]
    looked = [f for at, f in dry.searches if at < first and ("run_key" in f or "'client'" in f)]
    assert not looked, looked  # a run never tried is not looked for before it is created
    for at in dry.client_creates:
        mlflow = _Creations(["ok"] * at + [fault])
        with tempfile.TemporaryDirectory() as tmp:
            receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow, alone=alone)
            _run_all(receiver, plans_, _fast_clock)
            receiver.close()
        made = _client_runs(mlflow)
        assert sorted(made) == sorted(p.name for p in plans_)
        for plan in plans_:
            _check(made[plan.name], plan)


@pytest.mark.parametrize("count", [1, 2])  # 2: created together (server/flush/batch_creation.py)
@pytest.mark.parametrize("fault", ["fail", "lost"])
def test_a_fault_at_a_runs_keep_leaves_the_run_flowing(
    _fast_clock: SimpleNamespace, count: int, fault: str
) -> None:
    """The last step of a run's creation, the delete of its provisional tag, fails or MLflow
    deletes it and the answer is lost (a connection cut): the next try finds the tag gone,
    which MLflow answers RESOURCE_DOES_NOT_EXIST. At each keep in turn: every run once, whole,
    none quarantined as missing."""
    plans_ = [_simple(f"r{i}") for i in range(count)]
    dry = _Creations()
    with tempfile.TemporaryDirectory() as tmp:
        receiver = QueuedFlusher(Path(tmp) / "queue.db", dry)
        _run_all(receiver, plans_, _fast_clock)
        receiver.close()
    assert dry.keeps  # the parent's keep, and each client run's
    for at in dry.keeps:
        mlflow = _Creations(["ok"] * at + [fault])
        with tempfile.TemporaryDirectory() as tmp:
            receiver = QueuedFlusher(Path(tmp) / "queue.db", mlflow)
            _run_all(receiver, plans_, _fast_clock)
            assert receiver.flusher.stats.quarantined_runs == 0
            receiver.close()
        made = _client_runs(mlflow)
        assert sorted(made) == sorted(p.name for p in plans_)
        for plan in plans_:
            _check(made[plan.name], plan)
            assert "trackbridge.provisional" not in made[plan.name].tags
