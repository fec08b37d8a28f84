"""Damaged spools: a truncated database or a torn WAL never raises into the loop or breaks
``trackbridge sync``; the good spools are delivered, each bad one is reported in one line, and
what was lost is counted exactly (against the spool's ledger) and recorded by the receiver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.bystander import start_bystander
from tests.support.faults import TcpProxy, expected_points, metric_points, read_result
from tests.support.procs import ReceiverProcess, wait_until
from tests.support.spools import (
    run_of,
    spool_of,
    spool_then_kill,
    status,
    sync,
    tear_wal,
    truncate_main_file,
)

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
TAG_DROPPED = "trackbridge.dropped_events"


def _receiver_left_waiting(start_receiver: Callable[..., ReceiverProcess]) -> ReceiverProcess:
    # The damaged spool's run lost its start with it: the receiver keeps the loss report of
    # that run queued until another receiver creates the run, or a lease passes (then it
    # creates it itself). So it stops with a batch still queued: exit status 1.
    return start_receiver(shutdown_timeout_s=5, expected_exit_code=1)


def _points_of(client: Any, job: str, client_id: str, count: int) -> list[Any]:
    run = wait_until(lambda: run_of(client, job, client_id), 120, what=f"{client_id}'s run")
    wait_until(lambda: len(client.get_metric_history(run.info.run_id, "x")) >= count, 120,
               interval_s=0.5, what=f"{count} points of {client_id}")  # fmt: skip
    return metric_points(client, run.info.run_id, "x")


@pytest.mark.timeout(300)
def test_a_truncated_spool_is_moved_aside_and_the_next_writer_carries_on(
    stream_client: Any,
    tmp_path: Path,
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    receiver = _receiver_left_waiting(start_receiver)
    bystander = start_bystander(receiver.address, tmp_path)
    try:
        _truncated_then_restarted(stream_client, tmp_path, receiver, mlflow_client, job, proxy)
    except BaseException:
        bystander.stop()
        raise
    bystander.assert_delivered(mlflow_client)


def _truncated_then_restarted(
    stream_client: Any,
    tmp_path: Path,
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    spool = tmp_path / "spool"
    spool_then_kill(stream_client, proxy, "site-b", job, spool, tmp_path / "o1.json",
                    points=3000)  # fmt: skip
    damaged = spool_of(spool, "site-b")
    truncate_main_file(damaged)
    proxy.set_upstream(receiver.port)
    proxy.restore()
    # The same client starts again: it must not raise, and its new run is delivered.
    again = stream_client(proxy.address, "site-b", job, spool, tmp_path / "o2.json",
                          points=300, rate=0)  # fmt: skip
    assert again.wait(timeout=120) == 0, (tmp_path / "o2.log").read_text()[-3000:]
    assert read_result(tmp_path / "o2.json")["undelivered"] == 0
    log = (tmp_path / "o2.log").read_text()
    assert f"the spool {damaged} could not be read" in log, log[-3000:]
    assert Path(f"{damaged}.corrupt").exists(), "the damaged database is kept, aside"
    assert not damaged.exists() and not Path(f"{damaged}.lock").exists(), "accounted for"
    assert _points_of(mlflow_client, job, "site-b", 300) == expected_points(300, BASE_TS)

    # The receiver knows what the damaged spool held (its ledger: the start and 3000 points).
    def loss_shown() -> str:
        text = status(receiver.data_dir)
        return text if "its client lost 3001 events" in text else ""

    text = wait_until(loss_shown, 60, what="the loss in trackbridge status")
    assert "events 1-3000 never reached this receiver" in text


@pytest.mark.timeout(300)
def test_sync_delivers_the_good_spools_and_reports_the_bad_one(
    stream_client: Any,
    tmp_path: Path,
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    receiver = _receiver_left_waiting(start_receiver)
    spool = tmp_path / "spool"
    spool_then_kill(stream_client, proxy, "site-a", job, spool, tmp_path / "a.json",
                    points=1500)  # fmt: skip
    spool_then_kill(stream_client, proxy, "site-b", job, spool, tmp_path / "b.json",
                    points=3000)  # fmt: skip
    damaged = spool_of(spool, "site-b")
    truncate_main_file(damaged)
    proxy.set_upstream(receiver.port)
    proxy.restore()
    done = sync(str(spool), "--timeout", "120")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("site-a-") and "events delivered 1501, left 0, lost 0" in line
               for line in lines), done.stdout  # fmt: skip
    bad = [line for line in lines if line.startswith(damaged.name)]
    assert any("events delivered 0, left 0, lost 3001" in line for line in bad), done.stdout
    assert any("could not be read" in line for line in bad), done.stdout
    assert _points_of(mlflow_client, job, "site-a", 1500) == expected_points(1500, BASE_TS)
    assert Path(f"{damaged}.corrupt").exists()
    # Run again: nothing left to deliver, nothing lost twice; the kept file is mentioned.
    again = sync(str(spool), "--timeout", "60")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{damaged.name}.corrupt: a damaged spool database" in again.stdout


@pytest.mark.parametrize("how", ["truncate", "garble"])
@pytest.mark.timeout(300)
def test_sync_counts_what_a_torn_wal_lost(
    how: str,
    stream_client: Any,
    tmp_path: Path,
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
) -> None:
    points = 20_000
    spool = tmp_path / "spool"
    # At 5000 points a second the spool takes many commits: the tear keeps the first ones.
    spool_then_kill(stream_client, proxy, "site-t", job, spool, tmp_path / "t.json",
                    points=points, rate=5000)  # fmt: skip
    tear_wal(spool_of(spool, "site-t"), how)
    proxy.set_upstream(receiver.port)
    proxy.restore()
    done = sync(str(spool), "--timeout", "120")
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if "events delivered" in x)
    delivered = int(line.split("events delivered ")[1].split(",")[0])
    lost = int(line.split("lost ")[1].split(";")[0])
    assert delivered > 1 and lost > 0, line
    assert delivered + lost == points + 1, line  # the run start and every point
    assert f"events {delivered + 1}-{points + 1} of run" in done.stdout, done.stdout
    # MLflow has exactly the points before the tear, and the loss on the run.
    kept = delivered - 1
    assert _points_of(mlflow_client, job, "site-t", kept) == expected_points(kept, BASE_TS)
    run = run_of(mlflow_client, job, "site-t")

    def tagged() -> str:
        return str(mlflow_client.get_run(run.info.run_id).data.tags.get(TAG_DROPPED, ""))

    assert wait_until(tagged, 60, what="the loss on the MLflow run") == str(lost)
