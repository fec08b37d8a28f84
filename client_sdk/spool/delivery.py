"""Delivering a spool whose writer is gone: its batches in order, the losses its ledger shows,
and its staged artifacts. The next writer of the same destination (``client_sdk/_recovery.py``)
and ``trackbridge sync`` both deliver through here.

What counts as lost: sequence numbers the spool's ledger says were spooled (and not
acknowledged) that are neither in the spool any more nor acknowledged by the receiver. Such a
range (a torn WAL's last commits, an unreadable database, a batch that cannot be read) is
reported to the receiver as a ``Dropped`` event numbered as the range's last event, so the
receiver records the loss on the run and a second delivery reports nothing twice. A spool with
no ledger (one written by an older trackbridge) cannot tell what its last moments lost.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from bridge.convert import event_to_proto
from bridge.events import DROPPED_SPOOL_LOST, Dropped
from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk._artifacts import Outcome, upload
from client_sdk._staging import discard, load, remove_strays
from client_sdk._transport import ArtifactTransport, EventTransport, TransportError
from client_sdk.spool.file import Spool
from client_sdk.spool.names import SpooledBatch, SpoolError


@dataclass
class SpoolReport:
    """What delivering one spool did."""

    name: str
    events_delivered: int = 0
    events_left: int = 0
    """Still in the spool (receiver unreachable, or a batch it refused)."""
    events_lost: int = 0
    """Spooled once, now in neither the spool nor the receiver (see the module docstring)."""
    artifacts_delivered: int = 0
    artifacts_left: int = 0
    artifacts_lost: int = 0
    problems: list[str] = field(default_factory=list)
    """One line per problem, each naming the spool."""
    notes: list[str] = field(default_factory=list)
    """What cannot be known (no problem found, none ruled out), one line each."""
    unreachable: str = ""
    """The receiver's last error when time ran out before everything was sent."""
    complete: bool = False
    """Everything was tried before time ran out (what is left was refused)."""

    @property
    def clean(self) -> bool:
        """Nothing left, nothing lost."""
        return not (
            self.events_left
            or self.events_lost
            or self.artifacts_left
            or self.artifacts_lost
            or self.problems
        )

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.name}: events delivered {self.events_delivered}, left {self.events_left},"
            f" lost {self.events_lost}; artifacts delivered {self.artifacts_delivered},"
            f" left {self.artifacts_left}, lost {self.artifacts_lost}"
        )


class _OutOfTime(Exception):
    pass


