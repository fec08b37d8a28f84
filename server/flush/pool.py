"""Flushing several runs at once: a bounded pool of writer threads (``serve --flush-workers``).

MLflow answers a ``log_batch`` in 10-15 ms, most of it the server's round trip and database
commit, and MLflow on PostgreSQL with several server workers answers several at once. So the
flusher gives up to ``workers`` runs their turn at the same time, each on a thread of its own:

- one run is never on two threads (a cycle hands each run out once), so each run's events go
  to MLflow in the client's order and its progress is recorded after every call, as before;
- the queue's connection is shared: :class:`Serialized` lets one thread at a time into it
  (a call is a short transaction, never an MLflow call), so SQLite sees what it did before;
- a turn has its run's state (server/flush/state.py) to itself while it lasts; what it
  decides (quarantine, back-off, a paused cycle) is applied to that state as its turn ends,
  on the flusher's thread, in the order the turns end.

With a single worker the turns run on the flusher's thread, one after another, exactly as
before the pool existed.

Turns are fair by size, not by run: a turn that has written a slice (``SLICE_ENTRIES``) gives
way when another run waits for its turn, and every turn ends when its time is up
(:class:`Budget`). So one run's huge batch is written in slices between the other runs'
turns, and holds none of them back by more than a slice (or a flush interval). A slice is cut
on whole ``log_batch`` calls (``CALL_ENTRIES``), so that it never ends with a small call.
"""

from __future__ import annotations

import enum
import itertools
import sqlite3
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.limits import MAX_ENTITIES_PER_BATCH

T = TypeVar("T")
K = TypeVar("K")

CALL_ENTRIES = MAX_ENTITIES_PER_BATCH - 1
"""Metric points in a full ``log_batch`` call: MLflow's limit less the room for the progress
mark (server/flush/progress.py)."""
SLICE_ENTRIES = 2 * CALL_ENTRIES
"""Entries (metric points, params, tags; any other event counts one) a turn writes before it
gives way to a run waiting for its turn: two full log_batch calls."""
DEFAULT_WORKERS = 4
"""Writers at once: MLflow on PostgreSQL with 4 server workers (the deployment the docs
recommends at scale) takes four runs' log_batch calls at once."""


class Turn(enum.Enum):
    """How a run's turn ended. A turn on a pool thread changes no state the flusher shares
    (back-off, quarantine, retries); it returns this, and the flusher's thread applies it."""

    DONE = "done"
    MORE = "more"
    """Its time ran out, or it gave way after a slice, with batches left."""
    HELD = "held"
    """Quarantined since the cycle began: not written."""
    REFUSED = "refused"
    """MLflow refuses the run for good: quarantine it (``error`` is the RunRefused)."""
    MISSING = "missing"
    """MLflow does not know the run (``error`` is the RunMissing)."""
    NOT_CREATED = "not_created"
    """Its start is with another receiver: try again later."""
    FAILED = "failed"
    """MLflow failed (``error``): back off."""


@dataclass(frozen=True, slots=True)
class TurnResult:
    """A turn's outcome, and the exception behind it."""

    turn: Turn
    error: BaseException | None = None


class Budget:
    """When a run's turn ends: its time is up, or it has written a slice while another run
    waits. Used by the turn's own thread only.

    The entries of a slice are written in whole calls (:attr:`cut`); what is left of a slice
    below one call is not written in it: the slice ends there."""

    def __init__(self, until: float, others_wait: Callable[[], bool], clock: Callable[[], float]):
        self.left = SLICE_ENTRIES
        """Entries before the slice ends (at least a call's while the turn goes on)."""
        self._until = until
        self._others_wait = others_wait
        self._clock = clock

    def spend(self, entries: int) -> bool:
        """Counts ``entries`` written; True when the turn ends here (the run has more)."""
        self.left -= entries
        if self._clock() >= self._until:
            return True
        if self.left >= CALL_ENTRIES:
            return False
        if self._others_wait():
            return True
        self.left = SLICE_ENTRIES  # nobody waits: another slice
        return False

    @property
    def cut(self) -> int:
        """Entries to gather before writing them: the whole calls left in the slice."""
        return max(CALL_ENTRIES, self.left - self.left % CALL_ENTRIES)


class Gate:
    """One thread at a time through the flusher's queue connection, until it is shut: a
    flusher that ran out of time to stop must not touch the connection the receiver closes
    (a connection closed under a running statement can crash the process)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.shut = False

    def close(self) -> None:
        """Waits for the call in progress, then refuses every later one."""
        with self.lock:
            self.shut = True


class Serialized:
    """Lets one thread at a time call ``target``'s methods (a queue on one connection)."""

    def __init__(self, target: object, gate: Gate) -> None:
        self._target = target
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        gate = self._gate

        def locked(*args: Any, **kwargs: Any) -> Any:
            with gate.lock:
                if gate.shut:
                    raise sqlite3.ProgrammingError("the flusher has stopped: its queue is closed")
                return attr(*args, **kwargs)

        return locked


class TurnPool:
    """Runs turns of distinct runs on up to ``workers`` threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="trackbridge-writer")
            if workers > 1
            else None
        )

    def turns(
        self, runs: Iterable[K], turn: Callable[[K], T]
    ) -> Generator[tuple[K, T], None, None]:
        """``(run, turn(run))`` for each run, as the turns end. A turn's exception is
        raised here once the turns in flight have ended; so is closing the iterator early
        (the caller stops handing out turns): each turn in flight records its own progress."""
        if self._pool is None:
            for run in runs:
                yield run, turn(run)
            return
        keys = iter(runs)
        running: dict[Future[T], K] = {
            self._pool.submit(turn, k): k for k in itertools.islice(keys, self.workers)
        }
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    run = running.pop(future)
                    following = next(keys, None)
                    if following is not None:
                        running[self._pool.submit(turn, following)] = following
                    yield run, future.result()
        finally:
            wait(running)

    def close(self) -> None:
        """Ends the threads (after the turns in flight)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
