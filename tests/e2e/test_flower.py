"""``examples/flower``, for real: Flower's Deployment Engine (a SuperLink, three SuperNodes, the
ServerApp and ClientApp processes they spawn: one per message) on loopback, logging through a
real receiver into a real MLflow server. The live page's JSON is read all along the run (every
site one curve across its processes, never "finished" before its last message); then exactly
what landed in MLflow is checked (one aggregate point per round per statistic).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.faults import queue_drained
from tests.support.live import LIVE_ARGS, get, http_port
from tests.support.mlflow_reads import (
    TAG_PARENT,
    children_by_client,
    job_runs,
    metric_points,
    parent_runs,
    wait_for_children,
)
from tests.support.procs import MlflowServer, ReceiverProcess, child_env, wait_until
from tests.support.rounds import arrivals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
SITES, ROUNDS, EPOCHS = 2, 3, 3  # two sites: each round aggregates several (Flower: a process each)
SITE_IDS = [f"site-{n}" for n in range(SITES)]
STATS = ("mean", "min", "max", "count", "weighted_mean")


class PagePoller:
    """Reads the job's page JSON every 0.3 s on a thread of its own while the example runs:
    each site's number of ``eval/accuracy`` points and state, per read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reads: list[dict[str, tuple[int, str]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            try:
                snap = get(self.url).json()
            except Exception as exc:
                self.errors.append(repr(exc))
                continue
            states = {c["id"]: c["state"] for c in snap["clients"]}
            self.reads.append(
                {
                    site: (len(snap["points"].get(site, {}).get("eval/accuracy", {"s": []})["s"]),
                           states.get(site, ""))
                    for site in SITE_IDS
                }
            )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


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
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
) -> None:
    # The receiver aggregates the sites' evaluation per round, as the example's own does (the
    # server's run never logs eval/*: round 1 waits for its deadline, later rounds for the
    # sites that took part).
    aggregate = ("--aggregate", "eval/*", "--aggregate-deadline", "30")
    receiver = start_receiver(extra_args=(*aggregate, *LIVE_ARGS))
    page = f"http://127.0.0.1:{http_port(receiver)}/api/jobs/{urllib.parse.quote(job, safe='')}"
    poller = PagePoller(page)
    try:
        live = f"http://127.0.0.1:{http_port(receiver)}"
        done = _run_example(
            "--receiver", receiver.address, "--job", job, "--sites", str(SITES),
            "--rounds", str(ROUNDS), "--local-epochs", str(EPOCHS),
            "--tracking-uri", mlflow_server.uri, "--live-page", live,
        )  # fmt: skip
    finally:
        poller.stop()
    assert done.returncode == 0, done.stdout[-4000:]
    # The example tells its story: the live page at the start, what landed per site at the end
    # (once the receiver wrote the job), and where to look in MLflow.
    out = done.stdout
    assert f"live page: {live}/jobs/{job}" in out, out
    points = ROUNDS * EPOCHS + 3 * ROUNDS  # epoch losses; train/loss, eval/loss, eval/accuracy
    for site in SITE_IDS:
        pattern = rf"{site}\s+runs 1\s+points\s+{points}\s+rounds {ROUNDS}\s+FINISHED"
        assert re.search(pattern, out), out
    assert f"{mlflow_server.uri}/#/experiments/" in out, out
    # The live page all along: each site one curve across its processes (its points only
    # grow), "finished" only once its last round is in, and the run seen in progress.
    assert poller.reads, poller.errors
    for site in SITE_IDS:
        seen = [read[site] for read in poller.reads]
        counts = [n for n, _ in seen]
        assert counts == sorted(counts), (site, seen)
        assert all(n == ROUNDS for n, state in seen if state == "finished"), (site, seen)
    assert any(0 < read[s][0] < ROUNDS for read in poller.reads for s in SITE_IDS)
    # After it: every site's full curves, and its run over.
    snap = get(page).json()
    for site in SITE_IDS:
        points = snap["points"][site]
        assert points["eval/accuracy"]["s"] == list(range(1, ROUNDS + 1)), site
        assert points["train/epoch_loss"]["s"] == list(range(ROUNDS * EPOCHS)), site
        (row,) = [c for c in snap["clients"] if c["id"] == site]
        assert row["state"] == "finished"
        assert row["latest"]["eval/accuracy"][0] == ROUNDS
    # Every message's process had its batches acknowledged before it exited: wait for the
    # receiver to have written everything.
    wait_until(lambda: queue_drained(receiver.data_dir), 120, what="every batch in MLflow")
    wait_for_children(mlflow_client, job, SITES + 1, timeout_s=60)
    runs = children_by_client(mlflow_client, job)
    # One run per site for the whole job (every message is its own process: later ones
    # resume the site's run), and the server's; nothing else.
    assert sorted(runs) == ["server", *SITE_IDS]
    assert len(job_runs(mlflow_client, job)) == SITES + 2  # + the job's parent run
    (parent,) = parent_runs(job_runs(mlflow_client, job))
    rounds = list(range(1, ROUNDS + 1))
    for site in SITE_IDS:
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
        sites = np.array([_values(mlflow_client, runs[s], key) for s in SITE_IDS])
        fedavg = _values(mlflow_client, server, f"fedavg/{key}")
        np.testing.assert_allclose(fedavg, sites.mean(axis=0))

    # The receiver's aggregates across the sites, per round, on the job's parent run: one
    # point per round and statistic, numpy's on the sites' values (those that reported before
    # the deadline: a late site is recorded, not written).
    def aggregated() -> bool:
        return all(
            len(metric_points(mlflow_client, parent.info.run_id, f"{key}/count")) >= ROUNDS
            for key in ("eval/loss", "eval/accuracy")
        ) and queue_drained(receiver.data_dir)

    wait_until(aggregated, 120, what="every round's aggregate in MLflow")
    for key in ("eval/loss", "eval/accuracy"):
        sites = {s: _values(mlflow_client, runs[s], key) for s in SITE_IDS}
        history = {
            stat: sorted(
                (step, value)
                for _k, value, step, _ts in metric_points(
                    mlflow_client, parent.info.run_id, f"{key}/{stat}"
                )
            )
            for stat in STATS
        }
        for stat in STATS:
            assert [step for step, _ in history[stat]] == rounds, (key, stat, history[stat])
        late = {
            (r, c) for k, r, c, is_late in arrivals(receiver.data_dir, job) if k == key and is_late
        }
        for n, r in enumerate(rounds):
            took = np.array([sites[s][n] for s in SITE_IDS if (r, s) not in late])
            assert history["count"][n][1] == len(took)
            for stat, want in (("mean", took.mean()), ("min", took.min()), ("max", took.max())):
                np.testing.assert_allclose(history[stat][n][1], want, err_msg=f"{key} {stat} {r}")
