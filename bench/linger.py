"""Benchmark section ``linger``: the writer's adaptive linger against a fixed one, at full load
and at a thousand clients.

Two fleets log at a steady rate into one ``trackbridge serve`` process that never flushes
(what is measured is the path from the log call to the receiver): ``fresh_clients`` clients at
``fresh_rate`` points/s each, watched through the receiver's Watch stream (the live view's
feed) for each point's lag; then ``linger_clients`` clients at ``linger_rate`` points/s each.
Each fleet runs twice: with the sender's fixed 0.2 s wait (as before it adapted,
``--fixed-linger`` of ``bench.load``) and with the adaptive one (client_sdk/_linger.py). The
publish calls are the senders' own count over the time the points were logged.
"""

from __future__ import annotations

import math
from typing import Any

from bench.live import LiveWatcher
from bench.procs import (
    ReceiverProcess,
    free_port,
    load_generator,
    read_all,
    start_receiver,
    wait_receiver,
)
from bench.report import summarize_ns
from bench.sections import BenchContext

_KEY = "bench/fresh"
_PER_PROC = 25
_MANY_PER_PROC = 100
_TIMEOUT_S = 600.0


def linger(ctx: BenchContext) -> dict[str, Any]:
    """Live lag and publish calls/s, fixed linger beside adaptive."""
    opts = ctx.options
    figures: dict[str, Any] = {
        "clients": opts.fresh_clients,
        "rate_per_client": opts.fresh_rate,
        "many_clients": opts.linger_clients,
        "many_rate_per_client": opts.linger_rate,
    }
    for mode in ("fixed", "adaptive"):
        data_dir = ctx.work_dir / f"receiver-linger-{mode}"
        child = start_receiver(
            ctx.procs,
            f"receiver-linger-{mode}",
            data_dir,
            f"http://127.0.0.1:{free_port()}",  # nothing there: this receiver never flushes
            flush_interval_s=3600.0,
            max_backlog_events=10**12,
        )
        receiver = wait_receiver(child, data_dir)
        try:
            full = _fleet(ctx, receiver, mode, clients=opts.fresh_clients, rate=opts.fresh_rate,
                          per_proc=_PER_PROC, watch=True)  # fmt: skip
            many = _fleet(ctx, receiver, mode, clients=opts.linger_clients, rate=opts.linger_rate,
                          per_proc=_MANY_PER_PROC, watch=False)  # fmt: skip
        finally:
            ctx.procs.stop(child)
        figures[mode] = {**full, "many_publishes_per_s": many["publishes_per_s"]}
    return figures


def _fleet(
    ctx: BenchContext,
    receiver: ReceiverProcess,
    mode: str,
    *,
    clients: int,
    rate: float,
    per_proc: int,
    watch: bool,
) -> dict[str, Any]:
    job = f"bench-linger-{mode}-{clients}"
    procs = math.ceil(clients / per_proc)
    counts = [len(range(i, clients, procs)) for i in range(procs)]
    extra = ("--fixed-linger",) if mode == "fixed" else ()
    gens = [
        load_generator(
            ctx.procs,
            f"load-{job}-{i}",
            "fresh",
            *("--receiver", receiver.address, "--job", job, "--prefix", f"{job}-{i}"),
            *("--clients", str(n), "--rate", str(rate), "--seconds", str(ctx.options.fresh_s)),
            *extra,
        )
        for i, n in enumerate(counts)
    ]
    live = None
    try:
        read_all(gens, _TIMEOUT_S)
        if watch:
            live = LiveWatcher(receiver.address, job, _KEY, ctx.options.fresh_s + _TIMEOUT_S)
        for gen in gens:
            gen.send("go")
        results = read_all(gens, _TIMEOUT_S + ctx.options.fresh_s)
    finally:
        if live is not None:
            live.close()
        for gen in gens:
            ctx.procs.stop(gen)
    seconds = max(r["sending_s"] for r in results)
    out: dict[str, Any] = {"publishes_per_s": sum(r["publishes"] for r in results) / seconds}
    if live is not None:
        lag = summarize_ns(live.lags_ns)
        out.update(
            live_points=lag["calls"],
            live_p50_ms=lag["p50_us"] / 1000,
            live_p99_ms=lag["p99_us"] / 1000,
            live_error=live.error,
        )
    return out
