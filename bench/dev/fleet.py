"""Fleet-mode figures on this machine: two receivers on their own SQLite queues, and the same
two in fleet mode over a 3-node NATS JetStream cluster (R=3), writing to one MLflow.

    .venv/bin/python -m bench.dev.fleet [--clients 4] [--points 5000]

For each, prints the points per second from the clients' start to the last point in MLflow
(clients spread evenly over the receivers, each logging flat out). MLflow is the session-style
``mlflow server`` on SQLite the tests use. A benchmark, not a test: it asserts nothing and
pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.faults import start_stream_client
from tests.support.nats import NatsCluster
from tests.support.procs import (
    launch_mlflow_server,
    launch_receiver,
    stop_mlflow_server,
    wait_until,
)


def points_in_mlflow(client: Any, job: str) -> int:
    """How many points of ``x`` the job's runs hold in MLflow."""
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id])
    return sum(len(client.get_metric_history(r.info.run_id, "x")) for r in runs)


def through(root: Path, uri: str, extra: tuple[str, ...], clients: int, points: int) -> float:
    """Points per second into MLflow through two receivers started with ``extra``."""
    from mlflow.tracking import MlflowClient

    started = [launch_receiver(root, uri, flush_interval_s=1.0, extra_args=extra) for _ in "ab"]
    job = f"fleet-bench-{uuid.uuid4().hex[:6]}"
    client = MlflowClient(uri)
    try:
        t0 = time.monotonic()
        procs = [
            start_stream_client(
                started[i % 2].address, f"site-{i}", job, root / f"spool-{job}-{i}",
                root / f"out-{job}-{i}.json", points=points, rate=0,
            )
            for i in range(clients)
        ]  # fmt: skip
        wait_until(
            lambda: points_in_mlflow(client, job) >= clients * points,
            1800,
            interval_s=0.5,
            what="every point in MLflow",
        )
        elapsed = time.monotonic() - t0
        for proc in procs:
            proc.wait(timeout=120)
        return clients * points / elapsed
    finally:
        for receiver in started:
            receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--points", type=int, default=5000, help="per client")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="trackbridge-fleet-bench-"))
    server = launch_mlflow_server(root / "mlflow")
    cluster = NatsCluster(root / "nats", n=3).start()
    print(f"{os.cpu_count()} CPUs; MLflow on SQLite; {args.clients} clients x {args.points}")
    print("queue                                   | points/s into MLflow")
    try:
        rate = through(root, server.uri, (), args.clients, args.points)
        print(f"own SQLite queue, 2 receivers           | {rate:>8.0f}")
        fleet = ("--queue", cluster.queue_url(partitions=16))
        rate = through(root, server.uri, fleet, args.clients, args.points)
        print(f"NATS JetStream R=3, 2 fleet receivers   | {rate:>8.0f}")
    finally:
        cluster.stop()
        stop_mlflow_server(server)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
