"""A bystander: a client in a job of its own, streaming a known sequence while a test harms
someone else. Failure-isolation tests end with ``bystander.assert_delivered()``: every one of
its points is in MLflow exactly once and its run ended FINISHED."""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.faults import expected_points, metric_points, read_result, start_stream_client
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.procs import wait_until

BASE_TS = 1_700_000_000_000
"""The timestamp of point 0 in ``stream_points.py``."""


@dataclass
class Bystander:
    """A running stream client (see :func:`start_bystander`)."""

    job: str
    client_id: str
    points: int
    proc: subprocess.Popen[bytes]
    out: Path

    def assert_delivered(self, mlflow_client: Any, timeout_s: float = 120.0) -> None:
        """Waits (bounded) for the client to finish and its run to end, then checks every
        point of it is in MLflow exactly once."""
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            log = self.out.with_suffix(".log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"bystander {self.client_id} did not finish:\n{log}") from None
        assert self.proc.returncode == 0, self.out.with_suffix(".log").read_text()[-3000:]
        assert read_result(self.out)["undelivered"] == 0

        def ended_run() -> Any:
            runs = [
                r
                for r in child_runs(job_runs(mlflow_client, self.job))
                if r.data.tags.get(TAG_CLIENT_ID) == self.client_id
            ]
            return runs[0] if len(runs) == 1 and runs[0].info.status != "RUNNING" else None

        run = wait_until(ended_run, timeout_s, what=f"the bystander's run in job {self.job}")
        assert run.info.status == "FINISHED"
        got = metric_points(mlflow_client, run.info.run_id, "x")
        assert got == expected_points(self.points, BASE_TS)

    def stop(self) -> None:
        """Kills the client if it still runs (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_bystander(
    receiver: str,
    tmp_path: Path,
    *,
    points: int = 1000,
    rate: float = 200.0,
    client_id: str | None = None,
    token_file: Path | None = None,
) -> Bystander:
    """Starts a client in a job no one else uses, logging ``points`` points of ``x``; with
    ``token_file``, it presents the token in that file (as ``client_id``)."""
    name = uuid.uuid4().hex[:8]
    job = f"bystander-{name}"
    client_id = client_id if client_id is not None else f"bystander-{name}"
    out = tmp_path / f"bystander-{name}.json"
    proc = start_stream_client(
        receiver,
        client_id,
        job,
        tmp_path / f"bystander-spool-{name}",
        out,
        points=points,
        rate=rate,
        extra=("--token-file", str(token_file)) if token_file is not None else (),
    )
    return Bystander(job, client_id, points, proc, out)
