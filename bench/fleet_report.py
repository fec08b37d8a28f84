"""How the fleet-scale sections (job_start, parallel_flush, linger, fleet_queue, bulk) print and
what they aim for."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Results = dict[str, Any]


def _row(target: str, goal: str, measured: float, shown: str, ok: bool) -> Results:
    return {"target": target, "goal": goal, "measured": measured, "shown": shown,
            "status": "met" if ok else "missed", "note": ""}  # fmt: skip


def _job_start_targets(s: Results) -> list[Results]:
    goal = f"<= 10 s ({s['clients']} clients)"
    rows = []
    for mode in ("alone", "shared"):
        took = s[mode]["all_runs_s"]
        target = f"job start, {mode}: all runs in MLflow"
        rows.append(_row(target, goal, took, f"{took:.1f} s", took <= 10))
    return rows


def _job_start_lines(s: Results) -> list[str]:
    lines = []
    for mode, label in (("alone", "a receiver alone"), ("shared", "a receiver sharing MLflow")):
        m = s[mode]
        lines.append(
            f"    {label}: {s['clients']} clients' run starts all acknowledged in"
            f" {m['all_acked_s']:.1f} s, every run in MLflow after {m['all_runs_s']:.1f} s"
            f" ({m['runs_per_s']:.0f} runs/s); one client alone: {m['one_run_s']:.2f} s"
        )
    if "mlflow" in s:  # results of a bench from before this figure have none
        m = s["mlflow"]
        lines.append(
            f"    MLflow's own ceiling: create_run x {m['runs']} on the receiver's threads,"
            f" {m['runs_per_s']:.0f} runs/s: {s['clients']} runs need {m['job_s']:.1f} s"
        )
    return lines


def _parallel_targets(s: Results) -> list[Results]:
    pg, fresh = s["postgres"], s["postgres_freshness"]
    limit_s = fresh["flush_interval_s"] + 1
    p99_s = fresh["p99_ms"] / 1000
    return [
        _row(
            "parallel flush on PostgreSQL",
            ">= 1.5x one log_batch writer",
            pg["ratio"],
            f"{pg['ratio']:.2f}x",
            pg["ratio"] >= 1.5,
        ),
        _row(
            f"freshness p99 on PostgreSQL ({fresh['clients']} clients)",
            f"<= flush + 1 s = {limit_s:g} s",
            p99_s,
            f"{p99_s:.2f} s",
            p99_s <= limit_s and fresh["missing"] == 0,
        ),
    ]


def _parallel_lines(s: Results) -> list[str]:
    n = s["workers"]
    lines = [
        f"    {s['clients']} clients, events/s into MLflow"
        f" ({'MLflow store':<22}{'log_batch x1':>14}{'bridge, 1 writer':>18}"
        f"{f'bridge, {n} writers':>20}{'ratio':>8})"
    ]
    labels = {"sqlite": "SQLite, 1 server worker", "postgres": "PostgreSQL, 4 workers"}
    for store, label in labels.items():
        m = s[store]
        lines.append(
            f"    {label:<30}{m['log_batch_events_per_s']:>14,.0f}"
            f"{m['bridge_1_events_per_s']:>18,.0f}{m[f'bridge_{n}_events_per_s']:>20,.0f}"
            f"{m['ratio']:>7.2f}x  ({m[f'bridge_{n}_points_in_mlflow']:,} of {m['events']:,}"
            " points found in MLflow)"
        )
    f = s["postgres_freshness"]
    lines.append(
        f"    freshness on PostgreSQL with {n} writers: {f['clients']} clients x"
        f" {f['rate_per_client']:g} points/s for {f['seconds']:g} s, flush interval"
        f" {f['flush_interval_s']:g} s: readable in MLflow p50 {f['p50_ms'] / 1000:.2f} s, p99"
        f" {f['p99_ms'] / 1000:.2f} s ({f['points']:,} points, {f['missing']} never seen;"
        f" {f['log_batch_calls']} log_batch calls)"
    )
    return lines


def _linger_targets(s: Results) -> list[Results]:
    adaptive, fixed = s["adaptive"], s["fixed"]
    p99 = adaptive["live_p99_ms"]
    calls, before = adaptive["many_publishes_per_s"], fixed["many_publishes_per_s"]
    return [
        _row("live view p99, adaptive linger", "<= 250 ms", p99, f"{p99:.0f} ms", p99 <= 250),
        _row(
            f"publishes/s at {s['many_clients']} clients",
            f"<= fixed linger's {before:,.0f}",
            calls,
            f"{calls:,.0f}/s",
            calls <= before,
        ),
    ]


def _linger_lines(s: Results) -> list[str]:
    lines = []
    for mode in ("fixed", "adaptive"):
        m = s[mode]
        lines.append(
            f"    {mode} linger: {s['clients']} clients x {s['rate_per_client']:g} points/s:"
            f" live view p50 {m['live_p50_ms']:.0f} ms, p99 {m['live_p99_ms']:.0f} ms"
            f" ({m['live_points']:,} points), {m['publishes_per_s']:,.0f} publishes/s;"
            f" {s['many_clients']} clients x {s['many_rate_per_client']:g} points/s:"
            f" {m['many_publishes_per_s']:,.0f} publishes/s"
        )
    return lines


def _fleet_queue_lines(s: Results) -> list[str]:
    lines = [
        f"    {s['clients']} clients, {s['events']:,} points, {s['workers']} flush writers,"
        " MLflow on SQLite: events/s into MLflow"
    ]
    labels = {"sqlite": "the receiver's SQLite queue", "nats": "NATS JetStream, 3 nodes, R=3"}
    for name, label in labels.items():
        m = s[name]
        lines.append(
            f"    {label:<32}{m['events_per_s']:>10,.0f}  ({m['points_in_mlflow']:,} of"
            f" {s['events']:,} points found in MLflow)"
        )
    lines.append(f"    JetStream / SQLite: {s['ratio']:.2f}x")
    return lines


def script_wall_lines(s: Results) -> list[str]:
    """The section's printed lines: bridged and direct side by side, for each script."""
    load = s.get("load_1m")
    lines = [
        f"    {s['runs']} nested runs, 3 params + 3 metrics each (MLflow's tuning tutorial);"
        f" medians of {s.get('rounds', 1)} interleaved rounds"
        + (f", 1-min load {load[0]} -> {load[1]}" if load else ""),
        *_ways(s),
    ]
    if "mlflow_cpu_s" in s:  # results of a bench from before this figure have none
        cpu = s["mlflow_cpu_s"]
        lines.append(
            "    MLflow server's CPU for the script (until the receiver wrote it all): "
            + ", ".join(f"{mode} {seconds:.1f} s" for mode, seconds in cpu.items())
        )
    if "reads" in s:  # results of a bench from before this script have none
        lines.append(
            f"    {s['reads']['points']} points and params logged, each read back at once"
            " (metric history, run)"
        )
        lines.extend(_ways(s["reads"]))
    return lines


