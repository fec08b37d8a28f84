"""The uploader: puts staged artifact files in MLflow with the receiver's own artifact access.

One thread, files in the order they arrived. A file waits until its run exists in MLflow (the
flusher creates runs as soon as their start arrives); then ``MlflowClient.log_artifact`` copies
it to the run's artifact store (S3, GCS, a proxied ``mlflow-artifacts:`` server, a local
directory), with MLflow's credentials from the receiver's environment. Failures MLflow calls
permanent end in the ``failed_uploads`` table with the reason (``trackbridge status``), logged
once. Others are retried for ``_RETRY_WINDOW_S`` while the run's later files wait (a run's files
go in order); after that the file is put aside and retried on a slower schedule on its own
(one WARNING when it is put aside, one INFO if it gets through), so it never holds the rest of
its run back, and a later file with the same path supersedes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity
from mlflow.tracking import MlflowClient

from bridge.worker import OnFailure, Worker
from server.artifacts.access import artifact_repository
from server.artifacts.store import ArtifactStore, StagedFile
from server.flush.refusals import is_permanent
from server.flush.run_tags import TAG_CLIENT_ID

_logger = logging.getLogger(__name__)

_RETRY_WINDOW_S = 20.0
_SET_ASIDE_FIRST_S = 30.0
_SET_ASIDE_MAX_S = 600.0


@dataclass
class _SetAside:
    """A file that failed its retry window: when to try it again, and why it failed."""

    next_try: float
    delay_s: float
    reason: str
    tries: int = 1


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
        self._stop = threading.Event()
        """Set once the last pass ran out of time: interrupts a retry in progress."""
        # RESTART: the staged files and their order are in the store; a fresh pass loses only
        # the schedule of the files set aside (kept: it is this object's, not the thread's).
        self.worker = Worker("artifacts", self._loop, on_failure=OnFailure.RESTART)
        self._aside: dict[str, _SetAside] = {}  # by upload id; the uploader thread's own
        self.uploaded = 0
        self.failed = 0
        self.set_aside = 0
        """Files past their retry window, retried on their own (a gauge)."""
        self.retrying = 0
        """Files whose upload failed and is being retried within its window (a gauge: 0 or 1;
        reads do not wait for their runs' files, server/artifacts/store.py)."""
        self._current: StagedFile | None = None
        self.last_error = ""

    def start(self) -> None:
        """Starts the thread."""
        self.worker.start()

    def wake(self) -> None:
        """Asks for an attempt now (a file arrived, a run was created)."""
        self.worker.wake()

    def stop(self, timeout_s: float) -> bool:
        """Makes a last pass over the staged files within ``timeout_s``, then stops; what is
        left stays staged for the next start. Returns whether the thread has ended."""
        if self.worker.stop(time.monotonic() + timeout_s):
            return True
        self._stop.set()  # interrupts a retry in progress
        return self.worker.join(time.monotonic() + 1.0)

    def _loop(self, worker: Worker) -> None:
        while not self._stop.is_set():
            worker.wait(self._interval_s)
            draining = worker.stopping.is_set()
            # Failures MLflow gives are the files' own (_attempt); what reaches here (the
            # store failing) is logged by the worker, which runs this again.
            self._cycle()
            if draining:
                return

    def _cycle(self) -> None:
        blocked: set[str] = set()  # a run's files go in order: one failing holds the rest back
        staged_files = self._store.pending()
        self._forget_gone({f.upload_id for f in staged_files})
        for staged in staged_files:
            if self._stop.is_set():
                return
            if staged.run_key in blocked:
                continue
            aside = self._aside.get(staged.upload_id)
            if aside is not None and (
                aside.next_try > time.monotonic() or self._superseded(staged, staged_files)
            ):
                continue
            self._current = staged
            try:
                self._attempt(staged, blocked, retry=aside is None)
            finally:
                if self.retrying:
                    self.retrying = 0
                    self._store.retrying(None)

    def _failed_once(self, _state: tenacity.RetryCallState) -> None:
        """A file's upload failed and is retried within its window: reads stop waiting for it."""
        if not self.retrying and self._current is not None:
            self._store.retrying(self._current)
            self.retrying = 1

    def _attempt(self, staged: StagedFile, blocked: set[str], *, retry: bool) -> None:
        """One file: within its retry window (``retry``), or one try of a file set aside."""
        try:
            if staged.model_id:
                model = self._get_model(staged.model_id, retry=retry)
                if model.tags.get(TAG_CLIENT_ID) != staged.client_id:
                    self._give_up(
                        staged, f"logged model {staged.model_id} belongs to another client"
                    )
                    return
                self._call(retry, self._upload_to, model.artifact_location, staged)
            else:
                run_id = self._run_id_of(staged.run_key)
                if not run_id:
                    blocked.add(staged.run_key)  # its run is not in MLflow yet
                    return
                owner = self._owner_of(staged.run_key)
                if owner is not None and owner != staged.client_id:
                    self._give_up(staged, f"run {staged.run_key} belongs to another client")
                    return
                self._call(retry, self._upload, run_id, staged)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if is_permanent(exc) or isinstance(exc, FileNotFoundError):
                self._give_up(staged, reason)
            else:
                self._put_aside(staged, reason)
            return
        aside = self._aside.pop(staged.upload_id, None)
        self.set_aside = len(self._aside)
        if aside is not None:
            _logger.info(
                "artifact %s of run %s reached MLflow after %d tries",
                _shown(staged),
                staged.run_key,
                aside.tries + 1,
            )
        self._store.remove(staged, delivered=not staged.model_id)
        self.uploaded += 1

    def _put_aside(self, staged: StagedFile, reason: str) -> None:
        self.last_error = reason
        aside = self._aside.get(staged.upload_id)
        now = time.monotonic()
        if aside is None:
            self._store.set_aside(staged, reason)
            self._aside[staged.upload_id] = _SetAside(
                now + _SET_ASIDE_FIRST_S, _SET_ASIDE_FIRST_S, reason
            )
            _logger.warning(
                "artifact %s of run %s not delivered within %g s (%s); the run's other files"
                " go on, this one is retried every few minutes (see trackbridge status)",
                _shown(staged),
                staged.run_key,
                _RETRY_WINDOW_S,
                reason,
            )
        else:
            aside.delay_s = min(aside.delay_s * 2, _SET_ASIDE_MAX_S)
            aside.next_try = now + aside.delay_s
            aside.reason = reason
            aside.tries += 1
        self.set_aside = len(self._aside)

    def _superseded(self, staged: StagedFile, staged_files: list[StagedFile]) -> bool:
        """A file set aside whose path a later file of its run (or model) took: dropped, so
        that a late retry never overwrites the newer content."""
        later = staged_files[staged_files.index(staged) + 1 :]
        if not any(
            (f.run_key, f.model_id, f.artifact_path, f.file_name)
            == (staged.run_key, staged.model_id, staged.artifact_path, staged.file_name)
            for f in later
        ):
            return False
        self._aside.pop(staged.upload_id, None)
        self.set_aside = len(self._aside)
        self._store.remove(staged)
        return True

    def _forget_gone(self, staged_ids: set[str]) -> None:
        for upload_id in [u for u in self._aside if u not in staged_ids]:
            del self._aside[upload_id]
        self.set_aside = len(self._aside)

    def aside(self) -> dict[str, str]:
        """Files set aside after their retry window, by upload id, with the last reason."""
        return {u: a.reason for u, a in list(self._aside.items())}

    def _call(self, retry: bool, fn: Callable[..., None], *args: object) -> None:
        if retry:
            self._retrying(fn, *args)
        else:
            fn(*args)

    def _get_model(self, model_id: str, *, retry: bool) -> Any:
        found: list[Any] = []
        self._call(retry, lambda: found.append(self._client.get_logged_model(model_id)))
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
        self._aside.pop(staged.upload_id, None)
        self.set_aside = len(self._aside)
        _logger.error(
            "artifact %s of run %s refused for good: %s (listed in trackbridge status; log it"
            " again once the cause is fixed)",
            _shown(staged),
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
            before_sleep=self._failed_once,
            reraise=True,
        )
        retrying(fn, *args)


def _shown(staged: StagedFile) -> str:
    return "/".join(p for p in (staged.artifact_path, staged.file_name) if p)
