"""Benchmark section ``script_wall``: a script's wall time, through the bridge and directly.

The shape of MLflow's hyper-parameter tutorial: a parent run and ``script_runs`` nested runs,
each logging three params and three metrics. The same script runs three times against the
benchmark's ``mlflow server``: with the real ``mlflow`` straight to it, with the import swap
(``import client_sdk.mlflow as mlflow``) and zero-code (``MLFLOW_TRACKING_URI=trackbridge://``)
through one receiver (in the benchmark's process, as section job_start's). Each run's clock
starts after the imports and stops when its last run has ended, as the script's user waits.

Where the bridge's time goes: each ``start_run`` waits (bounded) for MLflow's run id, which the
receiver learns once MLflow has created the run: two MLflow calls for a receiver that may
share MLflow with others (the run created provisional, a look for rivals; the keep follows
once the client is told, server/flush/run_creation.py), one for a receiver started
``--alone`` (the ``*_alone`` modes: a second receiver), and the client's GetRun is answered
the moment the id is known (server/ingest/waits.py). Logging returns at once; the
receiver writes the run's params, metrics and end (one log_batch, one set_terminated) while
the script goes on. Directly, every call is a round trip to MLflow: create_run (and the
get_run MLflow's fluent start_run makes after it), a log_batch per log call, set_terminated.

Beside each wall time, the CPU seconds MLflow's server spent on the script (its processes,
until a receiver has written everything the script logged): the work each way asks of MLflow,
which bounds the wall time where MLflow shares the machine.

A second script reads right after it writes: ``script_reads`` times it logs a point and a
param, then reads the metric's history and the run back and checks that both hold them (a
script checking its own writes). Through the bridge each read goes to MLflow at once, and the
receiver adds the caller's points and params still on their way (server/tracking/overlay.py);
the flusher writes them at its own pace, many reads' worth in one call. Directly, each write
and read is its own call.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.procs import BenchError, tree_cpu_s, wait_until
from bench.sections import BenchContext
from server.background import BackgroundReceiver
from server.config import ReceiverConfig

_TIMEOUT_S = 900.0

SCRIPT = """
import sys, time
if "--swap" in sys.argv:
    import client_sdk.mlflow as mlflow
else:
    import mlflow
