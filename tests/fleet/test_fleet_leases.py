"""Fleet-wide run leases: a run whose client streams through receiver A (which only accepts)
is flushed by receiver B and a lone flusher, which never hear the client themselves. A tells
the fleet it heard the client (core NATS ``tb.heard``), so neither ends the run while the client
lives, however many leases go by; once the client is gone and nobody hears it for
``--run-lease``, the run is ended KILLED, with every point it sent. A real 1-node NATS
server, real receiver, flusher and client processes, the real MLflow server."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from server.flush.run_tags import TAG_HEARD
from tests.support.faults import expected_points, metric_points, start_stream_client
from tests.support.fleet import launch_flusher
from tests.support.mlflow_reads import child_runs, job_runs
from tests.support.nats import NatsCluster
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
POINTS = 200
LEASE_S = 12.0
"""Short, but above the 5 s between a receiver's word that it heard a run."""


def _the_run(client: Any, job: str) -> Any | None:
    runs = child_runs(job_runs(client, job))
    return runs[0] if len(runs) == 1 else None


def _heard_ms(client: Any, job: str) -> int:
    run = _the_run(client, job)
    heard = run.data.tags.get(TAG_HEARD, "") if run is not None else ""
    return int(heard) if heard.isdigit() else 0


@pytest.mark.timeout(420)
def test_a_run_heard_through_one_receiver_outlives_the_others_leases_then_ends_killed(
    one_nats_node: NatsCluster,
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    url = one_nats_node.queue_url(partitions=4, ack_wait_s=5)
    lease = ("--run-lease", str(LEASE_S))
    processes: list[ReceiverProcess] = []
    client = None
    try:
        a = launch_receiver(
            tmp_path, mlflow_server.uri, extra_args=("--queue", url, "--no-flush", *lease)
        )
        b = launch_receiver(tmp_path, mlflow_server.uri, extra_args=("--queue", url, *lease))
        flusher = launch_flusher(tmp_path, mlflow_server.uri, url, lease)
        processes += [a, b, flusher]
        out = tmp_path / "out-leased.json"
        client = start_stream_client(
            a.address, "site-leased", job, tmp_path / "spool-leased", out,
            points=POINTS, rate=100.0, extra=("--heartbeat", "1", "--hold"),
        )  # fmt: skip

        def all_points() -> bool:
            run = _the_run(mlflow_client, job)
            return (
                run is not None
                and len(mlflow_client.get_metric_history(run.info.run_id, "x")) >= POINTS
            )

        wait_until(all_points, 120, interval_s=0.5, what="every point in MLflow")
        quiet_since_ms = time.time_ns() // 10**6

        # The client now only heartbeats, to A. B and the flusher hear of it from A alone: the
        # stamp they put on the run moves on past two leases of quiet, the run still RUNNING.
        def heard_long_after() -> bool:
            run = _the_run(mlflow_client, job)
            assert run is not None and run.info.status == "RUNNING", (
                f"the run was ended while A heard its client:\n{b.log_tail()}\n{flusher.log_tail()}"
            )
            return _heard_ms(mlflow_client, job) >= quiet_since_ms + 2 * LEASE_S * 1000

        wait_until(
            heard_long_after,
            120,
            interval_s=1.0,
            what="the run heard through A two leases after its last point",
        )
        run = _the_run(mlflow_client, job)
        assert run is not None and run.info.status == "RUNNING", a.log_tail()
        assert client.poll() is None, "the client was to hold"

        client.send_signal(signal.SIGKILL)  # gone without a word: nobody hears it any more
        client.wait(timeout=20)
        wait_until(
            lambda: (r := _the_run(mlflow_client, job)) is not None and r.info.status == "KILLED",
            LEASE_S * 2 + 60,
            interval_s=1.0,
            what="the run KILLED once its lease ran out",
        )
        run = _the_run(mlflow_client, job)
        assert run is not None
        assert metric_points(mlflow_client, run.info.run_id, "x") == expected_points(
            POINTS, BASE_TS
        )
        for process in processes:
            assert process.stop() == 0, process.log_tail()
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(timeout=10)
        for process in processes:
            if process.proc.poll() is None:
                process.proc.kill()
            process.proc.wait(timeout=10)
