"""Cross-client aggregates on the receiver, against a real MLflow server, real receivers and
real client processes: exact statistics (numpy on the same inputs), a client that misses a
round (the deadline), late clients (recorded, never a second aggregate at a round), a receiver
kill -9 between rounds (no aggregate point lost or doubled)."""

from __future__ import annotations

import re
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.faults import TcpProxy, queue_drained
from tests.support.live import LIVE_ARGS, get, http_port
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, child_env, wait_until
from tests.support.rounds import RoundClient, arrivals, history, parent_run

STATS = ("mean", "min", "max", "count", "weighted_mean")
KEY = "eval/accuracy"


def expected(points: dict[str, tuple[float, int]]) -> dict[str, float]:
    """numpy's statistics of the clients' points ``client -> (value, num_examples)``, in the
    order the receiver documents (by client id)."""
    ordered = [points[c] for c in sorted(points)]
    values = np.array([v for v, _ in ordered], dtype=np.float64)
    weights = np.array([n for _, n in ordered], dtype=np.float64)
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "count": float(len(ordered)),
        "weighted_mean": float(np.average(values, weights=weights)),
    }


def values_at(client: Any, run_id: str, step: int) -> dict[str, list[float]]:
    """Each statistic's points at ``step``, oldest first."""
    return {
        name: [v for s, v, _ in history(client, run_id, f"{KEY}/{name}") if s == step]
        for name in STATS
    }


