"""Load generators for ``trackbridge bench``, each run as its own process.

Usage: ``python -m bench.load MODE --receiver HOST:PORT ...``. Every mode prints JSON
lines on stdout. Modes that take part in a synchronised start print ``{"ready": ...}`` first,
then wait for one line on stdin (any text; end of input counts too) before they start, and print
their result as the last line. Modes:

- ``latency``: one Writer, the cost of each ``log_metric`` call in a tight loop (ns samples).
- ``ingest``: raw ``Publish`` calls of pre-built batches as fast as the receiver acks them, so
  the receiver is measured rather than the Writer.
- ``e2e``: several Writers log a fixed number of points each as fast as they can, then flush.
- ``fresh``: several Writers log at a fixed rate for a while (MLflow keeps the log times).
- ``conns``: many channels, each with its own connection, publish one batch and stay open.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc

from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk._transport import CHANNEL_OPTIONS
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer

_PUBLISH = "/" + ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name + "/Publish"
_RPC_TIMEOUT_S = 30.0
# Without a local pool, channels with the same target and options share one connection.
_OWN_CONNECTION = (*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _ready_then_wait(payload: dict[str, Any]) -> None:
    """Reports readiness and blocks until the coordinator sends a line (or closes stdin)."""
    _emit({"ready": True, **payload})
    sys.stdin.readline()


def _raw_publisher(channel: grpc.Channel) -> Callable[..., ingest_pb2.Ack]:
    """A Publish stub that sends bytes as they are: serialising is done before the clock runs."""
    publish: Callable[..., ingest_pb2.Ack] = channel.unary_unary(
        _PUBLISH, request_serializer=None, response_deserializer=ingest_pb2.Ack.FromString
    )
    return publish


def _metric_event(key: str, i: int, now_ms: int) -> events_pb2.Event:
    event = events_pb2.Event()
    m = event.metric
    m.key, m.value, m.step, m.timestamp_ms = key, float(i), i, now_ms
    return event


def _seq_suffix(first_seq: int) -> bytes:
    # Protobuf parsers merge concatenated messages, a later scalar winning: appending this to a
    # serialised batch that has no first_seq sets it, without serialising the events again.
    return events_pb2.EventBatch(first_seq=first_seq).SerializeToString()


# -- latency -------------------------------------------------------------------------------


def _latency(args: argparse.Namespace) -> None:
    writer = Writer(args.receiver, args.client_id, args.job)
    writer.start_run()
    log = writer.log_metric
    for i in range(args.warmup):
        log("bench/warmup", float(i), step=i)
    clock = time.perf_counter_ns
    samples = [0] * args.calls
    baseline: list[int] = []
    if args.rate:
        _paced(log, samples, args.rate)
        # The same pacing around a call that does almost nothing: what any Python call costs
        # this machine once the thread has slept (caches and CPU gone cold).
        baseline = [0] * args.calls
        _paced(_bare_call, baseline, args.rate)
    else:
        for i in range(args.calls):
            t0 = clock()
            log("bench/latency", float(i), step=i)
            samples[i] = clock() - t0
    overhead = [0] * 1000
    for i in range(len(overhead)):
        t0 = clock()
        overhead[i] = clock() - t0
    delivered = writer.flush(timeout_s=args.flush_timeout)
    undelivered = writer.close(timeout_s=5.0)
    _emit(
        {
            "samples_ns": samples,
            "bare_call_ns": baseline,
            "timer_overhead_ns": sorted(overhead)[len(overhead) // 2],
            "delivered": delivered and undelivered == 0,
            "dropped": writer.dropped_events,
        }
    )


def _bare_call(key: str, value: float, step: int) -> None:
    _bare_sink[key] = (value, step)


_bare_sink: dict[str, tuple[float, int]] = {}


def _paced(log: Callable[..., None], samples: list[int], rate: float) -> None:
    """Times ``len(samples)`` calls made ``rate`` times a second: a sleep between calls when
    the gap allows one (a loop waiting on I/O), else a spin (a loop busy computing)."""
    clock = time.perf_counter_ns
    gap_ns = int(1e9 / rate)
    due = clock()
    for i in range(len(samples)):
        due += gap_ns
        t0 = clock()
        log("bench/latency", float(i), step=i)
        t1 = clock()
        samples[i] = t1 - t0
        if due - t1 > 1_000_000:
            time.sleep((due - t1) / 1e9)
        while clock() < due:
            pass


# -- ingest --------------------------------------------------------------------------------


def _ingest_batches(args: argparse.Namespace) -> tuple[bytes, bytes]:
    """The first batch (a run start and metrics) and the body every later batch reuses."""
    now_ms = time.time_ns() // 1_000_000
    ids = {"client_id": args.client_id, "job": args.job, "run_key": args.client_id}
    first = events_pb2.EventBatch(first_seq=1, **ids)
    first.events.add().run_start.start_time_ms = now_ms
    first.events.extend(_metric_event("bench/ingest", i, now_ms) for i in range(args.batch - 1))
    body = events_pb2.EventBatch(**ids)
    body.events.extend(_metric_event("bench/ingest", i, now_ms) for i in range(args.batch))
    return first.SerializeToString(), body.SerializeToString()


def _ingest(args: argparse.Namespace) -> None:
    first, body = _ingest_batches(args)
    with grpc.insecure_channel(args.receiver, options=_OWN_CONNECTION) as channel:
        grpc.channel_ready_future(channel).result(timeout=_RPC_TIMEOUT_S)
        publish = _raw_publisher(channel)
        _ready_then_wait({"client_id": args.client_id})
        start = time.time()
        deadline = time.monotonic() + args.seconds
        ack = publish(first, timeout=_RPC_TIMEOUT_S)
        seq, batches, wrong_acks = args.batch + 1, 1, 0
        while time.monotonic() < deadline:
            ack = publish(body + _seq_suffix(seq), timeout=_RPC_TIMEOUT_S)
            seq += args.batch
            batches += 1
            wrong_acks += ack.acked_seq != seq - 1
        end = time.time()
    _emit(
        {
            "start": start,
            "end": end,
            "batches": batches,
            "events": seq - 1,
            "acked_seq": ack.acked_seq,
            "wrong_acks": wrong_acks,
        }
    )


# -- e2e and fresh: Writers ----------------------------------------------------------------


def _writers(args: argparse.Namespace) -> list[Writer]:
    def config(client_id: str) -> WriterConfig:
        made = WriterConfig.resolve(args.receiver, client_id, args.job)
        # --fixed-linger: the sender always waits linger_s, as it did before it adapted.
        return made.overridden(min_linger_s=made.linger_s) if args.fixed_linger else made

    writers = [Writer(config=config(f"{args.prefix}-{i}")) for i in range(args.clients)]
    for writer in writers:
        writer.start_run()
    return writers


def _close_all(writers: Sequence[Writer], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    for writer in writers:
        writer.flush(max(0.0, deadline - time.monotonic()))
    return sum(w.close(max(0.1, deadline - time.monotonic())) for w in writers)


def _e2e(args: argparse.Namespace) -> None:
    writers = _writers(args)
    _ready_then_wait({"clients": len(writers)})
    start, cpu = time.time(), time.process_time()
    for i in range(args.points):
        for writer in writers:
            writer.log_metric("bench/e2e", float(i), step=i)
    logged = time.time()
    undelivered = _close_all(writers, args.flush_timeout)
    acked, cpu_s = time.time(), time.process_time() - cpu
    _emit({"start": start, "logged": logged, "acked": acked, "undelivered": undelivered,
           "cpu_s": cpu_s})  # fmt: skip


def _fresh(args: argparse.Namespace) -> None:
    writers = _writers(args)
    _ready_then_wait({"clients": len(writers)})
    ticks = max(1, round(args.rate * args.seconds))
    start = time.monotonic()
    late = 0
    for k in range(ticks):
        pause = start + k / args.rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            late += 1
        for writer in writers:
            # The Writer stamps each point with the wall clock of this call: the log time.
            writer.log_metric("bench/fresh", float(k), step=k)
    sending_s = time.monotonic() - start
    # Publish calls while the points were logged (the bench reads the sender's own count).
    sent = sum(w._sender.stats.batches_sent for w in writers)
    undelivered = _close_all(writers, args.flush_timeout)
    _emit(
        {
            "points_per_client": ticks,
            "late_ticks": late,
            "undelivered": undelivered,
            "publishes": sent,
            "sending_s": sending_s,
        }
    )


# -- conns -----------------------------------------------------------------------------------


def _one_batch(client_id: str, job: str, seq: int) -> bytes:
    batch = events_pb2.EventBatch(client_id=client_id, job=job, run_key=client_id, first_seq=seq)
    now_ms = time.time_ns() // 1_000_000
    if seq == 1:
        batch.events.add().run_start.start_time_ms = now_ms
    batch.events.append(_metric_event("bench/conn", seq, now_ms))
    return batch.SerializeToString()


def _conns(args: argparse.Namespace) -> None:
    channels: list[grpc.Channel] = []
    try:
        started = time.monotonic()
        publishers = []
        failed = 0
        # --at-once: every channel's first publish is sent before any answer is awaited, as a
        # job's clients (each a process of its own) start at once; a connection the receiver
        # has not taken yet is tried again within the deadline, as the SDK's retries do
        # (wait_for_ready). Else one after another.
        sent: list[tuple[str, Callable[..., ingest_pb2.Ack], grpc.Future]] = []
        for i in range(args.count):
            channel = grpc.insecure_channel(args.receiver, options=_OWN_CONNECTION)
            channels.append(channel)
            client_id = f"{args.prefix}-{i}"
            publish = _raw_publisher(channel)
            first = _one_batch(client_id, args.job, 1)
            if args.at_once:
                call = cast(grpc.UnaryUnaryMultiCallable, publish)
                answer = call.future(first, timeout=_RPC_TIMEOUT_S, wait_for_ready=True)
                sent.append((client_id, publish, answer))
                continue
            try:
                publish(first, timeout=_RPC_TIMEOUT_S)
            except grpc.RpcError:
                failed += 1
                continue
            publishers.append((client_id, publish))
        for client_id, publish, answer in sent:
            if answer.exception() is not None:
                failed += 1
                continue
            publishers.append((client_id, publish))
        connect_s = time.monotonic() - started
        _ready_then_wait({"connected": len(publishers), "failed": failed, "connect_s": connect_s})
        clock = time.perf_counter_ns
        rtt = []
        for client_id, publish in publishers:
            payload = _one_batch(client_id, args.job, 2)
            t0 = clock()
            publish(payload, timeout=_RPC_TIMEOUT_S)
            rtt.append(clock() - t0)
        _emit({"rtt_ns": rtt})
        sys.stdin.readline()  # hold every connection open until told to stop
    finally:
        for channel in channels:
            channel.close()


# -- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    sub = parser.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--receiver", required=True)
    common.add_argument("--job", default="bench")
    common.add_argument("--flush-timeout", type=float, default=60.0)

    p = sub.add_parser("latency", parents=[common])
    p.add_argument("--client-id", default="bench-latency")
    p.add_argument("--calls", type=int, default=200_000)
    p.add_argument("--warmup", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=0.0, help="calls/s (0: back to back)")
    p.set_defaults(func=_latency)

    p = sub.add_parser("ingest", parents=[common])
    p.add_argument("--client-id", required=True)
    p.add_argument("--batch", type=int, default=1000, help="events per batch")
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(func=_ingest)

    for mode, func in (("e2e", _e2e), ("fresh", _fresh)):
        p = sub.add_parser(mode, parents=[common])
        p.add_argument("--prefix", required=True, help="client ids are PREFIX-0, PREFIX-1, ...")
        p.add_argument("--clients", type=int, default=1, help="Writers in this process")
        p.add_argument("--points", type=int, default=10_000, help="e2e: points per client")
        p.add_argument("--rate", type=float, default=100.0, help="fresh: points/s per client")
        p.add_argument("--seconds", type=float, default=10.0, help="fresh: how long")
        p.add_argument("--fixed-linger", action="store_true", help="no adaptive linger")
        p.set_defaults(func=func)

    p = sub.add_parser("conns", parents=[common])
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int, default=250, help="channels in this process")
    p.add_argument("--at-once", action="store_true", help="first publishes not one by one")
    p.set_defaults(func=_conns)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one load generator."""
    args = _parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
