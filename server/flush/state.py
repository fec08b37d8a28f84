"""What the flusher knows of each run: one :class:`RunState` per run, and who may touch it.

The flusher's thread owns every run's state. A run's turn (on a pool thread, server/flush/pool.py)
has its run's state to itself while it lasts: a run is never in two turns, the flusher touches
no state of a run whose turn is in flight, and adds or drops states only while no turn is in
flight (a cycle loads the states of its runs before it hands out their turns). The ingest thread
touches none of it: what it tells the flusher goes through :class:`Arrivals`, under its lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass

from bridge.convert import event_from_proto
from bridge.events import RunStart, RunStatus
from bridge.pb.v1 import events_pb2
from server.flush.sink import RunRef
from server.queue.sqlite import PendingBatch, Queue, RunRecord

_logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FlushStats:
    """Counters of the flusher's work."""

    events_flushed: int = 0
    log_batch_calls: int = 0
    dead_letters: int = 0
    mlflow_errors: int = 0
    cycles: int = 0
    metric_points_written: int = 0
    """Metric points in log_batch calls MLflow accepted (resent ones included)."""
    recovered_events: int = 0
    """Events of a call in flight at the last stop that had reached MLflow: not sent again."""
    quarantined_runs: int = 0
    held_events: int = 0
    """Events quarantined runs hold back."""

    def add(self, **counts: int) -> None:
        """Adds to counters; safe from the pool's writer threads (a bare ``+=`` is not)."""
        with _COUNTING:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


_COUNTING = threading.Lock()


@dataclass(slots=True)
class RunState:
    """Everything the flusher knows of one run (see the module's docstring for its owner)."""

    record: RunRecord
    """Its durable record, as last read from the queue."""
    status: str
    """Its MLflow status as far as the receiver knows."""
    ref: RunRef | None = None
    """Its MLflow run, once made or found."""
    created: RunRef | None = None
    """Its MLflow run when made in a batch with others, its start not written yet."""
    recovering: bool = False
    """A log_batch call of it was in flight when the receiver last stopped."""
    quarantine: str = ""
    """Why MLflow refuses it for good ("": it flows)."""
    held: int = 0
    """Events it holds while quarantined, as last counted."""
    retry_at: float = 0.0
    """Not tried before this (``time.monotonic()``): its back-off, or a wait."""
    failures: int = 0
    """Its writes that failed in a row."""
    missing: int = 0
    """Times in a row MLflow did not know its run."""
    missing_since: float | None = None
    """Since when its start is awaited from another receiver (``time.monotonic()``)."""
    chosen: RunStart | None = None
    """The experiment its batches name (what its start chose), for a run made without its start."""
    gave_way: bool = False
    """Its last turn ended with more left (it goes after the others in the next cycle)."""
    stamped: float = -1e18
    """When it was last heard from, as last stamped on its MLflow run (leases)."""
    heard_elsewhere: float | None = None
    """When another receiver last heard from its client (leases)."""

    @property
    def key(self) -> str:
        return self.record.run_key


@dataclass(frozen=True, slots=True)
class QueueMark:
    """A run's "creation attempted" mark on its queue row (server/flush/run_creation.py's
    :class:`~server.flush.run_creation.CreationMark`), read afresh each time: a batch's
    creation sets it from the flusher's thread."""

    queue: Queue
    run_key: str

    def tried(self) -> bool:
        record = self.queue.run(self.run_key)
        return record is None or record.create_tried

    def attempt(self) -> None:
        self.queue.mark_create_tried([self.run_key])


