"""Artifact files: staged durably at the call, streamed to the receiver by a thread of their own.

``log_artifact`` stages a copy of the file with its manifest in the writer's spool
(``_staging.py``: the caller may delete or rewrite its file the moment the call returns, as with
MLflow) and returns; a staging quota and the free space are checked first, and a file that
cannot be staged raises ``ArtifactNotStaged`` at the call. The artifact thread streams staged
files, oldest first, in 1 MiB chunks with a CRC-32 each and a SHA-256 of the whole, on a
connection of its own, so a 100 MB file never delays the metric stream. A file leaves the
staging folder once the receiver has acknowledged it (it is then durable there); what is left
at close stays staged for the next writer of the same destination or ``trackbridge sync``.
"""

from __future__ import annotations

import enum
import logging
import os
import posixpath
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

import tenacity

from bridge.worker import OnFailure, Worker
from client_sdk._staging import (
    ArtifactNotStaged,
    Damaged,
    StagedArtifact,
    check_room,
    chunks,
    discard,
    stage_copy,
    stage_written,
)
from client_sdk._staging import new_path as _new_path
from client_sdk._transport import ArtifactTransport, TransportError
from client_sdk.config import WriterConfig
from client_sdk.spool.file import Spool
from client_sdk.spool.names import Destination, SpoolError, safe_name

_logger = logging.getLogger(__name__)
_live: weakref.WeakSet[ArtifactSender] = weakref.WeakSet()

_MIN_RATE_BYTES_S = 1024 * 1024  # an upload's deadline allows at least this rate

Home = Callable[[], tuple[Path, Spool | None]]
"""Where new artifacts are staged: the staging folder and the spool it belongs to (None when
the writer keeps nothing on disk). Raises SpoolError when the spool cannot be made."""