class Delivery:
    """Delivers one adopted spool over the given transports."""

    def __init__(
        self,
        spool: Spool,
        transport: EventTransport,
        artifact_transport: Callable[[], ArtifactTransport],
        *,
        deadline: Callable[[], float],
        interrupt: threading.Event,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._spool = spool
        self._transport = transport
        self._artifact_transport = artifact_transport
        self._deadline = deadline
        self._interrupt = interrupt
        self._max_backoff_s = max_backoff_s
        self.report = SpoolReport(spool.path.name)
        self._ident: tuple[str, str] | None = None
        if spool.destination is not None:
            self._ident = (spool.destination.client_id, spool.destination.job)

    def run(self) -> SpoolReport:
        """Delivers what it can before the deadline; the rest stays in the spool."""
        report = self.report
        try:
            batches = self._spool.batches()
        except SpoolError as exc:
            batches = []
            try:
                self._spool.quarantine(str(exc))
            except SpoolError as moved:
                report.problems.append(f"{report.name}: {moved}")
                return report
        if self._spool.damage:
            report.problems.append(
                f"{report.name}: the database could not be read ({self._spool.damage}); it is kept"
                " beside as .corrupt, and what its ledger shows is counted as lost"
            )
        by_run: dict[str, list[SpooledBatch]] = {}
        for b in batches:
            by_run.setdefault(b.run_key, []).append(b)
        ledger = self._spool.ledger()
        if not ledger and (batches or self._spool.damage):
            report.notes.append(
                f"{report.name}: no ledger (written by an older trackbridge?): what its last"
                " moments lost, if anything, cannot be known"
            )
        out_of_time = False
        for run_key in dict.fromkeys([*by_run, *ledger]):
            run_batches = by_run.get(run_key, [])
            if out_of_time:
                report.events_left += sum(b.last_seq - b.first_seq + 1 for b in run_batches)
                continue
            try:
                self._run(run_key, run_batches, ledger.get(run_key))
            except _OutOfTime:
                out_of_time = True
        if not out_of_time:
            report.complete = self._artifacts()
        else:
            report.artifacts_left += len(list(self._spool.manifests()))
        return report

    # -- events --------------------------------------------------------------------------------

    def _run(
        self, run_key: str, batches: list[SpooledBatch], marks: tuple[int, int] | None
    ) -> None:
        remaining = list(batches)
        try:
            self._send_run(run_key, remaining, marks)
        except _OutOfTime:
            self.report.events_left += sum(b.last_seq - b.first_seq + 1 for b in remaining)
            raise

    def _send_run(
        self, run_key: str, remaining: list[SpooledBatch], marks: tuple[int, int] | None
    ) -> None:
        """Sends a run's batches, taking each from ``remaining`` once it is accounted for."""
        report = self.report
        if self._ident is None and remaining:
            with contextlib.suppress(DecodeError):  # a spool of an older trackbridge
                header = events_pb2.EventBatch.FromString(self._payload(remaining[0]) or b"")
                self._ident = (header.client_id, header.job) if header.client_id else None
        acked = self._receiver_acked(run_key)
        # The next sequence number the spool should hold: from the ledger, else from the
        # batch before (gaps between spooled batches show without a ledger too).
        expected = marks[1] + 1 if marks is not None else None
        while remaining:
            b = remaining[0]
            if expected is not None and b.first_seq > expected:
                acked = self._lose(run_key, expected, b.first_seq - 1, acked)
            payload = self._payload(b)
            if payload is None:
                acked = self._lose(run_key, b.first_seq, b.last_seq, acked)
                self._spool.remove([b.id], {run_key: acked})
            else:
                try:
                    ack = self._publish(payload)
                except TransportError as exc:
                    report.events_left += b.last_seq - b.first_seq + 1
                    report.problems.append(
                        f"{report.name}: events {b.first_seq}-{b.last_seq} of run {run_key}"
                        f" refused by the receiver ({exc}); kept in the spool"
                    )
                else:
                    acked = max(acked, ack.acked_seq)
                    report.events_delivered += b.last_seq - b.first_seq + 1
                    self._spool.remove([b.id], {run_key: acked})
            expected = max(expected or 0, b.last_seq + 1)
            remaining.pop(0)
        seen = max(acked, (expected or 1) - 1)
        if marks is not None and marks[0] > seen:
            self._lose(run_key, seen + 1, marks[0], acked)

    def _payload(self, batch: SpooledBatch) -> bytes | None:
        try:
            return self._spool.payload(batch.id)
        except SpoolError as exc:
            self.report.problems.append(f"{self.report.name}: {exc}")
            return None

    def _receiver_acked(self, run_key: str) -> int:
        if self._ident is None:
            return 0
        while True:
            try:
                ack = self._transport.get_run(self._ident[0], run_key, 10.0)
            except TransportError as exc:
                if exc.retryable:
                    self._pause(exc)
                    continue
                return 0
            return int(ack.acked_seq)

    def _lose(self, run_key: str, first: int, last: int, acked: int) -> int:
        """Reports sequence numbers ``first..last`` lost, less what the receiver has; returns
        the receiver's acknowledged sequence afterwards."""
        first = max(first, acked + 1)
        if first > last or self._ident is None:
            return acked
        count = last - first + 1
        msg = events_pb2.EventBatch(
            client_id=self._ident[0], job=self._ident[1], run_key=run_key, first_seq=last
        )
        event_to_proto(
            Dropped(count, DROPPED_SPOOL_LOST, first, last, time.time_ns() // 1_000_000),
            msg.events.add(),
        )
        self.report.events_lost += count
        try:
            ack = self._publish(msg.SerializeToString())
        except _OutOfTime:
            self.report.events_lost -= count  # counted, and reported, next time
            raise
        except TransportError as exc:
            self.report.problems.append(
                f"{self.report.name}: events {first}-{last} of run {run_key} were spooled but"
                f" are gone; the receiver refused the report of it ({exc})"
            )
            return acked
        self.report.problems.append(
            f"{self.report.name}: events {first}-{last} of run {run_key} were spooled but are"
            " gone (a torn or unreadable spool); the receiver records the loss on the run"
        )
        return max(acked, ack.acked_seq)

    def _publish(self, payload: bytes) -> ingest_pb2.Ack:
        """Sends one batch, retrying until the deadline; raises _OutOfTime or a refusal."""
        while True:
            left = self._deadline() - time.monotonic()
            if left <= 0 or self._interrupt.is_set():
                raise _OutOfTime
            try:
                return self._transport.publish(payload, min(10.0, left))
            except TransportError as exc:
                if not exc.retryable:
                    raise
                self._pause(exc)

    def _pause(self, exc: TransportError) -> None:
        self.report.unreachable = str(exc)
        left = self._deadline() - time.monotonic()
        if left <= 0 or self._interrupt.is_set():
            raise _OutOfTime
        delay = max(0.2, exc.retry_after_s)
        self._interrupt.wait(min(delay, self._max_backoff_s, left))

    # -- artifacts -----------------------------------------------------------------------------

    def _artifacts(self) -> bool:
        """Delivers the staged artifacts; False when time ran out first."""
        report = self.report
        remove_strays(self._spool.stage_dir)
        manifests = list(self._spool.manifests())
        if manifests and self._ident is None:
            report.artifacts_left += len(manifests)
            report.problems.append(f"{report.name}: artifacts kept: their destination is unknown")
            return True
        transport: ArtifactTransport | None = None
        for i, manifest in enumerate(manifests):
            item = load(manifest)
            if item is None:
                report.artifacts_left += 1
                report.problems.append(f"{report.name}: {manifest} cannot be read; kept")
                continue
            if transport is None:
                transport = self._artifact_transport()
            assert self._ident is not None
            outcome, error = upload(
                transport,
                item,
                *self._ident,
                deadline=self._deadline,
                interrupt=self._interrupt,
                max_backoff_s=self._max_backoff_s,
            )
            if outcome is Outcome.NOT_YET:
                report.unreachable = error
                report.artifacts_left += len(manifests) - i
                return False
            discard(item)
            if outcome is Outcome.DELIVERED:
                report.artifacts_delivered += 1
            else:
                report.artifacts_lost += 1
                report.problems.append(
                    f"{report.name}: artifact {item.shown} of run {item.run_key} not delivered"
                    f" ({outcome.value}: {error})"
                )
        return True
