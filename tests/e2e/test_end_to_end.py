"""Several client processes log through one receiver into a real MLflow server."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    TAG_JOB,
    TAG_PARENT,
    TAG_ROLE,
    TAG_RUN_KEY,
    all_points,
    child_runs,
    group_points,
    job_runs,
    metric_points,
    parent_runs,
    user_tags,
    wait_for_children,
)
from tests.support.nats import BOTH_BACKENDS
from tests.support.procs import CLIENTS_DIR, wait_until

CLIENT_SCRIPT = CLIENTS_DIR / "log_sequence.py"


def _load_client_module() -> Any:
    spec = importlib.util.spec_from_file_location("log_sequence", CLIENT_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


log_sequence = _load_client_module()

# client id -> (index, run name given to start_run, expected MLflow run name, end status)
CLIENTS = {
    "site-a": (0, "alpha-run", "alpha-run", "FINISHED"),
    "site-b": (1, None, "site-b", "FINISHED"),  # no run name: the client id is used
    "site-c": (2, "gamma-run", "gamma-run", "FAILED"),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("queue_backend", BOTH_BACKENDS, indirect=True)
def test_three_client_processes_land_exactly_in_mlflow(
    receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    procs = {}
    for client_id, (index, run_name, _, status) in CLIENTS.items():
        cmd = [
            sys.executable,
            str(CLIENT_SCRIPT),
            "--receiver",
            receiver.address,
            "--client-id",
            client_id,
            "--job",
            job,
            "--index",
            str(index),
            "--status",
            status,
        ]
        if run_name is not None:
            cmd += ["--run-name", run_name]
        procs[client_id] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
        )
    outputs = {}
    try:
        for client_id, proc in procs.items():
            out, err = proc.communicate(timeout=120)
            outputs[client_id] = (proc.returncode, out.decode(), err.decode())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    for client_id, (code, out, err) in outputs.items():
        assert code == 0, f"client {client_id} exited {code}\nstdout:\n{out}\nstderr:\n{err}"
        assert json.loads(out.strip().splitlines()[-1]) == {"undelivered": 0, "dropped": 0}

    wait_for_children(mlflow_client, job, len(CLIENTS), timeout_s=60)

    def parent_finished() -> bool:
        parents = parent_runs(job_runs(mlflow_client, job))
        return len(parents) == 1 and parents[0].info.status == "FINISHED"

    wait_until(parent_finished, 60, what="the job's parent run to be FINISHED")

    runs = job_runs(mlflow_client, job)
    parents = parent_runs(runs)
    assert len(parents) == 1, [r.data.tags for r in parents]
    parent = parents[0]
    assert parent.data.tags[TAG_JOB] == job
    assert parent.data.tags[TAG_ROLE] == "parent"

    children = child_runs(runs)
    assert len(runs) == 1 + len(CLIENTS)
    assert sorted(r.data.tags.get(TAG_CLIENT_ID) for r in children) == sorted(CLIENTS)
    assert len({r.data.tags.get(TAG_RUN_KEY) for r in children}) == len(CLIENTS)

    for run in children:
        client_id = run.data.tags[TAG_CLIENT_ID]
        index, _, expected_name, expected_status = CLIENTS[client_id]
        expected = log_sequence.plan(index, client_id)
        where = f"client {client_id}"

        assert run.data.tags[TAG_PARENT] == parent.info.run_id, where
        assert run.data.tags[TAG_JOB] == job, where
        assert run.data.tags[TAG_ROLE] == "client", where
        assert run.data.tags[TAG_RUN_KEY], where
        assert run.info.run_name == expected_name, where
        assert run.info.status == expected_status, where

        assert all_points(mlflow_client, run) == group_points(expected["points"]), where
        assert run.data.params == expected["params"], where
        assert user_tags(run) == expected["tags"], where


@pytest.mark.timeout(120)
@pytest.mark.parametrize("queue_backend", BOTH_BACKENDS, indirect=True)
def test_nan_integer_and_special_values_round_trip(
    receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    t0 = 1_700_000_100_000
    logged = [
        (float("nan"), 0),
        (7, 1),  # a Python int
        (2.5, 2),
        (1 / 3, 3),
        (-1e-300, 4),
        (float("inf"), 5),
        (float("-inf"), 6),
        (-(2**53) + 1, 7),  # the largest integer a double holds exactly
    ]
    writer = make_writer(receiver.address, "special-values", job)
    writer.start_run("special")
    for value, step in logged:
        writer.log_metric("x", value, step=step, timestamp=t0 + step)
    writer.end_run()
    assert writer.close(timeout_s=30) == 0

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=30)
    points = metric_points(mlflow_client, run.info.run_id, "x")
    by_step = {step: (value, ts) for _, value, step, ts in points}
    assert len(points) == len(logged)
    assert {step: ts for step, (_, ts) in by_step.items()} == {s: t0 + s for _, s in logged}

    assert math.isnan(by_step[0][0]), "NaN must be stored as NaN"
    assert by_step[1][0] == 7.0
    assert by_step[2][0] == 2.5
    assert by_step[3][0] == 1 / 3
    assert by_step[4][0] == -1e-300
    # MLflow stores infinities as the largest finite doubles.
    assert by_step[5][0] == sys.float_info.max
    assert by_step[6][0] == -sys.float_info.max
    assert by_step[7][0] == float(-(2**53) + 1)
