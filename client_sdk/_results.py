"""What ``Writer.close`` reports."""

from __future__ import annotations


class CloseResult(int):
    """What a closing writer could not deliver.

    An ``int`` (as ``close`` returned before): events that did not reach the receiver, i.e.
    ``undelivered_events + dropped_events``. The parts, and the artifacts, are attributes.
    """

    undelivered_events: int
    """Events logged but not acknowledged by the receiver; with a spool they stay there, for
    the next writer of the same destination or ``trackbridge sync``."""
    dropped_events: int
    """Events dropped because the spool could not be written and the in-memory buffer was full
    (``Writer.dropped_events``); the receiver is told how many, in the run's sequence."""
    artifacts_left: int
    """Artifacts staged but not acknowledged; with a spool they stay staged in it."""

    def __new__(
        cls, undelivered_events: int, dropped_events: int, artifacts_left: int
    ) -> CloseResult:
        result = super().__new__(cls, undelivered_events + dropped_events)
        result.undelivered_events = undelivered_events
        result.dropped_events = dropped_events
        result.artifacts_left = artifacts_left
        return result

    def __str__(self) -> str:
        return int.__repr__(self)

    def __repr__(self) -> str:
        return (
            f"CloseResult(undelivered_events={self.undelivered_events},"
            f" dropped_events={self.dropped_events}, artifacts_left={self.artifacts_left})"
        )
