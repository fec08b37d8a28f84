"""The live page draws a cross-client aggregate's mean with its min-max band, and shows each
round's health (who reported, the spread across the sites), in a real headless Chromium, from
a real receiver aggregating two clients' rounds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.live import LIVE_ARGS, artifact_path, http_port, live_writers
from tests.support.procs import wait_until

pytestmark = pytest.mark.slow  # a browser, a receiver and MLflow


@pytest.mark.timeout(180)
def test_the_mean_of_an_aggregate_is_drawn_in_its_min_max_band(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(extra_args=(*LIVE_ARGS, "--aggregate", "eval/*"))
    base = f"http://127.0.0.1:{http_port(receiver)}"
    values = {"site-a": [0.5, 0.75, 1.0], "site-b": [0.25, 0.5, 2.0]}
    with live_writers(receiver.address, job, list(values), tmp_path) as writers:
        for writer in writers.values():
            writer.start_run()
            assert writer.flush(20)
        for step in range(3):
            for site, writer in writers.items():
                writer.log_metric("eval/acc", values[site][step], step=step + 1, round=step + 1)
            for writer in writers.values():
                assert writer.flush(20)
        page.goto(f"{base}/jobs/{quote(job, safe='')}#metrics=eval/acc/mean&layout=overlay")

        def drawn() -> Any:
            return page.evaluate(
                """() => {
                    const chart = window.trackbridgeLive.charts()
                        .find((c) => c.key === "eval/acc/mean");
                    if (!chart || chart.u.data[0].length < 3) return null;
                    return {bands: chart.u.bands.length, labels: chart.u.series.map((s) => s.label),
                            data: chart.u.data};
                }"""
            )

        shown = wait_until(drawn, 60, what="the aggregate's chart with its band")
        assert shown["bands"] == 1
        labels = shown["labels"]
        assert labels[-2:] == ["(aggregate) min", "(aggregate) max"]
        mean = shown["data"][labels.index("(aggregate)")]
        assert shown["data"][0] == [1, 2, 3]  # the rounds
        assert mean == [0.375, 0.625, 1.5]
        assert shown["data"][-2] == [0.25, 0.5, 1.0] and shown["data"][-1] == [0.5, 0.75, 2.0]

        # Each round's health: both sites reported, none missing, the spread across them.
        def rounds() -> Any:
            rows = page.evaluate(
                """() => [...document.querySelectorAll("#rounds tbody tr")].map(
                    (tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent))"""
            )
            return rows if len(rows) == 3 else None

        rows = wait_until(rounds, 60, what="the rounds table")
        assert [r[:3] for r in rows] == [["3", "2 of 2", "none"], ["2", "2 of 2", "none"],
                                         ["1", "2 of 2", "none"]]  # fmt: skip
        assert rows[0][5] == "eval/acc: 1 … 2, 1.5"
        page.screenshot(path=str(artifact_path("live-aggregate-band.png")))
