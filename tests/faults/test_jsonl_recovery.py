"""``kill -9`` of a receiver writing JSON-lines files: after a restart each file holds every
event of its run exactly once, in order. With MLflow beside the files, the receiver dies while
MLflow's answer to a log_batch call is held back by a proxy (tests/support/mlflow_proxy.py):
the run's events are in its file, the queue has not recorded it, and the restarted receiver
hands them to the file again."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from server.flush.jsonl import safe_name
from server.flush.progress import TAGGED_METRICS
from tests.support.disk import tmpfs
from tests.support.isolation import (
    expected,
    log_points,
    status,
    trackbridge,
    wait_finished,
    writer_for,
)
from tests.support.mlflow_proxy import MlflowProxy
from tests.support.procs import ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

RUNS = 2
POINTS = 3000


def _path(files: Path, job: str, client: str, run_key: str) -> Path:
    return files / safe_name(job) / safe_name(client) / f"{safe_name(run_key)}.jsonl"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_exactly_once(path: Path, points: int) -> None:
    lines = _lines(path)
    assert [line["seq"] for line in lines] == list(range(points + 3)), "each event once, in order"
    assert [line["kind"] for line in lines[:2]] == ["run", "run_start"]
    got = [("x", m["value"], m["step"], m["timestamp_ms"]) for m in lines[2:-1]]
    assert got == expected(0, points)
    assert lines[-1]["kind"] == "run_end" and lines[-1]["status"] == "FINISHED"


def _kill_9(receiver: ReceiverProcess) -> None:
    receiver.proc.kill()
    receiver.proc.wait(timeout=30)
    receiver.returncode = receiver.proc.returncode


@pytest.mark.timeout(420)
def test_kill_9_between_the_file_and_the_queue_writes_nothing_twice(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_proxy: MlflowProxy,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "receiver-data"
    files = tmp_path / "files"
    sinks = ("--sink", "mlflow", "--sink", f"jsonl:{files}")
    first = start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir, extra_args=sinks)
    held = mlflow_proxy.hold_answer(after_calls=RUNS + 1, min_points=TAGGED_METRICS)
    writers = [writer_for(first, f"site-{n}", job, tmp_path) for n in range(RUNS)]
    paths, keys = [], []
    for n, writer in enumerate(writers):
        key = writer.start_run(f"site-{n}").run_key
        keys.append(key)
        paths.append(_path(files, job, f"site-{n}", key))
        log_points(writer, 0, POINTS)
        writer.end_run("FINISHED")
    for writer in writers:
        assert writer.flush(timeout_s=120), "every event acknowledged (durable in the queue)"
        assert writer.close(timeout_s=10) == 0
    assert held.arrived.wait(120), "no log_batch call reached MLflow"
    # The window: a run's file holds events the queue holds too (not recorded as written).
    recorded = {
        r["client_id"]: r["acked_seq"] - r["backlog_events"] for r in status(data_dir)["runs"]
    }
    in_file = {p.parent.name: max((x["seq"] for x in _lines(p)), default=0) for p in paths}
    assert any(in_file[c] > recorded[c] for c in in_file), (in_file, recorded)
    _kill_9(first)
    held.release()

    second = start_receiver(tracking_uri=mlflow_proxy.uri, data_dir=data_dir, extra_args=sinks)
    for key in keys:
        wait_finished(mlflow_client, key, POINTS)
    wait_until(lambda: status(data_dir)["backlog_events"] == 0, 60, what="the queue, empty")
    assert second.stop() == 0, second.log_tail()
    for path in paths:
        _assert_exactly_once(path, POINTS)


@pytest.mark.timeout(300)
def test_full_disk_then_kill_9_without_mlflow_loses_and_doubles_nothing(
    start_receiver: Callable[..., ReceiverProcess], job: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "receiver-data"
    with tmpfs(tmp_path / "files", "64k") as files:
        sinks = ("--sink", f"jsonl:{files}")
        first = start_receiver(data_dir=data_dir, extra_args=sinks)
        writer = writer_for(first, "site-9", job, tmp_path)
        key = writer.start_run("site-9").run_key
        path = _path(files, job, "site-9", key)
        log_points(writer, 0, POINTS)  # about 250 kB of lines: the disk fills up on the way
        writer.end_run("FINISHED")
        assert writer.flush(timeout_s=120), "every event acknowledged (durable in the queue)"
        assert writer.close(timeout_s=10) == 0

        def failing() -> bool:
            shown = trackbridge("status", "--data-dir", str(data_dir)).stdout
            return "files: FAILING" in shown and "No space left on device" in shown

        wait_until(failing, 60, what="status telling the files fail")
        assert status(data_dir)["backlog_events"] > 0, "kept in the queue for the files"
        assert 0 < len(_lines_written(path)) < POINTS
        _kill_9(first)
        remount = ["mount", "-o", "remount,size=4m", str(files)]
        assert subprocess.run(remount, capture_output=True, timeout=30, check=False).returncode == 0

        second = start_receiver(data_dir=data_dir, extra_args=sinks)
        wait_until(lambda: status(data_dir)["backlog_events"] == 0, 60, what="the queue, empty")
        assert second.stop() == 0, second.log_tail()
        _assert_exactly_once(path, POINTS)


def _lines_written(path: Path) -> list[bytes]:
    """The complete lines of a file that may end in a torn one."""
    return path.read_bytes().split(b"\n")[:-1]
