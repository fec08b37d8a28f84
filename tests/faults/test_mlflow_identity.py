"""A receiver pointed at another MLflow store, or at its own store wiped and made anew, notices
(at start, and when MLflow does not know a run it does), says so once, and creates there the
runs it still has events for; a bystander that starts against the new store gets every point."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.support.bystander import start_bystander
from tests.support.isolation import expected, log_points, status, wait_points, writer_for
from tests.support.mlflow_reads import child_runs, job_runs, metric_points, parent_runs
from tests.support.procs import (
    MlflowServer,
    ReceiverProcess,
    launch_mlflow_server,
    stop_mlflow_server,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[list[MlflowServer]]:
    """MLflow servers a test starts and stops itself; all stopped at teardown."""
    servers: list[MlflowServer] = []
    yield servers
    for server in servers:
        stop_mlflow_server(server)


def _only_child(client: Any, job: str) -> Any:
    def ended() -> Any:
        runs = job_runs(client, job)
        children = child_runs(runs)
        if len(children) == 1 and children[0].info.status == "FINISHED":
            return runs
        return None

    runs = wait_until(ended, 120, interval_s=0.5, what=f"the run of job {job} ended in MLflow")
    assert len(parent_runs(runs)) == 1
    (child,) = child_runs(runs)
    return child


@pytest.mark.timeout(420)
def test_a_wiped_store_gets_the_runs_the_receiver_still_has_events_for(
    start_receiver: Callable[..., ReceiverProcess],
    own_mlflow: list[MlflowServer],
    job: str,
    tmp_path: Path,
) -> None:
    first = launch_mlflow_server(tmp_path / "mlflow-a")
    own_mlflow.append(first)
    receiver = start_receiver(tracking_uri=first.uri)
    writer = writer_for(receiver, "site-1", job, tmp_path)
    writer.start_run("site-1", tags={"phase": "one"})
    writer.log_param("lr", "0.1")
    log_points(writer, 0, 100)
    run_id = writer.run_id(timeout_s=60)
    wait_points(MlflowClient(first.uri), run_id, 100)

    stop_mlflow_server(first)  # the store is wiped and made anew at the same address
    log_points(writer, 100, 200)
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=60), "acknowledged while MLflow is away"
    assert writer.close(timeout_s=10) == 0
    shutil.rmtree(tmp_path / "mlflow-a")
    fresh = launch_mlflow_server(tmp_path / "mlflow-a-again", port=first.port)
    own_mlflow.append(fresh)
    client = MlflowClient(fresh.uri)
    bystander = start_bystander(receiver.address, tmp_path)
    try:
        child = _only_child(client, job)
        bystander.assert_delivered(client)
    finally:
        bystander.stop()
    # Events written to the old store are gone with it; what was still queued is all here.
    assert metric_points(client, child.info.run_id, "x") == expected(100, 200)
    assert child.info.run_id != run_id
    assert child.info.run_name == "site-1"
    assert child.data.tags["phase"] == "one"  # made again from the start the receiver kept
    assert child.data.params == {}
    log = receiver.log_path.read_text()
    assert log.count("MLflow is another store than before") == 1, receiver.log_tail()
    report = status(receiver.data_dir)
    assert report["quarantined_runs"] == [] and report["dead_letters"] == []
    assert report["mlflow_store"]["previous"]["events_written"] >= 100


@pytest.mark.timeout(420)
def test_a_restart_on_another_tracking_uri_moves_what_is_queued_there(
    start_receiver: Callable[..., ReceiverProcess],
    own_mlflow: list[MlflowServer],
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    old = launch_mlflow_server(tmp_path / "mlflow-old")
    own_mlflow.append(old)
    data_dir = tmp_path / "receiver-data"
    first = start_receiver(tracking_uri=old.uri, data_dir=data_dir, shutdown_timeout_s=2)
    writer = writer_for(first, "site-1", job, tmp_path)
    writer.start_run("site-1")
    log_points(writer, 0, 100)
    run_id = writer.run_id(timeout_s=60)
    wait_points(MlflowClient(old.uri), run_id, 100)
    stop_mlflow_server(old)
    log_points(writer, 100, 250)
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=60)
    assert writer.close(timeout_s=10) == 0
    assert first.stop() == 1, first.log_tail()  # queued, MLflow away: flushed by the next one

    second = start_receiver(tracking_uri=mlflow_server.uri, data_dir=data_dir)
    bystander = start_bystander(second.address, tmp_path)
    try:
        child = _only_child(mlflow_client, job)
        bystander.assert_delivered(mlflow_client)
    finally:
        bystander.stop()
    assert metric_points(mlflow_client, child.info.run_id, "x") == expected(100, 250)
    assert child.info.run_name == "site-1"
    assert "MLflow is another store than before" in second.log_path.read_text()
    store = status(data_dir)["mlflow_store"]
    assert store["tracking_uri"] == mlflow_server.uri
    assert store["previous"]["tracking_uri"] == old.uri
