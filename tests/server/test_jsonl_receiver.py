"""``trackbridge serve --sink jsonl:DIR``: JSON-lines files of every event, without MLflow or
beside it, exactly once, real receivers, real files, a real ``mlflow server``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from server.flush.jsonl import safe_name
from tests.support.isolation import status, trackbridge
from tests.support.live import get, http_port
from tests.support.mlflow_reads import all_points, child_runs, job_runs, user_tags
from tests.support.procs import TRACKBRIDGE_EXE, free_port, launch_receiver, wait_until

T0 = 1_700_000_900_000
POINTS = 50


def _log(writer: Any, n: int = POINTS) -> str:
    """One run: a start with a tag, a param, ``n`` points of two metrics, a tag, the end."""
    run = writer.start_run("jsonl-run", tags={"kind": "files"})
    writer.log_params({"lr": 0.1})
    for i in range(n):
        writer.log_metric("loss", 1.0 / (i + 1), step=i, timestamp=T0 + i)
        writer.log_metric("acc", i / n, step=i, timestamp=T0 + i)
    writer.set_tag("phase", "done")
    writer.end_run("FINISHED")
    assert writer.flush(timeout_s=30), "the receiver acknowledged everything"
    return str(run.run_key)


def _expected_lines(job: str, client: str, run_key: str, n: int = POINTS) -> list[dict[str, Any]]:
    """The file's lines, run start and end time aside (the writer's clock)."""
    lines: list[dict[str, Any]] = [
        {"seq": 0, "kind": "run", "job": job, "client_id": client, "run_key": run_key},
        {"seq": 1, "kind": "run_start", "run_name": "jsonl-run", "tags": {"kind": "files"}},
        {"seq": 2, "kind": "param", "key": "lr", "value": "0.1"},
    ]
    for i in range(n):
        lines.append({"kind": "metric", "key": "loss", "value": 1.0 / (i + 1), "step": i,
                      "timestamp_ms": T0 + i})  # fmt: skip
        lines.append({"kind": "metric", "key": "acc", "value": i / n, "step": i,
                      "timestamp_ms": T0 + i})  # fmt: skip
    lines.append({"kind": "tag", "key": "phase", "value": "done"})
    lines.append({"kind": "run_end", "status": "FINISHED"})
    for seq, line in enumerate(lines):
        line["seq"] = seq
    return lines


def _read(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(text) for text in path.read_text().splitlines()]
    for line in lines:
        line.pop("start_time_ms", None)
        line.pop("end_time_ms", None)
    return lines


def _file(root: Path, job: str, client: str, run_key: str) -> Path:
    return root / safe_name(job) / safe_name(client) / f"{safe_name(run_key)}.jsonl"


def _holds(path: Path, count: int) -> bool:
    return path.exists() and path.read_bytes().count(b"\n") >= count


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_jsonl_only_receiver_writes_every_event_once_and_never_touches_mlflow(
    tmp_path: Path, make_writer: Any, job: str
) -> None:
    files = tmp_path / "files"
    # MLflow is nowhere: a tracking URI nothing answers, which the receiver must not need.
    receiver = launch_receiver(
        tmp_path, f"http://127.0.0.1:{free_port()}", extra_args=("--sink", f"jsonl:{files}")
    )
    try:
        writer = make_writer(receiver.address, "site-1", job)
        run_key = _log(writer)
        path = _file(files, job, "site-1", run_key)
        expected = _expected_lines(job, "site-1", run_key)
        wait_until(lambda: _holds(path, len(expected)), 30, what="the run's file, complete")
        assert _read(path) == expected

        wait_until(lambda: status(receiver.data_dir)["backlog_events"] == 0, 30, what="no backlog")
        shown = trackbridge("status", "--data-dir", str(receiver.data_dir))
        assert f"MLflow: off (sinks: jsonl:{files}); files: ok" in shown.stdout, shown.stdout
        health = trackbridge("health", "--receiver", receiver.address)
        assert health.returncode == 0, health.stdout + health.stderr
        page = get(f"http://127.0.0.1:{http_port(receiver)}/api/jobs/{job}").json()
        assert page["receiver"]["sinks"] == [f"jsonl:{files}"]
        assert page["receiver"]["mlflow_up"] is True, "the files are written: no trouble"

        second = subprocess.run(  # a second receiver may not append to the same files
            [str(TRACKBRIDGE_EXE), "serve", "--data-dir", str(tmp_path / "other"), "--listen",
             "127.0.0.1:0", "--sink", f"jsonl:{files}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert "another receiver writes JSON-lines files" in second.stderr
    finally:
        code = receiver.stop()
    assert code == 0, receiver.log_tail()
    assert not (receiver.data_dir / "mlflow.db").exists(), "no MLflow store was made"
    assert _read(path) == expected, "the drain added nothing"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_both_sinks_get_exactly_the_same_events(
    start_receiver: Any, make_writer: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    receiver = start_receiver(extra_args=("--sink", "mlflow", "--sink", f"jsonl:{files}"))
    writer = make_writer(receiver.address, "site-2", job)
    run_key = _log(writer)
    path = _file(files, job, "site-2", run_key)
    expected = _expected_lines(job, "site-2", run_key)

    def finished() -> Any:
        runs = child_runs(job_runs(mlflow_client, job))
        return runs[0] if runs and runs[0].info.status == "FINISHED" else None

    run = wait_until(finished, 60, what="the MLflow run, finished")
    wait_until(lambda: _holds(path, len(expected)), 30, what="the run's file, complete")
    assert receiver.stop() == 0, receiver.log_tail()
    assert _read(path) == expected
    run = mlflow_client.get_run(run.info.run_id)
    assert all_points(mlflow_client, run) == {
        "loss": sorted(("loss", 1.0 / (i + 1), i, T0 + i) for i in range(POINTS)),
        "acc": sorted(("acc", i / POINTS, i, T0 + i) for i in range(POINTS)),
    }
    assert run.data.params == {"lr": "0.1"}
    assert user_tags(run) == {"kind": "files", "phase": "done"}
    shown = trackbridge("status", "--data-dir", str(receiver.data_dir))
    assert f"sinks: mlflow, jsonl:{files}" in shown.stdout, shown.stdout


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_down_the_files_still_get_every_event_and_mlflow_gets_them_later(
    start_receiver: Any, make_writer: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    files = tmp_path / "files"
    data_dir = tmp_path / "data"
    sinks = ("--sink", "mlflow", "--sink", f"jsonl:{files}")
    down = start_receiver(
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        data_dir=data_dir,
        shutdown_timeout_s=2,
        expected_exit_code=1,
        extra_args=sinks,
    )
    writer = make_writer(down.address, "site-3", job)
    run_key = _log(writer)
    assert writer.close(timeout_s=10) == 0
    path = _file(files, job, "site-3", run_key)
    expected = _expected_lines(job, "site-3", run_key)
    wait_until(lambda: _holds(path, len(expected)), 60, what="the file, complete, MLflow down")
    assert _read(path) == expected
    assert status(data_dir)["backlog_events"] == len(expected) - 1, "kept for MLflow"
    assert down.stop() == 1, "not drained: MLflow is down"

    up = start_receiver(data_dir=data_dir, extra_args=sinks)  # MLflow is back
    wait_until(lambda: status(data_dir)["backlog_events"] == 0, 60, what="MLflow caught up")
    assert up.stop() == 0, up.log_tail()
    (run,) = child_runs(job_runs(mlflow_client, job))
    assert run.info.status == "FINISHED"
    assert len(all_points(mlflow_client, run)["loss"]) == POINTS
    assert _read(path) == expected, "the restart wrote nothing twice"
