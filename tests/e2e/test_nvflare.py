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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LIVE_ARGS, http_port
from tests.support.mlflow_reads import TAG_ROLE, job_runs, metric_points, parent_runs
from tests.support.procs import MlflowServer, ReceiverProcess, child_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
RUN_NAME = re.compile(r"^(site-[12])-\d{6}-tb-hello-pt-tb-run$")
# What NVFlare's MLflowReceiver sets (besides MLflow's own bookkeeping tags).
COMPARED_TAGS = ("custom_tag", "run_name", "tb_site", "mlflow.note.content", "mlflow.runName")


def _run_example(*args: str, timeout_s: float = 300) -> str:
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
    return out


def _state(client: Any, experiment: str) -> dict[str, dict[str, Any]]:
    """Each site's run as the two paths are compared: by site."""
    runs = job_runs(client, experiment)
    state = {}
    for run in runs:
        if run.data.tags.get(TAG_ROLE) == "parent":
            continue  # the receiver's aggregates across the sites
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
    start_receiver: Callable[..., ReceiverProcess], mlflow_server: MlflowServer,
    mlflow_client: Any, job: str, tmp_path: Path,
) -> None:  # fmt: skip
    # Ours as the example's own receiver runs it (the sites' accuracy aggregated per round),
    # in the job's experiment (the example's default): the sites' runs and the aggregates'
    # parent run, all in one experiment, all FINISHED.
    receiver = start_receiver(extra_args=("--aggregate", "accuracy", *LIVE_ARGS))
    ours, theirs = job, f"{job}-nvflare"
    live = f"http://127.0.0.1:{http_port(receiver)}"
    out = _run_example(
        "--receiver", receiver.address, "--job", job, "--tracking-uri", mlflow_server.uri,
        "--live-page", live,
    )  # fmt: skip
    assert f"live page: {live}/jobs/{job}" in out, out
    for site in ("site-1", "site-2"):
        # NVFlare's writer folds the round into the step: no round of trackbridge's ("-").
        assert re.search(rf"{site}\s+runs 1\s+points\s+\d+\s+rounds -\s+FINISHED", out), out
    _run_example(
        "--tracking", "nvflare", "--tracking-uri", mlflow_server.uri, "--experiment", theirs,
        "--work-dir", str(tmp_path / "nvflare-own"),
    )  # fmt: skip

    def ended(experiment: str, count: int) -> bool:
        runs = job_runs(mlflow_client, experiment)
        return len(runs) == count and all(r.info.status != "RUNNING" for r in runs)

    wait_until(lambda: ended(ours, 3), 60, what="both sites' runs and the parent, ended")
    (parent,) = parent_runs(job_runs(mlflow_client, ours))
    assert parent.info.status == "FINISHED"
    counts = metric_points(mlflow_client, parent.info.run_id, "accuracy/count")
    assert sorted((p[2], p[1]) for p in counts) == [(0, 2.0), (1, 2.0)]  # one per round
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
