"""Artifact files: copied aside at the call, streamed to the receiver by a thread of their own.

``log_artifact`` copies the file into a staging directory (the caller may delete or rewrite
its file the moment the call returns, as with MLflow) and returns; the artifact thread streams
staged files, oldest first, in 1 MiB chunks with a CRC-32 each and a SHA-256 of the whole, on
a connection of its own, so a 100 MB file never delays the metric stream. A file leaves the
staging directory once the receiver has acknowledged it (it is then durable there).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tenacity

from bridge.pb.v1 import artifacts_pb2
from bridge.protocol import ARTIFACT_CHUNK_BYTES
from client_sdk._transport import ArtifactTransport, TransportError
from client_sdk.config import WriterConfig

_logger = logging.getLogger(__name__)
_live: weakref.WeakSet[ArtifactSender] = weakref.WeakSet()

MAX_STAGED_BYTES = 20 * 1024**3
"""Bytes waiting in the staging directory past which new artifacts are dropped (and counted)."""
_MIN_RATE_BYTES_S = 1024 * 1024  # an upload's deadline allows at least this rate


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """A copy of a file, waiting to be streamed."""

    run_key: str
    artifact_path: str
    file_name: str
    path: Path
    size: int
    upload_id: str
    model_id: str = ""
    """An MLflow logged model the file belongs to ("" : the run's artifacts)."""


class ArtifactSender:
    """Stages files and owns the thread that streams them to the receiver."""

    def __init__(self, config: WriterConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[StagedArtifact] = deque()
        self._in_flight = 0
        self._staged_bytes = 0
        self._stage: Path | None = None
        self._thread: threading.Thread | None = None
        self._transport: ArtifactTransport | None = None
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        self._backoff = tenacity.wait_exponential(
            multiplier=0.1, max=config.retry_max_backoff_s
        ) + tenacity.wait_random(0, 0.1)
        self.uploaded = 0
        self.refused = 0
        self.dropped = 0
        _live.add(self)

    # -- the caller's side --------------------------------------------------------------------

    def _stage_dir(self) -> Path:
        if self._stage is None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self._config.client_id)[:100]
            if self._config.spool_dir:
                parent = Path(self._config.spool_dir) / "artifacts"
                parent.mkdir(parents=True, exist_ok=True)
                self._stage = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=parent))
            else:
                self._stage = Path(tempfile.mkdtemp(prefix=f"trackbridge-{safe}-"))
        return self._stage

    def new_path(self, file_name: str) -> Path:
        """A fresh path named ``file_name`` in the staging directory, for a caller that writes
        the file itself (the name keeps its extension, which some writers go by)."""
        directory = self._stage_dir() / uuid.uuid4().hex
        directory.mkdir()
        return directory / file_name

    def stage_copy(
        self,
        run_key: str,
        source: str | os.PathLike[str],
        artifact_path: str,
        *,
        model_id: str = "",
    ) -> None:
        """Copies ``source`` aside now and queues it under ``artifact_path`` (a directory of
        the run's artifacts, or of logged model ``model_id``'s)."""
        name = os.path.basename(os.fspath(source))
        target = self.new_path(name)
        try:
            shutil.copyfile(source, target)
        except BaseException:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise
        self.stage_file(run_key, target, artifact_path, name, model_id=model_id)

    def stage_file(
        self, run_key: str, staged: Path, artifact_path: str, file_name: str, *, model_id: str = ""
    ) -> None:
        """Queues a file from ``new_path`` (its directory is deleted once delivered)."""
        size = staged.stat().st_size
        item = StagedArtifact(
            run_key, artifact_path, file_name, staged, size, uuid.uuid4().hex, model_id
        )
        with self._lock:
            if self._stop.is_set() or self._staged_bytes + size > MAX_STAGED_BYTES:
                self._drop(item)
                return
            self._queue.append(item)
            self._staged_bytes += size
            self._changed.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="trackbridge-artifacts", daemon=True
                )
                self._thread.start()

    def _drop(self, item: StagedArtifact) -> None:
        self.dropped += 1
        shutil.rmtree(item.path.parent, ignore_errors=True)
        why = "sender is closed" if self._stop.is_set() else "staging directory is full"
        _logger.warning("trackbridge: artifact %s dropped (%s)", item.file_name, why)

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
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def close(self, timeout_s: float) -> int:
        """Delivers within ``timeout_s``, stops; returns how many artifacts were left."""
        self._deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stop.set()
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, self._deadline - time.monotonic()) + 0.5)
            if thread.is_alive():
                self._interrupt.set()
                thread.join(2.0)
        if self._transport is not None:
            self._transport.close()
        left = len(self._queue)
        if left:
            _logger.warning(
                "trackbridge: %d artifacts not delivered before close (left in %s)",
                left,
                self._stage,
            )
        elif self._stage is not None and (thread is None or not thread.is_alive()):
            shutil.rmtree(self._stage, ignore_errors=True)
        return left

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, channel, queue and staging directory."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue = deque()
        self._staged_bytes = 0
        self._stage = None
        self._thread = None
        self._transport = None

    # -- the artifact thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stop.is_set():
                    self._changed.wait(1.0)
                if not self._queue:
                    return
                item = self._queue[0]
            try:
                delivered = self._deliver(item)
            except Exception:
                _logger.exception("trackbridge: artifact upload failed; retrying")
                delivered = False
            if not delivered and (self._interrupt.is_set() or time.monotonic() >= self._deadline):
                return
            if delivered:
                with self._changed:
                    self._queue.popleft()
                    self._staged_bytes -= item.size
                    self._changed.notify_all()
                shutil.rmtree(item.path.parent, ignore_errors=True)

    def _deliver(self, item: StagedArtifact) -> bool:
        """Sends one file until the receiver takes or refuses it; False if time ran out."""
        if self._transport is None:
            self._transport = ArtifactTransport(self._config.receiver, self._config.security)
        transport = self._transport

        def attempt() -> None:
            budget = 60.0 + item.size / _MIN_RATE_BYTES_S
            timeout = min(budget, max(0.001, self._deadline - time.monotonic()))
            transport.upload(self._chunks(item), timeout)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, TransportError) and e.retryable
            ),
            wait=self._wait,
            stop=lambda _: self._interrupt.is_set() or time.monotonic() >= self._deadline,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except TransportError as exc:
            if exc.retryable:
                return False
            self.refused += 1
            _logger.error("trackbridge: receiver refused artifact %s: %s", item.file_name, exc)
            return True  # resending cannot help; it is dropped
        self.uploaded += 1
        return True

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = exc.retry_after_s if isinstance(exc, TransportError) else 0.0
        return max(float(self._backoff(state)), hint)

    def _sleep(self, seconds: float) -> None:
        self._interrupt.wait(min(seconds, max(0.0, self._deadline - time.monotonic())))

    def _chunks(self, item: StagedArtifact) -> Iterator[artifacts_pb2.ArtifactChunk]:
        yield artifacts_pb2.ArtifactChunk(
            header=artifacts_pb2.ArtifactHeader(
                client_id=self._config.client_id,
                job=self._config.job,
                run_key=item.run_key,
                upload_id=item.upload_id,
                artifact_path=item.artifact_path,
                file_name=item.file_name,
                size=item.size,
                model_id=item.model_id,
            )
        )
        digest = hashlib.sha256()
        offset = 0
        with item.path.open("rb") as f:
            while data := f.read(ARTIFACT_CHUNK_BYTES):
                digest.update(data)
                yield artifacts_pb2.ArtifactChunk(
                    data=artifacts_pb2.ArtifactData(
                        offset=offset, data=data, crc32=zlib.crc32(data)
                    )
                )
                offset += len(data)
        yield artifacts_pb2.ArtifactChunk(
            trailer=artifacts_pb2.ArtifactTrailer(sha256=digest.hexdigest())
        )


def _after_fork_in_child() -> None:
    for sender in list(_live):
        sender.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
