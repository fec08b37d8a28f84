"""Recovery after ``kill -9``: nothing lost, nothing doubled, and no point sent again that MLflow
already had, not even the log_batch call that was in flight when the receiver died. MLflow's
answer to that call is held back by a proxy (tests/support/mlflow_proxy.py), so the receiver
dies knowing nothing of a call MLflow has stored; the proxy's record of every call MLflow
accepted then shows whether any point went twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.flush.progress import TAGGED_METRICS
from tests.support.bystander import start_bystander
from tests.support.isolation import expected, log_points, status, wait_finished, writer_for
from tests.support.mlflow_proxy import MlflowProxy
from tests.support.procs import ReceiverProcess

pytestmark = pytest.mark.slow

RUNS = 4
POINTS = 3000


@pytest.mark.timeout(420)
@pytest.mark.parametrize("queue_backend", ["sqlite", "nats"], indirect=True)
def test_after_kill_9_nothing_is_lost_doubled_or_sent_again(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "receiver-data"
    first = start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir)
    # A full call well into the flush (smaller calls are cheap to write again, and are).
    held = mlflow_proxy.hold_answer(after_calls=RUNS + 2, min_points=TAGGED_METRICS)
    writers = [writer_for(first, f"site-{n}", job, tmp_path) for n in range(RUNS)]
    keys = []
    for writer in writers:
        keys.append(writer.start_run(writer.config.client_id).run_key)
        log_points(writer, 0, POINTS)
        writer.end_run("FINISHED")
    for writer in writers:
        assert writer.flush(timeout_s=120), "every event acknowledged (durable in the queue)"
        assert writer.close(timeout_s=10) == 0
    assert held.arrived.wait(120), "no log_batch call reached MLflow"
    first.proc.kill()  # kill -9 while MLflow's answer is on its way
    first.proc.wait(timeout=30)
    first.returncode = first.proc.returncode
    held.release()
    assert held.call is not None and held.call.status == 200 and held.call.points

    second = start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir)
    bystander = start_bystander(second.address, tmp_path)
    try:
        for key in keys:
            run = wait_finished(mlflow_client, key, POINTS)
            got = sorted(
                ("x", m.value, m.step, m.timestamp)
                for m in mlflow_client.get_metric_history(run.info.run_id, "x")
            )
            assert got == expected(0, POINTS)
        bystander.assert_delivered(mlflow_client)
    finally:
        bystander.stop()
    # MLflow accepted each point once: nothing was sent again, the held call included.
    accepted = Counter(mlflow_proxy.accepted_points())
    twice = [point for point, times in accepted.items() if times > 1]
    assert twice == [], f"{len(twice)} points sent again, e.g. {twice[:3]}"
    log = second.log_path.read_text()
    assert "is in MLflow already; not sent again" in log, second.log_tail()
    report = status(data_dir)
    assert report["backlog_events"] == 0 and report["dead_letters"] == []
    assert all(r["in_mlflow_events"] == r["acked_seq"] for r in report["runs"] if r["job"] == job)
