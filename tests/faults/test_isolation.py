"""One run MLflow refuses is nobody else's trouble: it is quarantined with its reason, costs no
MLflow call while it waits, and flows again after ``trackbridge dead-letters replay``; a
bystander in another job gets every point meanwhile. A transient fault (a lost answer) never
quarantines a run. Real receivers and a real MLflow server,
seen through a recording proxy (tests/support/mlflow_proxy.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, Metric, RunEnd, RunStart, RunStatus
from client_sdk._transport import Transport
from tests.support.bystander import start_bystander
from tests.support.isolation import (
    T0,
    expected,
    log_points,
    quarantined,
    runs_with_key,
    status,
    trackbridge,
    wait_finished,
    wait_points,
    writer_for,
)
from tests.support.mlflow_proxy import MlflowProxy
from tests.support.mlflow_reads import metric_points
from tests.support.procs import ReceiverProcess, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def proxied(
    start_receiver: Callable[..., ReceiverProcess], mlflow_proxy: MlflowProxy
) -> ReceiverProcess:
    """A receiver that reaches the session's MLflow server through the proxy."""
    return start_receiver(tracking_uri=mlflow_proxy.uri)


@pytest.mark.timeout(300)
def test_a_run_in_an_experiment_mlflow_refuses_is_quarantined_alone_then_replayed(
    proxied: ReceiverProcess,
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    poisoned = f"{job}-poisoned"
    experiment_id = mlflow_client.create_experiment(poisoned)
    mlflow_client.delete_experiment(experiment_id)  # behind the bridge's back
    writer = writer_for(proxied, "victim", job, tmp_path)
    run = writer.start_run("victim", experiment=poisoned)
    log_points(writer, 0, 200)
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=60), "the receiver acknowledges what it cannot write yet"
    bystander = start_bystander(proxied.address, tmp_path)
    try:
        (held,) = wait_until(
            lambda: quarantined(proxied.data_dir), 90, what="the victim's run quarantined"
        )
        asked = mlflow_proxy.requests_naming(poisoned)
        assert held["run_key"] == f"victim/{run.run_key}"  # its owned key, as status shows
        assert f"mlflow experiments restore --experiment-id {experiment_id}" in held["reason"]
        assert f"trackbridge dead-letters replay --run victim/{run.run_key}" in held["reason"]
        assert held["events"] == 202  # its start, 200 points, its end: kept, none lost
        bystander.assert_delivered(mlflow_client)
        # While it waits it costs MLflow nothing, and nothing about it is written again.
        assert mlflow_proxy.requests_naming(poisoned) == asked
        (again,) = quarantined(proxied.data_dir)
        assert (again["events"], again["reason"]) == (202, held["reason"])
        assert status(proxied.data_dir)["dead_letters"] == []
        assert proxied.log_path.read_text().count(f"run victim/{run.run_key} (client") == 1
    finally:
        bystander.stop()
    assert runs_with_key(mlflow_client, run.run_key) == []

    mlflow_client.restore_experiment(experiment_id)
    replayed = trackbridge("dead-letters", "replay", "--run", f"victim/{run.run_key}",
                           "--data-dir", str(proxied.data_dir))  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert f"released run victim/{run.run_key}" in replayed.stdout
    got = wait_finished(mlflow_client, run.run_key, 200)
    assert got.info.experiment_id == experiment_id
    assert got.info.run_name == "victim"
    assert metric_points(mlflow_client, got.info.run_id, "x") == expected(0, 200)
    after = status(proxied.data_dir)
    assert after["quarantined_runs"] == [] and after["dead_letters"] == []
    assert writer.close(timeout_s=10) == 0


