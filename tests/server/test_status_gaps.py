"""``trackbridge status`` shows what the receiver recorded of losses and artifacts: sequence
gaps, clients' loss reports, files waiting for their run, uploads that failed. Real SQLite
files, as a receiver leaves them."""

from __future__ import annotations

from pathlib import Path

from bridge.events import DROPPED_BUFFER_FULL, Dropped
from bridge.pb.v1 import events_pb2
from server.artifacts.store import ArtifactStore, StagedFile
from server.cli.status import format_status, read_status
from server.queue.gaps import TAG_DROPPED, GapLog, Noted
from server.queue.sqlite import Queue, connect


def _batch(run_key: str, first_seq: int, *, dropped: int = 0) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(client_id="site", job="job", run_key=run_key, first_seq=first_seq)
    if dropped:
        batch.events.add().dropped.CopyFrom(
            events_pb2.Dropped(count=dropped, reason=DROPPED_BUFFER_FULL)
        )
    else:
        batch.events.add().metric.key = "x"
    return batch


def test_status_lists_gaps_loss_reports_and_artifacts(tmp_path: Path) -> None:
    conn = connect(tmp_path / "queue.db")
    Queue(conn).store([("run-a", "site", "job", 1, 10, b""), ("run-b", "site", "job", 1, 1, b"")])
    Queue(conn).set_mlflow_run("run-a", "mlflow-a", "1")
    gaps = GapLog(conn)
    noted = Noted()
    noted.see("run-a", _batch("run-a", 21), 10)  # 11-20 never arrived here
    noted.see("run-a", _batch("run-a", 22, dropped=500), 21)  # a loss report
    noted.see("run-a", _batch("run-a", 23), 22)  # contiguous: nothing to note
    assert noted
    gaps.record(noted)
    gaps.record(noted)  # a resent batch records nothing twice
    tag = gaps.dropped("run-a", 22, Dropped(500, DROPPED_BUFFER_FULL))  # and when flushed
    assert (tag.key, tag.value) == (TAG_DROPPED, "500")
    conn.close()
    store = ArtifactStore(tmp_path)
    waiting = StagedFile("u-1", "site", "job", "run-b", "ckpt", "model.bin", 1234, "ab" * 32)
    refused = StagedFile("u-2", "site", "job", "run-a", "", "notes.txt", 5, "cd" * 32)
    store.add(waiting)
    store.add(refused)
    store.fail(refused, "INVALID_PARAMETER_VALUE: no")
    assert store.has("u-other", "run-b", ("ckpt", "model.bin"), "ab" * 32), "same bytes, path"
    assert not store.has("u-other", "run-b", ("ckpt", "model.bin"), "ef" * 32)
    store.close()

    status = read_status(tmp_path)
    text = format_status(status)
    assert "sequence gaps: 2 (500 events reported lost by their clients)" in text
    assert "run run-a: events 11-20 never reached this receiver" in text
    assert "run run-a: its client lost 500 events: buffer_full" in text
    assert "artifacts not yet in MLflow: 1 (1 waiting for their run)" in text
    assert "run run-b ckpt/model.bin (1234 bytes): waiting for its run" in text
    assert "artifact uploads failed: 1" in text
    assert "run run-a notes.txt: INVALID_PARAMETER_VALUE: no" in text
    assert [g["kind"] for g in status["gaps"]] == ["skipped", "dropped"]
