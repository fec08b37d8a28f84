"""The Artifacts service: files arrive in checksummed chunks, apart from the event stream.

Each chunk is written to the staging directory as it arrives (memory stays at one chunk per
upload), every chunk's CRC-32 and the whole file's SHA-256 are checked, and the file is
fsynced and recorded before the client is acknowledged. The uploader
(``server/artifacts/uploader.py``) puts it in MLflow once the run exists there. Run keys are
scoped by the caller's client id, as the Ingest service scopes them: a file goes only to a
run of the client that sent it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import posixpath
import re
import shutil
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

import grpc

from bridge.errors import MlflowException
from bridge.pb.v1 import artifacts_pb2, artifacts_pb2_grpc
from bridge.protocol import ARTIFACT_CHUNK_BYTES, RETRY_AFTER_KEY
from bridge.validation import verify_artifact_path
from server.artifacts.store import ArtifactStore, StagedFile
from server.ingest.backend import IngestBackend
from server.security.auth import caller, shown
from server.security.ownership import owned_key, run_key_problem

_logger = logging.getLogger(__name__)

MAX_STAGED_BYTES = 50 * 1024**3
"""Staged bytes (not yet in MLflow) past which uploads are told to come back later."""
_MAX_ID_LENGTH = 256
_UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_RETRY_AFTER_MS = "5000"


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def public_url(tracking_uri: str) -> str:
    """The MLflow address users may be told: an http(s) URI without its credentials, else ""."""
    scheme, sep, rest = tracking_uri.partition("://")
    if not sep or scheme not in ("http", "https"):
        return ""
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _check_header(h: artifacts_pb2.ArtifactHeader) -> None:
    for name in ("client_id", "job", "run_key"):
        value = getattr(h, name)
        if not value or len(value) > _MAX_ID_LENGTH:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be 1 to 256 characters")
    problem = run_key_problem(h.run_key)
    if problem is not None:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, problem)
    if not _UPLOAD_ID_RE.match(h.upload_id):
        raise _Refused(
            grpc.StatusCode.INVALID_ARGUMENT, "upload_id must be 8 to 64 of [A-Za-z0-9_-]"
        )
    if len(h.model_id) > _MAX_ID_LENGTH:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "model_id must be at most 256 characters")
    name = h.file_name
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"bad file name {name[:100]!r}")
    try:
        verify_artifact_path(h.artifact_path)
        verify_artifact_path(posixpath.join(h.artifact_path, name))
    except MlflowException as exc:
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, exc.message) from None


def _write(f: BinaryIO, digest: hashlib._Hash, data: bytes) -> None:
    f.write(data)
    digest.update(data)


def _finish(f: BinaryIO, part: Path, final: Path) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
    part.replace(final)


class ArtifactService(artifacts_pb2_grpc.ArtifactsServicer):
    """Receives uploads into the artifact store's staging area."""

    def __init__(self, store: ArtifactStore, ingestor: IngestBackend, tracking_uri: str) -> None:
        self._store = store
        self._ingestor = ingestor
        self._mlflow_url = public_url(tracking_uri)
        self.on_stored: Callable[[], None] = lambda: None
        """Called after each file is staged (wakes the uploader)."""
        self.uploads_received = 0
        self.uploads_refused = 0

    async def Info(
        self, request: artifacts_pb2.ReceiverInfoRequest, context: grpc.aio.ServicerContext
    ) -> artifacts_pb2.ReceiverInfo:
        return artifacts_pb2.ReceiverInfo(mlflow_url=self._mlflow_url)

    async def Upload(
        self,
        request_iterator: AsyncIterator[artifacts_pb2.ArtifactChunk],
        context: grpc.aio.ServicerContext,
    ) -> artifacts_pb2.ArtifactAck:
        try:
            return await self._receive(request_iterator, context)
        except _Refused as exc:
            self.uploads_refused += 1
            _logger.warning("refused an artifact upload: %s", exc)
            if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                context.set_trailing_metadata(((RETRY_AFTER_KEY, _RETRY_AFTER_MS),))
            await context.abort(exc.code, str(exc))
            raise  # abort raises; this line only satisfies the type checker

    async def _receive(
        self,
        chunks: AsyncIterator[artifacts_pb2.ArtifactChunk],
        context: grpc.aio.ServicerContext,
    ) -> artifacts_pb2.ArtifactAck:
        first = await anext(aiter(chunks), None)
        if first is None or first.WhichOneof("part") != "header":
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "an upload starts with its header")
        h = first.header
        _check_header(h)
        identity = caller()
        if identity is not None and not identity.allows(h.client_id):
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{shown(identity.name)} may not upload as client {shown(h.client_id)}",
            )
        key = owned_key(h.client_id, h.run_key)
        if self._store.has(
            h.upload_id, key, (h.artifact_path, h.file_name), h.sha256, model_id=h.model_id
        ):
            return artifacts_pb2.ArtifactAck(upload_id=h.upload_id, size=h.size)
        if self._store.staged_bytes + h.size > MAX_STAGED_BYTES:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"artifact staging is full ({self._store.staged_bytes} bytes waiting for MLflow)",
            )
        directory = self._store.directory(h.upload_id)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: directory.mkdir(parents=True, exist_ok=True))
        part = directory / f"{h.file_name}.part"
        f = await loop.run_in_executor(None, part.open, "wb")
        try:
            digest = await self._stream(chunks, h, f, loop)
            await loop.run_in_executor(None, _finish, f, part, directory / h.file_name)
            staged = StagedFile(
                h.upload_id,
                h.client_id,
                h.job,
                key,
                h.artifact_path,
                h.file_name,
                h.size,
                digest,
                h.model_id,
            )
            await loop.run_in_executor(None, self._store.add, staged)
        except BaseException:
            # Done here, not in the executor: when a client vanishes mid-upload its request
            # stream ends and gRPC then cancels this task; an executor await here would be
            # cancelled with it, and the rmtree never run if no thread had picked it up yet
            # (the partial file then stayed until the next start). Unlinking one file is fast.
            f.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self.uploads_received += 1
        self.on_stored()
        return artifacts_pb2.ArtifactAck(upload_id=h.upload_id, size=h.size)

    async def _stream(
        self,
        chunks: AsyncIterator[artifacts_pb2.ArtifactChunk],
        h: artifacts_pb2.ArtifactHeader,
        f: BinaryIO,
        loop: asyncio.AbstractEventLoop,
    ) -> str:
        """Writes the data chunks; returns the verified SHA-256."""
        digest = hashlib.sha256()
        offset = 0
        async for chunk in chunks:
            kind = chunk.WhichOneof("part")
            if kind == "trailer":
                if offset != h.size:
                    raise _Refused(
                        grpc.StatusCode.DATA_LOSS,
                        f"got {offset} of {h.size} bytes of {h.file_name}",
                    )
                sha = digest.hexdigest()
                if chunk.trailer.sha256 != sha:
                    raise _Refused(grpc.StatusCode.DATA_LOSS, f"SHA-256 mismatch for {h.file_name}")
                return sha
            if kind != "data":
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"unexpected {kind} mid-upload")
            d = chunk.data
            if d.offset != offset or len(d.data) > ARTIFACT_CHUNK_BYTES:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"chunk at offset {d.offset} (expected {offset}, at most {ARTIFACT_CHUNK_BYTES}"
                    " bytes)",
                )
            if offset + len(d.data) > h.size:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "more bytes than the header said")
            if zlib.crc32(d.data) != d.crc32:
                raise _Refused(grpc.StatusCode.DATA_LOSS, f"CRC-32 mismatch at offset {offset}")
            await loop.run_in_executor(None, _write, f, digest, d.data)
            offset += len(d.data)
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "the upload ended without its trailer")


class ArtifactRelay:
    """The artifact side of a receiver: staging store, Artifacts service and uploader."""

    def __init__(
        self, data_dir: Path, tracking_uri: str, ingestor: IngestBackend, interval_s: float
    ) -> None:
        from server.artifacts.uploader import ArtifactUploader

        self.store = ArtifactStore(data_dir)
        self.service = ArtifactService(self.store, ingestor, tracking_uri)
        self.uploader = ArtifactUploader(
            self.store,
            tracking_uri,
            run_id_of=ingestor.mlflow_run_id,
            owner_of=ingestor.owner,
            interval_s=interval_s,
        )
        self.service.on_stored = self.uploader.wake

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the Artifacts service to a gRPC server."""
        artifacts_pb2_grpc.add_ArtifactsServicer_to_server(self.service, server)  # type: ignore[no-untyped-call]

    def start(self) -> None:
        """Starts uploading staged files (left from before, too)."""
        self.uploader.start()

    def stop(self, timeout_s: float) -> None:
        """Uploads what it can within ``timeout_s``; the rest waits, staged, for the next start."""
        if self.uploader.stop(timeout_s):
            self.store.close()
