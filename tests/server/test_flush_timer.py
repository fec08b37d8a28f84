"""The receiver's flush timer fires on its own: one point, then silence, still reaches MLflow."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.mlflow_reads import children_by_client, metric_points
from tests.support.procs import wait_until

FLUSH_INTERVAL_S = 0.5
# The point needs the sender's linger (0.2 s), one flush tick and a few MLflow calls.
WAIT_S = 15.0


@pytest.mark.timeout(90)
def test_single_point_is_flushed_by_the_timer_without_more_traffic(
    start_receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    receiver = start_receiver(flush_interval_s=FLUSH_INTERVAL_S)
    writer = make_writer(receiver.address, "quiet-client", job)
    writer.start_run("quiet")
    writer.log_metric("loss", 0.25, step=3, timestamp=1_700_000_200_000)
    # No flush, no end_run, no close: the client stays quiet and the run stays open.

    def point_in_mlflow() -> list[tuple[str, float, int, int]]:
        run = children_by_client(mlflow_client, job).get("quiet-client")
        if run is None:
            return []
        return metric_points(mlflow_client, run.info.run_id, "loss")

    points = wait_until(point_in_mlflow, WAIT_S, interval_s=0.2, what="the single point")
    assert points == [("loss", 0.25, 3, 1_700_000_200_000)]
    run = children_by_client(mlflow_client, job)["quiet-client"]
    assert run.info.status == "RUNNING"
    assert run.info.run_name == "quiet"
    assert receiver.alive()
