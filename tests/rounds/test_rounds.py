"""Rounds end to end: a point's federated round, logged through the Writer (argument and
block) and the fluent module (light and full), reaches MLflow as the ``trackbridge.round``
metric beside the point, or as the point's step with ``--round-as-step``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.limits import ROUND_METRIC
from tests.support.procs import ReceiverProcess, wait_until
from tests.support.rounds import RoundClient, history

MODES = ("writer", "light", "full")


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., RoundClient]]:
    started: list[RoundClient] = []

    def start(address: str, client_id: str, job: str, mode: str) -> RoundClient:
        client = RoundClient(address, client_id, job, mode, tmp_path)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


def client_run(mlflow: Any, job: str, client_id: str) -> Any:
    experiment = mlflow.get_experiment_by_name(job)
    if experiment is None:
        return None
    runs = mlflow.search_runs(
        [experiment.experiment_id], f"tags.`trackbridge.client_id` = '{client_id}'"
    )
    return runs[0] if runs and runs[0].info.status == "FINISHED" else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rounds_reach_mlflow_from_the_writer_and_both_fluent_modes(
    receiver: ReceiverProcess,
    clients: Callable[..., RoundClient],
    mlflow_client: Any,
    job: str,
) -> None:
    sites = {mode: clients(receiver.address, f"site-{mode}", job, mode) for mode in MODES}
    for mode, site in sites.items():
        site.log("eval/loss", 0.5, 1, num_examples=10, step=7)
        site.log("eval/loss", 0.25, 2, step=8)
        if mode == "writer":  # the argument, outside any block
            site.log("eval/loss", 0.125, 3, step=9, arg=True)
        site.end()
    for mode in MODES:
        run = wait_until(
            lambda mode=mode: client_run(mlflow_client, job, f"site-{mode}"), 60, what=mode
        )
        rid = run.info.run_id
        steps = [7, 8, 9] if mode == "writer" else [7, 8]
        assert [(s, v) for s, v, _ in history(mlflow_client, rid, "eval/loss")] == list(
            zip(steps, [0.5, 0.25, 0.125], strict=False)
        )
        rounds = history(mlflow_client, rid, ROUND_METRIC)
        assert [(s, v) for s, v, _ in rounds] == list(zip(steps, [1.0, 2.0, 3.0], strict=False))
        loss_ts = [t for _, _, t in history(mlflow_client, rid, "eval/loss")]
        assert [t for _, _, t in rounds] == loss_ts  # the round sits at the point's time


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_round_as_step_makes_the_round_mlflow_step(
    start_receiver: Callable[..., ReceiverProcess],
    clients: Callable[..., RoundClient],
    mlflow_client: Any,
    job: str,
) -> None:
    receiver = start_receiver(extra_args=("--round-as-step",))
    site = clients(receiver.address, "site-a", job, "writer")
    site.log("eval/loss", 0.5, 4, step=70)
    site.log("train/loss", 0.75, 5, step=80, arg=True)
    site.end()
    run = wait_until(lambda: client_run(mlflow_client, job, "site-a"), 60, what="the run")
    rid = run.info.run_id
    assert [(s, v) for s, v, _ in history(mlflow_client, rid, "eval/loss")] == [(4, 0.5)]
    assert [(s, v) for s, v, _ in history(mlflow_client, rid, "train/loss")] == [(5, 0.75)]
    assert history(mlflow_client, rid, ROUND_METRIC) == []
