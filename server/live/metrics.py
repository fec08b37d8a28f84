"""``/metrics``: the receiver's pipeline for Prometheus, through prometheus_client.

One collector reads the live hub and the receiver's counters at scrape time (nothing is
updated on the hot path); prometheus_client's process, platform and garbage-collector
collectors sit beside it in a registry of the receiver's own (two receivers in one process,
as in tests and the demo, do not share one). Per-client counters start at zero when the
receiver starts, as Prometheus counters do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from server.aggregate.health import RoundHealth
    from server.live.model import ClientRow, Counters

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The text format (0.0.4) every Prometheus reads."""
FLUSH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def flush_histogram() -> Histogram:
    """The flush-duration histogram the hub observes into (registered by :class:`Exporter`)."""
    return Histogram(
        "trackbridge_flush_duration_seconds",
        "Time to write one stored batch to MLflow.",
        buckets=FLUSH_BUCKETS_S,
        registry=None,
    )


# (metric, type, ClientRow attribute, help)
_PER_CLIENT = (
    (
        "trackbridge_events_received",
        "counter",
        "events_received",
        "Events in accepted batches, resends included.",
    ),
    (
        "trackbridge_events_acked",
        "counter",
        "events_acked",
        "Events durably stored and acknowledged.",
    ),
    ("trackbridge_events_flushed", "counter", "events_flushed", "Events written to MLflow."),
    (
        "trackbridge_events_dead_lettered",
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
        "1 while the client's run goes on and it was heard from within the client timeout.",
    ),
)

# (metric, type, Counters attribute, help)
_SCALARS = (
    (
        "trackbridge_events_duplicate",
        "counter",
        "events_duplicate",
        "Resent events already stored.",
    ),
    ("trackbridge_batches_rejected", "counter", "batches_rejected", "Malformed batches refused."),
    (
        "trackbridge_batches_throttled",
        "counter",
        "batches_throttled",
        "Batches refused: backlog full.",
    ),
    ("trackbridge_queue_batches", "gauge", "queued_batches", "Stored batches not yet in MLflow."),
    ("trackbridge_backlog_events", "gauge", "backlog_events", "Stored events not yet in MLflow."),
    (
        "trackbridge_mlflow_errors",
        "counter",
        "mlflow_errors",
        "Failed MLflow calls (retries count).",
    ),
    (
        "trackbridge_quarantined_runs",
        "gauge",
        "quarantined_runs",
        "Runs MLflow refuses for good, held until replayed.",
    ),
    ("trackbridge_held_events", "gauge", "held_events", "Events quarantined runs hold back."),
    (
        "trackbridge_data_dir_free_bytes",
        "gauge",
        "disk_free_bytes",
        "Free space on the data directory (with the queue's reusable pages) at the last check.",
    ),
    (
        "trackbridge_metric_points_written",
        "counter",
        "metric_points_written",
        "Metric points in log_batch calls MLflow accepted.",
    ),
    (
        "trackbridge_recovered_events",
        "counter",
        "recovered_events",
        "Events in MLflow already at a restart, not sent again.",
    ),
    (
        "trackbridge_artifacts_uploaded",
        "counter",
        "artifacts_uploaded",
        "Artifact files (run and logged-model files) put in MLflow.",
    ),
    (
        "trackbridge_artifacts_refused",
        "counter",
        "artifacts_refused",
        "Artifact files MLflow refused for good (reasons in trackbridge status).",
    ),
    (
        "trackbridge_events_damaged",
        "counter",
        "events_damaged",
        "Stored events lost: their batch failed its checksum (the queue file was damaged).",
    ),
    (
        "trackbridge_artifacts_set_aside",
        "gauge",
        "artifacts_set_aside",
        "Artifact files past their retry window, retried on their own.",
    ),
    (
        "trackbridge_reads_waiting",
        "gauge",
        "reads_waiting",
        "Reads through the receiver waiting for their callers' writes to reach MLflow.",
    ),
)

# reason label -> Counters attribute
_REFUSALS = (
    ("unauthenticated", "calls_unauthenticated"),
    ("permission_denied", "calls_permission_denied"),
    ("calls_in_flight", "calls_over_in_flight"),
    ("rate_limit", "batches_rate_limited"),
    ("disk_reserve", "batches_disk_low"),
)


