"""One command for a real Flower federation on loopback that logs through trackbridge:

    python -m examples.flower [--receiver HOST:PORT] [--sites 2] [--rounds 2] [--job NAME]

Starts Flower's Deployment Engine as local processes (a SuperLink, one SuperNode per site,
and the ServerApp and ClientApp processes they spawn: no Ray), runs ``examples/flower/app``
with ``flwr run``, and stops everything. Without ``--receiver`` it starts a ``trackbridge
serve`` of its own (the embedded MLflow store in ``--data-dir``, or ``--tracking-uri``) and
prints how to open MLflow on it afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from examples._procs import (
    BIN,
    Processes,
    free_port,
    port_open,
    receiver_http_port,
    start_receiver,
    wait_for,
)
from examples._summary import embedded_uri, page_address, summary, wait_drained

APP = Path(__file__).resolve().parent / "app"
FAST_SUPERNODE = Path(__file__).resolve().parent / "fast_supernode.py"
AGGREGATED = ("eval/*", "train/loss")
"""What the example's own receiver aggregates across the sites, per round (pass the same
``--aggregate`` flags to a receiver of your own)."""


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.flower", description=__doc__)
    parser.add_argument("--receiver", help="a running receiver's host:port (else one is started)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow for the receiver started here (with --receiver: the MLflow it writes to,"
        " read for the closing summary)",
    )
    parser.add_argument("--data-dir", type=Path, help="that receiver's data directory")
    parser.add_argument(
        "--live-page",
        help="with --receiver: its live page's address (default: its gRPC port + 1)",
    )
    parser.add_argument("--job", default="flower-example", help="the trackbridge job")
    parser.add_argument("--sites", type=int, default=2, help="SuperNodes (sites), one each")
    parser.add_argument("--rounds", type=int, default=2, help="federated rounds")
    parser.add_argument("--local-epochs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the run")
    parser.add_argument("--work-dir", type=Path, help="Flower's home and the logs, kept")
    parser.add_argument("--no-fast-poll", action="store_true", help="Flower's stock 3 s polls")
    args = parser.parse_args(argv)
    if args.sites < 1 or args.rounds < 1:
        parser.error("--sites and --rounds must be at least 1")
    if args.receiver and args.data_dir:
        parser.error("--data-dir is for the receiver started here")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the federation; returns ``flwr run``'s exit status."""
    args = _args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tb-flower-"))
    home = work / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1.0" if args.no_fast_poll else "0.1",
        "PYTHONUNBUFFERED": "1",
        # The SuperLink and SuperNodes start flower-superexec and the apps by name.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    receiver_procs, flower = Processes(work, env), Processes(work, env)
    started = time.monotonic()
    data_dir = args.data_dir or Path("trackbridge-data").resolve()
    try:
        receiver = args.receiver
        if not receiver:
            receiver = start_receiver(
                receiver_procs, data_dir, args.tracking_uri, aggregate=AGGREGATED
            )
            print(f"receiver on {receiver} (data in {data_dir})", flush=True)
        page = page_address(receiver, receiver_http_port(receiver_procs), args.job)
        if args.live_page:
            page = f"{args.live_page.rstrip('/')}/jobs/{args.job}"
        print(f"live page: {page}", flush=True)
        code = _federate(args, flower, home, receiver)
        if args.receiver:  # a receiver of one's own: the summary once it wrote the job
            wait_drained(page)
    finally:
        flower.stop()
        receiver_procs.stop(timeout_s=60)  # drains what it holds to MLflow
    took = time.monotonic() - started
    print(f"flwr run exited {code} after {took:.0f} s; {args.sites} sites x {args.rounds} rounds,"
          f" job {args.job!r}", flush=True)  # fmt: skip
    tracking_uri = args.tracking_uri or ("" if args.receiver else embedded_uri(data_dir))
    if tracking_uri:
        print("\n".join(summary(tracking_uri, args.job)), flush=True)
    if not args.receiver:
        print(f"per-round health: trackbridge status --data-dir {data_dir}", flush=True)
    if code == 0 and args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}", file=sys.stderr, flush=True)
    return code


def _federate(args: argparse.Namespace, flower: Processes, home: Path, receiver: str) -> int:
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link}"\n'
        "insecure = true\n"
    )
    superlink = flower.start(
        "superlink",
        [BIN / "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", link,
         "--disable-runtime-dependency-installation"],
    )  # fmt: skip
    wait_for("the SuperLink", lambda: port_open(link), 60, superlink)
    node = [BIN / "flower-supernode"] if args.no_fast_poll else [sys.executable, FAST_SUPERNODE]
    for site in range(args.sites):
        flower.start(
            f"supernode-{site}",
            [*node, "--insecure", "--superlink", f"127.0.0.1:{link}", "--port", free_port(),
             "--max-wait-time", "60",
             "--node-config", f"partition-id={site} num-partitions={args.sites}"],
        )  # fmt: skip
    run_config = (
        f'receiver="{receiver}" job="{args.job}" num-server-rounds={args.rounds}'
        f" local-epochs={args.local_epochs} min-nodes={args.sites}"
        f" fast-poll={'false' if args.no_fast_poll else 'true'}"
    )
    cmd = [BIN / "flwr", "run", APP, "local", "--stream", "--run-config", run_config]
    log = flower.work / "flwr-run.log"
    try:
        with log.open("wb") as out:
            done = subprocess.run(
                [str(c) for c in cmd],
                check=False,
                env=flower.env,
                cwd=flower.work,
                timeout=args.timeout,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    except subprocess.TimeoutExpired:
        print(f"flwr run did not finish within {args.timeout:.0f} s", file=sys.stderr)
        return 124
    if done.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
