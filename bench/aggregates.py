"""Benchmark section ``aggregate``: how soon a round's cross-client aggregate is readable in
MLflow after the round's last client has reported.

``aggregate_clients`` Writers (in this process) log ``eval/accuracy`` for ``aggregate_rounds``
rounds through a ``trackbridge serve --aggregate 'eval/*'`` process. Per round, the clock starts
when the last client's point is acknowledged (durable in the receiver's queue: ``flush()``
returned) and stops when MLflow's history of ``eval/accuracy/count`` on the job's parent run
has a point at that round.
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

from mlflow.tracking import MlflowClient

from bench.procs import BenchError, start_receiver, wait_receiver, wait_until
from bench.sections import BenchContext
from client_sdk.writer import Writer
from server.flush.run_tags import TAG_ROLE

_JOB = "bench-aggregate"
_KEY = "eval/accuracy"
_TIMEOUT_S = 120.0
_POLL_S = 0.02


def aggregate_latency(ctx: BenchContext) -> dict[str, Any]:
    """Per round: last client acknowledged -> aggregate in MLflow."""
    opts = ctx.options
    data_dir = ctx.work_dir / "receiver-aggregate"
    child = start_receiver(
        ctx.procs,
        "receiver-aggregate",
        data_dir,
        ctx.mlflow_uri,
        flush_interval_s=opts.flush_interval_s,
        extra_args=("--aggregate", "eval/*", "--aggregate-deadline", "600"),
    )
    rx = wait_receiver(child, data_dir)
    client = MlflowClient(ctx.mlflow_uri)
    writers = [Writer(rx.address, f"bench-site-{n}", _JOB) for n in range(opts.aggregate_clients)]
    latencies: list[float] = []
    try:
        for writer in writers:
            writer.start_run()
            if not writer.flush(_TIMEOUT_S):
                raise BenchError("a client's run start was not acknowledged")
        parent = wait_until(lambda: _parent(client), "the job's parent run", _TIMEOUT_S, _POLL_S)
        for round_ in range(1, opts.aggregate_rounds + 1):
            for n, writer in enumerate(writers):
                writer.log_metric(_KEY, 0.5 + n / 100 + round_ / 1000, round=round_,
                                  num_examples=100 + n)  # fmt: skip
            for writer in writers:
                if not writer.flush(_TIMEOUT_S):
                    raise BenchError(f"round {round_} was not acknowledged")
            started = time.perf_counter()
            aggregated = functools.partial(_has_round, client, parent, round_)
            wait_until(aggregated, f"round {round_}'s aggregate", _TIMEOUT_S, _POLL_S)
            latencies.append(time.perf_counter() - started)
    finally:
        for writer in writers:
            writer.close(10)
        ctx.procs.stop(child)
    ordered = sorted(latencies)
    return {
        "clients": opts.aggregate_clients,
        "rounds": opts.aggregate_rounds,
        "flush_interval_s": opts.flush_interval_s,
        "p50_ms": statistics.median(ordered) * 1000,
        "max_ms": ordered[-1] * 1000,
        "poll_ms": _POLL_S * 1000,
    }


def _parent(client: MlflowClient) -> str | None:
    experiment = client.get_experiment_by_name(_JOB)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG_ROLE}` = 'parent'")
    return runs[0].info.run_id if runs else None


def _has_round(client: MlflowClient, parent: str, round_: int) -> bool:
    return any(m.step == round_ for m in client.get_metric_history(parent, f"{_KEY}/count"))
