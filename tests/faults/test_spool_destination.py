"""Spools belong to the receiver and job they were written for: another job's writer, or a
writer for another receiver, leaves them alone; ``trackbridge sync`` sends each where it was
written for, and elsewhere only when told so explicitly. Two receivers on two MLflow stores."""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunStart
from tests.support.bystander import start_bystander
from tests.support.faults import (
    TcpProxy,
    expected_points,
    metric_points,
    read_result,
    spooled_events,
)
from tests.support.mlflow_reads import child_runs, job_runs
from tests.support.procs import (
    ReceiverProcess,
    launch_mlflow_server,
    stop_mlflow_server,
    wait_until,
)
from tests.support.spools import run_of, spool_of, spool_then_kill, sync

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000


def _finish(proc: subprocess.Popen[bytes], out: Path) -> None:
    assert proc.wait(timeout=120) == 0, out.with_suffix(".log").read_text()[-3000:]
    assert read_result(out)["undelivered"] == 0


def _points(client: Any, job: str, client_id: str, count: int) -> list[Any]:
    run = wait_until(lambda: run_of(client, job, client_id), 120, what=f"{client_id} in {job}")
    wait_until(lambda: len(client.get_metric_history(run.info.run_id, "x")) >= count, 120,
               interval_s=0.5, what=f"{count} points")  # fmt: skip
    return metric_points(client, run.info.run_id, "x")


@pytest.mark.timeout(360)
def test_a_spool_goes_only_where_it_was_written_for(
    stream_client: Any,
    tmp_path: Path,
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    from mlflow.tracking import MlflowClient

    mlflow_y = launch_mlflow_server(tmp_path / "mlflow-y")
    try:
        x = start_receiver()
        y = start_receiver(tracking_uri=mlflow_y.uri)
        bystander = start_bystander(x.address, tmp_path)
        client_y = MlflowClient(mlflow_y.uri)
        spool = tmp_path / "spool"
        job_a, job_b = f"{job}-a", f"{job}-b"
        # Job A, for receiver X (through the proxy), dies with 1000 points in its spool.
        spool_then_kill(stream_client, proxy, "site", job_a, spool, tmp_path / "a.json",
                        points=1000)  # fmt: skip
        left = spool_of(spool, "site")
        proxy.set_upstream(x.port)
        proxy.restore()
        # The same client id in job B for X, and in job A for Y: neither takes that spool.
        b = stream_client(proxy.address, "site", job_b, spool, tmp_path / "b.json",
                          points=200, rate=0)  # fmt: skip
        ya = stream_client(y.address, "site", job_a, spool, tmp_path / "ya.json",
                           points=300, rate=0)  # fmt: skip
        _finish(b, tmp_path / "b.json")
        _finish(ya, tmp_path / "ya.json")
        assert left.exists() and spooled_events(spool) == 1001, "the spool was left alone"

        # A sync told of Y only does not send it there.
        refused = sync(str(spool), "--receiver", y.address, "--timeout", "30")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert f"not sent to {y.address}: add --to-another-receiver" in refused.stdout
        assert spooled_events(spool) == 1001
        # A bare sync sends it to the receiver it was written for.
        done = sync(str(spool), "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "delivered 1001 events" in done.stdout
        assert not left.exists()

        # Exactly what each wrote, where each wrote it.
        assert _points(mlflow_client, job_a, "site", 1000) == expected_points(1000, BASE_TS)
        assert _points(mlflow_client, job_b, "site", 200) == expected_points(200, BASE_TS)
        assert _points(client_y, job_a, "site", 300) == expected_points(300, BASE_TS)
        assert len(child_runs(job_runs(mlflow_client, job_a))) == 1
        assert len(child_runs(job_runs(client_y, job_a))) == 1
        assert client_y.get_experiment_by_name(job_b) is None
        bystander.assert_delivered(mlflow_client)
        assert y.stop() == 0, y.log_tail()
    finally:
        stop_mlflow_server(mlflow_y)


def _old_spool(directory: Path, job: str, points: int) -> Path:
    """A spool as trackbridge wrote it before spools recorded their destination."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"site-old-{uuid.uuid4().hex[:12]}.spool.db"
    run_key = uuid.uuid4().hex
    points_logged = (Metric("x", float(i), i, BASE_TS + i) for i in range(points))
    events = (RunStart(start_time_ms=BASE_TS), *points_logged)
    payload = batch_to_proto(EventBatch("site-old", job, run_key, 1, events)).SerializeToString()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, run_key TEXT NOT NULL, first_seq INTEGER"
        " NOT NULL, last_seq INTEGER NOT NULL, payload BLOB NOT NULL)"
    )
    conn.execute(
        "INSERT INTO batches (run_key, first_seq, last_seq, payload) VALUES (?, 1, ?, ?)",
        (run_key, points + 1, payload),
    )
    conn.commit()
    conn.close()
    Path(f"{path}.lock").touch()
    return path


@pytest.mark.timeout(240)
def test_an_old_spool_without_a_destination_needs_the_explicit_flag(
    stream_client: Any, tmp_path: Path, receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    spool = tmp_path / "spool"
    old = _old_spool(spool, job, 500)
    # A writer of that client, job and receiver cannot know the spool was its: it leaves it.
    again = stream_client(receiver.address, "site-old", job, spool, tmp_path / "n.json",
                          points=100, rate=0)  # fmt: skip
    _finish(again, tmp_path / "n.json")
    assert old.exists() and spooled_events(spool) == 501
    bare = sync(str(spool), "--timeout", "30")
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert "records no receiver" in bare.stdout
    assert "--receiver HOST:PORT --to-another-receiver" in bare.stdout
    without = sync(str(spool), "--to-another-receiver")
    assert without.returncode == 2 and "needs --receiver" in without.stderr
    told = sync(str(spool), "--receiver", receiver.address, "--to-another-receiver",
                "--timeout", "60")  # fmt: skip
    assert told.returncode == 0, told.stdout + told.stderr
    assert "delivered 501 events" in told.stdout
    assert "no ledger" in told.stdout, "what cannot be known is said"
    assert not old.exists()

    def both_runs() -> list[list[Any]]:
        runs = child_runs(job_runs(mlflow_client, job))
        found = sorted((metric_points(mlflow_client, r.info.run_id, "x") for r in runs), key=len)
        return found if [len(f) for f in found] == [100, 500] else []

    found = wait_until(both_runs, 120, interval_s=1, what="the new run's 100 points and the 500")
    assert found == [expected_points(100, BASE_TS), expected_points(500, BASE_TS)]