class Outcome(enum.Enum):
    """How an upload attempt ended."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    """The receiver refused it for good; sending it again cannot help."""
    DAMAGED = "damaged"
    """The staged copy no longer matches the SHA-256 recorded when it was staged."""
    NOT_YET = "not yet"
    """Time ran out (or the writer is stopping) with the receiver unreachable."""


def upload(
    transport: ArtifactTransport,
    item: StagedArtifact,
    client_id: str,
    job: str,
    *,
    deadline: Callable[[], float],
    interrupt: threading.Event,
    max_backoff_s: float,
) -> tuple[Outcome, str]:
    """Streams one staged file until the receiver takes or refuses it, or time runs out
    (``deadline()``, a monotonic time, is read at each attempt: a closing writer shortens it);
    returns the outcome and the last error ("" when delivered)."""
    backoff = tenacity.wait_exponential(multiplier=0.1, max=max_backoff_s) + tenacity.wait_random(
        0, 0.1
    )
    damaged = Damaged()

    def attempt() -> None:
        budget = 60.0 + item.size / _MIN_RATE_BYTES_S
        timeout = min(budget, max(0.001, deadline() - time.monotonic()))
        transport.upload(chunks(item, client_id, job, damaged), timeout)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = exc.retry_after_s if isinstance(exc, TransportError) else 0.0
        return max(float(backoff(state)), hint)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(
            lambda e: isinstance(e, TransportError) and e.retryable and not damaged.found
        ),
        wait=wait,
        stop=lambda _: interrupt.is_set() or time.monotonic() >= deadline(),
        sleep=lambda s: _pause(interrupt, min(s, max(0.0, deadline() - time.monotonic()))),
        reraise=True,
    )
    try:
        retrying(attempt)
    except OSError as exc:  # the staged copy itself is gone or unreadable
        return Outcome.DAMAGED, f"{type(exc).__name__}: {exc}"
    except TransportError as exc:
        if damaged.found:
            return Outcome.DAMAGED, "the staged copy no longer matches its recorded SHA-256"
        return (Outcome.NOT_YET if exc.retryable else Outcome.REFUSED), str(exc)
    return Outcome.DELIVERED, ""


def _pause(interrupt: threading.Event, seconds: float) -> None:
    interrupt.wait(seconds)  # a backoff that stopping cuts short


class ArtifactSender:
    """Stages this writer's files and owns the thread that streams them to the receiver."""

    def __init__(self, config: WriterConfig, home: Home | None = None) -> None:
        self._config = config
        self._home = home if home is not None else self._temporary_home
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[tuple[StagedArtifact, Spool | None]] = deque()
        self._staged_bytes = 0
        self._temp: Path | None = None
        # RESTART: the queue of staged files is this object's, and the file an attempt failed
        # on stays at its head; started with the first file (a fork gets a fresh, unstarted one).
        self._worker = Worker("artifacts", self._loop, on_failure=OnFailure.RESTART)
        self._transport: ArtifactTransport | None = None
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        self._left: int | None = None
        self.uploaded = 0
        self.refused = 0
        """Artifacts the receiver refused for good, or whose staged copy was damaged."""
        _live.add(self)

    def _temporary_home(self) -> tuple[Path, Spool | None]:
        # No spool folder: stage in a private temporary folder (kept only while this runs).
        if self._temp is None:
            safe = safe_name(self._config.client_id)
            self._temp = Path(tempfile.mkdtemp(prefix=f"trackbridge-{safe}-"))
        return self._temp, None

    # -- the caller's side --------------------------------------------------------------------

    def _where(self) -> tuple[Path, Spool | None]:
        if self._stop.is_set():
            raise ArtifactNotStaged("trackbridge: the writer is closed; the artifact is not sent")
        try:
            return self._home()
        except SpoolError as exc:
            raise ArtifactNotStaged(f"trackbridge: cannot stage an artifact: {exc}") from exc

    def new_path(self, file_name: str) -> Path:
        """A fresh path named ``file_name`` in the staging folder, for a caller that writes
        the file itself and then calls ``stage_file`` (the name keeps its extension, which some
        writers go by)."""
        directory, _spool = self._where()
        try:
            return _new_path(directory, file_name)
        except OSError as exc:
            raise ArtifactNotStaged(
                exc.errno or 0, f"trackbridge: cannot stage {file_name}: {exc.strerror or exc}"
            ) from exc

    def stage_copy(
        self,
        run_key: str,
        source: str | os.PathLike[str],
        artifact_path: str,
        *,
        model_id: str = "",
    ) -> None:
        """Copies ``source`` aside now, durably, and queues it under ``artifact_path`` (a
        directory of the run's artifacts, or of logged model ``model_id``'s).

        Raises:
            ArtifactNotStaged: Over the staging quota, not enough free space, or an I/O error.
            FileNotFoundError: ``source`` does not exist.
        """
        directory, spool = self._where()
        size = os.path.getsize(source)
        name = os.path.basename(os.fspath(source))
        self._reserve(directory, size, f"{artifact_path}/{name}" if artifact_path else name)
        try:
            item = stage_copy(
                directory,
                source,
                run_key,
                artifact_path,
                self._destination(spool),
                model_id=model_id,
            )
        except BaseException:
            self._release(size)
            raise
        self._enqueue(item, spool)

    def stage_tree(
        self,
        run_key: str,
        local_dir: str | os.PathLike[str],
        artifact_path: str,
        *,
        model_id: str = "",
    ) -> None:
        """Stages every file under ``local_dir``, keeping its layout under ``artifact_path``;
        the whole tree is checked against the quota and the free space first."""
        root = os.fspath(local_dir)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"No such directory: '{root}'")
        files: list[tuple[str, str]] = []
        for base, _dirs, names in os.walk(root):
            relative = os.path.relpath(base, root).replace(os.sep, "/")
            parts = [p for p in (artifact_path, "" if relative == "." else relative) if p]
            files.extend(
                (os.path.join(base, n), posixpath.join(*parts) if parts else "")
                for n in sorted(names)
            )
        directory, _spool = self._where()
        with self._lock:
            left = self._config.max_staged_artifact_bytes - self._staged_bytes
        check_room(directory, sum(os.path.getsize(f) for f, _ in files), left, root)
        for file, relative_dir in files:
            self.stage_copy(run_key, file, relative_dir, model_id=model_id)

    def stage_file(
        self, run_key: str, staged: Path, artifact_path: str, file_name: str, *, model_id: str = ""
    ) -> None:
        """Queues a file the caller wrote into ``new_path`` (its folder is deleted once
        delivered); raises ArtifactNotStaged as ``stage_copy`` does (and deletes the file)."""
        _directory, spool = self._where()
        size = staged.stat().st_size
        try:
            self._reserve(staged.parent.parent, size, file_name)
        except BaseException:
            shutil.rmtree(staged.parent, ignore_errors=True)
            raise
        try:
            item = stage_written(
                staged, run_key, artifact_path, self._destination(spool), model_id=model_id
            )
        except BaseException:
            self._release(size)
            raise
        self._enqueue(item, spool)

    def _destination(self, spool: Spool | None) -> Destination | None:
        return spool.destination if spool is not None else None

    def _reserve(self, directory: Path, size: int, shown: str) -> None:
        with self._lock:
            left = self._config.max_staged_artifact_bytes - self._staged_bytes
            check_room(directory, size, left, shown)
            self._staged_bytes += size

    def _release(self, size: int) -> None:
        with self._lock:
            self._staged_bytes -= size

    def _enqueue(self, item: StagedArtifact, spool: Spool | None) -> None:
        with self._lock:
            if spool is not None:
                spool.artifact_holds += 1
            self._queue.append((item, spool))
            self._changed.notify_all()
            self._worker.start()  # once

    @property
    def pending(self) -> int:
        """Artifacts staged or in flight, not yet acknowledged."""
        with self._lock:
            return len(self._queue)

    def flush(self, timeout_s: float) -> bool:
        """Waits until every staged artifact is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0 or not self._worker.alive:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def close(self, timeout_s: float) -> int:
        """Delivers within ``timeout_s``, stops; returns how many artifacts were left (staged
        in the spool for the next writer or ``trackbridge sync``, when there is one).
        Idempotent: a second call returns the same count."""
        if self._left is not None:
            return self._left
        self._deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stop.set()
            self._changed.notify_all()
        ended = self._worker.join(self._deadline + 0.5)
        if not ended:
            self._interrupt.set()
            ended = self._worker.stop(time.monotonic() + 2.0)
        if self._transport is not None:
            self._transport.close()
        with self._lock:
            left = self._left = len(self._queue)
            for _item, spool in self._queue:
                if spool is not None:
                    spool.artifact_holds -= 1  # staged on disk: the spool keeps them
        if left:
            where = "kept in the spool" if self._config.spool_dir else f"left in {self._temp}"
            _logger.warning(
                "trackbridge: %d artifacts not delivered before close (%s)", left, where
            )
        elif self._temp is not None and ended:
            shutil.rmtree(self._temp, ignore_errors=True)
        return left

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, channel and queue."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue = deque()
        self._staged_bytes = 0
        self._temp = None
        self._worker.reset_after_fork()
        self._transport = None

    # -- the artifact thread -------------------------------------------------------------------

    def _loop(self, worker: Worker) -> None:
        while not self._interrupt.is_set():
            with self._changed:
                while not self._queue and not self._stop.is_set():
                    self._changed.wait(1.0)
                if not self._queue:
                    return
                item, spool = self._queue[0]
            # What upload() does not expect reaches the worker: logged with its traceback, the
            # file tried again after a pause; never the caller's (the training loop's) error.
            outcome = self._deliver(item)
            if outcome is Outcome.NOT_YET:
                if self._interrupt.is_set() or time.monotonic() >= self._deadline:
                    return
                continue
            discard(item)
            with self._changed:
                self._queue.popleft()
                self._staged_bytes -= item.size
                if spool is not None:
                    spool.artifact_holds -= 1
                self._changed.notify_all()

    def _deliver(self, item: StagedArtifact) -> Outcome:
        if self._transport is None:
            self._transport = ArtifactTransport(self._config.receiver, self._config.security)
        outcome, error = upload(
            self._transport,
            item,
            self._config.client_id,
            self._config.job,
            deadline=lambda: self._deadline,
            interrupt=self._interrupt,
            max_backoff_s=self._config.retry_max_backoff_s,
        )
        if outcome is Outcome.DELIVERED:
            self.uploaded += 1
        elif outcome is not Outcome.NOT_YET:
            self.refused += 1
            _logger.error(
                "trackbridge: artifact %s not delivered (%s): %s", item.shown, outcome.value, error
            )
        return outcome


def _after_fork_in_child() -> None:
    for sender in list(_live):
        sender.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
