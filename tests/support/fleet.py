"""Helpers for the fleet-mode tests: flushers alone, the live view's JSON, counting points."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.support.faults import read_result
from tests.support.live import get, http_port
from tests.support.mlflow_reads import child_runs, job_runs
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, start_ready, wait_until


def launch_flusher(
    root: Path, tracking_uri: str, queue_url: str, extra_args: tuple[str, ...] = ()
) -> ReceiverProcess:
    """Starts ``trackbridge flush --queue ...`` (and ``extra_args``) and waits (bounded) until
    it flushes."""
    name = uuid.uuid4().hex[:8]
    data_dir = root / f"flusher-{name}"
    ready = root / f"ready-flusher-{name}.json"
    log_path = root / f"flusher-{name}.log"
    cmd = [
        str(TRACKBRIDGE_EXE), "flush", "--queue", queue_url, "--data-dir", str(data_dir),
        "--tracking-uri", tracking_uri, "--flush-interval", "0.5", "--ready-file", str(ready),
        *extra_args,
    ]  # fmt: skip
    return start_ready(cmd, ready, log_path, data_dir, tracking_uri)


def live_clients(receiver: ReceiverProcess, job: str) -> set[str]:
    """The client ids a receiver's live page shows for a job (the JSON the page reads)."""
    snapshot = get(f"http://127.0.0.1:{http_port(receiver)}/api/jobs/{job}").json()
    return {row["id"] for row in snapshot["clients"]}


def points_in_mlflow(client: Any, job: str, key: str = "x") -> int:
    """How many points of ``key`` the job's runs hold in MLflow."""
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id])
    return sum(len(client.get_metric_history(r.info.run_id, key)) for r in runs)


def wait_delivered_and_finished(
    clients: list[subprocess.Popen[bytes]],
    outs: dict[str, Path],
    mlflow_client: Any,
    job: str,
    points: int,
) -> None:
    """Each client process ends 0 with nothing undelivered or dropped, then every one of the
    job's client runs is FINISHED in MLflow with at least ``points`` points of ``x``."""
    for proc in clients:
        assert proc.wait(timeout=300) == 0, f"client exited {proc.returncode}: {proc.args}"
    for cid, out in outs.items():
        result = read_result(out)
        assert result["undelivered"] == 0 and result["dropped_events"] == 0, (cid, result)

    def all_there() -> bool:
        runs = child_runs(job_runs(mlflow_client, job))
        return len(runs) == len(outs) and all(
            r.info.status == "FINISHED"
            and len(mlflow_client.get_metric_history(r.info.run_id, "x")) >= points
            for r in runs
        )

    wait_until(all_there, 180, interval_s=1.0, what="every run FINISHED with every point")
