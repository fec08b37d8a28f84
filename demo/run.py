"""``trackbridge demo``: a receiver in-process, N training clients as processes, a summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from server.config import ReceiverConfig
from server.receiver import BackgroundReceiver


def run_demo(
    *,
    clients: int,
    epochs: int,
    steps: int,
    job: str,
    data_dir: Path,
    flush_interval_s: float,
    step_delay_s: float = 0.0,
) -> int:
    """Runs the demo; returns the process exit code."""
    config = ReceiverConfig(
        listen="127.0.0.1:0", data_dir=data_dir, flush_interval_s=flush_interval_s
    )
    started = time.monotonic()
    background = BackgroundReceiver(config)
    port = background.start()
    print(f"receiver on 127.0.0.1:{port}; MLflow store {config.effective_tracking_uri}")
    print(f"watch the clients live: {background.receiver.live_url(job)}", flush=True)
    print(f"starting {clients} clients, {epochs} epochs x {steps} steps each ...", flush=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "demo.train",
                "--receiver",
                f"127.0.0.1:{port}",
                "--client-id",
                f"site-{i + 1}",
                "--job",
                job,
                "--epochs",
                str(epochs),
                "--steps",
                str(steps),
                "--seed",
                str(i),
                "--step-delay",
                str(step_delay_s),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    summaries = []
    failed = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed += 1
            continue
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    drained = background.stop()
    elapsed = time.monotonic() - started

    mlflow = MlflowClient(config.effective_tracking_uri)
    total_events = sum(s["events"] for s in summaries)
    print()
    print(
        f"{'client':<10} {'MLflow run':<34} {'status':<9} {'points':>6} "
        f"{'loss':>7} {'acc':>6} {'log_metric p50':>15}"
    )
    for s in summaries:
        run = mlflow.get_run(s["run_id"])
        points = sum(len(mlflow.get_metric_history(s["run_id"], key)) for key in run.data.metrics)
        print(
            f"{s['client_id']:<10} {s['run_id']:<34} {run.info.status:<9} {points:>6} "
            f"{s['final_loss']:>7.3f} {s['accuracy']:>6.3f} {s['median_log_metric_us']:>13.2f}us"
        )
    print()
    print(
        f"{total_events} metric points from {len(summaries)} clients reached MLflow "
        f"in {elapsed:.1f} s ({total_events / elapsed:.0f} events/s end to end)."
    )
    print("Look at them with:")
    print(f"  mlflow ui --backend-store-uri {config.effective_tracking_uri}")
    if failed or not drained:
        print(f"demo FAILED: {failed} clients failed, queue drained: {drained}", file=sys.stderr)
        return 1
    return 0
