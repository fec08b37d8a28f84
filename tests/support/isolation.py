"""Helpers of the failure-isolation tests: the receiver's status and dead letters through the
CLI, an in-process writer with its own spool, a known sequence of points, and waiting for a
run in MLflow by its run key (in any experiment, deleted ones included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mlflow.entities import ViewType

from tests.support.mlflow_reads import TAG_RUN_KEY
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, wait_until

T0 = 1_700_000_900_000
"""The timestamp of point 0 in :func:`log_points`."""


def trackbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), *args], capture_output=True, text=True, timeout=60, check=False
    )


def status(data_dir: Path) -> dict[str, Any]:
    result = trackbridge("status", "--data-dir", str(data_dir), "--json")
    assert result.returncode in (0, 2), result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def quarantined(data_dir: Path) -> list[dict[str, Any]]:
    return list(status(data_dir).get("quarantined_runs", []))


def writer_for(receiver: ReceiverProcess, client_id: str, job: str, tmp_path: Path) -> Any:
    from client_sdk.config import WriterConfig
    from client_sdk.writer import Writer

    config = WriterConfig(
        receiver=receiver.address, client_id=client_id, job=job, spool_dir=str(tmp_path / client_id)
    )
    return Writer(config=config)


def log_points(writer: Any, start: int, stop: int) -> None:
    for i in range(start, stop):
        writer.log_metric("x", float(i), step=i, timestamp=T0 + i)


def expected(start: int, stop: int) -> list[tuple[str, float, int, int]]:
    return [("x", float(i), i, T0 + i) for i in range(start, stop)]


def runs_with_key(client: Any, run_key: str) -> list[Any]:
    """Every MLflow run carrying the run key, in any experiment, deleted ones included."""
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return list(
        client.search_runs(ids, f"tags.`{TAG_RUN_KEY}` = '{run_key}'", run_view_type=ViewType.ALL)
    )


def wait_points(client: Any, run_id: str, count: int) -> None:
    wait_until(
        lambda: len(client.get_metric_history(run_id, "x")) >= count,
        90,
        interval_s=0.3,
        what=f"{count} points of run {run_id} in MLflow",
    )


def wait_finished(client: Any, run_key: str, points: int) -> Any:
    def done() -> Any:
        runs = [r for r in runs_with_key(client, run_key) if r.info.status == "FINISHED"]
        if len(runs) == 1 and len(client.get_metric_history(runs[0].info.run_id, "x")) >= points:
            return runs[0]
        return None

    return wait_until(done, 120, interval_s=0.5, what=f"run {run_key} FINISHED in MLflow")
