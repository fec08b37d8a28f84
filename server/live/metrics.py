"""``/metrics``: the receiver's pipeline in the Prometheus text format (version 0.0.4).

Written by hand (a dozen families) so that the receiver needs no metrics library. Per-client
counters start at zero when the receiver starts, as Prometheus counters do.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.live.model import ClientRow, Counters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLUSH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """A cumulative-bucket histogram; not thread-safe (its owner holds a lock)."""

    def __init__(self, buckets: Sequence[float] = FLUSH_BUCKETS_S) -> None:
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Counts one observation."""
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> HistogramSnapshot:
        """Cumulative counts per upper bound, for rendering."""
        cumulative = []
        running = 0
        for bound, count in zip((*self.buckets, math.inf), self._counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), self.sum, self.count)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram's state at one moment."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


# (metric, type, ClientRow attribute, help)
_PER_CLIENT = (
    (
        "trackbridge_events_received_total",
        "counter",
        "events_received",
        "Events in accepted batches, resends included.",
    ),
    (
        "trackbridge_events_acked_total",
        "counter",
        "events_acked",
        "Events durably stored and acknowledged.",
    ),
    ("trackbridge_events_flushed_total", "counter", "events_flushed", "Events written to MLflow."),
    (
        "trackbridge_events_dead_lettered_total",
        "counter",
        "dead_letters",
        "Entries MLflow refused for good.",
    ),
    (
        "trackbridge_client_backlog_events",
        "gauge",
        "backlog_events",
        "Events acknowledged, not yet in MLflow.",
    ),
    (
        "trackbridge_client_pending_events",
        "gauge",
        "client_pending_events",
        "Events unacknowledged on the client (its report).",
    ),
    (
        "trackbridge_client_connected",
        "gauge",
        "connected",
        "1 when heard from within the client timeout.",
    ),
)


def render(
    rows: Sequence[ClientRow],
    counters: Counters,
    *,
    mlflow_up: bool,
    flush: HistogramSnapshot,
) -> str:
    """The exposition text for the receiver's current state."""
    lines: list[str] = []
    for name, kind, attr, help_text in _PER_CLIENT:
        samples = (
            f'{name}{{job="{_escape(r.job)}",client="{_escape(r.client_id)}"}} '
            f"{_number(float(getattr(r, attr)))}"
            for r in rows
        )
        lines += _family(name, kind, help_text, samples)
    connected = sum(r.connected for r in rows)
    scalars = (
        (
            "trackbridge_connected_clients",
            "gauge",
            "Clients heard from within the client timeout.",
            connected,
        ),
        (
            "trackbridge_events_duplicate_total",
            "counter",
            "Resent events already stored.",
            counters.events_duplicate,
        ),
        (
            "trackbridge_batches_rejected_total",
            "counter",
            "Malformed batches refused.",
            counters.batches_rejected,
        ),
        (
            "trackbridge_batches_throttled_total",
            "counter",
            "Batches refused: backlog full.",
            counters.batches_throttled,
        ),
        (
            "trackbridge_queue_batches",
            "gauge",
            "Stored batches not yet in MLflow.",
            counters.queued_batches,
        ),
        (
            "trackbridge_backlog_events",
            "gauge",
            "Stored events not yet in MLflow.",
            counters.backlog_events,
        ),
        (
            "trackbridge_mlflow_errors_total",
            "counter",
            "Failed MLflow calls (retries count).",
            counters.mlflow_errors,
        ),
        (
            "trackbridge_quarantined_runs",
            "gauge",
            "Runs MLflow refuses for good, held until replayed.",
            counters.quarantined_runs,
        ),
        (
            "trackbridge_held_events",
            "gauge",
            "Events quarantined runs hold back.",
            counters.held_events,
        ),
        (
            "trackbridge_metric_points_written_total",
            "counter",
            "Metric points in log_batch calls MLflow accepted.",
            counters.metric_points_written,
        ),
        (
            "trackbridge_recovered_events_total",
            "counter",
            "Events in MLflow already at a restart, not sent again.",
            counters.recovered_events,
        ),
        (
            "trackbridge_mlflow_up",
            "gauge",
            "1 unless the flusher fails to reach MLflow.",
            int(mlflow_up),
        ),
    )
    for name, kind, help_text, value in scalars:
        lines += _family(name, kind, help_text, [f"{name} {_number(float(value))}"])
    name = "trackbridge_flush_duration_seconds"
    buckets = [f'{name}_bucket{{le="{_number(b)}"}} {c}' for b, c in flush.buckets]
    lines += _family(
        name,
        "histogram",
        "Time to write one stored batch to MLflow.",
        [*buckets, f"{name}_sum {flush.sum!r}", f"{name}_count {flush.count}"],
    )
    return "\n".join(lines) + "\n"
