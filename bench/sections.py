"""Benchmark sections against receiver processes: call cost, ingest, and scale.

Each section drives load generators (``python -m bench.load``, run apart so the server
never imports the client) and returns a JSON-ready dict of figures.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BenchOptions
from bench.procs import (
    Processes,
    ReceiverProcess,
    cpu_s,
    load_generator,
    open_sockets,
    read_all,
    rss_mb,
)
from bench.report import summarize_ns

_logger = logging.getLogger(__name__)

_READY_TIMEOUT_S = 120.0
_RESULT_GRACE_S = 120.0


@dataclass(frozen=True, slots=True)
class BenchContext:
    """What every section needs: the options, the process registry, the MLflow server."""

    options: BenchOptions
    procs: Processes
    work_dir: Path
    mlflow_uri: str = ""
    mlflow_pid: int = 0
    """The benchmark's ``mlflow server`` process (0 before it is started)."""


def writer_latency(ctx: BenchContext, receiver: ReceiverProcess) -> dict[str, Any]:
    """Per-call cost of ``Writer.log_metric`` in a client process of its own."""
    calls = ctx.options.writer_calls
    gen = load_generator(
        ctx.procs,
        "load-latency",
        "latency",
        "--receiver",
        receiver.address,
        "--calls",
        str(calls),
        "--warmup",
        str(min(10_000, calls)),
        "--rate",
        str(ctx.options.writer_rate or 0),
    )
    pacing_s = 2 * calls / ctx.options.writer_rate if ctx.options.writer_rate else 0.0
    result = gen.read(_RESULT_GRACE_S + calls / 10_000 + pacing_s)
    ctx.procs.stop(gen)
    summary = summarize_ns(result["samples_ns"])
    if result.get("bare_call_ns"):
        bare = summarize_ns(result["bare_call_ns"])
        summary.update(bare_call_p50_us=bare["p50_us"], bare_call_p99_us=bare["p99_us"])
    summary.update(
        rate_per_s=ctx.options.writer_rate or 0.0,
        timer_overhead_ns=result["timer_overhead_ns"],
        delivered=result["delivered"],
        dropped=result["dropped"],
    )
    return summary


def direct_latency(ctx: BenchContext) -> dict[str, Any]:
    """Per-call cost of ``mlflow.log_metric``: synchronous, async buffered, async."""
    opts = ctx.options
    child = ctx.procs.start(
        "mlflow-direct",
        [
            sys.executable,
            "-m",
            "bench.direct",
            "--tracking-uri",
            ctx.mlflow_uri,
            "--sync-calls",
            str(opts.mlflow_sync_calls),
            "--async-calls",
            str(opts.mlflow_async_calls),
        ],
        json_lines=True,
    )
    budget_s = _RESULT_GRACE_S + opts.mlflow_sync_calls * 0.1 + opts.mlflow_async_calls * 0.01
    result = child.read(budget_s)
    ctx.procs.stop(child)
    return {
        f"mlflow_{mode}": summarize_ns(samples) for mode, samples in result["samples_ns"].items()
    }


def ingest(ctx: BenchContext, receiver: ReceiverProcess) -> dict[str, Any]:
    """Durably acknowledged events/s of K clients sending pre-built batches at once."""
    opts = ctx.options
    gens = [
        load_generator(
            ctx.procs,
            f"load-ingest-{i}",
            "ingest",
            "--receiver",
            receiver.address,
            "--client-id",
            f"ingest-{i}",
            "--batch",
            str(opts.batch_events),
            "--seconds",
            str(opts.ingest_s),
        )
        for i in range(opts.clients)
    ]
    read_all(gens, _READY_TIMEOUT_S)
    cpu_before = cpu_s(receiver.child.pid)
    for gen in gens:
        gen.send("go")
    results = read_all(gens, _RESULT_GRACE_S + opts.ingest_s)
    receiver_cpu = cpu_s(receiver.child.pid) - cpu_before
    for gen in gens:
        ctx.procs.stop(gen)
    events = sum(r["events"] for r in results)
    batches = sum(r["batches"] for r in results)
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "clients": opts.clients,
        "batch_events": opts.batch_events,
        "fsync": opts.fsync.upper(),
        "seconds": elapsed,
        "events": events,
        "events_per_s": events / elapsed,
        "batches_per_s": batches / elapsed,
        "wrong_acks": sum(r["wrong_acks"] for r in results),
        "receiver_cpu_cores": receiver_cpu / elapsed,
        "receiver_rss_mb": rss_mb(receiver.child.pid),
    }


def scale(ctx: BenchContext, receiver: ReceiverProcess) -> dict[str, Any]:
    """N client connections, each having published a batch, held open by one receiver."""
    opts = ctx.options
    pid = receiver.child.pid
    baseline_mb, baseline_sockets = rss_mb(pid), open_sockets(pid)
    procs = min(opts.connection_procs, opts.connections)
    per_proc = math.ceil(opts.connections / procs)
    counts = [min(per_proc, opts.connections - i * per_proc) for i in range(procs)]
    started = time.monotonic()
    gens = [
        load_generator(
            ctx.procs,
            f"load-conns-{i}",
            "conns",
            "--receiver",
            receiver.address,
            "--prefix",
            f"conn-{i}",
            "--count",
            str(count),
        )
        for i, count in enumerate(counts)
        if count > 0
    ]
    readies = read_all(gens, _READY_TIMEOUT_S + opts.connections / 20)
    connect_s = time.monotonic() - started
    held_mb, held_sockets = rss_mb(pid), open_sockets(pid)
    for gen in gens:
        gen.send("go")
    rtts = read_all(gens, _RESULT_GRACE_S)
    rtt = summarize_ns([ns for r in rtts for ns in r["rtt_ns"]])
    after_mb = rss_mb(pid)
    for gen in gens:
        gen.send("stop")
        ctx.procs.stop(gen)
    connected = sum(r["connected"] for r in readies)
    return {
        "connections": opts.connections,
        "connected": connected,
        "failed": sum(r["failed"] for r in readies),
        "client_processes": len(gens),
        "connect_all_s": connect_s,
        "receiver_sockets": held_sockets - baseline_sockets,
        "receiver_rss_idle_mb": baseline_mb,
        "receiver_rss_mb": max(held_mb, after_mb),
        "rss_per_connection_kb": (max(held_mb, after_mb) - baseline_mb) * 1024 / max(1, connected),
        "publish_p50_ms": rtt["p50_us"] / 1000,
        "publish_p99_ms": rtt["p99_us"] / 1000,
    }
