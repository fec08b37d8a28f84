"""Artifacts are as safe as metrics: staged durably at the call, delivered exactly once by the
next writer of the same destination or by ``trackbridge sync``, and refused at the call (with
nothing else lost) when they cannot be staged. Real processes, real files, real MLflow."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest

from client_sdk import ArtifactNotStaged, Writer, WriterConfig
from tests.support.disk import tmpfs
from tests.support.faults import TcpProxy, expected_points, metric_points
from tests.support.procs import CLIENTS_DIR, ReceiverProcess, wait_until
from tests.support.spools import run_of, sync

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
MB = 1024 * 1024
CLIENT = CLIENTS_DIR / "log_artifact.py"


class SlowProxy(TcpProxy):
    """A TcpProxy that can hold its throughput to ``bytes_per_s`` (None: full speed)."""

    def __init__(self, upstream_port: int) -> None:
        self.bytes_per_s: float | None = None
        super().__init__(upstream_port)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if self.bytes_per_s:
                    time.sleep(len(data) / self.bytes_per_s)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy() -> Iterator[SlowProxy]:
    p = SlowProxy(upstream_port=1)
    yield p
    p.close()


@pytest.fixture
def clients() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _start(started: list[subprocess.Popen[bytes]], receiver: str, client_id: str, job: str,
           spool: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:  # fmt: skip
    cmd = [sys.executable, str(CLIENT), "--receiver", receiver, "--client-id", client_id,
           "--job", job, "--spool-dir", str(spool), "--out", str(out), *extra]  # fmt: skip
    with out.with_suffix(".log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    started.append(proc)
    return proc


def _sha256_in_mlflow(client: Any, run_id: str, path: str, tmp_path: Path) -> str:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=path,
        dst_path=str(tmp_path / run_id),
        tracking_uri=client.tracking_uri,
    )
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def _artifact_files(client: Any, run_id: str, path: str = "") -> list[str]:
    out = []
    for info in client.list_artifacts(run_id, path or None):
        out.extend(_artifact_files(client, run_id, info.path) if info.is_dir else [info.path])
    return out


def _delivered_rows(data_dir: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"{(data_dir / 'artifacts.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT artifact_path, file_name FROM delivered").fetchall()
        assert conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0] == 0
    finally:
        conn.close()
    return [(r[0], r[1]) for r in rows]


@pytest.mark.timeout(300)
def test_a_50_mb_artifact_logged_while_the_receiver_is_down_is_delivered_by_sync(
    clients: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    proxy: SlowProxy,
) -> None:
    spool = tmp_path / "spool"
    out = tmp_path / "c.json"
    proxy.cut()
    proc = _start(clients, proxy.address, "site-art", job, spool, out,
                  "--size", str(50 * MB), "--close-timeout", "3")  # fmt: skip
    assert proc.wait(timeout=120) == 0, out.with_suffix(".log").read_text()[-3000:]
    result = json.loads(out.read_text())
    assert result["artifacts_left"] == 1 and result["undelivered_events"] == 102
    proxy.set_upstream(receiver.port)
    proxy.restore()
    done = sync(str(spool), "--timeout", "120")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "events delivered 102, left 0, lost 0; artifacts delivered 1, left 0" in done.stdout
    assert not list(spool.glob("*.spool.db")) and not list(spool.glob("artifacts/*/*"))
    run = wait_until(lambda: run_of(mlflow_client, job, "site-art"), 60, what="the run")

    def there() -> bool:
        return _artifact_files(mlflow_client, run.info.run_id) == ["checkpoints/model.bin"]

    wait_until(there, 120, interval_s=0.5, what="the artifact in MLflow")
    got = _sha256_in_mlflow(mlflow_client, run.info.run_id, "checkpoints/model.bin", tmp_path)
    assert got == result["sha256"]
    assert metric_points(mlflow_client, run.info.run_id, "x") == expected_points(100, BASE_TS)


@pytest.mark.timeout(300)
def test_a_client_killed_mid_upload_has_its_artifact_delivered_once_by_the_next_writer(
    clients: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    proxy: SlowProxy,
) -> None:
    spool = tmp_path / "spool"
    out = tmp_path / "dead.json"
    proxy.set_upstream(receiver.port)
    proxy.bytes_per_s = 2 * MB  # 20 MB take 10 s: time to kill the client mid-upload
    proc = _start(clients, proxy.address, "site-k", job, spool, out, "--size", str(20 * MB),
                  "--hold")  # fmt: skip
    staging = receiver.data_dir / "artifact-staging"

    def uploading() -> bool:
        return any(p.stat().st_size > MB for p in staging.glob("*/*.part"))

    wait_until(uploading, 60, interval_s=0.05, what="the upload to be under way")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sha256 = json.loads(Path(f"{out}.logged").read_text())["sha256"]
    try:
        wait_until(lambda: not list(staging.glob("*/*.part")), 60, what="the receiver to drop it")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nreceiver log:\n{receiver.log_tail()}") from None
    proxy.bytes_per_s = None
    # The same client starts again (same receiver address, job, spool): it delivers the file.
    again = _start(clients, proxy.address, "site-k", job, spool, tmp_path / "again.json",
                   "--points", "10")  # fmt: skip
    assert again.wait(timeout=120) == 0, (tmp_path / "again.log").read_text()[-3000:]
    result = json.loads((tmp_path / "again.json").read_text())
    assert (result["undelivered_events"], result["artifacts_left"]) == (0, 0)
    assert not list(spool.glob("artifacts/*/*")), "nothing is left staged"

    runs = wait_until(lambda: _runs_of(mlflow_client, job, "site-k", 2), 60, what="both runs")
    dead = next(r for r in runs if len(mlflow_client.get_metric_history(r.info.run_id, "x")) > 10)

    def there() -> bool:
        return _artifact_files(mlflow_client, dead.info.run_id) == ["checkpoints/model.bin"]

    wait_until(there, 120, interval_s=0.5, what="the artifact in MLflow")
    assert _sha256_in_mlflow(mlflow_client, dead.info.run_id, "checkpoints/model.bin",
                             tmp_path) == sha256  # fmt: skip
    # Uploaded to MLflow once (the receiver remembers each delivered upload).
    assert _delivered_rows(receiver.data_dir) == [("checkpoints", "model.bin")]


def _runs_of(client: Any, job: str, client_id: str, count: int) -> list[Any]:
    from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs

    runs = [
        r for r in child_runs(job_runs(client, job)) if r.data.tags.get(TAG_CLIENT_ID) == client_id
    ]
    return runs if len(runs) == count else []


@pytest.mark.timeout(240)
def test_an_artifact_too_big_for_the_staging_disk_is_refused_at_the_call_and_nothing_else_is_lost(
    tmp_path: Path, receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * MB))
    small = tmp_path / "notes.txt"
    small.write_bytes(os.urandom(20_000))
    with tmpfs(tmp_path / "tiny", "3m") as spool:
        config = WriterConfig(receiver=receiver.address, client_id="site-tiny", job=job,
                              spool_dir=str(spool))  # fmt: skip
        writer = Writer(config=config)
        writer.start_run()
        for i in range(1000):
            writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
        with pytest.raises(ArtifactNotStaged) as caught:
            writer.log_artifact(big, "checkpoints")
        assert caught.value.errno == errno.ENOSPC
        message = str(caught.value)
        assert "big.bin" in message and "free" in message and str(spool) in message, message
        for i in range(1000, 2000):
            writer.log_metric("x", float(i), step=i, timestamp=BASE_TS + i)
        writer.log_artifact(small)
        result = writer.close(timeout_s=60)
        assert (result, result.artifacts_left) == (0, 0)
        assert not list(spool.glob("artifacts/*/*")), "nothing of the refused file was kept"
    run_id = wait_until(lambda: run_of(mlflow_client, job, "site-tiny"), 60, what="run").info.run_id
    wait_until(lambda: _artifact_files(mlflow_client, run_id) == ["notes.txt"], 120,
               interval_s=0.5, what="the small artifact")  # fmt: skip
    wanted = hashlib.sha256(small.read_bytes()).hexdigest()
    assert _sha256_in_mlflow(mlflow_client, run_id, "notes.txt", tmp_path) == wanted
    wait_until(lambda: len(mlflow_client.get_metric_history(run_id, "x")) >= 2000, 120,
               interval_s=0.5, what="every point")  # fmt: skip
    assert metric_points(mlflow_client, run_id, "x") == expected_points(2000, BASE_TS)
