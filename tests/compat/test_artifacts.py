"""Artifacts travel apart from the events: checksummed chunks on their own stream, staged
durably by the receiver, uploaded with the receiver's own MLflow access."""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import pytest

from bridge.events import Metric
from bridge.pb.v1 import artifacts_pb2
from client_sdk._compat.session import Session
from client_sdk._transport import ArtifactTransport, TransportError
from tests.support.compat import receiver_idle
from tests.support.mlflow_reads import all_points, job_runs
from tests.support.procs import free_port, wait_until

TS = 1_700_000_700_000
MB = 1024 * 1024


def _client_runs(client: Any, job: str) -> list[Any]:
    return [r for r in job_runs(client, job) if r.data.tags.get("trackbridge.role") != "parent"]


def _download_sha256(client: Any, run_id: str, path: str, tmp_path: Path) -> str:
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=str(tmp_path), tracking_uri=client.tracking_uri
    )
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        while chunk := f.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.timeout(240)
def test_a_100_mb_file_does_not_hold_back_the_metrics(
    receiver: Any, mlflow_client: Any, job: str, tmp_path: Path, monkeypatch: Any
) -> None:
    big = tmp_path / "weights.bin"
    with big.open("wb") as f:
        for i in range(100):
            f.write(hashlib.sha256(str(i).encode()).digest() * (MB // 32))
    expected = hashlib.sha256(big.read_bytes()).hexdigest()

    # Hold the upload open after its first megabyte, until the metrics are in MLflow.
    release = threading.Event()
    sent_first = threading.Event()
    upload = ArtifactTransport.upload

    def held(self: ArtifactTransport, chunks: Iterator[Any], timeout_s: float) -> Any:
        def paced() -> Iterator[Any]:
            for n, chunk in enumerate(chunks):
                if n == 2:
                    sent_first.set()
                    assert release.wait(120), "the test never released the upload"
                yield chunk

        return upload(self, paced(), timeout_s)

    monkeypatch.setattr(ArtifactTransport, "upload", held)
    session = Session(receiver.address, client_id=f"{job}-c", job=job)
    try:
        record = session.start_run("big")
        session.log_file(record, str(big), "checkpoints")
        big.unlink()  # the caller may delete its file at once
        assert sent_first.wait(60)
        for step in range(100):
            session.writer.enqueue(record.handle, Metric("loss", 1.0 / (step + 1), step, TS))
        assert session.writer.flush(30), "metrics wait for nothing"
        wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the metrics in MLflow")
        (run,) = _client_runs(mlflow_client, job)
        assert len(all_points(mlflow_client, run)["loss"]) == 100
        assert session.artifacts.pending == 1, "the file is still on its way"
        release.set()
        session.end_run(record, "FINISHED")
        assert session.close(120) == 0
    finally:
        release.set()
        session.close(5)
    wait_until(lambda: receiver_idle(receiver.data_dir), 120, what="the file in MLflow")
    (run,) = _client_runs(mlflow_client, job)
    listed = mlflow_client.list_artifacts(run.info.run_id, "checkpoints")
    assert [(a.path, a.file_size) for a in listed] == [("checkpoints/weights.bin", 100 * MB)]
    assert _download_sha256(mlflow_client, run.info.run_id, listed[0].path, tmp_path) == expected


def _upload(receiver: Any, **overrides: Any) -> TransportError:
    """Sends a crafted upload; returns the receiver's refusal."""
    data = b"x" * 1000
    header = {
        "client_id": "crafted",
        "job": "crafted-job",
        "run_key": "k" * 32,
        "upload_id": "u" * 32,
        "artifact_path": "dir",
        "file_name": "f.txt",
        "size": len(data),
        **{k: v for k, v in overrides.items() if k not in ("crc32", "sha256", "offset")},
    }
    chunks = [
        artifacts_pb2.ArtifactChunk(header=artifacts_pb2.ArtifactHeader(**header)),
        artifacts_pb2.ArtifactChunk(
            data=artifacts_pb2.ArtifactData(
                offset=overrides.get("offset", 0),
                data=data,
                crc32=overrides.get("crc32", zlib.crc32(data)),
            )
        ),
        artifacts_pb2.ArtifactChunk(
            trailer=artifacts_pb2.ArtifactTrailer(
                sha256=overrides.get("sha256", hashlib.sha256(data).hexdigest())
            )
        ),
    ]
    transport = ArtifactTransport(receiver.address)
    try:
        with pytest.raises(TransportError) as refused:
            transport.upload(iter(chunks), 30)
    finally:
        transport.close()
    return refused.value


@pytest.mark.timeout(60)
def test_corrupt_or_misplaced_uploads_are_refused_and_not_kept(receiver: Any) -> None:
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "checksum": ({"sha256": "0" * 64}, "DATA_LOSS"),
        "chunk crc": ({"crc32": 1}, "DATA_LOSS"),
        "size": ({"size": 999}, "INVALID_ARGUMENT"),
        "offset": ({"offset": 5}, "INVALID_ARGUMENT"),
        "escaping name": ({"file_name": ".."}, "INVALID_ARGUMENT"),
        "slash in name": ({"file_name": "a/b"}, "INVALID_ARGUMENT"),
        "absolute path": ({"artifact_path": "/etc"}, "INVALID_ARGUMENT"),
        "escaping path": ({"artifact_path": "a/../../b"}, "INVALID_ARGUMENT"),
        "bad upload id": ({"upload_id": "../x"}, "INVALID_ARGUMENT"),
    }
    for label, (overrides, code) in cases.items():
        refused = _upload(receiver, **overrides)
        assert refused.code == code, label
        assert refused.retryable == (code == "DATA_LOSS"), label
    staging = receiver.data_dir / "artifact-staging"
    assert list(staging.iterdir()) == []
    assert receiver_idle(receiver.data_dir)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_acknowledged_file_survives_a_receiver_restart(
    start_receiver: Callable[..., Any],
    mlflow_server: Any,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    """While MLflow is unreachable the receiver keeps the file; after a restart with MLflow
    back, it uploads it."""
    data_dir = tmp_path / "receiver-data"
    first = start_receiver(
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        data_dir=data_dir,
        shutdown_timeout_s=2,
        expected_exit_code=1,
    )
    session = Session(first.address, client_id=f"{job}-c", job=job)
    record = session.start_run("kept")
    staged = session.artifacts.new_path("notes.txt")
    staged.write_text("kept through a restart\n")
    session.log_staged(record, staged, "notes", "notes.txt")
    session.writer.enqueue(record.handle, Metric("m", 1.0, 0, TS))
    session.end_run(record, "FINISHED")
    assert session.close(30) == 0, "the receiver acknowledged the events and the file"
    assert first.stop() == 1  # nothing reached MLflow
    assert not receiver_idle(data_dir)

    second = start_receiver(tracking_uri=mlflow_server.uri, data_dir=data_dir)
    wait_until(lambda: receiver_idle(second.data_dir), 120, what="the restarted receiver")
    (run,) = _client_runs(mlflow_client, job)
    assert run.info.status == "FINISHED"
    listed = [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "notes")]
    assert listed == ["notes/notes.txt"]
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="notes/notes.txt",
        dst_path=str(tmp_path / "dl"),
        tracking_uri=mlflow_server.uri,
    )
    assert Path(local).read_text() == "kept through a restart\n"
