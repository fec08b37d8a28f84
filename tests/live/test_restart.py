"""The live view across a receiver restart: a receiver killed (-9) mid-run and started again on
its data directory shows the same history (read back from MLflow and its queue), the client's
and the job's aggregates' alike; the client's curve goes on from there, and the chart's CSV
holds what the chart draws."""

from __future__ import annotations

import csv
import io
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults import TcpProxy
from tests.support.live import LIVE_ARGS, get, http_port
from tests.support.procs import ReceiverProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

POINTS = 200
SPIKE = 77


def _series(url: str, client: str, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    snap = get(url).json()
    (row,) = [c for c in snap["clients"] if c["id"] == client] or [{}]
    return snap["points"].get(client, {}).get(key, {"s": [], "v": [], "t": []}), row


def test_a_receiver_restarted_mid_run_shows_the_same_history(
    start_receiver: Callable[..., ReceiverProcess],
    make_writer: Callable[..., Any],
    job: str,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "receiver-data"
    args = (*LIVE_ARGS, "--aggregate", "loss")  # one client: each step's group is complete
    first = start_receiver(data_dir=data_dir, extra_args=args)
    proxy = TcpProxy(first.port)
    try:
        writer = make_writer(proxy.address, "site-a", job)
        writer.start_run()
        for step in range(POINTS):
            writer.log_metric("loss", 100.0 if step == SPIKE else 1.0 / (step + 1), step=step)
        assert writer.flush(60)
        job_path = urllib.parse.quote(job, safe="")

        def page(receiver: ReceiverProcess) -> str:
            return f"http://127.0.0.1:{http_port(receiver)}/api/jobs/{job_path}"

        def shown_whole() -> Any:
            series, row = _series(page(first), "site-a", "loss")
            return series if len(series["s"]) == POINTS and row.get("mlflow_run_id") else None

        before = wait_until(shown_whole, 60, what="the whole curve and its MLflow run")

        def aggregated() -> Any:
            series, _ = _series(page(first), "(aggregate)", "loss/mean")
            return series if len(series["s"]) == POINTS else None

        means = wait_until(aggregated, 60, what="every step's aggregate")
        first.proc.kill()  # mid-run: some points in MLflow, the rest only in the queue
        first.proc.wait(timeout=30)
        first.returncode = first.proc.returncode

        second = start_receiver(data_dir=data_dir, extra_args=args)
        proxy.set_upstream(second.port)

        def restored() -> Any:
            series, row = _series(page(second), "site-a", "loss")
            return (series, row) if series["s"] == before["s"] else None

        after, row = wait_until(restored, 90, what="the history after the restart")
        assert after["v"] == before["v"] and after["t"] == before["t"]
        assert row["acked"] >= POINTS + 1  # the run's start and every point, counted again
        assert row["latest"]["loss"][:2] == [POINTS - 1, 1.0 / POINTS]

        def aggregates_restored() -> Any:
            series, _ = _series(page(second), "(aggregate)", "loss/mean")
            return series if series["s"] == means["s"] else None

        restored_means = wait_until(aggregates_restored, 90, what="the aggregates' history")
        assert restored_means["v"] == means["v"]
        # The run goes on: its curve continues where it was.
        for step in range(POINTS, POINTS + 5):
            writer.log_metric("loss", 0.001, step=step)
        assert writer.flush(60)

        def continued() -> Any:
            series, _ = _series(page(second), "site-a", "loss")
            return series if len(series["s"]) == POINTS + 5 else None

        series = wait_until(continued, 60, what="the curve going on")
        assert series["s"] == list(range(POINTS + 5))
        # The chart's CSV: each point drawn, with its envelope (one point each: not thinned).
        text = get(f"{page(second)}/csv?metric=loss").body.decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [int(r["step"]) for r in rows] == series["s"]
        assert {r["client"] for r in rows} == {"site-a"}
        assert float(rows[SPIKE]["value"]) == float(rows[SPIKE]["max"]) == 100.0
        writer.end_run()
        assert writer.flush(60)
    finally:
        proxy.close()