@pytest.mark.timeout(360)
def test_a_deleted_experiment_quarantines_its_runs_and_a_replay_while_stopped_resumes_them(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "receiver-data"
    first = start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir)
    writer = writer_for(first, "victim", job, tmp_path)
    run = writer.start_run("victim")
    log_points(writer, 0, 300)
    run_id = writer.run_id(timeout_s=60)
    wait_points(mlflow_client, run_id, 300)
    experiment_id = mlflow_client.get_run(run_id).info.experiment_id
    mlflow_client.delete_experiment(experiment_id)  # its runs are deleted with it
    log_points(writer, 300, 600)
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=60)
    assert writer.close(timeout_s=10) == 0
    bystander = start_bystander(first.address, tmp_path)
    try:
        (held,) = wait_until(lambda: quarantined(data_dir), 90, what="the victim quarantined")
        asked = mlflow_proxy.requests_naming(run_id)
        assert f"MLflow experiment {job!r} (id {experiment_id}) was deleted" in held["reason"]
        assert held["events"] == 301  # 300 points and the end
        bystander.assert_delivered(mlflow_client)
        assert mlflow_proxy.requests_naming(run_id) == asked
    finally:
        bystander.stop()
    assert first.stop() == 0, first.log_tail()  # what a quarantined run holds is not a backlog

    mlflow_client.restore_experiment(experiment_id)  # and its runs with it
    replayed = trackbridge("dead-letters", "replay", "--reason", "was deleted",
                           "--data-dir", str(data_dir))  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert f"released run victim/{run.run_key}" in replayed.stdout
    assert trackbridge("dead-letters", "list", "--data-dir", str(data_dir)).stdout.startswith(
        "quarantined runs: 0"
    )
    start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir)
    got = wait_finished(mlflow_client, run.run_key, 600)
    assert got.info.run_id == run_id
    assert metric_points(mlflow_client, run_id, "x") == expected(0, 600)


