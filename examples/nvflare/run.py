"""One command for a real NVFlare job (hello-pt style, 2 sites x 2 rounds, NVFlare's simulator)
whose sites log through trackbridge:

    python -m examples.nvflare [--receiver HOST:PORT] [--tracking nvflare --tracking-uri URI]

``--tracking trackbridge`` (the default): each site's ``train.py`` logs with
``client_sdk.integrations.nvflare.MLflowWriter`` to a receiver (``--receiver``, else one
started here on the embedded MLflow store in ``--data-dir`` or on ``--tracking-uri``).
``--tracking nvflare``: the same job with NVFlare's own path, its ``MLflowWriter`` on the sites
and its ``MLflowReceiver`` on the server writing ``--tracking-uri`` directly, for comparison.
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

from examples._procs import Processes, receiver_http_port, start_receiver
from examples._summary import embedded_uri, page_address, summary, wait_drained

HERE = Path(__file__).resolve().parent
JOB_NAME = "tb-hello-pt"


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.nvflare", description=__doc__)
    parser.add_argument("--tracking", choices=("trackbridge", "nvflare"), default="trackbridge")
    parser.add_argument("--receiver", help="a running receiver's host:port (else one is started)")
    parser.add_argument("--tracking-uri", help="MLflow (the started receiver's, or NVFlare's)")
    parser.add_argument("--data-dir", type=Path, help="the started receiver's data directory")
    parser.add_argument(
        "--live-page",
        help="with --receiver: its live page's address (default: its gRPC port + 1)",
    )
    parser.add_argument("--job", default="nvflare-example", help="the trackbridge job")
    parser.add_argument(
        "--experiment",
        help="the MLflow experiment (default: the job's, where the receiver's aggregates go too)",
    )
    parser.add_argument("--work-dir", type=Path, help="NVFlare's workspace and logs, kept")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the job")
    args = parser.parse_args(argv)
    if args.tracking == "nvflare" and (args.receiver or not args.tracking_uri):
        parser.error("--tracking nvflare writes MLflow itself: give --tracking-uri, no --receiver")
    if args.receiver and args.data_dir:
        parser.error("--data-dir is for the receiver started here")
    if args.experiment is None:
        args.experiment = args.job
    return args


def build_job(export_dir: Path, args: argparse.Namespace) -> Path:
    """Exports the job folder (NVFlare's Job API) and returns it."""
    sys.path.insert(0, str(HERE))  # model.py, as the sites import it
    from model import TinyNet
    from nvflare.app_opt.pt.job_config.fed_avg import FedAvgJob
    from nvflare.job_config.script_runner import ScriptRunner

    job = FedAvgJob(name=JOB_NAME, initial_model=TinyNet(), n_clients=2, num_rounds=2,
                    min_clients=2, key_metric="accuracy")  # fmt: skip
    if args.tracking == "nvflare":
        from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver

        receiver = MLflowReceiver(
            tracking_uri=args.tracking_uri,
            kw_args={
                "experiment_name": args.experiment,
                "run_name": "tb-run",
                "run_tags": {"mlflow.note.content": "run description", "custom_tag": "x"},
            },
        )
        job.to_server(receiver, "mlflow_receiver")
    script_args = f"--tracking {args.tracking} --job-name {JOB_NAME} --experiment {args.experiment}"
    for site in ("site-1", "site-2"):
        job.to(ScriptRunner(script=str(HERE / "train.py"), script_args=script_args), site)
        job.to(str(HERE / "model.py"), site)
    job.export_job(str(export_dir))
    return export_dir / JOB_NAME


def main(argv: list[str] | None = None) -> int:
    """Runs the job in NVFlare's simulator; returns the simulator's exit status."""
    args = _args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tb-nvflare-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Processes(work, {**os.environ, "PYTHONUNBUFFERED": "1"})
    started = time.monotonic()
    data_dir = args.data_dir or Path("trackbridge-data").resolve()
    try:
        receiver = args.receiver
        if args.tracking == "trackbridge" and not receiver:
            # The sites' accuracy per round, across sites, on the job's parent run.
            receiver = start_receiver(procs, data_dir, args.tracking_uri, aggregate=("accuracy",))
            print(f"receiver on {receiver} (data in {data_dir})", flush=True)
        page = ""
        if receiver:
            page = page_address(receiver, receiver_http_port(procs), args.job)
            if args.live_page:
                page = f"{args.live_page.rstrip('/')}/jobs/{args.job}"
            print(f"live page: {page}", flush=True)
        job_dir = build_job(work / "jobs", args)
        env = {"TRACKBRIDGE_RECEIVER": receiver or "", "TRACKBRIDGE_JOB": args.job}
        # The simulator itself, in a session of its own (not `job.simulator_run`, whose
        # process group a timeout here could not stop).
        cmd = [sys.executable, "-m", "nvflare.private.fed.app.simulator.simulator", str(job_dir),
               "-w", str(work / "workspace"), "-n", "2", "-t", "2"]  # fmt: skip
        sim = procs.start("simulator", cmd, env=env)
        try:
            code = sim.wait(args.timeout)
        except subprocess.TimeoutExpired:
            print(f"the simulator did not finish within {args.timeout:.0f} s", file=sys.stderr)
            code = 124
        if args.receiver:  # a receiver of one's own: the summary once it wrote the job
            wait_drained(page)
    finally:
        procs.stop(timeout_s=60)  # the simulator's leftovers, then the receiver (drains)
    print(f"simulator exited {code} after {time.monotonic() - started:.0f} s ({args.tracking})",
          flush=True)  # fmt: skip
    tracking_uri = args.tracking_uri or ("" if args.receiver else embedded_uri(data_dir))
    if tracking_uri and args.tracking == "trackbridge":
        print("\n".join(summary(tracking_uri, args.job)), flush=True)
    if args.tracking == "trackbridge" and not args.receiver:
        print(f"per-round health: trackbridge status --data-dir {data_dir}", flush=True)
    # NVFlare's receiver keeps the artifacts in its workspace (a file: artifact location).
    if code == 0 and args.work_dir is None and args.tracking == "trackbridge":
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"workspace and logs kept in {work}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
