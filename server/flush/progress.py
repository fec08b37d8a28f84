"""How far each run is written, recorded after every MLflow call, and the call in flight.

After every MLflow call the queue records how far the run got (:meth:`Queue.advance`: the
stored batches written whole are deleted, the one written in part keeps its mark), so a
restart writes again at most the call that was in flight.

Not even that one when it landed. Before a ``log_batch`` call of at least ``TAGGED_METRICS``
points the queue records an intent (the call's last sequence number and a random token) and the
call carries the same value as the run's ``trackbridge.flushed`` tag. MLflow's SQL store writes
a call's params, metrics and tags in three transactions, in that order
(``SqlAlchemyStore.log_batch``), so a call is not all-or-nothing as a whole, but its tags land
last: a restarted receiver that finds its token in the tag knows the whole call is in MLflow and
skips it; otherwise it writes the call again, which MLflow absorbs (one copy of identical
points, a param re-logged with its value is a no-op, a tag set to the same value). A metric
sentinel would not do: an identical point logged earlier would pass for the call, and it would
prove nothing of the params and tags. Smaller calls carry no tag: writing one again costs MLflow
little (about 9 ms per point it already has), and the tag would add a transaction to every
small call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from server.flush.state import FlushStats
from server.queue.sqlite import Backlog, DeadLetter, PendingBatch, Queue

_logger = logging.getLogger(__name__)

TAGGED_METRICS = 100
"""Calls with at least this many metric points carry the ``trackbridge.flushed`` tag."""
BATCHES_PER_READ = 16
"""Stored batches read at once; their entries go out in as few log_batch calls as fit."""


class FlushObserver(Protocol):
    """Told what the flusher did, on the flusher's thread (the live view, /metrics)."""

    def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
        """A run's events up to ``last_seq`` reached MLflow (``events`` of them, one call)."""

    def dead_lettered(self, run_key: str, events: int = 1) -> None:
        """MLflow refused ``events`` events of the run for good (or its run is quarantined)."""


class Observers:
    """Several flush observers told the same (the live view, reads waiting for writes)."""

    def __init__(self, *observers: FlushObserver) -> None:
        self._observers = observers

    def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
        """Tells each observer."""
        for observer in self._observers:
            observer.flushed(run_key, last_seq, events, seconds)

    def dead_lettered(self, run_key: str, events: int = 1) -> None:
        """Tells each observer."""
        for observer in self._observers:
            observer.dead_lettered(run_key, events)


@dataclass(slots=True)
class Read:
    """Pending batches read at once, and how far they are written."""

    batches: list[PendingBatch]
    cut: int = 0
    """Batches before this index are written whole (and deleted from the queue)."""
    reported: int = 0
    """Events of the read counted as written."""


class Progress:
    """Records each step of a run into MLflow, and counts it."""

    def __init__(
        self,
        queue: Queue,
        backlog: Backlog,
        stats: FlushStats,
        observer: FlushObserver | None,
    ) -> None:
        self._queue = queue
        self._backlog = backlog
        self._stats = stats
        self._observer = observer

    def advance(  # noqa: PLR0917 - one step of one read
        self,
        run_key: str,
        read: Read,
        index: int,
        seq: int,
        ordinal: int,
        written: int,
        dead: list[DeadLetter],
        started: float,
    ) -> None:
        """Records that the read is written up to event ``seq`` of batch ``index`` (its
        ``ordinal``-th event not written before), ``dead`` of them refused."""
        batch = read.batches[index]
        whole = seq >= batch.last_seq
        end = index + 1 if whole else index
        done = [b.id for b in read.batches[read.cut : end]]
        self._queue.advance(
            run_key,
            done,
            None if whole else (batch.id, seq),
            flushed_seq=seq,
            written=written,
            dead=dead,
        )
        read.cut = end
        events = ordinal - read.reported
        read.reported = ordinal
        self._stats.add(events_flushed=events)
        self._backlog.remove(events)
        if self._observer is not None:
            self._observer.flushed(run_key, seq, events, time.perf_counter() - started)

    def skip_through(self, run_key: str, seq: int) -> bool:
        """Marks a run written up to ``seq`` (a call MLflow has whole); False when its pending
        batches do not hold that event."""
        read = Read(self._queue.pending(run_key, BATCHES_PER_READ))
        ordinal = 0
        for index, stored in enumerate(read.batches):
            for current in range(max(stored.first_seq, stored.done_seq + 1), stored.last_seq + 1):
                ordinal += 1
                if current == seq:
                    self.advance(
                        run_key, read, index, seq, ordinal, ordinal, [], time.perf_counter()
                    )
                    self._stats.add(recovered_events=ordinal)
                    _logger.info(
                        "run %s: the log_batch call in flight at the last stop (%d events, up"
                        " to %d) is in MLflow already; not sent again",
                        run_key,
                        ordinal,
                        seq,
                    )
                    return True
        return False
