"""A receiver whose MLflow is not there at start: it starts anyway and keeps every event, says
so in one WARNING naming the cause and ``trackbridge doctor``, then at most a line a minute,
reports it in ``status`` and the health service, and asks MLflow on a backoff of its own
rather than once per incoming batch."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.protocol import INGEST_SERVICE
from server.flush.outage import REPEAT_EVERY_S
from tests.support.faults import read_result, start_stream_client
from tests.support.isolation import trackbridge
from tests.support.live import get, http_port
from tests.support.procs import ReceiverProcess, free_port, wait_until

pytestmark = pytest.mark.slow

POINTS = 3000
RATE = 300.0  # ten seconds of batches: one MLflow call per batch would be hundreds


def outage_lines(log: str) -> tuple[list[str], list[str]]:
    """The outage's first WARNING lines and its repeats, from a receiver's log."""
    first = [line for line in log.splitlines() if "WARNING" in line and " is failing: " in line]
    again = [line for line in log.splitlines() if "WARNING" in line and "still failing" in line]
    return first, again


def metric(receiver: ReceiverProcess, name: str) -> float:
    text = get(f"http://127.0.0.1:{http_port(receiver)}/metrics").body.decode()
    match = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.MULTILINE)
    assert match is not None, text
    return float(match.group(1))


@pytest.mark.timeout(300)
def test_mlflow_not_there_at_start_is_told_once_and_asked_on_a_backoff(
    start_receiver: Callable[..., ReceiverProcess], tmp_path: Path, job: str
) -> None:
    started = time.monotonic()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    receiver = start_receiver(
        tracking_uri=nowhere,
        flush_interval_s=0.2,
        shutdown_timeout_s=2,
        expected_exit_code=1,  # what MLflow never got is not drained
        extra_args=("--http-listen", "127.0.0.1:0"),
    )
    out = tmp_path / "client.json"
    client = start_stream_client(
        receiver.address, "site-1", job, tmp_path / "spool", out, points=POINTS, rate=RATE,
        extra=("--close-timeout", "5"),
    )  # fmt: skip
    assert client.wait(timeout=180) == 0, out.with_suffix(".log").read_text()
    assert read_result(out)["undelivered"] == 0, "the receiver took every event"

    def failing() -> Any:
        result = trackbridge("status", "--data-dir", str(receiver.data_dir), "--json")
        status = json.loads(result.stdout)
        return status if status["mlflow"] and not status["mlflow"]["ok"] else None

    status = wait_until(failing, 60, interval_s=0.5, what="status to say MLflow is failing")
    assert "cannot be reached" in status["mlflow"]["diagnosis"], status["mlflow"]
    assert status["backlog_events"] == POINTS + 2, "run start, the points, run end: all kept"
    table = trackbridge("status", "--data-dir", str(receiver.data_dir)).stdout
    assert "MLflow: FAILING: MLflow cannot be reached" in table, table
    health = trackbridge("health", "--receiver", receiver.address, "--service", INGEST_SERVICE)
    assert health.returncode == 1 and "NOT_SERVING" in health.stdout, health.stdout

    # Every batch woke the flusher; MLflow was asked on the flusher's backoff instead.
    # The pause doubles from 0.5 s to 10 s (jitter: 8 s at least): a handful of calls, then
    # one every 8-12 s; the flusher's 0.2 s tick alone would make five a second.
    errors = metric(receiver, "trackbridge_mlflow_errors")
    bound = 8 + (time.monotonic() - started) / 4
    assert 1 <= errors <= bound, f"{errors} failed MLflow calls while {POINTS} points arrived"

    log = receiver.log_tail()
    first, again = outage_lines(log)
    assert len(first) == 1, log
    assert "MLflow cannot be reached" in first[0] and "trackbridge doctor" in first[0], first
    assert "Connection refused" in first[0], "the cause, from MLflow's error"
    assert len(first[0]) < 800, "one readable line"
    elapsed = time.monotonic() - started
    assert len(again) <= elapsed / REPEAT_EVERY_S + 1, again
    assert "Traceback" not in log, log
    # No other warning repeats the outage line by line.
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) <= len(first) + len(again) + 2, warnings
