"""``trackbridge bench --sweep``: how the figures change from 1 to 1000 clients and from 1 to
100k events/s (the "cost grows" table of docs/explanations/performance.md).

Each point is one ``trackbridge bench`` section at one size, measured in a work directory of
its own (its own receiver and, where MLflow is involved, its own MLflow server), so no point
inherits another's backlog. The sizes are fixed here; ``--quick`` takes the small ones and
``--only`` the points of some sections.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchOptions
from bench.report import Results, fmt_us

Measure = Callable[[BenchOptions, Path, Results], None]
"""Measures ``options`` in a work directory and fills in the sections' results."""


@dataclass(frozen=True, slots=True)
class Point:
    """One size of one section: the option values that differ from the section's base."""

    section: str
    axis: str
    value: float
    options: dict[str, Any]


def _writer(rate: float, seconds: float) -> Point:
    calls = max(20, min(200_000, round(rate * seconds)))
    return Point("latency", "events/s", rate, {"writer_rate": rate, "writer_calls": calls})


def _fresh(clients: int, total_rate: float, seconds: float, axis: str) -> Point:
    value = clients if axis == "clients" else total_rate
    opts = {"fresh_clients": clients, "fresh_rate": total_rate / clients, "fresh_s": seconds}
    return Point("freshness", axis, value, opts)


def points(quick: bool) -> list[Point]:
    """The sweep: writer cost by rate, ingest by clients, freshness by clients and by rate,
    connections held by clients."""
    if quick:
        return [
            _writer(100, 1),
            _writer(100_000, 0.2),
            Point("ingest", "clients", 1, {"clients": 1, "ingest_s": 1.0}),
            Point("ingest", "clients", 4, {"clients": 4, "ingest_s": 1.0}),
            _fresh(2, 20, 2, "clients"),
            Point("scale", "clients", 10, {"connections": 10, "connection_procs": 1}),
        ]
    return [
        *(_writer(rate, 10) for rate in (1, 100, 10_000, 100_000)),
        *(Point("ingest", "clients", n, {"clients": n, "ingest_s": 5.0}) for n in (1, 4, 16, 64)),
        *(_fresh(n, 1000, 10, "clients") for n in (1, 10, 100, 1000)),
        *(_fresh(10, rate, 10, "events/s") for rate in (10, 100, 1000, 5000, 10_000)),
        *(
            Point("scale", "clients", n, {"connections": n, "connection_procs": min(4, n)})
            for n in (1, 10, 100, 1000)
        ),
    ]


def _figures(section: str, s: Results) -> str:
    """One point's figures, as a table cell."""
    if "error" in s:
        return f"failed: {s['error']}"
    if section == "latency":
        return (
            f"log_metric p50 {fmt_us(s['p50_us'])}, p99 {fmt_us(s['p99_us'])} "
            f"(a bare Python call, paced alike: p50 {fmt_us(s['bare_call_p50_us'])})"
        )
    if section == "ingest":
        return (
            f"{s['events_per_s']:,.0f} events/s acked, "
            f"receiver {s['receiver_cpu_cores']:.2f} cores, {s['receiver_rss_mb']:.0f} MB"
        )
    if section == "freshness":
        return (
            f"in MLflow p50 {fmt_us(s['p50_ms'] * 1000)}, p99 {fmt_us(s['p99_ms'] * 1000)}; "
            f"live p99 {fmt_us(s['live_p99_ms'] * 1000)}; "
            f"{s['metrics_per_log_batch']:.0f} metrics per log_batch"
        )
    if section == "scale":
        return (
            f"{s['connected']} held, receiver {s['receiver_rss_mb']:.0f} MB, "
            f"publish p99 {fmt_us(s['publish_p99_ms'] * 1000)}"
        )
    return ""


def _value(v: float) -> str:
    return f"{v:,.0f}" if math.isfinite(v) and v == int(v) else f"{v:g}"


def _setting(p: Point) -> str:
    o = p.options
    if p.section == "freshness":
        rate, seconds = _value(o["fresh_rate"]), _value(o["fresh_s"])
        return f"{o['fresh_clients']} clients at {rate}/s each, {seconds} s"
    if p.section == "latency":
        return f"{o['writer_calls']:,} paced calls"
    if p.section == "ingest":
        return f"batches of {o.get('batch_events', 1000)}, {_value(o['ingest_s'])} s"
    return f"{o['connections']} connections in {o['connection_procs']} processes"


def format_sweep(rows: list[Results]) -> str:
    """The performance page's table: what varies, the setting, the figures."""
    names = {
        "latency": "writer cost",
        "ingest": "ingest",
        "freshness": "freshness",
        "scale": "connections",
    }
    lines = ["| figure | varied | setting | measured |", "|---|---|---|---|"]
    for row in rows:
        p = Point(**row["point"])
        varied = f"{_value(p.value)} {p.axis}"
        lines.append(
            f"| {names[p.section]} | {varied} | {_setting(p)} | "
            f"{_figures(p.section, row['figures'])} |"
        )
    return "\n".join(lines)


def run_sweep(base: BenchOptions, measure: Measure, work_dir: Path, *, quick: bool) -> Results:
    """Measures every point; returns ``{"rows": [...], "duration_s": ...}``."""
    started = time.monotonic()
    rows: list[Results] = []
    wanted = [p for p in points(quick) if p.section in base.sections]  # --only narrows it
    for i, point in enumerate(wanted):
        options = dataclasses.replace(base, sections=(point.section,), **point.options)
        point_dir = work_dir / f"point-{i:02d}-{point.section}"
        point_dir.mkdir(parents=True, exist_ok=True)
        results: Results = {}
        try:
            measure(options, point_dir, results)
        except Exception as exc:  # a server that would not start: this point failed
            results[point.section] = {"error": f"{type(exc).__name__}: {exc}"}
        figures = results.get(point.section, {"error": "not measured"})
        if point.section == "latency" and "writer" in figures:
            figures = figures["writer"]
        rows.append({"point": dataclasses.asdict(point), "figures": figures})
        print(format_sweep(rows[-1:]).splitlines()[-1], flush=True)
    return {"rows": rows, "duration_s": time.monotonic() - started}
