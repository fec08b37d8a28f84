"""The live page in a real headless Chromium: clients appear, charts and latest values follow
new points, a client that dies is shown disconnected, the viewer token is enforced."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.live import (
    LIVE_ARGS,
    artifact_path,
    http_port,
    live_writers,
    start_stream_client,
)
from tests.support.procs import wait_until

WAIT_MS = 30_000


def _latest(page: Any, client: str, key: str) -> dict[str, str] | None:
    return page.evaluate(
        """([client, key]) => {
            const card = document.querySelector(`.card[data-client="${CSS.escape(client)}"]`);
            const dd = card && card.querySelector(`dd.latest[data-key="${CSS.escape(key)}"]`);
            return dd && {step: dd.dataset.step, value: dd.dataset.value, text: dd.textContent};
        }""",
        [client, key],
    )


def _drawn(page: Any, key: str, client: str) -> int:
    """Points of ``client`` the chart of ``key`` draws (in any layout)."""
    count = page.evaluate(
        """([key, client]) => {
            let n = 0;
            for (const chart of window.trackbridgeLive.charts()) {
                if (chart.key !== key) continue;
                const index = chart.clientOf.indexOf(client);
                if (index > 0) n += chart.u.data[index].filter((v) => v != null).length;
            }
            return n;
        }""",
        [key, client],
    )
    return int(count)


def _wait_js(page: Any, script: str, arg: Any) -> None:
    page.wait_for_function(script, arg=arg, timeout=WAIT_MS)


@pytest.mark.timeout(180)
def test_page_follows_three_clients_live(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(extra_args=(*LIVE_ARGS, "--client-timeout", "2"))
    base = f"http://127.0.0.1:{http_port(receiver)}"
    doomed = start_stream_client(receiver.address, "site-c", job, tmp_path, points=25)
    try:
        with live_writers(receiver.address, job, ["site-a", "site-b"], tmp_path) as writers:
            for step in range(10):
                for n, writer in enumerate(writers.values()):
                    writer.log_metrics({"x": float(step), "loss": 1.0 / (step + n + 1)}, step=step)
            for writer in writers.values():
                assert writer.flush(20)

            page.goto(f"{base}/jobs/{quote(job, safe='')}#metrics=x&layout=overlay")
            # Every client appears, with a row, a card and its latest value.
            for client, step in (("site-a", "9"), ("site-b", "9"), ("site-c", "24")):
                _wait_js(
                    page,
                    """([client, step]) => {
                        const dd = document.querySelector(
                            `.card[data-client="${client}"] dd.latest[data-key="x"]`);
                        return dd !== null && dd.dataset.step === step
                            && document.querySelector(`#clients tr[data-client="${client}"]`);
                    }""",
                    [client, step],
                )
            assert page.locator("#clients tbody tr").count() == 3
            assert page.locator("#stream-state").inner_text() == "live"
            wait_until(lambda: _drawn(page, "x", "site-a") >= 10, 30, what="site-a's chart drawn")
            before = _drawn(page, "x", "site-a")
            assert _latest(page, "site-a", "x") == {"step": "9", "value": "9", "text": "9 @9"}

            # New points move the chart and the latest value, pushed without a reload.
            for step in range(10, 20):
                writers["site-a"].log_metrics({"x": step * 1.5, "loss": 0.01}, step=step)
            assert writers["site-a"].flush(20)
            _wait_js(
                page,
                """() => {
                    const dd = document.querySelector(
                        '.card[data-client="site-a"] dd.latest[data-key="x"]');
                    return dd && dd.dataset.step === "19";
                }""",
                None,
            )
            assert _latest(page, "site-a", "x") == {
                "step": "19",
                "value": "28.5",
                "text": "28.5 @19",
            }
            wait_until(
                lambda: _drawn(page, "x", "site-a") >= before + 10,
                30,
                what="more of site-a",
            )
            assert _drawn(page, "x", "site-c") >= 25
            assert page.locator("#metric-picker input[value='loss']").count() == 1

            # A client that dies is shown disconnected; the living ones stay connected.
            doomed.kill()
            doomed.wait(timeout=10)
            _wait_js(
                page,
                """() => {
                    const row = document.querySelector('#clients tr[data-client="site-c"]');
                    return row && row.dataset.state === "disconnected";
                }""",
                None,
            )
            for client in ("site-a", "site-b"):
                row = page.locator(f'#clients tr[data-client="{client}"]')
                assert row.get_attribute("data-state") == "connected"
            card_state = page.locator('.card[data-client="site-c"] .state').inner_text()
            assert card_state == "disconnected"

            shot = artifact_path("live-page.png")
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, tmp_path / "live-page.png")
            assert shot.stat().st_size > 10_000

            # Side by side: each client's card carries its own chart.
            page.select_option("#layout", "side")
            side = '.card[data-client="site-b"] .uplot.chart[data-key="x"]'
            wait_until(lambda: page.locator(side).count() == 1, 30, what="site-b's own chart")
            wait_until(lambda: _drawn(page, "x", "site-b") >= 10, 30, what="site-b's chart drawn")
            assert page.locator("#charts .chart-panel").count() == 0
            # Its axes carry numbers, and so does its legend (the latest value away from the
            # cursor), beside the card's own list of latest values.
            ticks = page.evaluate(
                """() => window.trackbridgeLive.charts()
                    .filter((c) => c.ids[0] === "site-b" && c.key === "x")
                    .map((c) => c.u.axes.map((axis) => axis._values))[0]"""
            )  # uPlot draws tick labels on its canvas; _values are the labels it drew
            assert all(any(any(ch.isdigit() for ch in str(v)) for v in axis) for axis in ticks)
            legend = page.locator(f'{side} .u-series[data-client="site-b"] .u-value').inner_text()
            assert legend == "9", legend
            page.screenshot(path=str(artifact_path("live-page-side.png")), full_page=True)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(timeout=10)


@pytest.mark.timeout(120)
def test_page_wants_the_viewer_token(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    token = "a-viewer-token-for-tests"
    receiver = start_receiver(extra_args=(*LIVE_ARGS, "--viewer-token", token))
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, ["site-a"], tmp_path) as writers:
        writers["site-a"].log_metric("x", 3.0, step=3)
        assert writers["site-a"].flush(20)
        url = f"{base}/jobs/{quote(job, safe='')}"

        refused = page.goto(url)
        assert refused.status == 401
        assert "viewer token required" in page.content()
        assert page.locator(".card").count() == 0

        wrong = page.goto(f"{url}?token=not-the-token")
        assert wrong.status == 401

        # The right token is traded for a cookie; the page and its stream then work.
        page.goto(f"{url}?token={token}")
        assert "token=" not in page.url
        _wait_js(
            page,
            """() => {
                const dd = document.querySelector('.card[data-client="site-a"] dd.latest');
                return dd && dd.dataset.value === "3";
            }""",
            None,
        )