runs, experiment = int(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
mlflow.set_experiment(experiment)
with mlflow.start_run(run_name="sweep"):
    for i in range(runs):
        with mlflow.start_run(run_name=f"trial-{i}", nested=True):
            mlflow.log_params({"alpha": 0.1 * i, "l1_ratio": i % 5, "seed": i})
            mlflow.log_metrics({"rmse": 1.0 / (i + 1), "mae": 0.5, "r2": 0.9})
    mlflow.log_metric("best_rmse", 1.0 / runs)
print(f"WALL_S {time.perf_counter() - started:.3f}", flush=True)
"""

READS = """
import sys, time
if "--swap" in sys.argv:
    import client_sdk.mlflow as mlflow
else:
    import mlflow
from mlflow import MlflowClient
points, experiment = int(sys.argv[1]), sys.argv[2]
mlflow.set_experiment(experiment)
client = MlflowClient()
started = time.perf_counter()
with mlflow.start_run(run_name="checks") as run:
    for i in range(points):
        mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        mlflow.log_param(f"lr_{i}", 0.1 * i)
        if len(client.get_metric_history(run.info.run_id, "loss")) != i + 1:
            sys.exit(f"read {i}: the metric's history misses a point")
        if client.get_run(run.info.run_id).data.params.get(f"lr_{i}") != str(0.1 * i):
            sys.exit(f"read {i}: the run misses a param")
print(f"WALL_S {time.perf_counter() - started:.3f}", flush=True)
"""


def _run(
    ctx: BenchContext,
    mode: str,
    env: dict[str, str],
    receiver: BackgroundReceiver | None,
    reads: bool = False,
) -> tuple[float, float]:
    """The script's wall time, and the CPU seconds MLflow's server spent on what it logged
    (through ``receiver``: until the receiver has written all of it)."""
    before = tree_cpu_s(ctx.mlflow_pid)
    wall = _wall(ctx, mode, env, reads)
    if receiver is not None:
        flushed, stored = receiver.receiver.flusher.stats, receiver.receiver.ingestor
        wait_until(
            lambda: flushed.events_flushed >= stored.events_stored,
            f"script_wall ({mode}): the receiver writing all it stored",
            _TIMEOUT_S,
        )
    return wall, tree_cpu_s(ctx.mlflow_pid) - before


def _wall(ctx: BenchContext, mode: str, env: dict[str, str], reads: bool) -> float:
    name = "reads" if reads else "script"
    script = ctx.work_dir / f"script_wall_{name}.py"
    script.write_text(READS if reads else SCRIPT)
    size = ctx.options.script_reads if reads else ctx.options.script_runs
    argv = [sys.executable, str(script), str(size), f"bench-{name}-{mode}-{time.time_ns()}"]
    if mode.startswith("swap"):  # swap and swap_alone: the script imports client_sdk.mlflow
        argv.append("--swap")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKBRIDGE_"))}
    base.update(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        argv, env=base | env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("WALL_S "):
            return float(line.split()[1])
    raise BenchError(f"script_wall ({name}, {mode}) failed: {done.stderr[-2000:]}")


def script_wall(ctx: BenchContext) -> dict[str, Any]:
    """The tutorial-shaped script's wall time: direct, import swap, zero-code, in
    ``script_rounds`` interleaved rounds (a shared machine's load drifts from one to the next);
    the figures are each mode's median."""
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=ctx.work_dir / "receiver-script-wall",
        tracking_uri=ctx.mlflow_uri,
        flush_interval_s=ctx.options.flush_interval_s,
        shutdown_timeout_s=30.0,
    )
    background = BackgroundReceiver(config, owns_process=True)
    alone = BackgroundReceiver(
        dataclasses.replace(config, data_dir=ctx.work_dir / "receiver-script-alone", alone=True),
        owns_process=True,
    )
    address = f"127.0.0.1:{background.start()}"
    alone_address = f"127.0.0.1:{alone.start()}"
    bridge = {"TRACKBRIDGE_JOB": "bench-script-wall", "TRACKBRIDGE_CLIENT_ID": "script"}
    # A job of its own: a receiver --alone must be the only one writing its runs.
    bridge_alone = {**bridge, "TRACKBRIDGE_JOB": "bench-script-wall-alone"}
    receivers = {"swap": background, "zero": background, "swap_alone": alone, "zero_alone": alone}
    modes = {
        "direct": {"MLFLOW_TRACKING_URI": ctx.mlflow_uri},
        "swap": {**bridge, "TRACKBRIDGE_RECEIVER": address},
        "zero": {**bridge, "MLFLOW_TRACKING_URI": f"trackbridge://{address}"},
        "swap_alone": {**bridge_alone, "TRACKBRIDGE_RECEIVER": alone_address},
        "zero_alone": {**bridge_alone, "MLFLOW_TRACKING_URI": f"trackbridge://{alone_address}"},
    }
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    reads: dict[str, list[float]] = {mode: [] for mode in modes}
    mlflow_cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    load_before = os.getloadavg()[0]
    try:
        for _ in range(ctx.options.script_rounds):
            for mode, env in modes.items():
                wall, cpu = _run(ctx, mode, env, receivers.get(mode))
                walls[mode].append(wall)
                mlflow_cpu[mode].append(cpu)
                reads[mode].append(_run(ctx, mode, env, receivers.get(mode), reads=True)[0])
    finally:
        background.stop()
        alone.stop()
    return {
        "runs": ctx.options.script_runs,
        "rounds": ctx.options.script_rounds,
        "load_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        **_figures(walls),
        "mlflow_cpu_s": {mode: statistics.median(cpu) for mode, cpu in mlflow_cpu.items()},
        "reads": {"points": ctx.options.script_reads, **_figures(reads)},
    }


def _figures(walls: dict[str, list[float]]) -> dict[str, Any]:
    """Each way's median and its ratio to direct's."""
    median = {mode: statistics.median(w) for mode, w in walls.items()}
    direct = median["direct"]
    return {
        "direct_s": direct,
        "swap_s": median["swap"],
        "zero_code_s": median["zero"],
        "swap_ratio": median["swap"] / direct,
        "zero_code_ratio": median["zero"] / direct,
        "swap_alone_ratio": median["swap_alone"] / direct,
        "zero_code_alone_ratio": median["zero_alone"] / direct,
        "walls_s": walls,
    }
