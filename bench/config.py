"""Sizes and switches of ``trackbridge bench``: explicit value > ``--quick`` preset > default."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

SECTIONS = (
    "latency",
    "ingest",
    "end_to_end",
    "freshness",
    "scale",
    "recovery",
    "system_metrics",
    "aggregate",
    "job_start",
    "parallel_flush",
    "linger",
    "fleet_queue",
    "script_wall",
    "bulk",
)
"""The figures, in the order they are measured and printed."""

FLEET_SECTIONS = ("job_start", "parallel_flush", "linger", "fleet_queue", "script_wall", "bulk")
"""Sections a plain run leaves out (``--only`` runs them): they start a PostgreSQL cluster, a
NATS cluster and a thousand clients, minutes of work on a small machine."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What one benchmark run measures, and how much of it."""

    writer_calls: int = 200_000
    """Timed ``Writer.log_metric`` calls (section latency)."""
    writer_rate: float | None = None
    """Calls/s the timed ``Writer.log_metric`` calls are paced at; None: back to back, and then
    direct MLflow logging is timed beside them."""
    mlflow_sync_calls: int = 300
    """Timed synchronous ``mlflow.log_metric`` calls (about 10 ms each)."""
    mlflow_async_calls: int = 2000
    """Timed ``mlflow.log_metric(synchronous=False)`` calls, with and without buffering."""
    clients: int = 16
    """Client processes streaming batches at the receiver (section ingest)."""
    batch_events: int = 1000
    """Events per batch those clients send."""
    ingest_s: float = 5.0
    """How long the ingest clients send."""
    fsync: str = "normal"
    """The receiver's queue durability during ingest: ``normal`` or ``full``."""
    e2e_clients: int = 4
    """Client processes logging through the bridge into MLflow (section end_to_end)."""
    events: int = 40_000
    """Metric points they log in all; MLflow's own log_batch ceiling is timed on as many."""
    fresh_clients: int = 100
    """Clients logging at a steady rate while a poller watches MLflow (section freshness)."""
    fresh_rate: float = 100.0
    """Points per second each of them logs."""
    fresh_s: float = 10.0
    """How long they log."""
    flush_interval_s: float = 1.0
    """The receiver's flush interval for end_to_end and freshness."""
    connections: int = 1000
    """Client connections one receiver holds (section scale)."""
    connection_procs: int = 4
    """Processes those connections are spread over."""
    recovery_runs: int = 20
    """Runs logged, then written to MLflow while the receiver is killed (section recovery)."""
    recovery_points: int = 5000
    """Metric points of each of them."""
    recovery_kill_at: float = 0.9
    """The share of the events in MLflow when the receiver gets SIGKILL (0.9: the end of the
    flush, where a restart used to write up to 16 stored batches of a run again)."""
    aggregate_clients: int = 8
    """Clients whose rounds the receiver aggregates (section aggregate)."""
    aggregate_rounds: int = 20
    """Rounds they report."""
    job_start_clients: int = 1000
    """Clients whose runs start at once (section job_start)."""
    script_runs: int = 270
    """Nested runs the tutorial-shaped script starts (section script_wall; MLflow's
    hyper-parameter tutorial starts 270)."""
    script_reads: int = 90
    """Points the read-after-write script logs, each read back at once (section script_wall)."""
    script_rounds: int = 3
    """Times each way of running it runs, interleaved (section script_wall: medians)."""
    parallel_clients: int = 8
    """Clients logging into MLflow while several flush writers write (section parallel_flush);
    they log ``events`` points in all."""
    parallel_workers: int = 4
    """Flush writers beside one (section parallel_flush)."""
    linger_clients: int = 1000
    """The many clients of section linger (beside ``fresh_clients`` at ``fresh_rate``)."""
    linger_rate: float = 10.0
    """Points per second each of them logs."""
    mlflow_workers: int | None = None
    """The benchmark's ``mlflow server --workers``; unset, MLflow's own default (4), as its
    users start it."""
    sections: tuple[str, ...] = tuple(s for s in SECTIONS if s not in FLEET_SECTIONS)
    """The sections to run."""
    json_path: Path = Path("bench-results.json")
    """Where the results are written as JSON."""
    png_path: Path | None = None
    """Where a chart is drawn (needs matplotlib); none when unset."""
    work_dir: Path | None = None
    """Where databases and logs go and are kept; a temporary directory, removed, when unset."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not value > 0:
                raise ValueError(f"{f.name} must be positive, got {value!r}")
        if not self.recovery_kill_at < 1:
            raise ValueError(f"recovery_kill_at must be below 1, got {self.recovery_kill_at!r}")
        if self.fsync not in ("normal", "full"):
            raise ValueError(f"fsync must be normal or full, got {self.fsync!r}")
        unknown = set(self.sections) - set(SECTIONS)
        if unknown or not self.sections:
            raise ValueError(f"sections must be some of {', '.join(SECTIONS)}, got {unknown}")

    @classmethod
    def resolve(cls, *, quick: bool = False, **given: object) -> BenchOptions:
        """Builds options from the values given (``None`` means unset), else the preset."""
        preset = QUICK if quick else cls()
        values = {f.name: getattr(preset, f.name) for f in fields(cls)}
        for name, value in given.items():
            if name not in values:
                raise TypeError(f"unknown benchmark option {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)


QUICK = BenchOptions(
    writer_calls=50_000,
    mlflow_sync_calls=50,
    mlflow_async_calls=300,
    clients=4,
    ingest_s=2.0,
    e2e_clients=2,
    events=10_000,
    fresh_clients=10,
    fresh_rate=20.0,
    fresh_s=4.0,
    connections=100,
    connection_procs=2,
    recovery_runs=4,
    recovery_points=2000,
    aggregate_clients=4,
    aggregate_rounds=5,
    job_start_clients=100,
    script_runs=40,
    script_reads=20,
    script_rounds=1,
    parallel_clients=4,
    linger_clients=100,
)
"""The ``--quick`` preset: every section, small, within a minute on 2 cores."""
