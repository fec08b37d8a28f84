"""A receiver on ``sqlite:///`` writes straight into MLflow's database (the bulk writer); real
client processes log through it, and MLflow's own server reads back exactly their points, the
latest values by MLflow's rule, params and tags, and the runs (and the job's parent) ended.

The same on PostgreSQL, where the bulk writer sends metric rows with COPY: a real cluster, an
``mlflow server`` on it (which makes MLflow's tables, as a deployment's MLflow does), a
``trackbridge serve`` process on the same database, and MLflow's server reading back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bench.postgres import create_database, start_postgres, stop_postgres
from server.flush.run_tags import TAG_FLUSHED
from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    all_points,
    group_points,
    metric_points,
    user_tags,
    wait_for_children,
)
from tests.support.procs import (
    CLIENTS_DIR,
    MlflowServer,
    launch_mlflow_server,
    stop_mlflow_server,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENT_SCRIPT = CLIENTS_DIR / "log_sequence.py"
CLIENTS = ("site-a", "site-b")
BULK_POINTS = 2500  # past the tagged-call size: calls carry the trackbridge.flushed tag


def _plan(index: int, client_id: str) -> dict[str, Any]:
    sys.path.insert(0, str(CLIENTS_DIR))
    try:
        import log_sequence
    finally:
        sys.path.remove(str(CLIENTS_DIR))
    plan: dict[str, Any] = log_sequence.plan(index, client_id)
    return plan


def _latest(points: list[tuple[str, float, int, int]]) -> dict[str, float]:
    """MLflow's latest value per key: the greatest (step, timestamp, value), NaN as 0."""
    best: dict[str, tuple[int, int, float, float]] = {}
    for key, value, step, ts in points:
        stored = 0.0 if math.isnan(value) else value
        order = (step, ts, stored, value)
        if key not in best or order[:3] > best[key][:3]:
            best[key] = order
    return {key: order[3] for key, order in best.items()}


BULK_SERIES = [
    ("x", (math.nan, math.inf, -math.inf, 0.0, -0.0)[i % 5] if i % 100 < 5 else i / 7,
     i % 1200, 1_700_000_000_000 + i)
    for i in range(BULK_POINTS)
]  # fmt: skip


def _log_bulk(writer: Any) -> None:
    writer.start_run("bulk")
    writer.log_param("lr", "0.1")
    for key, value, step, ts in BULK_SERIES:
        writer.log_metric(key, value, step=step, timestamp=ts)
    writer.set_tag("phase", "done")
    writer.end_run()
    assert writer.close(timeout_s=60) == 0


def _client(address: str, client_id: str, job: str, index: int, cwd: Path) -> Any:
    cmd = [sys.executable, str(CLIENT_SCRIPT), "--receiver", address, "--client-id", client_id,
           "--job", job, "--index", str(index), "--status", "FINISHED"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)


def test_clients_land_exactly_through_the_bulk_writer(
    start_receiver: Any, mlflow_server: MlflowServer, mlflow_client: Any, make_writer: Any,
    job: str, tmp_path: Path,
) -> None:  # fmt: skip
    database = mlflow_server.log_path.parent / "mlflow.db"  # the server's own store
    receiver = start_receiver(f"sqlite:///{database}")
    wait_until(lambda: "bulk writer on" in receiver.log_tail(), 30, what="the bulk writer")

    procs = {
        client_id: _client(receiver.address, client_id, job, index, tmp_path)
        for index, client_id in enumerate(CLIENTS)
    }
    try:
        _log_bulk(make_writer(receiver.address, "bulk", job))
    finally:
        outputs = {client_id: proc.communicate(timeout=120) for client_id, proc in procs.items()}
    for client_id, proc in procs.items():
        out, err = outputs[client_id]
        assert proc.returncode == 0, f"{client_id}: {out.decode()}\n{err.decode()}"
        assert json.loads(out.decode().strip().splitlines()[-1])["undelivered"] == 0

    runs = wait_for_children(mlflow_client, job, len(CLIENTS) + 1, timeout_s=60)
    by_client = {run.data.tags[TAG_CLIENT_ID]: run for run in runs}
    for index, client_id in enumerate(CLIENTS):
        run, expected = by_client[client_id], _plan(index, client_id)
        assert all_points(mlflow_client, run) == group_points(expected["points"]), client_id
        assert run.data.metrics == _latest(expected["points"]), client_id
        assert run.data.params == expected["params"], client_id
        assert user_tags(run) == expected["tags"], client_id

    _check_bulk_run(mlflow_client, by_client["bulk"].info.run_id)


def _check_bulk_run(mlflow_client: Any, run_id: str) -> None:
    """MLflow's server reads back exactly what ``_log_bulk`` logged, the run ended, and the
    job's parent run ended with it (its last running child)."""

    def bulk_finished() -> Any:
        run = mlflow_client.get_run(run_id)
        return run if run.info.status == "FINISHED" else None

    wait_until(bulk_finished, 60, what="the bulk run to be FINISHED")
    run = bulk_finished()
    got = sorted(metric_points(mlflow_client, run.info.run_id, "x"), key=lambda p: (p[3], p[2]))
    want = sorted(BULK_SERIES, key=lambda p: (p[3], p[2]))
    assert len(got) == len(want)
    for (_, value, step, ts), (_, expected, want_step, want_ts) in zip(got, want, strict=True):
        assert (step, ts) == (want_step, want_ts)
        if math.isnan(expected):
            assert math.isnan(value)
        else:
            assert value == max(min(expected, sys.float_info.max), -sys.float_info.max)
    latest = _latest([(k, v, s, t) for k, v, s, t in want])["x"]
    assert run.data.metrics["x"] == latest
    assert run.data.params == {"lr": "0.1"}
    assert run.data.tags["phase"] == "done"
    assert run.data.tags[TAG_FLUSHED].split()[0].isdigit()  # the last tagged call's mark
    assert run.info.end_time >= run.info.start_time  # ended by the bulk writer's UPDATE
    # The job's parent run ends with its last running child (found by one query).
    parent_id = run.data.tags["mlflow.parentRunId"]
    wait_until(
        lambda: mlflow_client.get_run(parent_id).info.status == "FINISHED",
        60,
        what="the job's parent run to end with its last child",
    )


def test_a_postgresql_mlflow_reads_exactly_what_the_bulk_writer_copied(
    start_receiver: Any, make_writer: Any, job: str, tmp_path: Path
) -> None:
    pg = start_postgres()  # .ci/test installs PostgreSQL: missing, it fails, as test_topology does
    try:
        create_database(pg, "mlflow")
        server = launch_mlflow_server(tmp_path / "mlflow-pg", backend_uri=pg.uri("mlflow"))
        try:
            receiver = start_receiver(pg.uri("mlflow"))
            wait_until(
                lambda: (
                    "bulk writer on: metrics, params and tags go straight into MLflow's"
                    " postgresql database" in receiver.log_tail()
                ),
                30,
                what="the bulk writer on PostgreSQL",
            )
            writer = make_writer(receiver.address, "bulk", job)
            _log_bulk(writer)
            (run,) = wait_for_children(MlflowClient(server.uri), job, 1, timeout_s=60)
            _check_bulk_run(MlflowClient(server.uri), run.info.run_id)
            assert receiver.stop() == 0, receiver.log_tail()  # drained, before PostgreSQL stops
        finally:
            stop_mlflow_server(server)
    finally:
        stop_postgres(pg)
