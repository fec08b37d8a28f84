"""The live page's charts in a real headless Chromium, driven by a real mouse: hovering shows
the point's value in every chart at once, dragging zooms every chart and reset undoes it,
smoothing changes the drawn curve, a legend click hides a client everywhere, log scale and
wall-time axes switch, and on a time axis every client's legend shows its value at the cursor."""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.live import LIVE_ARGS, artifact_path, http_port, live_writers
from tests.support.procs import wait_until

STEPS = 50
pytestmark = pytest.mark.slow  # a browser, a receiver and MLflow: a minute or so

WAIT_S = 30


def _charts(page: Any, script: str, arg: Any = None) -> Any:
    """Runs ``script`` with ``charts`` (key -> MetricChart of the overlay layout) in scope."""
    return page.evaluate(
        f"""(arg) => {{
            const charts = Object.fromEntries(
                window.trackbridgeLive.charts().map((chart) => [chart.key, chart]));
            {script}
        }}""",
        arg,
    )


def _open_page_once_all_points_are_in(page: Any, base: str, job: str) -> None:
    """Opens the job's page once the receiver's live view holds every step of both metrics.

    Acknowledged points reach the live view a moment later (its pump digests them). A page
    opened before gets the rest as the stream's deltas, which carry at most a few dozen new
    points per series at a time, thinned past that (server/live/series.py): a burst of 50
    steps arriving while the page watches is drawn thinned, and these tests count steps."""
    url = f"{base}/api/jobs/{quote(job, safe='')}?metrics=y,z"

    def all_in() -> bool:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            points = json.load(response)["points"]
        counts = [len(series["s"]) for per_key in points.values() for series in per_key.values()]
        return counts == [STEPS] * 4

    wait_until(all_in, WAIT_S, what="the live view to hold every step")
    page.goto(f"{base}/jobs/{quote(job, safe='')}#metrics=y,z&layout=overlay")


def _pixel(page: Any, key: str, step: float) -> tuple[float, float]:
    """Where on the page the chart of ``key`` draws x = ``step`` (vertically centred)."""
    x, y = _charts(
        page,
        """const u = charts[arg.key].u;
           const rect = u.over.getBoundingClientRect();
           return [rect.left + u.valToPos(arg.step, "x"), rect.top + rect.height / 2];""",
        {"key": key, "step": step},
    )
    return float(x), float(y)


def _legend(page: Any, key: str) -> dict[str, str]:
    """The legend of a chart: ``{client (or "x"): value text}``."""
    result: dict[str, str] = _charts(
        page,
        """const rows = charts[arg].u.root.querySelectorAll(".u-legend .u-series");
           const out = {};
           rows.forEach((row, i) => {
             if (row.classList.contains("raw")) return;
             out[i === 0 ? "x" : row.dataset.client] = row.querySelector(".u-value").textContent;
           });
           return out;""",
        key,
    )
    return result


def _x_range(page: Any, key: str) -> tuple[float, float]:
    low, high = _charts(page, "const x = charts[arg].u.scales.x; return [x.min, x.max];", key)
    return float(low), float(high)