def wait_points(client: Any, job: str, step: int, count: int) -> str:
    """Waits until ``<key>/count`` holds ``count`` points at ``step`` (the statistics of one
    aggregate travel in one log_batch call); returns the parent run's id."""

    def ready() -> str | None:
        parent = parent_run(client, job)
        if parent is None:
            return None
        at = values_at(client, parent.info.run_id, step)
        return parent.info.run_id if len(at["count"]) >= count else None

    run_id: str = wait_until(ready, 120, what=f"{count} aggregate points at step {step}")
    return run_id


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Callable[..., RoundClient]]:
    started: list[RoundClient] = []

    def start(address: str, client_id: str, job: str, mode: str = "writer") -> RoundClient:
        client = RoundClient(address, client_id, job, mode, tmp_path)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_rounds_aggregate_exactly_once_across_a_kill_9_and_late_clients(
    start_receiver: Callable[..., ReceiverProcess],
    clients: Callable[..., RoundClient],
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    args = ("--aggregate", "eval/*", "--aggregate-deadline", "300")
    data_dir = tmp_path / "receiver-data"
    first = start_receiver(data_dir=data_dir, extra_args=args)
    proxy = TcpProxy(first.port)
    rng = np.random.default_rng(15)
    sites = [clients(proxy.address, f"site-{n}", job) for n in "abc"]
    inputs: dict[int, dict[str, tuple[float, int]]] = {}
    try:
        for round_ in (1, 2):
            inputs[round_] = {}
            for site in sites:
                value, n = float(rng.random()), int(rng.integers(10, 1000))
                site.log("train/loss", float(rng.random()), round_, step=round_ * 10)
                site.log(KEY, value, round_, num_examples=n, step=round_ * 10)
                inputs[round_][site.client_id] = (value, n)
        # Every client's round-2 point is durable in the receiver: kill it before, during or
        # after it queues and writes that aggregate.
        first.proc.kill()
        first.proc.wait(timeout=30)
        first.returncode = first.proc.returncode
        second = start_receiver(data_dir=data_dir, extra_args=args)
        proxy.set_upstream(second.port)
        inputs[3] = {}
        for site in sites:
            value, n = float(rng.random()), int(rng.integers(10, 1000))
            site.log(KEY, value, 3, num_examples=n, step=30)
            inputs[3][site.client_id] = (value, n)
        parent_id = wait_points(mlflow_client, job, 3, 1)
        wait_points(mlflow_client, job, 2, 1)
        for round_ in (1, 2, 3):
            want = expected(inputs[round_])
            assert values_at(mlflow_client, parent_id, round_) == {k: [v] for k, v in want.items()}
        # Only the declared metrics are aggregated; the step of an aggregate is the round.
        assert mlflow_client.get_metric_history(parent_id, "train/loss/mean") == []

        # A client that joins late and reports round 2: recorded as late, never written as a
        # second aggregate of round 2.
        late = clients(proxy.address, "site-d", job)
        late.log(KEY, float(rng.random()), 2, num_examples=77, step=20)
        wait_until(
            lambda: (KEY, 2, "site-d", True) in arrivals(data_dir, job), 60, what="late arrival"
        )
        for site in [*sites, late]:
            site.end()
        wait_until(lambda: queue_drained(data_dir), 120, what="every batch in MLflow")
        assert values_at(mlflow_client, parent_id, 2) == {
            k: [v] for k, v in expected(inputs[2]).items()
        }
        # Nothing else was written: one point per round.
        for name in STATS:
            steps = [s for s, _, _ in history(mlflow_client, parent_id, f"{KEY}/{name}")]
            assert steps == [1, 2, 3], name
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_straggler_is_named_missing_then_late_in_status_top_metrics_and_the_page(
    start_receiver: Callable[..., ReceiverProcess],
    clients: Callable[..., RoundClient],
    mlflow_client: Any,
    job: str,
) -> None:
    args = ("--aggregate", "eval/*", "--aggregate-deadline", "2", *LIVE_ARGS)
    receiver = start_receiver(extra_args=args)
    a, b, c = (clients(receiver.address, f"site-{n}", job) for n in "abc")
    for site, value in ((a, 0.2), (b, 0.4), (c, 0.6)):
        site.log(KEY, value, 1, num_examples=100)
    wait_points(mlflow_client, job, 1, 1)
    # Round 2: site-c straggles (it says nothing, on purpose); the round is written at its
    # deadline with the two that reported, and site-c is named missing everywhere.
    a.log(KEY, 0.25, 2, num_examples=100)
    b.log(KEY, 0.75, 2, num_examples=300)
    parent_id = wait_points(mlflow_client, job, 2, 1)
    two = expected({"site-a": (0.25, 100), "site-b": (0.75, 300)})
    assert values_at(mlflow_client, parent_id, 2) == {k: [v] for k, v in two.items()}
    line = re.compile(r"round 2: 2 of 3 sites, site-c missing for \d+ s")
    text = _cli("status", "--data-dir", str(receiver.data_dir))
    assert line.search(text), text
    base = f"http://127.0.0.1:{http_port(receiver)}"
    page = f"{base}/api/jobs/{urllib.parse.quote(job, safe='')}"
    (latest, first) = get(page).json()["receiver"]["rounds"]
    assert (latest["round"], latest["missing"], sorted(latest["reported"])) == (
        2, ["site-c"], ["site-a", "site-b"],
    )  # fmt: skip
    assert latest["spread"][KEY] == {"min": 0.25, "max": 0.75, "mean": 0.5}
    assert (first["round"], first["missing"]) == (1, [])
    metrics = get(f"{base}/metrics").body.decode()
    assert f'trackbridge_round_sites{{job="{job}",state="missing"}} 1.0' in metrics
    assert f'trackbridge_round_missing_seconds{{client="site-c",job="{job}"}}' in metrics
    top = _cli("top", "-n", "1", "--receiver", receiver.address, "--job", job)
    assert line.search(top), top
    # site-c reports at last: recorded, after the deadline; the aggregate stays as written.
    c.log(KEY, 0.5, 2, num_examples=600)

    def late() -> Any:
        rounds = get(page).json()["receiver"]["rounds"]
        return rounds[0] if rounds and rounds[0]["late"] == ["site-c"] else None

    latest = wait_until(late, 60, what="site-c recorded late")
    assert latest["missing"] == [] and sorted(latest["reported"]) == ["site-a", "site-b", "site-c"]
    status = _cli("status", "--data-dir", str(receiver.data_dir))
    assert re.search(
        r"round 2: 3 of 3 sites; slowest site-c \+\d+ s; after the deadline: site-c", status
    ), status
    for site in (a, b, c):
        site.end()
    wait_until(lambda: queue_drained(receiver.data_dir), 120, what="every batch in MLflow")
    assert values_at(mlflow_client, parent_id, 2) == {k: [v] for k, v in two.items()}


def _cli(*args: str) -> str:
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**child_env(), "COLUMNS": "160", "LINES": "40"},
    )
    assert result.returncode == 0, result
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_points_without_rounds_aggregate_by_step_and_without_weights_no_weighted_mean(
    start_receiver: Callable[..., ReceiverProcess],
    make_writer: Callable[..., Any],
    mlflow_client: Any,
    job: str,
) -> None:
    receiver = start_receiver(extra_args=("--aggregate", "eval/*", "--aggregate-deadline", "60"))
    writers = [make_writer(receiver.address, f"site-{n}", job) for n in "ab"]
    for w in writers:
        w.start_run()
        assert w.flush(60)
    for step, values in ((5, (1.5, -2.0)), (6, (float("inf"), 3.0))):
        for w, v in zip(writers, values, strict=True):
            w.log_metric(KEY, v, step=step)
        for w in writers:
            assert w.flush(60)
    parent_id = wait_points(mlflow_client, job, 6, 1)
    wait_points(mlflow_client, job, 5, 1)
    assert values_at(mlflow_client, parent_id, 5) == {
        "mean": [-0.25], "min": [-2.0], "max": [1.5], "count": [2.0], "weighted_mean": [],
    }  # fmt: skip
    at_6 = values_at(mlflow_client, parent_id, 6)
    # MLflow stores +inf as the largest double, as it does for any metric.
    assert at_6["min"] == [3.0] and at_6["count"] == [2.0] and at_6["weighted_mean"] == []
    assert at_6["mean"] == at_6["max"] == [1.7976931348623157e308]
    # Live: the job's "(aggregate)" client has the series, on the page and in its row (top).
    url = f"http://127.0.0.1:{http_port(receiver)}/api/jobs/{urllib.parse.quote(job, safe='')}"

    def shown() -> Any:
        snap = get(url).json()
        series = snap["points"].get("(aggregate)", {}).get(f"{KEY}/min")
        return snap if series and 6 in series["s"] else None

    snap = wait_until(shown, 60, what="the aggregates on the live page")
    mins = snap["points"]["(aggregate)"][f"{KEY}/min"]
    assert dict(zip(mins["s"], mins["v"], strict=True)) == {5: -2.0, 6: 3.0}
    (row,) = [c for c in snap["clients"] if c["id"] == "(aggregate)"]
    assert row["latest"][f"{KEY}/count"][:2] == [6, 2.0]

    def flushed() -> bool:  # what reached MLflow is counted against the aggregate row too
        rows = get(url).json()["clients"]
        return any(c["id"] == "(aggregate)" and c["backlog"] == 0 for c in rows)

    wait_until(flushed, 60, what="the aggregate row's backlog to empty")
