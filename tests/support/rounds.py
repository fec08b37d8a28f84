"""Helpers of the rounds and aggregates tests: federated client processes driven over a pipe,
and reading a job's parent run back from MLflow."""

from __future__ import annotations

import json
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.procs import child_env

CLIENT = Path(__file__).parent / "clients" / "round_client.py"
REPLY_TIMEOUT_S = 90.0


class RoundClient:
    """One ``round_client.py`` process; each command waits (bounded) for its answer."""

    def __init__(self, receiver: str, client_id: str, job: str, mode: str, home: Path) -> None:
        self.client_id = client_id
        self._log = (home / f"{client_id}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT), "--receiver", receiver, "--client-id", client_id,
             "--job", job, "--mode", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env(TRACKBRIDGE_SPOOL_DIR=str(home / f"spool-{client_id}")),
        )  # fmt: skip
        self.started = self._reply()

    def log(self, key: str, value: float, round_: int, num_examples: int | None = None,
            **extra: Any) -> None:  # fmt: skip
        """Logs one point of ``round_``; returns once the receiver has it."""
        command = {"log": key, "value": value, "round": round_, "num_examples": num_examples}
        self._send({**command, **extra})
        assert self._reply()["ok"], f"{self.client_id}: not acknowledged"

    def end(self) -> None:
        """Ends the run; returns once the receiver has everything."""
        self._send({"end": True})
        assert self._reply()["ok"], f"{self.client_id}: not all delivered"
        assert self.proc.wait(timeout=60) == 0

    def kill(self) -> None:
        """Stops the process if it still runs, and closes its pipes (teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._log.close()

    def _send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                assert line, f"{self.client_id} exited: {self.proc.wait(timeout=10)}"
                reply: dict[str, Any] = json.loads(line)
                return reply
            assert self.proc.poll() is None, f"{self.client_id} exited with {self.proc.returncode}"
        raise AssertionError(f"{self.client_id}: no answer within {REPLY_TIMEOUT_S} s")


def parent_run(client: Any, job: str) -> Any:
    """The job's parent run in its experiment, None until it exists."""
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`trackbridge.role` = 'parent'",
    )
    return runs[0] if runs else None


def history(client: Any, run_id: str, key: str) -> list[tuple[int, float, int]]:
    """A metric's points as ``(step, value, timestamp)``, by step, then time."""
    points = client.get_metric_history(run_id, key)
    return sorted(((m.step, m.value, m.timestamp) for m in points), key=lambda p: (p[0], p[2]))


def arrivals(data_dir: Path, job: str) -> list[tuple[str, int, str, bool]]:
    """The aggregate inputs a receiver recorded for ``job``: ``(key, round or step, client,
    late)``, read from its queue database (read-only)."""
    path = data_dir / "queue.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT key, slot, client_id, late FROM agg_arrivals WHERE job = ?"
            " ORDER BY key, slot, client_id",
            (job,),
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()
    return [(k, int(s), c, bool(late)) for k, s, c, late in rows]
