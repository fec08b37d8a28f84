"""What system metrics cost a training loop: ``python -m bench.system_metrics --receiver ADDR``.

A loop of fixed CPU work steps (each also logging one metric) runs in blocks, alternately with
no sampler and with one sampling every ``--interval`` seconds into the same writer; the step
time of both is compared. The interval is far shorter than the default 10 s so that the
sampler's share shows at all; the cost at the default is the cost of one sample (taken and
logged, timed on its own) divided by 10 s. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bench.procs import ReceiverProcess
from bench.report import summarize_ns
from bench.sections import BenchContext

if TYPE_CHECKING:
    from client_sdk.writer import Writer


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _block(writer: Writer, steps: int, work: int, first_step: int) -> list[int]:
    times = []
    for step in range(first_step, first_step + steps):
        start = time.perf_counter_ns()
        _work(work)
        writer.log_metric("loss", 1.0, step=step)
        times.append(time.perf_counter_ns() - start)
    return times


def measure(receiver: str, interval_s: float, blocks: int, steps: int, work: int) -> dict[str, Any]:
    """The figures (see the module's docstring)."""
    # Imported here: the bench's own process, which embeds a receiver, never loads the client.
    from client_sdk.system_metrics import DEFAULT_INTERVAL_S, Sampler, probe
    from client_sdk.writer import Writer

    host = probe()
    if host is None:
        raise RuntimeError("psutil is missing: pip install 'trackbridge[system]'")
    writer = Writer(receiver=receiver, client_id="bench-system", job="bench-system")
    run = writer.start_run()
    sample_ns: list[int] = []
    step_of = iter(range(1 << 40))

    def emit(sample: Mapping[str, float]) -> bool:
        writer.log_metrics(sample, step=next(step_of), run=run)
        return True

    for _ in range(50):  # one sample, taken and logged, on its own
        start = time.perf_counter_ns()
        emit(host.sample())
        sample_ns.append(time.perf_counter_ns() - start)
    off: list[int] = []
    on: list[int] = []
    taken = 0
    step = 0
    _block(writer, steps // 4, work, 0)  # warm-up
    for _ in range(blocks):
        off += _block(writer, steps, work, step)
        step += steps
        sampler = Sampler(host, emit, interval_s).start()
        on += _block(writer, steps, work, step)
        step += steps
        sampler.stop()
        taken += sampler.samples
    writer.close(timeout_s=30)
    off_p50, on_p50 = statistics.median(off), statistics.median(on)
    off_mean, on_mean = statistics.fmean(off), statistics.fmean(on)
    sample = summarize_ns(sample_ns)
    return {
        "interval_s": interval_s,
        "steps": len(on),
        "samples_taken": taken,
        "metrics_per_sample": len(host.sample()),
        "gpus": host.has_gpus,
        "step_off_p50_us": off_p50 / 1000,
        "step_on_p50_us": on_p50 / 1000,
        "step_off_mean_us": off_mean / 1000,
        "step_on_mean_us": on_mean / 1000,
        "loop_overhead_pct": 100 * (on_mean - off_mean) / off_mean,
        "sample_p50_us": sample["p50_us"],
        "sample_p99_us": sample["p99_us"],
        "default_interval_overhead_pct": 100 * sample["p50_us"] / 1e6 / DEFAULT_INTERVAL_S,
    }


def section(ctx: BenchContext, receiver: ReceiverProcess) -> dict[str, Any]:
    """``trackbridge bench --only system_metrics``: this module as a client process of its own."""
    quick = ctx.options.writer_calls < 100_000  # the --quick preset
    argv = ["--receiver", receiver.address, "--blocks", "3" if quick else "5"]
    if quick:
        argv += ["--steps", "500"]  # each block still spans several samples at 0.1 s
    child = ctx.procs.start(
        "system-metrics", [sys.executable, "-m", "bench.system_metrics", *argv], json_lines=True
    )
    result = child.read(300.0)
    ctx.procs.stop(child)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.system_metrics")
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000, help="steps per block")
    parser.add_argument("--work", type=int, default=20_000, help="loop iterations per step")
    args = parser.parse_args(argv)
    figures = measure(args.receiver, args.interval, args.blocks, args.steps, args.work)
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