class Runs:
    """Every run's :class:`RunState`, by run key."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        self._states: dict[str, RunState] = {}
        for r in queue.runs():
            self._states[r.run_key] = _state_of(r)

    def __iter__(self) -> Iterator[RunState]:
        return iter(list(self._states.values()))

    def mark(self, run_key: str) -> QueueMark:
        """The run's creation mark."""
        return QueueMark(self._queue, run_key)

    def get(self, run_key: str) -> RunState | None:
        """The run's state, if the flusher has one."""
        return self._states.get(run_key)

    def start_overdue(self, run_key: str, lease_s: float) -> bool:
        """Whether the receiver holding this run's start has had a lease to create it."""
        now = time.monotonic()
        state = self.state(run_key)
        since = state.missing_since = now if state.missing_since is None else state.missing_since
        if since == now:
            _logger.info(
                "run %s: its start went to another receiver; waiting for it to create the"
                " MLflow run (then this receiver creates it itself after %.0f s)",
                run_key,
                lease_s,
            )
        return now - since >= lease_s

    def note_chosen(self, run_key: str, batches: Iterable[PendingBatch]) -> None:
        """Remembers the experiment a run's batches name (each carries what its start chose)."""
        for b in reversed(list(batches)):  # every batch names the same choice: the last one
            if b.experiment or b.experiment_id:
                self.state(run_key).chosen = RunStart(b.experiment, experiment_id=b.experiment_id)
                return

    def state(self, run_key: str) -> RunState:
        """The run's state (read from the queue when the run is new: the flusher's thread)."""
        state = self._states.get(run_key)
        return state if state is not None else self.reload(run_key)

    def record(self, run_key: str) -> RunRecord:
        """A run's record."""
        return self.state(run_key).record

    def reload(self, run_key: str) -> RunState:
        """Reads a run's record again (its MLflow ids may have been reset by a replay)."""
        record = self._queue.run(run_key)
        if record is None:
            raise KeyError(f"run {run_key} is not in the queue")
        state = self._states.get(run_key)
        if state is None:
            self._states[run_key] = state = _state_of(record)
        state.record = record
        state.ref = _ref_of(record)
        return state

    def ref(self, run_key: str) -> RunRef | None:
        """The run's MLflow run, if known."""
        state = self._states.get(run_key)
        return state.ref if state is not None else None

    def set_ref(self, run_key: str, ref: RunRef) -> None:
        """Records the run's MLflow run (in memory: the queue has its own call)."""
        self.state(run_key).ref = ref

    def take_created(self, run_key: str) -> RunRef | None:
        """The MLflow run made for it in a batch, once (its start is being written)."""
        state = self.state(run_key)
        made, state.created = state.created, None
        return made

    def status(self, run_key: str) -> str:
        """The run's MLflow status as far as the receiver knows ("" when unknown)."""
        state = self._states.get(run_key)
        return state.status if state is not None else ""

    def set_status(self, run_key: str, status: str) -> None:
        """Records the run's MLflow status, in memory and in the queue."""
        self.state(run_key).status = status
        self._queue.set_status(run_key, status)

    def saved_start(self, run_key: str) -> RunStart | None:
        """The run's start as this receiver wrote it, to create the run again (another store,
        or a run MLflow lost); None when the start went to another receiver."""
        raw = self.record(run_key).start_event
        if not raw:
            return None
        event = event_from_proto(events_pb2.Event.FromString(raw))
        return event if isinstance(event, RunStart) else None

    def keep_start(self, run_key: str, raw: bytes) -> None:
        """Keeps the run's start event (its wire form) in the queue."""
        self._queue.set_run_start(run_key, raw)
        state = self.state(run_key)
        state.record = dataclasses.replace(state.record, start_event=raw)

    def forget_mlflow(self) -> None:
        """Forgets every MLflow run (MLflow's store was replaced)."""
        for state in self._states.values():
            state.ref = state.created = None
            state.recovering = False
            state.retry_at, state.missing = 0.0, 0
            state.record = dataclasses.replace(
                state.record, mlflow_run_id="", mlflow_experiment_id="", written_events=0,
                inflight="",
            )  # fmt: skip

    def running(self, run_key: str) -> bool:
        """Whether the run is RUNNING as far as the receiver knows."""
        return self.status(run_key) == RunStatus.RUNNING.value


def _ref_of(record: RunRecord) -> RunRef | None:
    if not record.mlflow_run_id:
        return None
    return RunRef(record.mlflow_run_id, record.mlflow_experiment_id)


def _state_of(record: RunRecord) -> RunState:
    return RunState(
        record, record.status, ref=_ref_of(record), recovering=bool(record.inflight),
        quarantine=record.quarantine,
    )  # fmt: skip


class Arrivals:
    """What the ingest thread tells the flusher as batches are stored, and the little it must
    know of the flusher's runs to decide whether to wake it; all under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, int] = defaultdict(int)
        self._known: set[str] = set()
        self._held: set[str] = set()

    def stored(self, run_key: str, count: int) -> tuple[bool, int]:
        """Counts ``count`` events of a run stored (ingest thread): whether the run is new to
        the flusher (no MLflow run yet), and its events stored since the cycle began (0 for a
        quarantined run: nothing to hurry)."""
        with self._lock:
            if run_key in self._held:
                return False, 0
            self._counts[run_key] += count
            return run_key not in self._known, self._counts[run_key]

    def new_cycle(self) -> None:
        """A cycle begins: counts start again."""
        with self._lock:
            self._counts.clear()

    def others(self, run_keys: Set[str]) -> bool:
        """Whether events of a run not in ``run_keys`` arrived since the cycle began (a turn's
        thread)."""
        with self._lock:
            return any(k not in run_keys for k in self._counts)

    def note(self, state: RunState) -> None:
        """Tells the ingest side what the flusher now knows of the run (flusher's thread)."""
        with self._lock:
            _toggle(self._known, state.key, state.ref is not None or state.created is not None)
            _toggle(self._held, state.key, bool(state.quarantine))


def _toggle(keys: set[str], key: str, present: bool) -> None:
    if present:
        keys.add(key)
    else:
        keys.discard(key)
