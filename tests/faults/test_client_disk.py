"""A client whose spool disk is full: events wait in memory, what the buffer must drop is
counted, returned by close(), warned about once and recorded on the run by the receiver; the
rest, the run's end included, arrives. Real processes, a real 4 MB tmpfs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.bystander import start_bystander
from tests.support.disk import tmpfs
from tests.support.faults import (
    TcpProxy,
    expected_points,
    metric_points,
    queue_drained,
    read_result,
)
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
TAG_DROPPED = "trackbridge.dropped_events"


def _ended_run(client: Any, job: str, client_id: str) -> Any:
    runs = [
        r
        for r in child_runs(job_runs(client, job))
        if r.data.tags.get(TAG_CLIENT_ID) == client_id and r.info.status != "RUNNING"
    ]
    return runs[0] if runs else None


@pytest.mark.timeout(600)
def test_full_spool_disk_loses_nothing_uncounted(
    stream_client: Any,
    tmp_path: Path,
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    # The 4 MB spool and the 20,000-event buffer keep about 85,000 points; the rest is dropped.
    points = 150_000
    bystander = start_bystander(receiver.address, tmp_path)
    out = tmp_path / "full.json"
    go = tmp_path / "go"
    try:
        with tmpfs(tmp_path / "tiny", "4m") as spool:
            proxy.cut()  # the receiver is down: everything must go to the 4 MB spool
            proc = stream_client(
                proxy.address, "site-full", job, spool, out, points=points, rate=0,
                extra=("--max-buffer-events", "20000", "--wait-file", str(go),
                       "--close-timeout", "300"),
            )  # fmt: skip
            marker = Path(f"{out}.logged")
            wait_until(marker.exists, 120, what="the client to finish logging")
            dropped = json.loads(marker.read_text())["dropped"]
            # The spool filled (a few MB), then the 20,000-event buffer: the rest was dropped.
            assert 0 < len(dropped) < points - 20_000
            proxy.set_upstream(receiver.port)
            proxy.restore()
            go.touch()
            assert proc.wait(timeout=360) == 0, out.with_suffix(".log").read_text()[-3000:]
    except BaseException:
        bystander.stop()
        raise
    result = read_result(out)
    assert result["dropped"] == dropped, "no drop after the receiver came back"
    assert result["dropped_events"] == len(dropped)
    assert result["undelivered_events"] == 0
    assert result["undelivered"] == len(dropped), "close() counts delivered + dropped"
    log = out.with_suffix(".log").read_text()
    assert log.count("dropping events") == 1, log[-3000:]

    # Everything the receiver stored is in MLflow (a cheap poll: MLflow is the busy one).
    wait_until(lambda: queue_drained(receiver.data_dir), 240, interval_s=1, what="the flush")
    run = _ended_run(mlflow_client, job, "site-full")
    assert run is not None and run.info.status == "FINISHED"
    lost = set(dropped)
    want = [p for i, p in enumerate(expected_points(points, BASE_TS)) if i not in lost]
    assert metric_points(mlflow_client, run.info.run_id, "x") == want
    tags = mlflow_client.get_run(run.info.run_id).data.tags
    assert tags[TAG_DROPPED] == str(len(dropped))

    # The client reports its drops as they happen (one report or several): status lists them,
    # and they add up to what it dropped.
    status = subprocess.run(
        [str(TRACKBRIDGE_EXE), "status", "--data-dir", str(receiver.data_dir), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    reports = [g for g in json.loads(status.stdout)["gaps"] if g["kind"] == "dropped"]
    assert reports and all(g["reason"] == "buffer_full" for g in reports), status.stdout
    assert sum(g["count"] for g in reports) == len(dropped), status.stdout
    bystander.assert_delivered(mlflow_client)
