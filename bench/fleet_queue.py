"""Benchmark section ``fleet_queue``: the receiver's own SQLite queue against fleet mode's NATS
JetStream queue, end to end into the same MLflow.

``parallel_clients`` clients log through one receiver embedded in the benchmark process, as
in section ``parallel_flush`` (same clients, points, flush writers and MLflow: the benchmark's
own ``mlflow server`` on SQLite): once on the receiver's SQLite queue, once in fleet mode on a
3-node JetStream cluster on loopback (R=3, 16 lanes) that this section starts (bench/nats.py).
The clock runs from the clients' first call until the receiver has written the last point;
MLflow is counted afterwards. The difference is what the replicated queue costs on this
machine: each batch is published to three nodes and acknowledged to the client only after
JetStream's ack, then pulled back by the flusher.
"""

from __future__ import annotations

import os
from typing import Any

from bench.nats import NatsCluster
from bench.parallel_flush import through_bridge
from bench.sections import BenchContext
from server.fleet.config import parse_queue_url

_PARTITIONS = 16


def fleet_queue(ctx: BenchContext) -> dict[str, Any]:
    """Events per second into MLflow on each queue backend."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    opts = ctx.options
    per_client = max(1000, opts.events // opts.parallel_clients)
    total = per_client * opts.parallel_clients
    figures: dict[str, Any] = {
        "clients": opts.parallel_clients,
        "events": total,
        "workers": opts.parallel_workers,
    }
    sqlite = through_bridge(ctx, ctx.mlflow_uri, "queue-sqlite", opts.parallel_workers, per_client)
    cluster = NatsCluster(ctx.work_dir / "nats", n=3).start()
    try:
        fleet = parse_queue_url(cluster.queue_url(partitions=_PARTITIONS))
        nats = through_bridge(
            ctx, ctx.mlflow_uri, "queue-nats", opts.parallel_workers, per_client, fleet=fleet
        )
    finally:
        cluster.stop()
    for name, took in (("sqlite", sqlite), ("nats", nats)):
        figures[name] = {
            "events_per_s": total / took["seconds"],
            "points_in_mlflow": took["points_in_mlflow"],
        }
    figures["ratio"] = figures["nats"]["events_per_s"] / figures["sqlite"]["events_per_s"]
    return figures