def _ways(s: Results) -> list[str]:
    """A script's wall time each way, with its ratio to direct's."""
    walls = s.get("walls_s", {})

    def each(mode: str) -> str:
        return f"  [{', '.join(f'{w:.1f}' for w in walls.get(mode, []))}]" if walls else ""

    return [
        f"    {'direct (mlflow -> MLflow)':<36}{s['direct_s']:>8.1f} s{each('direct')}",
        f"    {'import swap (through a receiver)':<36}{s['swap_s']:>8.1f} s"
        f"  ({s['swap_ratio']:.2f}x direct){each('swap')}",
        f"    {'zero-code (trackbridge:// URI)':<36}{s['zero_code_s']:>8.1f} s"
        f"  ({s['zero_code_ratio']:.2f}x direct){each('zero')}",
        *(
            f"    {label:<36}{statistics.median(walls[mode]):>8.1f} s"
            f"  ({s[ratio]:.2f}x direct){each(mode)}"
            for label, mode, ratio in (
                ("import swap, receiver --alone", "swap_alone", "swap_alone_ratio"),
                ("zero-code, receiver --alone", "zero_alone", "zero_code_alone_ratio"),
            )
            if ratio in s and mode in walls
        ),
    ]


def _bulk_targets(s: Results) -> list[Results]:
    rows = []
    for store in ("sqlite", "postgres"):
        ratio, fresh = s[store]["ratio"], s[f"{store}_freshness"]
        rows.append(_row(f"bulk writer on {store}, end to end", ">= 10x MLflow's log_batch",
                         ratio, f"{ratio:.1f}x", ratio >= 10))  # fmt: skip
        limit_s, p99_s = fresh["flush_interval_s"] + 1, fresh["p99_ms"] / 1000
        rows.append(_row(f"bulk writer on {store}, freshness p99 ({fresh['clients']} clients)",
                         f"<= flush + 1 s = {limit_s:g} s", p99_s, f"{p99_s:.2f} s",
                         p99_s <= limit_s and fresh["missing"] == 0))  # fmt: skip
    if "sqlite_job_start" in s:  # results of a bench from before this figure have none
        start = s["sqlite_job_start"]
        took = start["all_runs_s"]
        rows.append(_row(f"bulk writer on sqlite, job start ({start['clients']} clients)",
                         "<= 10 s", took, f"{took:.1f} s", took <= 10))  # fmt: skip
    return rows