@pytest.mark.timeout(180)
def test_hover_zoom_smoothing_and_legend(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, ["site-a", "site-b"], tmp_path) as writers:
        for step in range(STEPS):
            zigzag = step / 10 + (1 if step % 2 else -1)  # smoothing flattens this
            writers["site-a"].log_metrics({"y": float(step), "z": zigzag}, step=step)
            writers["site-b"].log_metrics({"y": 100.0 - step, "z": -zigzag}, step=step)
        for writer in writers.values():
            assert writer.flush(20)

        _open_page_once_all_points_are_in(page, base, job)

        def drawn() -> bool:
            return bool(
                _charts(
                    page,
                    """return ["y", "z"].every((k) => charts[k]
                        && charts[k].u.data[0].length === arg);""",
                    STEPS,
                )
            )

        wait_until(drawn, WAIT_S, what="both charts drawn with every step")
        # Away from the cursor the legend shows each client's latest value.
        assert _legend(page, "y") == {"x": str(STEPS - 1), "site-a": "49", "site-b": "51"}

        # Hover: the point under the cursor, in this chart and (synchronised) in the other.
        page.mouse.move(*_pixel(page, "y", 20))
        wait_until(lambda: _legend(page, "y")["x"] == "20", WAIT_S, what="the hover readout")
        assert _legend(page, "y") == {"x": "20", "site-a": "20", "site-b": "80"}
        assert _legend(page, "z") == {"x": "20", "site-a": "1", "site-b": "-1"}
        page.screenshot(path=str(artifact_path("live-hover.png")))

        # Zoom: drag across steps 10..30; every chart follows; reset brings the whole run back.
        page.mouse.move(*_pixel(page, "y", 10))
        page.mouse.down()
        page.mouse.move(*_pixel(page, "y", 30), steps=8)
        page.mouse.up()
        for key in ("y", "z"):
            low, high = _x_range(page, key)
            assert 9 <= low <= 11 and 29 <= high <= 31, (key, low, high)
        assert page.locator("#reset-zoom").is_enabled()
        page.click("#reset-zoom")
        for key in ("y", "z"):
            assert _x_range(page, key) == (0, STEPS - 1)

        # Smoothing: the drawn curve changes (its pixels and its values) and is smoother.
        def curve(key: str) -> dict[str, Any]:
            result: dict[str, Any] = _charts(
                page,
                """const c = charts[arg];
                   const i = c.clientOf.indexOf("site-a");
                   return {pixels: c.u.ctx.canvas.toDataURL(), values: c.u.data[i],
                           smoothing: c.view.smoothing};""",
                key,
            )
            return result

        def variation(values: list[float]) -> float:
            return sum(abs(b - a) for a, b in itertools.pairwise(values))

        raw = curve("z")
        assert raw["smoothing"] == 0
        page.locator("#smoothing").fill("0.9")
        wait_until(lambda: curve("z")["smoothing"] == 0.9, WAIT_S, what="charts smoothed")
        smoothed = curve("z")
        assert smoothed["pixels"] != raw["pixels"]
        assert smoothed["values"] != raw["values"]
        assert variation(smoothed["values"]) < variation(raw["values"]) / 3
        assert "smoothing=0.9" in page.url  # kept in the address
        page.screenshot(path=str(artifact_path("live-smoothed.png")))

        # A legend click hides a client in every chart; another click shows it again.
        def shown(client: str) -> list[bool]:
            result: list[bool] = _charts(
                page,
                """return ["y", "z"].map((k) => {
                     const c = charts[k];
                     return c.u.series[c.clientOf.indexOf(arg)].show; });""",
                client,
            )
            return result

        label = '.uplot[data-key="y"] .u-legend .u-series[data-client="site-b"] .u-label'
        page.click(label)
        assert shown("site-b") == [False, False]
        assert shown("site-a") == [True, True]
        page.click(label)
        assert shown("site-b") == [True, True]

        # Log scale, and wall time on x.
        page.check("#log-y")
        wait_until(
            lambda: _charts(page, "return charts.y && charts.y.u.scales.y.distr") == 3,
            WAIT_S,
            what="a log y scale",
        )
        page.select_option("#x-axis", "wall")
        wait_until(
            lambda: _charts(page, "return charts.y && charts.y.u.scales.x.time") is True,
            WAIT_S,
            what="a time x axis",
        )
        assert ":" in _legend(page, "y")["x"]  # a time of day
        # The clients logged at different times: wherever the cursor is, each client's legend
        # shows its value there (its latest point at or before the cursor), never "—".
        box = page.locator('.uplot[data-key="y"] .u-over').bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
        wait_until(
            lambda: _charts(page, "return charts.y.u.cursor.idx") is not None,
            WAIT_S,
            what="the cursor on the time axis",
        )
        legend = _legend(page, "y")
        assert legend["site-a"] != "—" and legend["site-b"] != "—", legend


@pytest.mark.timeout(180)
def test_a_snapshot_after_a_drawn_one_redraws_the_charts(
    start_receiver: Callable[..., Any], page: Any, job: str, tmp_path: Path
) -> None:
    """A snapshot (what a reconnecting page, or one that fell behind, gets) rebuilds every
    series, and the charts redraw with it, with fewer points or more. Before, a chart redrew
    only when its series' version counts changed, and every snapshot counted them from one
    again: a page that reconnected kept the curves it drew before the reconnect, until the
    next point arrived."""
    receiver = start_receiver(extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, ["site-a", "site-b"], tmp_path) as writers:
        for step in range(STEPS):
            writers["site-a"].log_metrics({"y": float(step), "z": -float(step)}, step=step)
            writers["site-b"].log_metrics({"y": 100.0 - step, "z": float(step)}, step=step)
        for writer in writers.values():
            assert writer.flush(20)
        _open_page_once_all_points_are_in(page, base, job)

        def drawn(points: int) -> bool:
            return bool(
                _charts(
                    page,
                    """return ["y", "z"].every((k) => charts[k]
                        && charts[k].u.data[0].length === arg);""",
                    points,
                )
            )

        wait_until(lambda: drawn(STEPS), WAIT_S, what="both charts drawn with every step")
        full = page.evaluate(
            "(url) => fetch(url, { cache: 'no-store' }).then((r) => r.json())",
            f"/api/jobs/{quote(job, safe='')}?metrics=y,z",
        )
        assert full["type"] == "snapshot"
        partial = {
            **full,
            "points": {
                client: {
                    key: {name: values[:10] for name, values in series.items()}
                    for key, series in per_key.items()
                }
                for client, per_key in full["points"].items()
            },
        }
        for message, points in ((partial, 10), (full, STEPS)):
            page.evaluate("(msg) => window.trackbridgeLive.apply(msg)", message)
            wait_until(
                lambda n=points: drawn(n), WAIT_S, what=f"both charts redrawn with {points} steps"
            )
