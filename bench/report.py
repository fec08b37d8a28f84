"""Figures of ``trackbridge bench``: percentiles, the targets, the printed table, the JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import fleet_report

Results = dict[str, Any]


def summarize_ns(samples_ns: Sequence[int]) -> dict[str, float]:
    """Count, mean and percentiles (nearest rank) of durations in ns, reported in µs."""
    if not samples_ns:
        return {
            "calls": 0,
            "mean_us": math.nan,
            "p50_us": math.nan,
            "p99_us": math.nan,
            "p999_us": math.nan,
            "max_us": math.nan,
        }
    ordered = sorted(samples_ns)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1000

    return {
        "calls": n,
        "mean_us": sum(ordered) / n / 1000,
        "p50_us": rank(0.50),
        "p99_us": rank(0.99),
        "p999_us": rank(0.999),
        "max_us": ordered[-1] / 1000,
    }


def fmt_us(us: float) -> str:
    """A duration in µs, written in the unit that reads best."""
    if math.isnan(us):
        return "-"
    if us < 1000:
        return f"{us:.1f} µs" if us < 100 else f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def _row(name: str, goal: str, value: float, shown: str, met: bool, *, note: str = "") -> Results:
    status = "met" if met else "missed"
    return {
        "target": name,
        "goal": goal,
        "measured": value,
        "shown": shown,
        "status": status,
        "note": note,
    }


def _size_note(actual: float, wanted: float, what: str) -> str:
    return "" if actual >= wanted else f"ran with {actual:g} {what}; the target assumes {wanted:g}"


def _latency_targets(s: Results) -> list[Results]:
    p50, p99 = s["writer"]["p50_us"], s["writer"]["p99_us"]
    return [
        _row("writer log_metric p50", "<= 2 us", p50, fmt_us(p50), p50 <= 2.0),
        _row("writer log_metric p99", "<= 20 us", p99, fmt_us(p99), p99 <= 20.0),
    ]


def _ingest_targets(s: Results) -> list[Results]:
    rate = s["events_per_s"]
    note = _size_note(s["clients"], 16, "clients")
    return [
        _row(
            "ingest, durably acked",
            ">= 300k events/s",
            rate,
            f"{rate:,.0f}/s",
            rate >= 300_000,
            note=note,
        )
    ]


def _e2e_targets(s: Results) -> list[Results]:
    ratio = s["ratio"]
    return [_row("end to end / log_batch ceiling", ">= 90 %", ratio, f"{ratio:.0%}", ratio >= 0.9)]


def _freshness_targets(s: Results) -> list[Results]:
    p99_us, limit_s = s["p99_ms"] * 1000, s["flush_interval_s"] + 1
    note = _size_note(s["events_per_s"], 10_000, "events/s")
    live = _live_target(s, note)
    return [
        *live,
        _row(
            "freshness p99",
            f"<= flush + 1 s = {limit_s:g} s",
            p99_us,
            fmt_us(p99_us),
            p99_us <= limit_s * 1e6,
            note=note,
        ),
    ]


def _live_target(s: Results, note: str) -> list[Results]:
    if s["live_error"] or not s["live_points"]:
        return []
    p99_us = s["live_p99_ms"] * 1000
    note = "; ".join(n for n in ("to the Watch stream, not a browser", note) if n)
    return [
        _row("live view p99", "<= 250 ms", p99_us, fmt_us(p99_us), p99_us <= 250_000, note=note)
    ]


def _scale_targets(s: Results) -> list[Results]:
    rss, all_held = s["receiver_rss_mb"], s["connected"] == s["connections"]
    note = _size_note(s["connected"], 1000, "connections")
    return [
        _row(
            "receiver RSS, N connections",
            "<= 300 MB",
            rss,
            f"{rss:.0f} MB",
            rss <= 300 and all_held,
            note=note,
        )
    ]


def _recovery_targets(s: Results) -> list[Results]:
    took = s["caught_up_s"]
    note = _size_note(s["points"], 100_000, "points")
    return [
        _row(
            "kill -9 mid-flush: caught up",
            "<= 10 s",
            took,
            f"{took:.1f} s",
            took <= 10 and s["points_in_mlflow"] == s["points"],
            note=note,
        )
    ]


_TARGETS = {
    "latency": _latency_targets,
    "ingest": _ingest_targets,
    "end_to_end": _e2e_targets,
    "freshness": _freshness_targets,
    "scale": _scale_targets,
    "recovery": _recovery_targets,
    **fleet_report.TARGETS,
}


def check_targets(results: Results) -> list[Results]:
    """Each performance target against what this run measured ("n/a": not measured)."""
    rows: list[Results] = []
    for section, targets in _TARGETS.items():
        figures = results.get(section)
        if isinstance(figures, dict) and "error" not in figures:
            rows.extend(targets(figures))
        else:
            rows.append({"target": section, "goal": "", "measured": None, "status": "n/a"})
    return rows


def _latency_lines(section: Results) -> list[str]:
    names = {
        "writer": "trackbridge Writer",
        "mlflow_async_buffered": "mlflow async, 1 s buffering",
        "mlflow_async": "mlflow async",
        "mlflow_sync": "mlflow sync",
    }
    lines = [f"    {'':<30}{'calls':>8}{'p50':>11}{'p99':>11}{'p99.9':>11}{'max':>11}"]
    for key, label in names.items():
        s = section.get(key)
        if s is None:
            continue
        cells = "".join(f"{fmt_us(s[k]):>11}" for k in ("p50_us", "p99_us", "p999_us", "max_us"))
        lines.append(f"    {label:<30}{s['calls']:>8}{cells}")
    return lines


def _section_lines(name: str, s: Results) -> list[str]:  # noqa: PLR0911 - one per section
    if name in fleet_report.LINES:
        return fleet_report.LINES[name](s)
    if name == "latency":
        return _latency_lines(s)
    if name == "ingest":
        return [
            f"    {s['clients']} client processes, batches of {s['batch_events']}, queue fsync "
            f"{s['fsync']}: {s['events_per_s']:,.0f} events/s ({s['batches_per_s']:,.0f} "
            f"batches/s, {s['events']:,} events in {s['seconds']:.1f} s); receiver used "
            f"{s['receiver_cpu_cores']:.2f} CPU cores, RSS {s['receiver_rss_mb']:.0f} MB"
        ]
    if name == "end_to_end":
        return [
            f"    through the bridge ({s['clients']} clients, {s['events']:,} points, flush "
            f"{s['flush_interval_s']:g} s): {s['bridge_events_per_s']:,.0f} events/s "
            f"({s['bridge_seconds']:.1f} s, {s['log_batch_calls']} log_batch calls, "
            f"{s['points_in_mlflow']:,} points found in MLflow)",
            f"    MLflow's own log_batch x1000 ceiling: {s['mlflow_log_batch_events_per_s']:,.0f} "
            f"events/s ({s['mlflow_log_batch_calls']} calls)  ->  ratio {s['ratio']:.0%}",
            f"    ({s['mlflow_parallel_writers']} log_batch writers on separate runs at once: "
            f"{s['mlflow_parallel_events_per_s']:,.0f} events/s)",
        ]
    if name == "freshness":
        return [
            f"    {s['clients']} clients x {s['rate_per_client']:g} points/s for "
            f"{s['seconds']:g} s, flush interval {s['flush_interval_s']:g} s: log call -> "
            f"readable in MLflow p50 {fmt_us(s['p50_ms'] * 1000)}, p99 "
            f"{fmt_us(s['p99_ms'] * 1000)}, max {fmt_us(s['max_ms'] * 1000)}",
            f"    ({s['points']:,} points, {s['missing']} never seen; MLflow's store read every "
            f"{fmt_us(s['poll_ms'] * 1000)}; {s['log_batch_calls']} log_batch calls, "
            f"{s['metrics_per_log_batch']:.0f} metrics each)",
            _live_line(s),
        ]
    if name == "system_metrics":
        return [
            f"    step p50 {fmt_us(s['step_off_p50_us'])} without the sampler, "
            f"{fmt_us(s['step_on_p50_us'])} with it sampling every {s['interval_s']:g} s "
            f"({s['samples_taken']} samples, {s['metrics_per_sample']} metrics each): mean step "
            f"{s['loop_overhead_pct']:+.2f}%",
            f"    one sample taken and logged: p50 {fmt_us(s['sample_p50_us'])}, p99 "
            f"{fmt_us(s['sample_p99_us'])}; at the default 10 s: "
            f"{s['default_interval_overhead_pct']:.4f}% of a loop's time",
        ]
    if name == "aggregate":
        return [
            f"    {s['clients']} clients x {s['rounds']} rounds, flush interval"
            f" {s['flush_interval_s']:g} s: the last client's point acknowledged -> the round's"
            f" aggregate readable in MLflow p50 {fmt_us(s['p50_ms'] * 1000)}, max"
            f" {fmt_us(s['max_ms'] * 1000)} (MLflow read every {fmt_us(s['poll_ms'] * 1000)})"
        ]
    if name == "recovery":
        return [
            f"    {s['runs']} runs x {s['points'] // s['runs']:,} points; SIGKILL with"
            f" {s['points_in_mlflow_at_kill']:,} points in MLflow and {s['events_left_at_kill']:,}"
            f" events queued: the restart served in {s['restart_ready_s']:.1f} s and had"
            f" written the rest {s['caught_up_s']:.1f} s after its start"
            f" ({s['points_per_s_after_restart']:,.0f} points/s into MLflow)",
            f"    {s['points_written_after_restart']:,.0f} points written after the restart,"
            f" {s['points_sent_again']:,.0f} of them sent again; {s['recovered_events']:,.0f}"
            f" events of the call in flight found in MLflow; {s['points_in_mlflow']:,} points in"
            " MLflow",
        ]
    return [
        f"    {s['connected']} of {s['connections']} connections held ({s['client_processes']} "
        f"client processes, all up in {s['connect_all_s']:.1f} s, {s['receiver_sockets']} "
        f"receiver sockets): receiver RSS {s['receiver_rss_mb']:.0f} MB (idle "
        f"{s['receiver_rss_idle_mb']:.0f} MB, {s['rss_per_connection_kb']:.0f} KB per "
        f"connection); publish p50 {fmt_us(s['publish_p50_ms'] * 1000)}, p99 "
        f"{fmt_us(s['publish_p99_ms'] * 1000)} with all open",
    ]


def _live_line(s: Results) -> str:
    if s["live_error"] or not s["live_points"]:
        return f"    log call -> live hub: not measured ({s['live_error'] or 'no points seen'})"
    return (
        f"    log call -> live hub (Watch stream): p50 {fmt_us(s['live_p50_ms'] * 1000)}, p99 "
        f"{fmt_us(s['live_p99_ms'] * 1000)} ({s['live_points']:,} points, "
        f"{s['live_events_dropped']} dropped by the hub)"
    )


_TITLES = {
    "latency": "(a) log_metric cost in the training loop",
    "ingest": "(b) receiver ingest, durably acknowledged",
    "end_to_end": "(c) end to end into MLflow",
    "freshness": "(d) freshness: log call -> readable in MLflow",
    "scale": "(e) scale: client connections held by one receiver",
    "recovery": "(f) recovery: receiver killed mid-flush, restarted",
    "system_metrics": "(g) system metrics: the sampler's cost to the training loop",
    "aggregate": "(h) cross-client aggregate latency after a round's last client reports",
    **fleet_report.TITLES,
}


def format_table(results: Results) -> str:
    """The human-readable report."""
    m = results["machine"]
    workers = results["options"].get("mlflow_workers")
    mlflow_server = f"--workers {workers}" if workers else "with its default workers"
    lines = [
        f"trackbridge bench ({'quick' if results['quick'] else 'full'}): {m['cpus']} CPUs, "
        f"Python {m['python']}, mlflow {m['mlflow']}, grpcio {m['grpcio']}; "
        f"{results['duration_s']:.0f} s; mlflow server {mlflow_server}",
    ]
    for name, title in _TITLES.items():
        if name not in results:
            continue
        lines.append(title)
        section = results[name]
        if "error" in section:
            lines.append(f"    FAILED: {section['error']}")
        else:
            lines.extend(_section_lines(name, section))
    lines.append("targets")
    for row in results["targets"]:
        shown = row.get("shown", "-")
        note = f"  ({row['note']})" if row.get("note") else ""
        lines.append(f"    {row['target']:<34}{row['goal']:<24}{shown:>16}  {row['status']}{note}")
    return "\n".join(lines)


def _strict(value: Any) -> Any:
    """The value with NaN or inf (a figure that could not be measured) as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def write_json(results: Results, path: Path) -> None:
    """Writes the results, replacing the file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(_strict(results), indent=2, default=str, allow_nan=False)
    tmp.write_text(text + "\n")
    tmp.replace(path)
