"""Worker guards in a real receiver process, faults injected by a test-only launcher
(tests/support/faulty_receiver.py). The ingest thread (FAIL): a fault after a commit is
acknowledged for the batch it followed, named by ``trackbridge health``, ``status`` and
``/metrics``, and later batches are refused at once. The aggregator (RESTART): its failed
passes are in ``status`` and ``/metrics``, health stays SERVING, and the aggregate is written
once."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunStart
from client_sdk._transport import Transport, TransportError
from tests.support.faulty_receiver import AGGREGATE_FAULTS_ENV, FAULT_AFTER_ENV
from tests.support.procs import REPO_ROOT, TRACKBRIDGE_EXE, start_ready, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TS = 1_700_000_000_000


def _payload(first_seq: int, events: list[object]) -> bytes:
    batch = EventBatch("site-a", "guard-job", "run-1", first_seq, tuple(events))  # type: ignore[arg-type]
    return batch_to_proto(batch).SerializeToString()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_an_ingest_fault_in_a_real_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, ready, files = tmp_path / "data", tmp_path / "ready.json", tmp_path / "files"
    cmd = [
        sys.executable, "-m", "tests.support.faulty_receiver", "serve",
        "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--sink", f"jsonl:{files}",
        "--flush-interval", "0.2", "--ready-file", str(ready),
    ]  # fmt: skip
    monkeypatch.setenv(FAULT_AFTER_ENV, "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    receiver = start_ready(cmd, ready, tmp_path / "receiver.log", data_dir, "")
    try:
        http_port = json.loads(ready.read_text())["http_port"]
        transport = Transport(receiver.address, timeout_s=10.0)
        try:
            start = [RunStart(run_name="guarded", start_time_ms=TS), Metric("x", 1.0, 1, TS)]
            assert transport.publish(_payload(1, start)).acked_seq == 2
            assert transport.publish(_payload(3, [Metric("x", 2.0, 2, TS)])).acked_seq == 3
            with pytest.raises(TransportError) as refused:
                transport.publish(_payload(4, [Metric("x", 3.0, 3, TS)]), timeout_s=30)
            assert refused.value.code == "UNAVAILABLE"
            assert "ingest worker failed (InjectedFault" in str(refused.value)
        finally:
            transport.close()

        def not_serving() -> bool:
            answer = _cli("health", "--receiver", receiver.address)
            return answer.returncode == 1 and "NOT_SERVING" in answer.stdout

        wait_until(not_serving, 30, what="trackbridge health to say NOT_SERVING")

        def named() -> str:
            out = _cli("status", "--data-dir", str(data_dir)).stdout
            return out if "workers: FAILED (ingest: InjectedFault" in out else ""

        wait_until(named, 30, what="trackbridge status to name the ingest worker")
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'trackbridge_worker_up{worker="ingest"} 0.0' in metrics
        assert "Traceback" in receiver.log_path.read_text()
    finally:
        assert receiver.stop() == 0
    lines = [
        json.loads(line)
        for path in (tmp_path / "files").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [line["seq"] for line in lines if line["seq"]] == [1, 2, 3]


def test_an_aggregator_fault_in_a_real_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, ready, files = tmp_path / "data", tmp_path / "ready.json", tmp_path / "files"
    cmd = [
        sys.executable, "-m", "tests.support.faulty_receiver", "serve",
        "--listen", "127.0.0.1:0", "--data-dir", str(data_dir), "--sink", f"jsonl:{files}",
        "--flush-interval", "0.2", "--ready-file", str(ready), "--aggregate", "eval/*",
    ]  # fmt: skip
    monkeypatch.setenv(AGGREGATE_FAULTS_ENV, "2")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    receiver = start_ready(cmd, ready, tmp_path / "receiver.log", data_dir, "")
    try:
        http_port = json.loads(ready.read_text())["http_port"]
        transport = Transport(receiver.address, timeout_s=10.0)
        try:
            for site, value in (("site-a", 0.5), ("site-b", 0.7)):
                events = [
                    RunStart(run_name=site, start_time_ms=TS),
                    Metric("eval/acc", value, 1, TS),
                ]
                batch = EventBatch(site, "rounds-job", f"{site}-run", 1, tuple(events))  # type: ignore[arg-type]
                assert transport.publish(batch_to_proto(batch).SerializeToString()).acked_seq == 2
        finally:
            transport.close()

        def named() -> str:
            out = _cli("status", "--data-dir", str(data_dir))
            said = "workers: restarted after a failure (aggregate 2x, last: InjectedFault"
            return out.stdout if said in out.stdout and out.returncode == 0 else ""

        shown = wait_until(named, 60, what="trackbridge status to name the restarted aggregator")
        assert "FAILED" not in shown
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'trackbridge_worker_restarts_total{worker="aggregate"} 2.0' in metrics
        assert 'trackbridge_worker_up{worker="aggregate"} 1.0' in metrics
        health = _cli("health", "--receiver", receiver.address)
        assert health.returncode == 0, health.stdout + health.stderr
        log = receiver.log_path.read_text()
        assert log.count("worker aggregate failed") == 2  # each failure, the same one once in full
        assert "Traceback" in log
    finally:
        assert receiver.stop() == 0
    written = "".join(p.read_text() for p in files.rglob("*.jsonl"))
    assert written.count('"eval/acc/mean"') == 1, written  # nothing lost, nothing twice
