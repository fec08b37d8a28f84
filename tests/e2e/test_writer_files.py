"""The Writer's own file calls (``log_text``, ``log_dict``) and its run id after ``end_run``,
through a real receiver into a real MLflow server; and the job's parent run in the experiment
the client's runs go to (so the MLflow UI shows the tree)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import receiver_idle
from tests.support.procs import wait_until


@pytest.mark.timeout(120)
def test_writer_logs_text_and_dicts_and_knows_its_ended_run(
    receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    writer = make_writer(receiver.address, f"{job}-w", job)
    writer.start_run(run_name="files", experiment=f"{job}-exp")
    writer.log_text("hello\n", "notes/hello.txt")
    writer.log_dict({"lr": 0.1, "layers": [2, 4]}, "config.json")
    writer.log_dict({"lr": 0.1}, "config.yaml")
    writer.end_run("FINISHED")
    run_id = writer.run_id(timeout_s=30)
    assert run_id, "run_id() after end_run names the run that ended"
    assert writer.flush(30)
    wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the receiver to drain")

    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(mlflow_client.download_artifacts(run_id, "", tmp))
        assert (root / "notes" / "hello.txt").read_text() == "hello\n"
        assert json.loads((root / "config.json").read_text()) == {"lr": 0.1, "layers": [2, 4]}
        assert (root / "config.yaml").read_text() == "lr: 0.1\n"
    # The job's parent run sits in the run's experiment: the MLflow UI shows them as a tree.
    parent_id = run.data.tags["mlflow.parentRunId"]
    parent = mlflow_client.get_run(parent_id)
    assert parent.info.experiment_id == run.info.experiment_id
    assert parent.data.tags["trackbridge.role"] == "parent"
    assert parent.info.run_name == job
