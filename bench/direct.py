"""Direct MLflow logging, timed per call: the reference the Writer is compared with.

Run by ``trackbridge bench`` as ``python -m bench.direct --tracking-uri URI ...`` in a
process of its own, like a training script that uses MLflow's fluent API. Prints one JSON line
with the per-call samples (ns) of synchronous logging, of async logging with MLflow's 1 s
buffering, and of plain async logging, then exits without waiting for MLflow's async queue to
drain: what is measured is the cost to the loop, not delivery.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

import mlflow

_WARMUP_CALLS = 5
_BUFFERING = "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"


def _time_calls(key: str, calls: int, *, synchronous: bool) -> list[int]:
    for i in range(_WARMUP_CALLS):
        mlflow.log_metric(f"{key}_warmup", float(i), step=i, synchronous=synchronous)
    clock = time.perf_counter_ns
    samples = [0] * calls
    for i in range(calls):
        t0 = clock()
        mlflow.log_metric(key, float(i), step=i, synchronous=synchronous)
        samples[i] = clock() - t0
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    """Times ``mlflow.log_metric`` in its three modes; prints the samples as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.direct")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="bench-direct")
    parser.add_argument("--sync-calls", type=int, default=300)
    parser.add_argument("--async-calls", type=int, default=2000)
    args = parser.parse_args(argv)

    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)
    mlflow.start_run(run_name="direct")
    result = {"sync": _time_calls("sync", args.sync_calls, synchronous=True)}
    # MLflow reads the buffering setting on every turn of its logging thread. Buffered first:
    # its backlog drains within a second, while plain async logging leaves one request a point.
    os.environ[_BUFFERING] = "1"
    result["async_buffered"] = _time_calls("async_buffered", args.async_calls, synchronous=False)
    del os.environ[_BUFFERING]
    result["async"] = _time_calls("async", args.async_calls, synchronous=False)
    sys.stdout.write(json.dumps({"samples_ns": result}) + "\n")
    sys.stdout.flush()
    # Skips the atexit drain of MLflow's async queue (minutes of single-point requests).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
