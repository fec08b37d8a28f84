"""A client process that logs a few training points with system metrics switched on, one way
per ``--mode``: ``writer`` (``Writer(system_metrics=True)``), ``env`` (only
``TRACKBRIDGE_SYSTEM_METRICS=1``), ``light`` (``client_sdk.mlflow`` without the mlflow package,
``mlflow.enable_system_metrics_logging()``) or ``full`` (the same with MLflow installed: MLflow's
own monitor through the receiver). ``--block-psutil`` runs it as if psutil were not installed.

It keeps logging until its sampler has taken ``--samples`` samples (bounded), closes, and prints
a JSON report: the samples taken and whether a system metrics thread is still alive.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def _sampler_threads() -> int:
    names = ("trackbridge-system-metrics", "SystemMetricsMonitor")
    return sum(1 for t in threading.enumerate() if t.name in names and t.is_alive())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("writer", "env", "light", "full"), required=True)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--block-psutil", action="store_true")
    args = parser.parse_args()
    if args.block_psutil:
        sys.modules["psutil"] = None  # type: ignore[assignment]  # "not installed"
    if args.mode == "light":
        sys.modules["mlflow"] = None  # type: ignore[assignment]
    deadline = time.monotonic() + 60
    if args.mode in ("writer", "env"):
        from client_sdk.writer import Writer

        writer = Writer(system_metrics=True) if args.mode == "writer" else Writer()
        writer.start_run()
        sampler = writer._system
        step = 0
        while True:
            writer.log_metric("loss", 1.0 / (step + 1), step=step)
            step += 1
            taken = sampler.samples if sampler is not None else 0
            if taken >= args.samples or sampler is None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        writer.close(timeout_s=30)
        taken = sampler.samples if sampler is not None else 0  # close stopped it: final
        report = {"samples": taken, "steps": step, "threads_after_close": _sampler_threads()}
    else:
        from client_sdk import mlflow

        mlflow.enable_system_metrics_logging()
        if args.mode == "full":
            mlflow.set_system_metrics_sampling_interval(0.3)
            mlflow.set_system_metrics_samples_before_logging(1)
        step = 0
        with mlflow.start_run(run_name="monitored"):
            while time.monotonic() < deadline:
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                step += 1
                if args.mode == "light":
                    from client_sdk.mlflow import _system

                    taken = sum(s.samples for s in _system._samplers.values())
                    if taken >= args.samples or args.block_psutil:
                        break
                else:
                    from mlflow.tracking import fluent

                    monitors = list(fluent.run_id_to_system_metrics_monitor.values())
                    if monitors and monitors[0]._logging_step >= args.samples:
                        break  # MLflow's monitor has published --samples samples
                time.sleep(0.05)
        mlflow.flush(30)
        report = {"steps": step, "threads_after_end": _sampler_threads()}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
