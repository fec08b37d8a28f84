"""What the live page costs a browser under load: N clients x M metrics, S steps a second.

    .venv/bin/python bench/dev/page_load.py [--clients 100] [--metrics 20] [--rate 5] [--seconds 20]

An embedded receiver (no MLflow flushing: an address nothing listens on), one publisher thread
sending every client's batch of M metrics S times a second over gRPC, and the job's page in
headless Chromium (Debian's, through playwright) with the first 3 metrics charted. Prints the
updates and bytes the page received per second, the share of the time its main thread was
busy, and its longest task. Figures, not a test.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bridge.pb.v1 import events_pb2, ingest_pb2_grpc
from server.background import BackgroundReceiver
from server.config import ReceiverConfig

_COUNT_SSE = """
  window.__sse = { n: 0, bytes: 0 };
  const Original = window.EventSource;
  window.EventSource = function (url, options) {
    const source = new Original(url, options);
    source.addEventListener("message", (e) => { window.__sse.n += 1; window.__sse.bytes += e.data.length; });
    return source;
  };
  window.EventSource.prototype = Original.prototype;
  window.__long = { n: 0, total: 0, max: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      window.__long.n += 1; window.__long.total += e.duration; window.__long.max = Math.max(window.__long.max, e.duration);
    }
  }).observe({ type: "longtask", buffered: true });
"""  # noqa: E501


def _publish(address: str, args: argparse.Namespace, stop: threading.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        stub: Any = ingest_pb2_grpc.IngestStub(channel)  # type: ignore[no-untyped-call]
        seq = dict.fromkeys(range(args.clients), 1)
        step = 0
        while not stop.is_set():
            tick = time.monotonic()
            for c in range(args.clients):
                batch = events_pb2.EventBatch(
                    client_id=f"site-{c + 1}", job="load", run_key=f"run-{c}", first_seq=seq[c]
                )
                now_ms = time.time_ns() // 1_000_000
                for k in range(args.metrics):
                    m = batch.events.add().metric
                    m.key, m.step, m.timestamp_ms = f"m{k:02d}", step, now_ms
                    m.value = 1.0 / (1 + step) + 0.01 * ((c * 7 + k) % 13)
                stub.Publish(batch, timeout=10)
                seq[c] += args.metrics
            step += 1
            stop.wait(max(0.0, 1 / args.rate - (time.monotonic() - tick)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5.0, help="steps per second per client")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        config = ReceiverConfig(
            listen="127.0.0.1:0",
            data_dir=Path(tmp),
            tracking_uri=dead,
            http_listen="127.0.0.1:0",
            max_backlog_events=10**12,
            shutdown_timeout_s=1,
        )
        background = BackgroundReceiver(config, owns_process=True)
        port = background.start()
        stop = threading.Event()
        sender = threading.Thread(target=_publish, args=(f"127.0.0.1:{port}", args, stop))
        sender.start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
                )
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(_COUNT_SSE)
                page.goto(background.receiver.live_url("load") + "#metrics=m00,m01,m02")
                time.sleep(5)  # every client known, charts built
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")

                def sample() -> tuple[float, float, dict[str, Any], dict[str, Any]]:
                    metrics = {
                        m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                    }
                    sse, long = page.evaluate("() => [window.__sse, window.__long]")
                    return time.monotonic(), metrics["TaskDuration"], dict(sse), dict(long)

                t0, busy0, sse0, long0 = sample()
                time.sleep(args.seconds)
                t1, busy1, sse1, long1 = sample()
                browser.close()
        finally:
            stop.set()
            sender.join(timeout=10)
            background.stop()
    span = t1 - t0
    print(
        f"{args.clients} clients x {args.metrics} metrics x {args.rate:g} steps/s"
        f" ({args.clients * args.metrics * args.rate:,.0f} events/s), {span:.0f} s:"
        f" {(sse1['n'] - sse0['n']) / span:.1f} updates/s,"
        f" {(sse1['bytes'] - sse0['bytes']) / span / 1000:,.0f} KB/s,"
        f" main thread busy {100 * (busy1 - busy0) / span:.0f} %,"
        f" {long1['n'] - long0['n']} long tasks, longest of the visit {long1['max']:.0f} ms"
    )


if __name__ == "__main__":
    main()