def _family(
    name: str, kind: str, help_text: str, labels: list[str] | None = None
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


class _LiveCollector(Collector):
    """Reads the hub and the counters when Prometheus scrapes."""

    def __init__(
        self,
        rows: Callable[[], list[ClientRow]],
        counters: Callable[[], Counters],
        mlflow_up: Callable[[], bool],
        flush: Histogram,
    ) -> None:
        self._rows = rows
        self._counters = counters
        self._mlflow_up = mlflow_up
        self._flush = flush

    def collect(self) -> Iterator[Metric]:
        rows = self._rows()
        for name, kind, attr, help_text in _PER_CLIENT:
            family = _family(name, kind, help_text, ["job", "client"])
            for r in rows:
                family.add_metric([r.job, r.client_id], float(getattr(r, attr)))
            yield family
        yield GaugeMetricFamily(
            "trackbridge_connected_clients",
            "Clients whose run goes on, heard from within the client timeout.",
            value=sum(r.connected for r in rows),
        )
        counters = self._counters()
        for name, kind, attr, help_text in _SCALARS:
            family = _family(name, kind, help_text)
            family.add_metric([], float(getattr(counters, attr)))
            yield family
        refused = CounterMetricFamily(
            "trackbridge_calls_refused",
            "Calls and batches refused before they were stored, by reason.",
            labels=["reason"],
        )
        for reason, attr in _REFUSALS:
            refused.add_metric([reason], float(getattr(counters, attr)))
        yield refused
        up = GaugeMetricFamily(
            "trackbridge_worker_up",
            "1 while the background worker runs; 0 once it failed (health is NOT_SERVING).",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "trackbridge_worker_restarts",
            "Unexpected exceptions a background worker restarted after (logged with traceback).",
            labels=["worker"],
        )
        for name, failure, restarted in counters.workers:
            up.add_metric([name], float(not failure))
            restarts.add_metric([name], float(restarted))
        yield up
        yield restarts
        yield GaugeMetricFamily(
            "trackbridge_mlflow_up",
            "1 unless the flusher fails to reach MLflow.",
            value=int(self._mlflow_up()),
        )
        yield from self._flush.collect()


class _RoundsCollector(Collector):
    """Per-round health of every job's latest round (server/aggregate/health.py)."""

    def __init__(self, rounds: Callable[[], Mapping[str, Sequence[RoundHealth]]]) -> None:
        self._rounds = rounds

    def collect(self) -> Iterator[Metric]:
        latest = {job: rounds[0] for job, rounds in self._rounds().items() if rounds}
        number = GaugeMetricFamily(
            "trackbridge_round", "The latest federated round of a job.", labels=["job"]
        )
        sites = GaugeMetricFamily(
            "trackbridge_round_sites", "Sites of a job's latest round, by state.",
            labels=["job", "state"],
        )  # fmt: skip
        missing = GaugeMetricFamily(
            "trackbridge_round_missing_seconds",
            "How long a site has been missing from its job's latest round.",
            labels=["job", "client"],
        )
        lateness = GaugeMetricFamily(
            "trackbridge_round_lateness_seconds",
            "How long after its latest round's first point a site's first point came.",
            labels=["job", "client"],
        )
        spread = GaugeMetricFamily(
            "trackbridge_round_spread",
            "An aggregated metric across the sites in a job's latest round: min, max, mean.",
            labels=["job", "key", "stat"],
        )
        for job, r in sorted(latest.items()):
            number.add_metric([job], float(r.round))
            sites.add_metric([job, "reported"], float(len(r.reported)))
            sites.add_metric([job, "missing"], float(len(r.missing)))
            sites.add_metric([job, "late"], float(len(r.late)))
            for client in r.missing:
                missing.add_metric([job, client], r.missing_for_s)
            for client, seconds in sorted(r.reported.items()):
                lateness.add_metric([job, client], seconds)
            for key, stats in r.spread.items():
                for stat, value in stats.items():
                    spread.add_metric([job, key, stat], value)
        yield from (number, sites, missing, lateness, spread)


class Exporter:
    """The receiver's ``/metrics``: its own registry, rendered on demand.

    Args:
        rows: Every client's row, with the flusher's latest counts folded in.
        counters: The receiver's counters.
        mlflow_up: Whether the flusher reaches MLflow.
        flush: The flush-duration histogram (see :func:`flush_histogram`).
        rounds: Every job's latest rounds (per-round health), latest first.
    """

    def __init__(
        self,
        rows: Callable[[], list[ClientRow]],
        counters: Callable[[], Counters],
        mlflow_up: Callable[[], bool],
        flush: Histogram,
        rounds: Callable[[], Mapping[str, Sequence[RoundHealth]]] = dict,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LiveCollector(rows, counters, mlflow_up, flush))
        self.registry.register(_RoundsCollector(rounds))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE
