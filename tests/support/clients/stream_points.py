"""A client process for fault tests: logs a known sequence at a steady rate, then reports.

Metric ``x`` gets value ``i``, step ``i`` and timestamp ``BASE_TS + i`` for i in range(points)
(or fewer: until ``--until-file`` exists; the summary's ``points`` says how many).
Writes a JSON summary (undelivered events, slowest log call) to ``--out`` when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from client_sdk.config import WriterConfig
from client_sdk.writer import Writer

BASE_TS = 1_700_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--receiver", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--spool-dir", required=True)
    parser.add_argument("--points", type=int, required=True, help="at most (see --until-file)")
    parser.add_argument(
        "--until-file", help="stop logging once this file exists (the summary says how many)"
    )
    parser.add_argument("--rate", type=float, required=True, help="points per second; 0: flat out")
    parser.add_argument("--out", required=True)
    parser.add_argument("--param", action="append", default=[], help="key=value")
    parser.add_argument("--heartbeat", type=float, default=60.0)
    parser.add_argument("--close-timeout", type=float, default=120.0)
    parser.add_argument("--hold", action="store_true", help="log, then wait forever (to be killed)")
    parser.add_argument("--no-close", action="store_true", help="exit without close (atexit)")
    parser.add_argument("--token-file", help="a file holding this client's token")
    parser.add_argument("--max-buffer-events", type=int, default=1_000_000)
    parser.add_argument(
        "--wait-file",
        help="after logging, write OUT.logged (the points dropped so far), then wait for this"
        " file to exist before ending the run and closing",
    )
    args = parser.parse_args()

    config = WriterConfig(
        receiver=args.receiver,
        client_id=args.client_id,
        job=args.job,
        spool_dir=args.spool_dir,
        heartbeat_s=args.heartbeat,
        close_timeout_s=args.close_timeout,
        token=Path(args.token_file).read_text().strip() if args.token_file else "",
        max_buffer_events=args.max_buffer_events,
    )
    writer = Writer(config=config)
    writer.start_run()
    for item in args.param:
        key, _, value = item.partition("=")
        writer.log_param(key, value)
    slowest_ns = 0
    dropped: list[int] = []  # the points the writer dropped (its counter moved on their call)
    started = time.perf_counter()
    logged = 0
    for i in range(args.points):
        if args.until_file and os.path.exists(args.until_file):
            break
        if args.rate > 0:
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        before = writer.dropped_events
        t0 = time.perf_counter_ns()
        writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
        slowest_ns = max(slowest_ns, time.perf_counter_ns() - t0)
        if writer.dropped_events != before:
            dropped.append(i)
        logged = i + 1
    if args.wait_file:
        with open(f"{args.out}.logging", "w") as marker:
            json.dump({"dropped": dropped}, marker)
        os.replace(f"{args.out}.logging", f"{args.out}.logged")  # whole, or not there
        deadline = time.monotonic() + 600
        while not os.path.exists(args.wait_file) and time.monotonic() < deadline:
            time.sleep(0.05)
    if args.hold:
        print("logged", flush=True)
        while True:
            time.sleep(3600)
    if args.no_close:
        return  # the atexit hook must drain
    writer.end_run("FINISHED")
    result = writer.close(timeout_s=args.close_timeout)
    summary = {
        "points": logged,
        "undelivered": int(result),
        "undelivered_events": result.undelivered_events,
        "dropped_events": result.dropped_events,
        "dropped": dropped,
        "max_log_call_us": slowest_ns / 1000,
    }
    with open(args.out, "w") as out:
        json.dump(summary, out)


if __name__ == "__main__":
    main()
