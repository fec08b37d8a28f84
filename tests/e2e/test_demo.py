"""``trackbridge demo``: a receiver in-process, torch clients as processes, an embedded store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.mlflow_reads import TAG_ROLE
from tests.support.procs import TRACKBRIDGE_EXE

pytestmark = pytest.mark.slow

DEMO_TIMEOUT_S = 170


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_demo_trains_two_clients_into_the_embedded_store(tmp_path: Path) -> None:
    cmd = [
        str(TRACKBRIDGE_EXE),
        "demo",
        "--clients",
        "2",
        "--epochs",
        "1",
        "--steps",
        "5",
        "--data-dir",
        str(tmp_path),
        "--exit",
    ]
    result = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "mlflow ui --backend-store-uri" in output
    assert "Every point was in MLflow" in output
    assert "stay up" not in output  # --exit: gone once everything is in MLflow

    db = tmp_path / "mlflow.db"
    assert db.is_file(), output
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("demo")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) != "parent"]
    assert len(children) == 2, [r.data.tags for r in runs]
    assert sorted(r.info.run_name for r in children) == ["site-1", "site-2"]
    for run in children:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert len(history) == 5, run.info.run_name
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4], run.info.run_name
