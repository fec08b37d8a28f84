"""``trackbridge serve``: the receiver daemon's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from bridge.envvars import MLFLOW_TRACKING_URI
from server.aggregate.config import DEFAULT_DEADLINE_S, AggregateConfig
from server.cli.args import (
    UsageError,
    aggregate_pattern,
    check_free,
    host_port,
    http_listen,
    non_negative_int,
    positive_float,
    positive_int,
    writable_data_dir,
)
from server.cli.mlflow_uri import tracking_uri_problem
from server.cli.security import (
    add_serve_security_args,
    check_security_files,
    prepare_secrets,
    security_from_args,
)
from server.config import DEFAULT_DATA_DIR, DEFAULT_LISTEN, ReceiverConfig, default, redact_uri


def _default(name: str) -> str:
    """A ``ReceiverConfig`` field's default as a flag's help shows it (written once, there)."""
    return _number(default(name))


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the receiver daemon")
    p.add_argument(
        "--listen",
        type=host_port,
        metavar="HOST:PORT",
        help=f"gRPC address host:port (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--data-dir", help=f"queue and embedded store (default ./{DEFAULT_DATA_DIR})")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else an embedded SQLite store)",
    )
    p.add_argument(
        "--sink",
        action="append",
        metavar="SINK",
        help="where events go: mlflow (the default) or jsonl:DIR (JSON-lines files per job,"
        " client and run); give it twice for both (env TRACKBRIDGE_SINKS, comma-separated)",
    )
    p.add_argument(
        "--queue",
        metavar="QUEUE",
        help="sqlite (this receiver's own queue, the default) or nats://HOST:PORT[,...]: fleet"
        " mode, every receiver publishing to one NATS JetStream cluster (env TRACKBRIDGE_QUEUE)",
    )
    p.add_argument(
        "--no-flush",
        action="store_true",
        help="fleet mode: only accept and publish; trackbridge flush (or other receivers) write",
    )
    p.add_argument(
        "--flush-interval",
        type=positive_float,
        metavar="SECONDS",
        help=f"default {_default('flush_interval_s')}",
    )
    p.add_argument(
        "--alone",
        action="store_true",
        help="no other receiver writes to this MLflow: new runs are created in one call each"
        " (never give it to receivers that share an MLflow: a client moving between them could"
        " get two runs)",
    )
    p.add_argument(
        "--flush-workers",
        type=positive_int,
        metavar="N",
        help="runs written to MLflow at once, each in its order (default"
        f" {_default('flush_workers')}; 1: one by one)",
    )
    p.add_argument(
        "--no-bulk-write",
        action="store_true",
        help="on a database-backed MLflow (sqlite:///, postgresql://), write through MLflow's own"
        " SQL store instead of straight into its tables (env TRACKBRIDGE_BULK_WRITE=0)",
    )
    p.add_argument(
        "--fsync",
        choices=("normal", "full"),
        help="queue durability: normal survives process kill, full also power loss (default"
        f" {_default('sqlite_synchronous').lower()})",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"default {_default('shutdown_timeout_s')}",
    )
    p.add_argument(
        "--max-backlog",
        type=positive_int,
        metavar="EVENTS",
        help="events not yet in MLflow past which clients are told to back off (default"
        f" {_default('max_backlog_events')})",
    )
    p.add_argument(
        "--disk-reserve",
        type=non_negative_int,
        metavar="MIB",
        help="free space kept on the data directory: below it new batches are refused (clients"
        " keep them) while flushing frees space; 0 keeps none (default"
        f" {_default('disk_reserve_mib')})",
    )
    p.add_argument(
        "--publish-budget",
        type=positive_float,
        metavar="CALLS_PER_S",
        help="publish calls/s all clients together are asked to stay within: each is advised"
        " a linger of (runs publishing) / this, up to its linger_s (default"
        f" {_default('publish_budget_per_s')})",
    )
    p.add_argument(
        "--run-lease",
        type=positive_float,
        metavar="SECONDS",
        help="end a run KILLED when its client is silent this long (default"
        f" {_default('run_lease_s')})",
    )
    p.add_argument(
        "--read-scope",
        choices=("own", "job", "all"),
        help="what clients may read back through the receiver (search_runs, get_run, ...): runs"
        f" of their own client id, of their job, or all (default {_default('read_scope')}; env"
        " TRACKBRIDGE_READ_SCOPE; the viewer token reads all)",
    )
    fed = p.add_argument_group("federated rounds and cross-client aggregates")
    fed.add_argument(
        "--aggregate",
        action="append",
        type=aggregate_pattern,
        metavar="GLOB",
        help="aggregate metrics matching GLOB (fnmatch, e.g. 'eval/*') across the clients of a"
        " job: <key>/mean, /min, /max, /count, /weighted_mean on the job's parent run, per round"
        " (or step); repeatable",
    )
    fed.add_argument(
        "--aggregate-deadline",
        type=positive_float,
        metavar="SECONDS",
        help="write a round's aggregate this long after its first point even if some clients"
        f" have not reported it (default {_number(DEFAULT_DEADLINE_S)})",
    )
    fed.add_argument(
        "--round-as-step",
        action="store_true",
        help="write a point's round as MLflow's step (default: as the metric trackbridge.round"
        " beside it, at the point's own step)",
    )
    live = p.add_argument_group("live view (web page, /metrics, Watch for top and tail)")
    live.add_argument(
        "--http-listen",
        type=http_listen,
        metavar="HOST:PORT",
        help="web page and /metrics address, or 'off' (default: 127.0.0.1, gRPC port + 1;"
        " env TRACKBRIDGE_HTTP_LISTEN)",
    )
    live.add_argument(
        "--viewer-token",
        help="token the page, /metrics and Watch require; needed when --http-listen is not"
        " loopback (prefer env TRACKBRIDGE_VIEWER_TOKEN: flags show in ps)",
    )
    live.add_argument(
        "--client-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="show a client disconnected when silent this long (default"
        f" {_default('client_timeout_s')})",
    )
    p.add_argument(
        "--ready-file", type=Path, help='write {"port": N, "http_port": M} here once serving'
    )
    add_serve_security_args(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # MLflow starts its usage telemetry when first imported: an aggregator holding MLflow's
    # credentials makes no outbound calls but to MLflow (an operator may set it to false).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Everything the flags say is checked before the receiver's imports (gRPC, MLflow: seconds).
    check_security_files(args)
    try:
        config = _serve_config(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_tracking_uri(config, from_flag=args.tracking_uri is not None)
    if args.ready_file is not None and not args.ready_file.parent.is_dir():
        raise UsageError(f"no folder {args.ready_file.parent} for --ready-file")
    writable_data_dir(config.data_dir)
    if config.jsonl_dir is not None:
        writable_data_dir(config.jsonl_dir, what="JSON-lines directory", flag="--sink jsonl:DIR")
    host, _, port = config.listen.rpartition(":")
    check_free(host.strip("[]"), int(port), "--listen")
    if config.http_address is not None:
        check_free(*config.http_address, "--http-listen")
    prepare_secrets()

    from bridge.errors import StartupError
    from server.heap import freeze_startup_heap
    from server.receiver import Receiver, serve

    def ready(receiver: Receiver) -> None:
        freeze_startup_heap()  # before the first client: full collections skip MLflow's imports
        print(f"trackbridge receiver listening on port {receiver.port}", flush=True)
        if config.mlflow_sink:
            print(f"  MLflow: {redact_uri(config.effective_tracking_uri)}", flush=True)
        else:
            print("  MLflow: off (--sink without mlflow)", flush=True)
        if (runs := new_runs_line(config)) is not None:
            print(runs, flush=True)
        if config.jsonl_dir is not None:
            print(f"  JSON-lines files: {config.jsonl_dir}", flush=True)
        if config.embedded and config.mlflow_sink:
            print(f"  view it: mlflow ui --backend-store-uri {config.effective_tracking_uri}")
        if receiver.http_port is not None:
            print(f"  live view: {receiver.live_url()}", flush=True)
        if args.ready_file is not None:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": receiver.port, "http_port": receiver.http_port}))
            tmp.replace(args.ready_file)

    try:
        drained = asyncio.run(serve(config, ready))
    except StartupError as exc:  # a held port or data directory, a damaged file, ...
        raise UsageError(str(exc)) from None
    except OSError as exc:
        if "listen" not in str(exc):
            raise
        raise UsageError(
            f"{exc}: is another receiver (or anything) on that port? pass --listen HOST:PORT"
        ) from None
    return 0 if drained else 1


def new_runs_line(config: ReceiverConfig) -> str | None:
    """What a new run costs in MLflow, on the start-up banner: the one figure an operator can
    change with a flag (a script starting runs back to back waits on it; docs/explanations/
    performance.md). None without MLflow, and for the embedded store, which is always alone."""
    if not config.mlflow_sink or config.embedded:
        return None
    if config.alone:
        return "  new runs: one MLflow call each (--alone: no other receiver writes to this MLflow)"
    if config.fleet is not None:
        return "  new runs: three MLflow calls each, safe beside the fleet's other receivers"
    return (
        "  new runs: three MLflow calls each, safe beside other receivers; if no other receiver"
        " writes to this MLflow, --alone makes it one"
    )


def _check_tracking_uri(config: ReceiverConfig, *, from_flag: bool) -> None:
    """A tracking URI the receiver cannot write to is told now, in one line."""
    if not config.mlflow_sink or config.embedded:
        return
    source = "--tracking-uri" if from_flag else MLFLOW_TRACKING_URI
    problem = tracking_uri_problem(config.tracking_uri, source)
    if problem is not None:
        raise UsageError(problem)


def _serve_config(args: argparse.Namespace) -> ReceiverConfig:
    return ReceiverConfig.resolve(
        listen=args.listen,
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
        flush_interval_s=args.flush_interval,
        flush_workers=args.flush_workers,
        sqlite_synchronous=args.fsync.upper() if args.fsync else None,
        shutdown_timeout_s=args.shutdown_timeout,
        max_backlog_events=args.max_backlog,
        disk_reserve_mib=args.disk_reserve,
        publish_budget_per_s=args.publish_budget,
        run_lease_s=args.run_lease,
        http_listen=args.http_listen,
        viewer_token=args.viewer_token,
        client_timeout_s=args.client_timeout,
        security=security_from_args(args),
        read_scope=args.read_scope,
        sinks=args.sink,
        aggregate=AggregateConfig(
            tuple(args.aggregate or ()),
            DEFAULT_DEADLINE_S if args.aggregate_deadline is None else args.aggregate_deadline,
        ),
        round_as_step=args.round_as_step,
        alone=args.alone,
        bulk_write=False if args.no_bulk_write else None,
        queue=args.queue,
        flush=not args.no_flush,
    )