def _cpu_lines(store: str, m: Results) -> list[str]:
    """Where the end to end's CPU went, and the rate that CPU allows on the machine's cores
    (results of a bench from before this figure have none)."""
    cpu, cores = m.get("bridge_bulk_cpu_s"), m.get("cores")
    if not cpu or not cores:
        return []
    total = sum(cpu.values())
    parts = ", ".join(f"{part} {seconds:.2f} s" for part, seconds in cpu.items())
    return [
        f"    {store}: CPU meanwhile: {parts} = {total:.2f} s ({total / m['events'] * 1e6:.1f} µs"
        f" a point); on {cores} cores at most {m['events'] * cores / total:,.0f} events/s"
    ]


def _bulk_lines(s: Results) -> list[str]:
    lines = [f"    {s['clients']} clients, {s['workers']} flush writers: events/s into MLflow"]
    for store in ("sqlite", "postgres"):
        m, fresh = s[store], s[f"{store}_freshness"]
        lines += [
            f"    {store}: MLflow's log_batch {m['log_batch_events_per_s']:>10,.0f}"
            f"   bridge, MLflow's store {m['bridge_mlflow_store_events_per_s']:>10,.0f}"
            f"   bridge, bulk writer {m['bridge_bulk_events_per_s']:>10,.0f}"
            f" ({m['ratio']:.1f}x log_batch; {m['bridge_bulk_points_in_mlflow']:,} of"
            f" {m['events']:,} points in MLflow)",
            f"    {store}: physical limit (plain inserts) {m['inserts_alone_events_per_s']:>10,.0f}"
            f"   bulk writer alone {m['writer_alone_events_per_s']:>10,.0f}"
            f"   (the bridge reaches {m['physical_ratio']:.0%} of the plain inserts)",
            f"    {store}: freshness p50 {fresh['p50_ms']:.0f} ms, p99 {fresh['p99_ms']:.0f} ms"
            f" ({fresh['clients']} clients x {fresh['rate_per_client']:g} points/s)",
            *_cpu_lines(store, m),
        ]
    if "sqlite_job_start" in s:
        m = s["sqlite_job_start"]
        lines.append(
            f"    sqlite: job start, {m['clients']} clients: every run in MLflow after"
            f" {m['all_runs_s']:.1f} s ({m['runs_per_s']:.0f} runs/s); MLflow's own create_run"
            f" {m['mlflow']['runs_per_s']:.0f} runs/s: {m['clients']} runs need"
            f" {m['mlflow']['job_s']:.1f} s"
        )
    return lines


TARGETS: dict[str, Callable[[Results], list[Results]]] = {
    "job_start": _job_start_targets,
    "parallel_flush": _parallel_targets,
    "linger": _linger_targets,
    "bulk": _bulk_targets,
}
"""Each section's targets."""

LINES: dict[str, Callable[[Results], list[str]]] = {
    "job_start": _job_start_lines,
    "parallel_flush": _parallel_lines,
    "linger": _linger_lines,
    "fleet_queue": _fleet_queue_lines,
    "script_wall": script_wall_lines,
    "bulk": _bulk_lines,
}
"""Each section's printed lines."""

TITLES = {
    "job_start": "(i) job start: many clients' runs created in MLflow",
    "parallel_flush": "(j) parallel flushing: several runs written to MLflow at once",
    "linger": "(k) the writer's linger: fixed 0.2 s against adaptive",
    "fleet_queue": "(l) queue backends: the receiver's SQLite queue against NATS JetStream",
    "script_wall": "(m) a script's wall time: many runs, reads after writes; bridge and direct",
    "bulk": "(n) bulk writer: straight into MLflow's database, against MLflow's own log_batch",
}
"""Each section's title."""
