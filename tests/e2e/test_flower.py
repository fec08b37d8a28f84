"""``examples/flower``, for real: Flower's Deployment Engine (a SuperLink, two SuperNodes, the
ServerApp and ClientApp processes they spawn) on loopback, logging through a real receiver into
a real MLflow server; then exactly what landed is checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.faults import queue_drained
from tests.support.mlflow_reads import (
    TAG_PARENT,
    children_by_client,
    job_runs,
    metric_points,
    parent_runs,
    wait_for_children,
)
from tests.support.procs import ReceiverProcess, child_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SITES, ROUNDS, EPOCHS = 2, 2, 3


def _run_example(*args: str, timeout_s: float = 450) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.flower", *args],
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
        os.killpg(proc.pid, signal.SIGTERM)  # the launcher stops its process groups
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"the Flower example ran past {timeout_s} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def _by_step(client: Any, run: Any, key: str) -> list[tuple[str, float, int, int]]:
    return sorted(metric_points(client, run.info.run_id, key), key=lambda p: p[2])


def _steps(client: Any, run: Any, key: str) -> list[int]:
    return [p[2] for p in _by_step(client, run, key)]


def _values(client: Any, run: Any, key: str) -> list[float]:
    return [p[1] for p in _by_step(client, run, key)]


def test_flower_federation_lands_per_site_and_per_round(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str
) -> None:
    # The receiver aggregates the sites' evaluation per round, as the example's own does.
    aggregate = ("--aggregate", "eval/*", "--aggregate-deadline", "10")
    receiver = start_receiver(extra_args=aggregate)
    done = _run_example(
        "--receiver", receiver.address, "--job", job, "--sites", str(SITES),
        "--rounds", str(ROUNDS), "--local-epochs", str(EPOCHS),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:]
    # Every message's process had its batches acknowledged before it exited; a site's run is
    # ended (FINISHED) by each message, so its last message's points may still be on the way
    # when all three runs read FINISHED: wait for the receiver to have written everything.
    wait_until(lambda: queue_drained(receiver.data_dir), 120, what="every batch in MLflow")
    wait_for_children(mlflow_client, job, SITES + 1, timeout_s=60)
    runs = children_by_client(mlflow_client, job)
    # One run per site for the whole job (every message is its own process: later ones
    # resume the site's run), and the server's; nothing else.
    assert sorted(runs) == ["server", "site-0", "site-1"]
    assert len(job_runs(mlflow_client, job)) == SITES + 2  # + the job's parent run
    (parent,) = parent_runs(job_runs(mlflow_client, job))
    rounds = list(range(1, ROUNDS + 1))
    for site in ("site-0", "site-1"):
        run = runs[site]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == site
        assert run.data.tags[TAG_PARENT] == parent.info.run_id
        assert run.data.tags["flower.partition_id"] == site[-1]
        assert _steps(mlflow_client, run, "train/loss") == rounds
        assert _steps(mlflow_client, run, "eval/loss") == rounds
        assert _steps(mlflow_client, run, "train/epoch_loss") == list(range(ROUNDS * EPOCHS))
        accuracy = _values(mlflow_client, run, "eval/accuracy")
        assert len(accuracy) == ROUNDS and all(0.0 <= a <= 1.0 for a in accuracy)
        # Training learns: the last local epoch's loss is below the first one's.
        epochs = _values(mlflow_client, run, "train/epoch_loss")
        assert epochs[-1] < epochs[0]
    server = runs["server"]
    assert server.info.status == "FINISHED"
    assert server.data.params == {"num-server-rounds": str(ROUNDS), "local-epochs": str(EPOCHS)}
    assert _steps(mlflow_client, server, "central/loss") == [0, *rounds]  # before round 1 too
    # The server's aggregate of each round is FedAvg's weighted mean of what the sites logged
    # (equal num-examples: the plain mean).
    for key in ("eval/loss", "eval/accuracy", "train/loss"):
        assert _steps(mlflow_client, server, f"fedavg/{key}") == rounds
        sites = np.array([_values(mlflow_client, runs[s], key) for s in ("site-0", "site-1")])
        fedavg = _values(mlflow_client, server, f"fedavg/{key}")
        np.testing.assert_allclose(fedavg, sites.mean(axis=0))

    # The receiver's aggregates across the sites, per round, on the job's parent run: the last
    # point of each round (a site later than the deadline updates it) is numpy's on the sites'
    # values.
    def latest(key: str) -> dict[int, float]:
        by_step: dict[int, tuple[int, float]] = {}
        for _key, value, step, ts in metric_points(mlflow_client, parent.info.run_id, key):
            if step not in by_step or ts >= by_step[step][0]:
                by_step[step] = (ts, value)
        return {step: value for step, (_, value) in by_step.items()}

    def complete() -> bool:
        return latest("eval/loss/count") == dict.fromkeys(rounds, float(SITES))

    wait_until(complete, 120, what="every round's aggregate over both sites")
    for key in ("eval/loss", "eval/accuracy"):
        sites = np.array([_values(mlflow_client, runs[s], key) for s in ("site-0", "site-1")])
        for stat, expected in (("mean", sites.mean(0)), ("min", sites.min(0)),
                               ("max", sites.max(0))):  # fmt: skip
            got = latest(f"{key}/{stat}")
            np.testing.assert_allclose([got[r] for r in rounds], expected, err_msg=stat)
