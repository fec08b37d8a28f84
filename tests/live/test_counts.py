"""The live page counts right: a client whose run ended is shown finished at once (not
"connected" until the client timeout), and each job's page shows its own backlog."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.live import LIVE_ARGS, get, http_port, live_writers
from tests.support.procs import free_port, wait_until

pytestmark = pytest.mark.slow  # a browser, a receiver and MLflow: a minute or so

WAIT_MS = 30_000


def _counts(page: Any) -> dict[str, str]:
    result: dict[str, str] = page.evaluate(
        "() => ({...document.querySelector('#client-counts').dataset})"
    )
    return result


@pytest.mark.timeout(180)
def test_a_finished_client_is_shown_finished_at_once(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    # The default client timeout (150 s): only the run's end can make it "finished" in time.
    receiver = start_receiver(extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, ["site-a", "site-b"], tmp_path) as writers:
        for name, writer in writers.items():
            writer.start_run(run_name=name)
            writer.log_metric("loss", 0.5, step=1)
            assert writer.flush(20)
        page.goto(f"{base}/jobs/{quote(job, safe='')}")
        page.wait_for_function(
            "() => document.querySelector('#client-counts').dataset.connected === '2'",
            timeout=WAIT_MS,
        )
        assert page.locator("#client-counts").inner_text() == "2 clients: 2 connected"

        writers["site-a"].end_run("FINISHED")  # the writer stays open and heartbeats
        assert writers["site-a"].flush(20)
        acked = time.monotonic()
        page.wait_for_function(
            """() => {
                const row = document.querySelector('#clients tr[data-client="site-a"]');
                return row && row.dataset.state === "finished"
                    && document.querySelector('#client-counts').dataset.finished === "1";
            }""",
            timeout=WAIT_MS,
        )
        print(f"site-a shown finished {time.monotonic() - acked:.2f} s after its end was acked")
        assert _counts(page)["connected"] == "1"
        assert page.locator("#client-counts").inner_text() == "2 clients: 1 connected, 1 finished"
        card = page.locator('.card[data-client="site-a"] .state').inner_text()
        assert card == "finished"
        row_b = page.locator('#clients tr[data-client="site-b"]')
        assert row_b.get_attribute("data-state") == "connected"
        jobs = get(f"{base}/api/jobs").json()["jobs"]
        assert [(j["clients"], j["connected"]) for j in jobs if j["job"] == job] == [(2, 1)]


@pytest.mark.timeout(180)
def test_each_job_page_shows_its_own_backlog(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    # MLflow is nowhere: everything stays in the receiver's backlog.
    receiver = start_receiver(
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        extra_args=LIVE_ARGS,
        shutdown_timeout_s=2,
        expected_exit_code=1,
    )
    base = f"http://127.0.0.1:{http_port(receiver)}"
    points = {f"{job}-small": 10, f"{job}-large": 35}
    for name, count in points.items():
        with live_writers(receiver.address, name, ["site-a"], tmp_path / name) as writers:
            for step in range(count):
                writers["site-a"].log_metric("loss", 1.0 / (step + 1), step=step)
            assert writers["site-a"].flush(20)

    def backlogs() -> dict[str, int] | None:
        found = {}
        for name in points:
            snapshot = get(f"{base}/api/jobs/{quote(name, safe='')}").json()
            found[name] = snapshot["receiver"]["job_backlog"]
            assert found[name] == sum(c["backlog"] for c in snapshot["clients"])
            assert snapshot["receiver"]["backlog"] >= sum(points.values())
        return found if all(found[n] >= points[n] for n in points) else None

    expected = wait_until(backlogs, 30, interval_s=0.2, what="both jobs' events in the backlog")
    assert expected[f"{job}-small"] < expected[f"{job}-large"]
    for name in points:
        page.goto(f"{base}/jobs/{quote(name, safe='')}")
        page.wait_for_function(
            "(n) => document.querySelector('#job-backlog').dataset.value === String(n)",
            arg=expected[name],
            timeout=WAIT_MS,
        )
        total = page.locator("#receiver-backlog").inner_text().replace(",", "")
        assert int(total) == sum(expected.values())