@pytest.mark.timeout(300)
def test_a_run_deleted_mid_stream_is_held_once_and_flows_again_after_restore_and_replay(
    proxied: ReceiverProcess,
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    writer = writer_for(proxied, "victim", job, tmp_path)
    run = writer.start_run("victim")
    log_points(writer, 0, 300)
    run_id = writer.run_id(timeout_s=60)
    wait_points(mlflow_client, run_id, 300)
    mlflow_client.delete_run(run_id)  # in the MLflow UI, while its client logs
    bystander = start_bystander(proxied.address, tmp_path)
    try:
        log_points(writer, 300, 600)
        writer.set_tag("stage", "after the delete")
        (held,) = wait_until(lambda: quarantined(proxied.data_dir), 90, what="the run held")
        assert f"MLflow run {run_id} was deleted" in held["reason"]
        assert f"mlflow runs restore --run-id {run_id}" in held["reason"]
        writer.end_run("FINISHED")
        assert writer.flush(timeout_s=60)
        wait_until(lambda: quarantined(proxied.data_dir)[0]["events"] == 302, 60,
                   what="later batches held as they arrive")  # fmt: skip
        asked = mlflow_proxy.requests_naming(run_id)
        bystander.assert_delivered(mlflow_client)
        assert mlflow_proxy.requests_naming(run_id) == asked  # no MLflow call while it waits
        assert status(proxied.data_dir)["dead_letters"] == []  # held, never rewritten
    finally:
        bystander.stop()
    listed = trackbridge("dead-letters", "list", "--data-dir", str(proxied.data_dir))
    assert f"run victim/{run.run_key} (job {job}, client victim): 302 events" in listed.stdout

    mlflow_client.restore_run(run_id)
    replayed = trackbridge("dead-letters", "replay", "--run", f"victim/{run.run_key}",
                           "--data-dir", str(proxied.data_dir))  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    got = wait_finished(mlflow_client, run.run_key, 600)
    assert got.info.run_id == run_id
    assert metric_points(mlflow_client, run_id, "x") == expected(0, 600)
    assert got.data.tags["stage"] == "after the delete"
    assert writer.close(timeout_s=10) == 0


@pytest.mark.timeout(300)
def test_one_runs_transient_trouble_holds_no_one_else_back(
    proxied: ReceiverProcess,
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    writer = writer_for(proxied, "troubled", job, tmp_path)
    run = writer.start_run("troubled")
    log_points(writer, 0, 10)
    run_id = writer.run_id(timeout_s=60)
    wait_points(mlflow_client, run_id, 10)
    mlflow_proxy.fail_runs(lambda named: named == run_id)  # MLflow answers 503 for this run only
    log_points(writer, 10, 500)
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=60)
    bystander = start_bystander(proxied.address, tmp_path)
    try:
        bystander.assert_delivered(mlflow_client)  # while the troubled run still fails
    finally:
        bystander.stop()
    assert len(mlflow_client.get_metric_history(run_id, "x")) == 10
    assert quarantined(proxied.data_dir) == []  # transient: retried, not quarantined
    mlflow_proxy.fail_runs(None)
    got = wait_finished(mlflow_client, run.run_key, 500)
    assert metric_points(mlflow_client, got.info.run_id, "x") == expected(0, 500)
    assert writer.close(timeout_s=10) == 0


@pytest.mark.timeout(300)
def test_a_lost_answer_to_the_last_step_of_a_runs_creation_is_not_taken_for_a_missing_run(
    proxied: ReceiverProcess,
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    """MLflow deletes a new run's provisional tag (its creation's last step,
    server/flush/run_creation.py), then the connection drops before the answer: the retry
    finds the tag gone (MLflow: RESOURCE_DOES_NOT_EXIST). The run is kept and gets every
    point. Before the fix it was quarantined as deleted for good with none of its points
    (what the MLflow-down test under load met when its cut fell on that call)."""
    seen: set[str] = set()

    def first_keep_of_each_run(method: str, path: str, body: bytes) -> bool:
        if not path.endswith("/runs/delete-tag") or b"trackbridge.provisional" not in body:
            return False
        run_id = str(json.loads(body)["run_id"])
        first = run_id not in seen
        seen.add(run_id)
        return first

    mlflow_proxy.lose_answers(first_keep_of_each_run)
    writer = writer_for(proxied, "site", job, tmp_path)
    run = writer.start_run("site")
    log_points(writer, 0, 200)
    writer.end_run("FINISHED")
    got = wait_finished(mlflow_client, run.run_key, 200)
    assert [json.loads(body)["run_id"] for _, _, body in mlflow_proxy.lost].count(
        got.info.run_id
    ) == 1  # its keep's answer was lost
    assert metric_points(mlflow_client, got.info.run_id, "x") == expected(0, 200)
    assert "trackbridge.provisional" not in got.data.tags
    assert quarantined(proxied.data_dir) == []
    assert writer.close(timeout_s=10) == 0


BIG_KEYS = 6000
"""Distinct metric keys in the big run's one batch: three turns' worth (server/flush/flusher.py
``SLICE_ENTRIES``), so it is still being written when the steady run's next turn comes."""


@pytest.mark.timeout(300)
def test_one_runs_huge_batch_holds_no_one_else_back_beyond_one_slice(
    proxied: ReceiverProcess,
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    """A legal batch of thousands of distinct keys is written in slices, between the turns of
    the other runs: a steady client's points logged while it is flushed reach MLflow before it
    is whole. The order is made certain, not raced: the proxy holds MLflow's answer to the big
    run's first call until the steady client's points are stored in the receiver's queue."""
    steady = writer_for(proxied, "steady", job, tmp_path)
    steady.start_run("steady")
    log_points(steady, 0, 10)
    steady_id = steady.run_id(timeout_s=60)
    wait_points(mlflow_client, steady_id, 10)
    held = mlflow_proxy.hold_answer(0, min_points=900)  # only the big run's calls are that big
    events: list[Event] = [RunStart(run_name="big", start_time_ms=T0)]
    events += [Metric(f"k{i:05d}", float(i), 0, T0) for i in range(BIG_KEYS)]
    events.append(RunEnd(RunStatus.FINISHED, T0 + 1))
    big = EventBatch("big", job, uuid.uuid4().hex, 1, tuple(events))
    transport = Transport(proxied.address, 30.0)
    try:  # one stored batch, so that one read of the queue holds all of it
        transport.publish(batch_to_proto(big).SerializeToString())
    finally:
        transport.close()
    assert held.arrived.wait(90), "the big run's first call never reached MLflow"
    assert held.call is not None
    big_id = held.call.run_id
    try:  # while the big run's turn waits for MLflow's answer, the steady client goes on
        log_points(steady, 10, 60)
        assert steady.flush(timeout_s=60)
    finally:
        held.release()
    wait_points(mlflow_client, steady_id, 60)
    wait_until(lambda: mlflow_client.get_run(big_id).info.status == "FINISHED", 180,
               interval_s=0.5, what="the big run written whole")  # fmt: skip

    calls = [c for c in mlflow_proxy.calls if c.status == 200]
    last_step = next(i for i, c in enumerate(calls) if c.run_id == steady_id
                     and any(p[2] == 59 for p in c.points))  # fmt: skip
    big_calls = [i for i, c in enumerate(calls) if c.run_id == big_id and c.points]
    big_before = sum(len(calls[i].points) for i in big_calls if i < last_step)
    assert big_before < BIG_KEYS, "the steady run waited until the big batch was written whole"
    assert last_step < big_calls[-1]
    assert metric_points(mlflow_client, steady_id, "x") == expected(0, 60)
    assert len(mlflow_client.get_run(big_id).data.metrics) == BIG_KEYS
    assert steady.close(timeout_s=10) == 0
