"""The uploader: puts staged artifact files in MLflow with the receiver's own artifact access.

One thread, files in the order they arrived. A file waits until its run exists in MLflow (the
flusher creates runs as soon as their start arrives); then ``MlflowClient.log_artifact`` copies
it to the run's artifact store (S3, GCS, a proxied ``mlflow-artifacts:`` server, a local
directory), with MLflow's credentials from the receiver's environment. Failures MLflow calls
permanent end in the ``failed_uploads`` table with the reason; others are retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import tenacity
from mlflow.tracking import MlflowClient

from server.artifacts.access import artifact_repository
from server.artifacts.store import ArtifactStore, StagedFile
from server.flush.sink import TAG_CLIENT_ID, is_permanent

_logger = logging.getLogger(__name__)

_RETRY_WINDOW_S = 20.0


class ArtifactUploader:
    """Owns the thread that moves staged files into MLflow."""

    def __init__(
        self,
        store: ArtifactStore,
        tracking_uri: str,
        *,
        run_id_of: Callable[[str], str],
        owner_of: Callable[[str], str | None],
        interval_s: float,
    ) -> None:
        self._store = store
        self._tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri)
        self._run_id_of = run_id_of
        self._owner_of = owner_of
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="trackbridge-artifacts", daemon=True
        )
        self.uploaded = 0
        self.failed = 0
        self.last_error = ""

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Asks for an attempt now (a file arrived, a run was created)."""
        self._wake.set()

    def stop(self, timeout_s: float) -> bool:
        """Makes a last pass over the staged files within ``timeout_s``, then stops; what is
        left stays staged for the next start. Returns whether the thread has ended."""
        self._draining.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._stop.set()  # interrupts a retry in progress
        if self._thread.is_alive():
            self._thread.join(1.0)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("artifact upload failed (%s); retrying next tick", self.last_error)
            if self._draining.is_set():
                return

    def _cycle(self) -> None:
        blocked: set[str] = set()  # a run's files go in order: one failing holds the rest back
        for staged in self._store.pending():
            if self._stop.is_set():
                return
            if staged.run_key in blocked:
                continue
            if staged.model_id:
                self._upload_model_file(staged, blocked)
                continue
            run_id = self._run_id_of(staged.run_key)
            if not run_id:
                blocked.add(staged.run_key)  # its run is not in MLflow yet
                continue
            owner = self._owner_of(staged.run_key)
            if owner is not None and owner != staged.client_id:
                self._give_up(staged, f"run {staged.run_key} belongs to another client")
                continue
            try:
                self._retrying(self._upload, run_id, staged)
            except Exception as exc:
                if is_permanent(exc) or isinstance(exc, FileNotFoundError):
                    self._give_up(staged, f"{type(exc).__name__}: {exc}")
                    continue
                blocked.add(staged.run_key)
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("artifact upload failed (%s); retrying later", self.last_error)
                continue
            self._store.remove(staged, delivered=True)
            self.uploaded += 1

    def _upload_model_file(self, staged: StagedFile, blocked: set[str]) -> None:
        """A file of a logged model: to the model's artifact location, if the model is the
        uploading client's."""
        try:
            model = self._retrying_get_model(staged.model_id)
            if model.tags.get(TAG_CLIENT_ID) != staged.client_id:
                self._give_up(staged, f"logged model {staged.model_id} belongs to another client")
                return
            self._retrying(self._upload_to, model.artifact_location, staged)
        except Exception as exc:
            if is_permanent(exc) or isinstance(exc, FileNotFoundError):
                self._give_up(staged, f"{type(exc).__name__}: {exc}")
                return
            blocked.add(staged.run_key)
            self.last_error = f"{type(exc).__name__}: {exc}"
            _logger.warning("model file upload failed (%s); retrying later", self.last_error)
            return
        self._store.remove(staged)
        self.uploaded += 1

    def _retrying_get_model(self, model_id: str) -> Any:
        found: list[Any] = []
        self._retrying(lambda: found.append(self._client.get_logged_model(model_id)))
        return found[0]

    def _upload_to(self, artifact_root: str, staged: StagedFile) -> None:
        repo = artifact_repository(artifact_root, self._tracking_uri)
        repo.log_artifact(str(self._store.path(staged)), staged.artifact_path or None)  # type: ignore[no-untyped-call]

    def _upload(self, run_id: str, staged: StagedFile) -> None:
        self._client.log_artifact(
            run_id, str(self._store.path(staged)), staged.artifact_path or None
        )

    def _give_up(self, staged: StagedFile, reason: str) -> None:
        self.failed += 1
        _logger.error(
            "artifact %s of run %s refused for good: %s",
            "/".join(p for p in (staged.artifact_path, staged.file_name) if p),
            staged.run_key,
            reason,
        )
        self._store.fail(staged, reason)

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a backoff that stop() cuts short

    def _retrying(self, fn: Callable[..., None], *args: object) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: not is_permanent(e) and not isinstance(e, FileNotFoundError)
            ),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5.0) + tenacity.wait_random(0, 0.2),
            stop=tenacity.stop_after_delay(_RETRY_WINDOW_S)
            | tenacity.stop_when_event_set(self._stop),
            sleep=self._pause,
            reraise=True,
        )
        retrying(fn, *args)
