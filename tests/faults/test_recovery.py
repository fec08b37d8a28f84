"""Recovery after ``kill -9``: nothing lost, nothing doubled, and no call that carries the
intent tag sent again when MLflow already had it, not even the log_batch call in flight when
the receiver died. MLflow's answer to that call is held back by a proxy
(tests/support/mlflow_proxy.py), so the receiver dies knowing nothing of a call MLflow has
stored; the proxy's record of every call MLflow accepted then shows what went twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.flush.pool import DEFAULT_WORKERS
from server.flush.progress import TAGGED_METRICS
from server.flush.run_tags import TAG_FLUSHED
from tests.support.bystander import start_bystander
from tests.support.isolation import expected, log_points, status, wait_finished, writer_for
from tests.support.mlflow_proxy import LoggedBatch, MlflowProxy
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
    # The held call landed before the receiver died and was not sent again: MLflow accepted
    # each of its points once. The only points sent again are those of calls in flight on the
    # other flush writers when the receiver died (at most one each) that were too small to
    # carry the intent tag (server/flush/progress.py): writing them again costs MLflow little,
    # and it kept one copy of each point (the contents above are exact). They may go again
    # inside a larger call (a turn's slice is cut where the budget ends, a restart's is not).
    accepted = Counter(mlflow_proxy.accepted_points())
    assert {accepted[(held.call.run_id, p)] for p in held.call.points} == {1}
    first_call: dict[tuple[str, tuple[str, float, int, int]], LoggedBatch] = {}
    sent_again: dict[int, LoggedBatch] = {}  # the calls whose points went again, by id
    for call in (c for c in mlflow_proxy.calls if c.status == 200):
        for point in ((call.run_id, p) for p in call.points):
            earlier = first_call.setdefault(point, call)
            if earlier is not call:
                sent_again[id(earlier)] = earlier
    assert all(TAG_FLUSHED not in c.tags for c in sent_again.values()), [
        (len(c.points), c.tags) for c in sent_again.values()
    ]
    assert all(len(c.points) < TAGGED_METRICS for c in sent_again.values())
    assert len(sent_again) < DEFAULT_WORKERS, f"{len(sent_again)} calls' points sent again"
    log = second.log_path.read_text()
    assert "is in MLflow already; not sent again" in log, second.log_tail()
    report = status(data_dir)
    assert report["backlog_events"] == 0 and report["dead_letters"] == []
    assert all(r["in_mlflow_events"] == r["acked_seq"] for r in report["runs"] if r["job"] == job)
