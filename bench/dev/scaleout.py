"""Scale-out figures on this machine: receivers writing to one MLflow on PostgreSQL (basic auth).

    .venv/bin/python -m bench.dev.scaleout [--clients 4] [--points 20000] [--workers 1 2]

For 1 and 2 receivers (clients spread evenly, each logging flat out), prints the points per
second from the clients' start to the last point flushed into MLflow, beside MLflow's own
ceiling: ``log_batch`` calls of 1000 metrics from 1 and 2 writer processes straight to the same
server. A benchmark, not a test: it asserts nothing and pytest does not collect it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.support.deploy import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    create_database,
    launch_auth_mlflow,
    start_postgres,
    stop_postgres,
)
from tests.support.faults import start_stream_client
from tests.support.procs import launch_receiver, stop_mlflow_server, wait_until

_WRITER_START_S = 30.0  # time for the writer processes to import MLflow before the clock runs

_DIRECT = """
import sys, time, uuid
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
uri, calls, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
client = MlflowClient(uri)
run = client.create_run(client.create_experiment(f"direct-{uuid.uuid4().hex}"))
time.sleep(max(0.0, start_at - time.time()))  # every writer starts at once, imports done
for c in range(calls):
    now = int(time.time() * 1000)
    metrics = [Metric("x", float(i), now, c * 1000 + i) for i in range(1000)]
    client.log_batch(run.info.run_id, metrics=metrics, synchronous=True)
print(time.time())
"""


def flushed(data_dirs: list[Path]) -> int:
    total = 0
    for data_dir in data_dirs:
        path = data_dir / "queue.db"
        if not path.exists():
            continue
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            total += int(
                conn.execute("SELECT COALESCE(SUM(flushed_seq), 0) FROM runs").fetchone()[0]
            )
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
    return total


def through_receivers(root: Path, uri: str, receivers: int, clients: int, points: int) -> float:
    """Points per second into MLflow through ``receivers`` receivers."""
    started = [launch_receiver(root, uri, flush_interval_s=1.0) for _ in range(receivers)]
    job = f"scaleout-{receivers}-{uuid.uuid4().hex[:6]}"
    try:
        t0 = time.monotonic()
        procs = [
            start_stream_client(
                started[i % receivers].address, f"site-{i}", job, root / f"spool-{job}-{i}",
                root / f"out-{job}-{i}.json", points=points, rate=0,
            )
            for i in range(clients)
        ]  # fmt: skip
        events = clients * (points + 2)  # a run's start and end are events too
        dirs = [r.data_dir for r in started]
        wait_until(lambda: flushed(dirs) >= events, 1800, interval_s=0.2, what="all flushed")
        elapsed = time.monotonic() - t0
        for proc in procs:
            proc.wait(timeout=120)
        return clients * points / elapsed
    finally:
        for receiver in started:
            receiver.stop()


def direct(uri: str, writers: int, calls: int) -> float:
    """Metrics per second of ``writers`` processes calling log_batch(1000 metrics) directly."""
    start_at = time.time() + _WRITER_START_S
    argv = [sys.executable, "-c", _DIRECT, uri, str(calls), str(start_at)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(writers)]
    ends = [float(proc.communicate(timeout=1800)[0]) for proc in procs]
    return writers * calls * 1000 / (max(ends) - start_at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--points", type=int, default=20_000, help="per client")
    parser.add_argument("--calls", type=int, default=20, help="log_batch calls per writer")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_USERNAME"] = ADMIN_USER
    os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
    root = Path(tempfile.mkdtemp(prefix="trackbridge-scaleout-"))
    pg = start_postgres(fsync=True)
    print(f"{os.cpu_count()} CPUs; PostgreSQL fsync on; MLflow basic-auth, auth cache 60 s")
    print(f"{args.clients} clients x {args.points} points, flat out\n")
    print("mlflow workers | what                            | points/s")
    try:
        for workers in args.workers:
            database = f"mlflow_w{workers}"
            create_database(pg, database)
            server = launch_auth_mlflow(root / database, pg.uri(database), workers=workers)
            try:
                for n in (1, 2):
                    rate = direct(server.uri, n, args.calls)
                    print(f"{workers:>14} | direct log_batch x1000, {n} writer(s) | {rate:>8.0f}")
                for n in (1, 2):
                    rate = through_receivers(root, server.uri, n, args.clients, args.points)
                    print(f"{workers:>14} | through {n} receiver(s)              | {rate:>8.0f}")
            finally:
                stop_mlflow_server(server)
    finally:
        stop_postgres(pg)


if __name__ == "__main__":
    main()
