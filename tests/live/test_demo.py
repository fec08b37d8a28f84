"""``trackbridge demo`` in a terminal: it prints the live page's address, the page shows its
clients while they train, and afterwards the receiver and the page stay up (clients shown
finished) until Ctrl-C, with the MLflow UI command printed."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.support.live import get
from tests.support.procs import TRACKBRIDGE_EXE, wait_until
from tests.support.pty import spawn_in_pty

pytestmark = pytest.mark.slow

DEMO_TIMEOUT_S = 200


@pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
def test_demo_keeps_the_page_up_after_training_until_ctrl_c(tmp_path: Path) -> None:
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
        str(tmp_path / "data"),
    ]
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm"}
    demo = spawn_in_pty(cmd, rows=50, cols=200, env=env, timeout=DEMO_TIMEOUT_S)
    try:
        demo.expect(r"watch the clients live: (http://127\.0\.0\.1:\d+/jobs/demo)\s")
        url = demo.match.group(1)
        base = url.removesuffix("/jobs/demo")
        assert get(url).status == 200
        assert b"/static/app.js" in get(url).body

        # While the clients train, the page's data shows both, with fresh losses.
        def clients(state: str) -> dict[str, Any] | None:
            snapshot = get(f"{base}/api/jobs/demo?metrics=train/loss").json()
            rows = {row["id"]: row for row in snapshot["clients"]}
            losses = all("train/loss" in row["latest"] for row in rows.values())
            states = {row["state"] for row in rows.values()}
            return (
                rows if set(rows) == {"site-1", "site-2"} and losses and states == {state} else None
            )

        wait_until(lambda: clients("connected"), 120, interval_s=0.2, what="both clients live")

        # Training done: the summary says what its figures are; the page stays up.
        demo.expect(r"clients logged \d+ metric points in [\d.]+ s")
        demo.expect(r"mlflow ui --backend-store-uri sqlite:///\S+mlflow\.db")
        demo.expect(r"The receiver and the live page stay up: " + re.escape(url))
        demo.expect("Press Ctrl-C to stop them")
        assert clients("finished") is not None
        assert get(url).status == 200
        assert demo.isalive()

        demo.sendintr()
        demo.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as exc:
        raise AssertionError(f"the demo's terminal so far:\n{demo.before}") from exc
    finally:
        demo.close(force=True)
    assert demo.exitstatus == 0, demo.before
