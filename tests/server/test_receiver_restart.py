"""SIGTERM drains the queue to MLflow; batches left queued are flushed by the next receiver;
one receiver per data directory."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from tests.support.mlflow_reads import (
    all_points,
    child_runs,
    job_runs,
    parent_runs,
    user_tags,
    wait_for_children,
)
from tests.support.procs import TRACKBRIDGE_EXE, free_port

T0 = 1_700_000_600_000


def _log_run(writer: Any, n: int) -> list[tuple[str, float, int, int]]:
    writer.start_run("restart", tags={"kind": "restart-test"})
    writer.log_params({"n": n})
    points = []
    for i in range(n):
        for key, value in (("loss", 1.0 / (i + 1)), ("acc", i / n)):
            writer.log_metric(key, value, step=i, timestamp=T0 + i)
            points.append((key, value, i, T0 + i))
    writer.end_run("FINISHED")
    return points


def _expected(points: list[tuple[str, float, int, int]]) -> dict[str, list[Any]]:
    return {key: sorted(p for p in points if p[0] == key) for key in {p[0] for p in points}}


@pytest.mark.timeout(180)
def test_sigterm_drains_everything_to_mlflow(
    start_receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    # A flush interval far beyond the test: whatever reaches MLflow comes from the drain.
    receiver = start_receiver(flush_interval_s=3600)
    writer = make_writer(receiver.address, "drain-client", job)
    points = _log_run(writer, 300)
    assert writer.flush(timeout_s=30), "the receiver did not acknowledge everything"
    assert writer.close(timeout_s=10) == 0
    assert job_runs(mlflow_client, job) == [], "nothing should be flushed before the drain"

    assert receiver.stop() == 0, receiver.log_tail()

    runs = job_runs(mlflow_client, job)
    assert len(parent_runs(runs)) == 1
    (run,) = child_runs(runs)
    assert run.info.status == "FINISHED"
    assert all_points(mlflow_client, run) == _expected(points)
    assert run.data.params == {"n": "300"}
    assert user_tags(run) == {"kind": "restart-test"}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_batches_queued_at_shutdown_are_flushed_by_the_next_receiver(
    start_receiver: Any, make_writer: Any, mlflow_client: Any, job: str, tmp_path: Any
) -> None:
    data_dir = tmp_path / "shared-data"
    # Nothing listens on this port: every flush to "MLflow" fails.
    dead_mlflow = f"http://127.0.0.1:{free_port()}"
    first = start_receiver(
        tracking_uri=dead_mlflow,
        data_dir=data_dir,
        flush_interval_s=0.5,
        shutdown_timeout_s=2,
    )
    writer = make_writer(first.address, "restart-client", job)
    points = _log_run(writer, 200)
    # Acknowledged although MLflow is down: the receiver's queue is durable.
    assert writer.flush(timeout_s=30), "the receiver did not acknowledge everything"
    assert writer.close(timeout_s=10) == 0
    first.expected_exit_code = 1  # from here on, batches are queued that cannot drain

    # It cannot drain to a dead MLflow: it gives up after its shutdown timeout and says so.
    assert first.stop(timeout_s=60) == 1, first.log_tail()
    assert job_runs(mlflow_client, job) == []

    second = start_receiver(data_dir=data_dir, flush_interval_s=0.5)
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert run.info.status == "FINISHED"
    assert all_points(mlflow_client, run) == _expected(points)  # each point exactly once
    assert run.data.params == {"n": "200"}
    assert user_tags(run) == {"kind": "restart-test"}
    runs = job_runs(mlflow_client, job)
    assert len(parent_runs(runs)) == 1
    assert len(child_runs(runs)) == 1

    assert second.stop() == 0, second.log_tail()
    # Still exactly once after the second receiver's own drain.
    (run,) = child_runs(job_runs(mlflow_client, job))
    assert all_points(mlflow_client, run) == _expected(points)


@pytest.mark.timeout(120)
def test_a_second_receiver_on_the_same_data_dir_is_refused(
    receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    second = subprocess.run(
        [str(TRACKBRIDGE_EXE), "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(receiver.data_dir), "--tracking-uri", receiver.tracking_uri],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 2, second.stderr
    assert f"data directory {receiver.data_dir} is in use by another receiver" in second.stderr
    assert f"pid {receiver.proc.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    # The first one goes on as before.
    writer = make_writer(receiver.address, "still-served", job)
    points = _log_run(writer, 20)
    assert writer.close(timeout_s=30) == 0
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert all_points(mlflow_client, run) == _expected(points)
