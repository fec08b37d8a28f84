"""``trackbridge demo``: a receiver in-process, N training clients as processes, a summary."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from server.background import BackgroundReceiver
from server.config import ReceiverConfig

_DRAIN_S = 60.0
"""How long the demo waits for the receiver to hand everything to MLflow after training."""


def _client(port: int, i: int, job: str, *, epochs: int, steps: int, delay_s: float) -> list[str]:
    return [
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
        str(delay_s),
    ]


def run_demo(
    *,
    clients: int,
    epochs: int,
    steps: int,
    job: str,
    data_dir: Path,
    flush_interval_s: float,
    step_delay_s: float = 0.0,
    stay: bool = False,
    said_exit: bool = True,
) -> int:
    """Runs the demo; returns the process exit code.

    Args:
        stay: Keep the receiver and the live page up after training, until Ctrl-C or SIGTERM.
        said_exit: ``--exit`` was given (else leaving at once is because there is no terminal).
    """
    config = ReceiverConfig(
        listen="127.0.0.1:0", data_dir=data_dir, flush_interval_s=flush_interval_s
    )
    background = BackgroundReceiver(config, owns_process=True)
    port = background.start()
    receiver = background.receiver
    print(f"receiver on 127.0.0.1:{port}; MLflow store {config.effective_tracking_uri}")
    print(f"watch the clients live: {receiver.live_url(job)}", flush=True)
    print(f"starting {clients} clients, {epochs} epochs x {steps} steps each ...", flush=True)
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            _client(port, i, job, epochs=epochs, steps=steps, delay_s=step_delay_s),
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    summaries: list[dict[str, Any]] = []
    failed = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed += 1
            continue
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    trained_s = time.monotonic() - started
    in_mlflow = _wait_for_mlflow(background)
    caught_up_s = time.monotonic() - started - trained_s

    _print_summary(config, summaries, step_delay_s, trained_s, caught_up_s if in_mlflow else None)
    if stay and not failed:
        print()
        print(f"The receiver and the live page stay up: {receiver.live_url(job)}")
        print("Press Ctrl-C to stop them (trackbridge demo --exit leaves at once).", flush=True)
        _wait_for_interrupt()
    elif not said_exit:
        print("(not a terminal: leaving now, as with --exit)")
    drained = background.stop()
    if failed or not drained or not in_mlflow:
        print(
            f"demo FAILED: {failed} clients failed, all in MLflow: {in_mlflow and drained}",
            file=sys.stderr,
        )
        return 1
    return 0


def _wait_for_mlflow(background: BackgroundReceiver) -> bool:
    """Waits (bounded) until the receiver's backlog is empty: everything acked is in MLflow."""
    deadline = time.monotonic() + _DRAIN_S
    while time.monotonic() < deadline:
        if background.receiver.counters().backlog_events == 0:
            return True
        time.sleep(0.1)
    return False


def _print_summary(
    config: ReceiverConfig,
    summaries: list[dict[str, Any]],
    step_delay_s: float,
    trained_s: float,
    caught_up_s: float | None,
) -> None:
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
    pace = f", paced at {step_delay_s:g} s a step to be watchable" if step_delay_s else ""
    print(
        f"{len(summaries)} clients logged {total_events} metric points in {trained_s:.1f} s,"
        f" from their start (torch's import included) to the last one's end{pace}."
    )
    print(
        "log_metric p50: what one call cost inside the training loop (it only appends to"
        " memory; a thread sends)."
    )
    if caught_up_s is not None:
        print(
            f"Every point was in MLflow {caught_up_s:.1f} s after the last client finished"
            f" (the receiver flushes every {config.flush_interval_s:g} s)."
        )
    else:
        print(f"Not everything reached MLflow within {_DRAIN_S:.0f} s of the end of training.")
    print("Look at them in MLflow's own UI (then open http://127.0.0.1:5000):")
    print(f"  mlflow ui --backend-store-uri {config.effective_tracking_uri}")


def _wait_for_interrupt() -> None:
    """Returns on Ctrl-C (SIGINT) or SIGTERM."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopping: handing what is left to MLflow ...", flush=True)
