"""``examples/nvflare``, for real: the same hello-pt job (2 sites x 2 rounds) run twice by
NVFlare's simulator, once with trackbridge's ``MLflowWriter`` on the sites (through a real
receiver) and once with NVFlare's own path (its ``MLflowWriter`` and server-side
``MLflowReceiver``), into one real MLflow server; then the two are compared.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow_reads import job_runs, metric_points
from tests.support.procs import MlflowServer, ReceiverProcess, child_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
RUN_NAME = re.compile(r"^(site-[12])-\d{6}-tb-hello-pt-tb-run$")
# What NVFlare's MLflowReceiver sets (besides MLflow's own bookkeeping tags).
COMPARED_TAGS = ("custom_tag", "run_name", "tb_site", "mlflow.note.content", "mlflow.runName")


def _run_example(*args: str, timeout_s: float = 300) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.nvflare", *args],
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher stops the simulator's group
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the NVFlare example ran past {timeout_s} s:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]


def _state(client: Any, experiment: str) -> dict[str, dict[str, Any]]:
    """Each site's run as the two paths are compared: by site."""
    runs = job_runs(client, experiment)
    state = {}
    for run in runs:
        match = RUN_NAME.match(run.info.run_name)
        assert match, run.info.run_name
        metrics = {
            key: sorted((p[2], p[1]) for p in metric_points(client, run.info.run_id, key))
            for key in run.data.metrics
        }
        state[match.group(1)] = {
            "status": run.info.status,
            "tags": {k: run.data.tags.get(k) for k in COMPARED_TAGS},
            "job_id": run.data.tags.get("job_id"),
            "parent": run.data.tags.get("mlflow.parentRunId"),
            "params": run.data.params,
            "metrics": metrics,
            "texts": sorted(a.path for a in client.list_artifacts(run.info.run_id, "notes")),
        }
    return state


def test_trackbridge_writer_lands_as_nvflares_own_receiver_does(
    receiver: ReceiverProcess, mlflow_server: MlflowServer, mlflow_client: Any, job: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    ours, theirs = f"{job}-trackbridge", f"{job}-nvflare"
    _run_example("--receiver", receiver.address, "--job", job, "--experiment", ours)
    _run_example(
        "--tracking", "nvflare", "--tracking-uri", mlflow_server.uri, "--experiment", theirs,
        "--work-dir", str(tmp_path / "nvflare-own"),
    )  # fmt: skip

    def ended(experiment: str) -> bool:
        runs = job_runs(mlflow_client, experiment)
        return len(runs) == 2 and all(r.info.status != "RUNNING" for r in runs)

    wait_until(lambda: ended(ours), 60, what="both sites' runs through trackbridge, ended")
    expected, actual = _state(mlflow_client, theirs), _state(mlflow_client, ours)
    assert sorted(expected) == sorted(actual) == ["site-1", "site-2"]
    for site in ("site-1", "site-2"):
        want, got = expected[site], actual[site]
        assert got["status"] == want["status"] == "FINISHED"
        assert got["tags"] == want["tags"]
        assert want["tags"]["custom_tag"] == "x" and want["tags"]["tb_site"] == site
        assert want["tags"]["mlflow.note.content"] == "run description"
        # The job id is a timestamp in the simulator (per site, at its start): its shape only.
        assert re.fullmatch(r"\d{10}", got["job_id"]) and re.fullmatch(r"\d{10}", want["job_id"])
        assert got["parent"] is None and want["parent"] is None  # flat, as NVFlare's
        assert got["params"] == want["params"] == {"lr": "0.1", "site_param": site}
        assert (
            sorted(got["metrics"]) == sorted(want["metrics"]) == ["accuracy", "round", "train_loss"]
        )
        for key, points in want["metrics"].items():
            # The same steps, and (seeded model and data, one thread) the same values.
            assert [s for s, _ in got["metrics"][key]] == [s for s, _ in points], key
            assert [v for _, v in got["metrics"][key]] == pytest.approx(
                [v for _, v in points], rel=1e-5
            ), key
        assert got["texts"] == want["texts"] == ["notes/round_0.txt", "notes/round_1.txt"]
