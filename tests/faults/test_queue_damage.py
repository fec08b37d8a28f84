"""A receiver's queue file damaged while it is stopped (issue 25): a byte inside one stored
payload flipped on disk, where SQLite notices nothing. Restarted on it, the receiver reports
the damaged batch lost (``trackbridge status``, ``/metrics``, one log line naming the run),
never writes it, and everything else reaches a real ``mlflow server``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunEnd, RunStart, RunStatus
from client_sdk._transport import Transport
from tests.support.compat import receiver_idle
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TS = 1_700_000_000_000
MARK = "damage-here"
UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: the first life keeps every batch queued


def _payload(job: str, run_key: str, first: int, events: list[object]) -> bytes:
    batch = EventBatch("site", job, run_key, first, tuple(events))  # type: ignore[arg-type]
    return batch_to_proto(batch).SerializeToString()


def _points(key: str, first: int, count: int) -> list[object]:
    return [Metric(key, float(first + i), first + i, TS + first + i) for i in range(count)]


def _http_port(tmp_path: Path, receiver: ReceiverProcess) -> int:
    for ready in tmp_path.glob("ready-*.json"):
        info = json.loads(ready.read_text())
        if info.get("port") == receiver.port or info.get("address") == receiver.address:
            return int(info["http_port"])
    raise AssertionError("no ready file names the receiver")


@pytest.mark.timeout(300)
def test_a_batch_damaged_on_disk_is_reported_lost_and_the_rest_reaches_mlflow(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = start_receiver(tracking_uri=UNREACHABLE, data_dir=data_dir)
    transport = Transport(first.address, timeout_s=30.0)
    try:
        sends = [
            ("hit", 1, [RunStart(run_name="hit", start_time_ms=TS), *_points("x", 2, 4)]),
            ("hit", 6, _points(MARK, 6, 5)),
            ("hit", 11, [*_points("x", 11, 4), RunEnd(RunStatus.FINISHED, TS + 99)]),
            ("other", 1, [RunStart(run_name="other", start_time_ms=TS), *_points("y", 2, 6)]),
            ("other", 8, [RunEnd(RunStatus.FINISHED, TS + 99)]),
        ]
        for run_key, seq, events in sends:
            ack = transport.publish(_payload(job, run_key, seq, events))
            assert ack.acked_seq == seq + len(events) - 1
    finally:
        transport.close()
    first.proc.kill()  # kill -9: everything acknowledged is in the queue, nothing in MLflow
    first.returncode = first.proc.wait(timeout=30)

    queue = data_dir / "queue.db"
    conn = sqlite3.connect(queue)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows in the main file
    conn.close()
    data = bytearray(queue.read_bytes())
    at = data.find(MARK.encode())
    assert at >= 0
    data[at + 3] ^= 0x20  # "damAge-here": still a valid payload, not the one stored
    queue.write_bytes(bytes(data))

    second = start_receiver(data_dir=data_dir, flush_interval_s=0.2)
    wait_until(lambda: receiver_idle(data_dir), 120, what="the receiver to write the rest")

    experiment = mlflow_client.get_experiment_by_name(job)
    runs = mlflow_client.search_runs(
        [experiment.experiment_id], "tags.`trackbridge.role` = 'client'"
    )
    by_key = {r.data.tags["trackbridge.run_key"]: r for r in runs}
    assert sorted(by_key) == ["hit", "other"]
    hit, other = by_key["hit"], by_key["other"]
    assert set(hit.data.metrics) == {"x"}  # nothing of the damaged batch
    history = mlflow_client.get_metric_history(hit.info.run_id, "x")
    assert sorted(int(m.value) for m in history) == [2, 3, 4, 5, 11, 12, 13, 14]
    history = mlflow_client.get_metric_history(other.info.run_id, "y")
    assert sorted(int(m.value) for m in history) == [2, 3, 4, 5, 6, 7]
    assert hit.info.status == other.info.status == "FINISHED"

    status = subprocess.run(
        [str(TRACKBRIDGE_EXE), "status", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "5 lost to damage in this receiver's queue" in status.stdout, status.stdout
    assert "events 6-10 are lost: its stored batch failed its checksum" in status.stdout
    port = _http_port(tmp_path, second)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    assert "trackbridge_events_damaged_total 5.0" in metrics
    logged = [line for line in second.log_path.read_text().splitlines() if "checksum" in line]
    assert len(logged) == 1 and "run " in logged[0] and "hit" in logged[0], logged
