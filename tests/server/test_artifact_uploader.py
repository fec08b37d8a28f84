"""The artifact uploader's schedule, in-process against a real staging store and a failing
MLflow seam: a file that cannot be delivered holds its run back only for its retry window, is
said once, and a file refused for good is recorded once with its reason."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from server.artifacts import uploader as uploader_module
from server.artifacts.store import ArtifactStore, StagedFile, format_artifacts, read_artifacts
from server.artifacts.uploader import ArtifactUploader
from tests.support.procs import wait_until

pytestmark = pytest.mark.timeout(60)

RUN = "client-a/run-1"


class FlakyMlflow:
    """Stands in for ``_upload``: files named in ``failing`` raise, the rest land in ``got``."""

    def __init__(self) -> None:
        self.failing: dict[str, Exception] = {}
        self.got: list[tuple[str, bytes]] = []
        self.tries: dict[str, int] = {}

    def upload(self, run_id: str, staged: StagedFile, store: ArtifactStore) -> None:
        self.tries[staged.file_name] = self.tries.get(staged.file_name, 0) + 1
        if staged.file_name in self.failing:
            raise self.failing[staged.file_name]
        self.got.append((staged.file_name, store.path(staged).read_bytes()))


def _stage(store: ArtifactStore, name: str, data: bytes) -> StagedFile:
    staged = StagedFile(uuid.uuid4().hex, "client-a", "job", RUN, "", name, len(data), "sha")
    directory = store.directory(staged.upload_id)
    directory.mkdir(parents=True)
    (directory / name).write_bytes(data)
    store.add(staged)
    return staged


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(uploader_module, "_RETRY_WINDOW_S", 0.2)
    monkeypatch.setattr(uploader_module, "_SET_ASIDE_FIRST_S", 0.0)  # due again at once
    store = ArtifactStore(tmp_path)
    uploader = ArtifactUploader(
        store,
        "http://127.0.0.1:9",  # never reached: the upload seam is replaced
        run_id_of=lambda run_key: "mlflow-run-id",
        owner_of=lambda run_key: "client-a",
        interval_s=60.0,
    )
    mlflow = FlakyMlflow()
    monkeypatch.setattr(
        uploader, "_upload", lambda run_id, staged: mlflow.upload(run_id, staged, store)
    )
    yield store, uploader, mlflow, tmp_path
    store.close()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failing_file_holds_its_run_back_only_for_its_retry_window(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, uploader, mlflow, data_dir = setup
    mlflow.failing["plot.png"] = ConnectionError("S3 endpoint unreachable")
    _stage(store, "plot.png", b"png")
    _stage(store, "after.txt", b"later file")
    caplog.set_level(logging.INFO, logger=uploader_module.__name__)

    for _ in range(3):
        uploader._cycle()

    assert mlflow.got == [("after.txt", b"later file")]
    assert mlflow.tries["plot.png"] >= 3  # retried, on its own
    assert uploader.set_aside == 1
    assert [u.file_name for u in store.pending()] == ["plot.png"]
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert "plot.png" in said[0] and "S3 endpoint unreachable" in said[0]
    shown = "\n".join(format_artifacts(read_artifacts(data_dir, {RUN})))
    assert "plot.png (3 bytes): past its retry window" in shown, shown
    assert "S3 endpoint unreachable" in shown, shown

    del mlflow.failing["plot.png"]
    uploader._cycle()
    assert ("plot.png", b"png") in mlflow.got
    assert uploader.set_aside == 0 and store.count() == 0
    assert any("reached MLflow after" in r.getMessage() for r in caplog.records)
    assert len(_warnings(caplog)) == 1


def test_a_file_refused_for_good_is_recorded_once_with_its_reason(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, uploader, mlflow, _data_dir = setup
    mlflow.failing["bad.bin"] = MlflowException(
        "artifact path not allowed", error_code=INVALID_PARAMETER_VALUE
    )
    _stage(store, "bad.bin", b"x")
    _stage(store, "good.txt", b"y")

    for _ in range(3):
        uploader._cycle()

    assert mlflow.tries["bad.bin"] == 1
    assert mlflow.got == [("good.txt", b"y")]
    assert uploader.failed == 1 and uploader.set_aside == 0
    ((run_key, _path, name, reason),) = store.failures()
    assert (run_key, name) == (RUN, "bad.bin") and "artifact path not allowed" in reason
    said = _warnings(caplog)
    assert len(said) == 1 and "refused for good" in said[0], said


def test_a_later_file_at_the_same_path_supersedes_one_set_aside(setup: Any) -> None:
    store, uploader, mlflow, _data_dir = setup
    mlflow.failing["model.txt"] = ConnectionError("down")
    _stage(store, "model.txt", b"old")
    uploader._cycle()
    assert uploader.set_aside == 1

    del mlflow.failing["model.txt"]
    _stage(store, "model.txt", b"new")
    uploader._cycle()
    uploader._cycle()

    assert mlflow.got == [("model.txt", b"new")]  # the old content never lands after it
    assert store.count() == 0 and uploader.set_aside == 0


def test_a_store_fault_restarts_the_uploader_and_the_file_still_goes(
    setup: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store, uploader, mlflow, _data_dir = setup
    uploader.worker.restart_pause_s = 0.01  # the pause is for a fault that repeats
    pending = store.pending
    faults = iter([sqlite3.OperationalError("disk I/O error")])

    def failing_pending(*args: Any) -> list[StagedFile]:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return pending(*args)

    monkeypatch.setattr(store, "pending", failing_pending)
    _stage(store, "kept.txt", b"kept")
    uploader.start()
    uploader.wake()
    wait_until(lambda: mlflow.got, 30, what="the file after the restart")
    assert mlflow.got == [("kept.txt", b"kept")]
    assert uploader.worker.restarts == 1 and uploader.worker.alive
    assert uploader.worker.last_error == "OperationalError: disk I/O error"
    assert any(
        "worker artifacts failed; restarting it" in r.getMessage() and r.exc_info
        for r in caplog.records
    )
    assert uploader.stop(10)
    assert store.count() == 0
