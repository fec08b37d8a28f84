"""A training client for the end-to-end tests: logs a known sequence through a Writer.

Run as its own process:

    python tests/support/clients/log_sequence.py --receiver HOST:PORT --client-id ID --job JOB \
        --index N --status FINISHED [--run-name NAME]

``plan(index, client_id)`` is the single description of what is logged; the tests import it to
know exactly what MLflow must end up holding. Exit code 0 only when nothing was left undelivered.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

BASE_TIMESTAMP_MS = 1_700_000_000_000


def plan(index: int, client_id: str) -> dict[str, Any]:
    """The calls one client makes, and what they must leave in MLflow.

    Returns a dict with ``calls`` (in order), ``points`` (expected metric points as
    ``(key, value, step, timestamp_ms)``), ``params`` and ``tags`` (final user tags).
    """
    t0 = BASE_TIMESTAMP_MS + index * 1_000_000
    calls: list[tuple[Any, ...]] = []
    points: list[tuple[str, float, int, int]] = []

    def metric(key: str, value: float, step: int, ts: int) -> None:
        calls.append(("log_metric", key, value, step, ts))
        points.append((key, float(value), step, ts))

    start_tags = {"framework": "numpy", "site": client_id}
    calls.append(("set_tag", "phase", "warmup"))
    params = {
        "lr": 0.01 * (index + 1),
        "batch_size": 32,
        "optimizer": "adam",
        "client.index": index,
    }
    calls.append(("log_params", params))
    for step in range(25):
        ts = t0 + 10 * step
        metric("loss", 2.0 / (step + 1) + index / 7, step, ts)
        metric("lr/group.0", 0.1 * 0.9**step, step, ts + 1)
        if step % 5 == 0:
            # several keys at one step and time, through log_metrics
            values = {"acc": (step + index) / 30, "val/loss": 1.0 / (step + 3)}
            calls.append(("log_metrics", values, step, ts + 2))
            points.extend((k, float(v), step, ts + 2) for k, v in values.items())
        if step == 12:
            calls.append(("log_param", "seed", 1234 + index))
            calls.append(("log_param", "batch_size", 32))  # the same value again: allowed
    # The same step again, later, with another value: MLflow keeps both points.
    metric("loss", -1.5e-7 * (index + 1), 24, t0 + 1_000)
    # Integer values, a large step and a negative one.
    metric("epoch", 3 + index, 2**40, t0 + 2_000)
    metric("epoch", 0, -1, t0 + 2_001)
    calls.append(("set_tags", {"phase": "done", "team": "fl-lab"}))

    expected_params = {k: str(v) for k, v in params.items()}
    expected_params["seed"] = str(1234 + index)
    tags = dict(start_tags)
    tags.update({"phase": "done", "team": "fl-lab"})
    return {
        "start_tags": start_tags,
        "calls": calls,
        "points": points,
        "params": expected_params,
        "tags": tags,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--run-name")
    args = parser.parse_args()

    from client_sdk.writer import Writer

    todo = plan(args.index, args.client_id)
    writer = Writer(receiver=args.receiver, client_id=args.client_id, job=args.job)
    writer.start_run(args.run_name, tags=todo["start_tags"])
    for call in todo["calls"]:
        name = call[0]
        if name == "log_metric":
            _, key, value, step, ts = call
            writer.log_metric(key, value, step=step, timestamp=ts)
        elif name == "log_metrics":
            _, values, step, ts = call
            writer.log_metrics(values, step=step, timestamp=ts)
        elif name == "log_param":
            writer.log_param(call[1], call[2])
        elif name == "log_params":
            writer.log_params(call[1])
        elif name == "set_tag":
            writer.set_tag(call[1], call[2])
        elif name == "set_tags":
            writer.set_tags(call[1])
        else:
            raise AssertionError(name)
    writer.end_run(args.status)
    undelivered = writer.close(timeout_s=60)
    print(json.dumps({"undelivered": undelivered, "dropped": writer.dropped_events}), flush=True)
    return 0 if undelivered == 0 and writer.dropped_events == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
