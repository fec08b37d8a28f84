"""``trackbridge demo`` prints the live page's address, and the page shows its clients live."""

from __future__ import annotations

import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import get
from tests.support.procs import TRACKBRIDGE_EXE, wait_until

pytestmark = pytest.mark.slow

URL_PREFIX = "watch the clients live: "
DEMO_TIMEOUT_S = 200


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The demo's output lines, read by a thread (None at the end)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_demo_prints_the_page_and_the_page_shows_its_clients(tmp_path: Path) -> None:
    cmd = [
        str(TRACKBRIDGE_EXE),
        "demo",
        "--clients",
        "2",
        "--epochs",
        "2",
        "--steps",
        "40",
        "--step-delay",
        "0.1",
        "--data-dir",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        lines = _lines(proc)
        url = ""
        while not url:
            line = lines.get(timeout=120)
            assert line is not None, "\n".join(output)
            output.append(line)
            if line.startswith(URL_PREFIX):
                url = line.removeprefix(URL_PREFIX)
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/jobs/demo")
        base = url.removesuffix("/jobs/demo")
        assert get(url).status == 200
        assert b"/static/app.js" in get(url).body

        # While the clients train, the page's data shows both, with fresh losses.
        def both_clients_live() -> dict[str, Any] | None:
            if _drain(lines, output) is False:
                raise AssertionError("the demo ended first:\n" + "\n".join(output))
            snapshot = get(f"{base}/api/jobs/demo?metrics=train/loss").json()
            rows = {row["id"]: row for row in snapshot["clients"]}
            losses = all("train/loss" in row["latest"] for row in rows.values())
            return rows if set(rows) == {"site-1", "site-2"} and losses else None

        seen = wait_until(both_clients_live, 120, interval_s=0.2, what="both demo clients live")
        assert all(row["state"] == "connected" for row in seen.values()), seen
        assert proc.wait(timeout=DEMO_TIMEOUT_S) == 0, "\n".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _drain(lines: queue.Queue[str | None], output: list[str]) -> bool:
    """Collects the demo's output so far; False once it has ended."""
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            return True
        if line is None:
            return False
        output.append(line)
