"""What one small ``log_batch`` costs MLflow, and whether calls on different runs overlap.

    .venv/bin/python -m bench.dev.mlflow_calls [--runs 100] [--metrics 23] [--rounds 5]

Why freshness at 100 clients is bounded by MLflow, not by the bridge: every flush tick writes
each run that has news with one ``log_batch`` call, so the tick costs ``runs`` calls. This
times rounds of one call per run (``--metrics`` points each: 23 is what 100 clients x 10
points/s give per 1 s tick), one call at a time and from 2, 4 and 8 threads, against
``mlflow server --workers 1`` on a fresh SQLite file. A benchmark, not a test: it asserts
nothing and pytest does not collect it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tests.support.procs import launch_mlflow_server, stop_mlflow_server


def _round(client: MlflowClient, runs: list[str], metrics: int, k: int, threads: int) -> float:
    def one(run_id: str) -> None:
        now = int(time.time() * 1000)
        points = [Metric("x", float(i), now, k * metrics + i) for i in range(metrics)]
        client.log_batch(run_id, metrics=points, synchronous=True)

    started = time.perf_counter()
    if threads == 1:
        for run_id in runs:
            one(run_id)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, runs))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=23)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlflow-calls-") as tmp:
        server = launch_mlflow_server(Path(tmp))
        try:
            client = MlflowClient(server.uri)
            experiment = client.create_experiment("calls")
            runs = [client.create_run(experiment).info.run_id for _ in range(args.runs)]
            k = 0
            for threads in (1, 2, 4, 8):
                took = []
                for _ in range(args.rounds):
                    took.append(_round(client, runs, args.metrics, k, threads))
                    k += 1
                per_round = sorted(took)[len(took) // 2]
                print(
                    f"{threads} thread(s): {per_round * 1000:.0f} ms per round of {args.runs} "
                    f"calls ({per_round / args.runs * 1000:.1f} ms a call, "
                    f"{args.runs * args.metrics / per_round:,.0f} metrics/s)",
                    flush=True,
                )
        finally:
            stop_mlflow_server(server)


if __name__ == "__main__":
    main()
