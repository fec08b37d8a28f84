"""The Tracking service's gRPC face: who is calling, read-your-writes, and the answer.

The service authenticates its callers itself (the interceptor guards the write services): a
client token or certificate names the client, as for Ingest; the receiver's viewer token reads
everything. MLflow calls block, so they run on a small thread pool of their own, never on the
event loop that takes in the clients' batches.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import posixpath
import shutil
import sqlite3
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient

from bridge.pb.v1 import artifacts_pb2, tracking_pb2, tracking_pb2_grpc
from bridge.protocol import ARTIFACT_CHUNK_BYTES, AUTHORIZATION_KEY
from bridge.secret import redact_text
from server.artifacts.access import artifact_repository
from server.ingest.backend import IngestBackend
from server.ingest.waits import FlushWaits
from server.security.auth import Authenticator, Refused, shown
from server.security.ownership import owned_key
from server.tracking import overlay
from server.tracking.calls import answer
from server.tracking.journal import JournalApplier
from server.tracking.reads import Context, SeenRuns, visible_model, visible_run
from server.tracking.scope import Caller, ReadScope

_logger = logging.getLogger(__name__)

FRESH_WAIT_S = 10.0
"""How long a call waits for the caller's pending events once MLflow is failing (the flusher's
writes fail) before it is answered with what MLflow has. While MLflow takes writes, however
slowly, the call waits for them: MLflow itself answers a read after the writes before it."""
FRESH_LIMIT_S = 60.0
"""The longest a call waits for its writes when its caller set no deadline."""
_DEADLINE_MARGIN_S = 1.0
"""A call is answered this long before its caller's deadline, with what MLflow has then."""
_POLL_S = 0.02
_WORKERS = 4
_MAX_FRESH_KEYS = 1000
_GRPC_CODES = {
    "RESOURCE_DOES_NOT_EXIST": grpc.StatusCode.NOT_FOUND,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "INVALID_PARAMETER_VALUE": grpc.StatusCode.INVALID_ARGUMENT,
}


class TrackingService(tracking_pb2_grpc.TrackingServicer):
    """Answers MLflow calls from clients with the receiver's MLflow access."""

    def __init__(
        self,
        *,
        tracking_uri: str,
        artifact_location: str | None,
        queue_path: Path,
        ingestor: IngestBackend,
        flush_soon: Callable[[], None],
        uploads_pending: Callable[[set[str]], bool],
        mlflow_error: Callable[[], str],
        authenticator: Authenticator,
        viewer_token: str,
        scope: ReadScope | str,
        own_queue: bool = True,
    ) -> None:
        client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
        self._client = client
        self._tracking_uri = tracking_uri
        self._store = client._tracking_client.store
        self._registry: Any = None
        self._artifact_location = artifact_location
        # Shared by the event loop (read-your-writes marks) and the workers (scopes).
        self._queue = sqlite3.connect(
            f"file:{queue_path}?mode=ro", uri=True, timeout=30.0, check_same_thread=False
        )
        self._queue_lock = threading.Lock()
        self._ingestor = ingestor
        self._flush_soon = flush_soon
        self._uploads_pending = uploads_pending
        self._mlflow_error = mlflow_error
        self._authenticator = authenticator
        self._viewer_token = viewer_token
        self._scope = ReadScope(scope)  # or its name, as ``serve --read-scope`` gives it
        self._own_queue = own_queue
        """Whether this receiver's flusher writes what its queue holds (not fleet mode, where
        other receivers may write it): only then are its batches the events on their way."""
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="trackbridge-tracking")
        self.journal = JournalApplier(
            self._store, self.registry, self.experiments_of, artifact_location, tracking_uri
        )
        self.calls = 0
        self.waiting = 0
        """Calls waiting for their callers' writes to reach MLflow now (a gauge)."""
        self.flushes = FlushWaits()
        """Woken by the flusher at each step of a run into MLflow (the receiver wires it)."""
        self._seen = SeenRuns()

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the service to a gRPC server."""
        tracking_pb2_grpc.add_TrackingServicer_to_server(self, server)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stops the worker threads and closes the queue connection."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._queue.close()

    def registry(self) -> Any:
        """The receiver's model-registry store (made at first use)."""
        if self._registry is None:
            self._registry = self._client._get_registry_client().store  # type: ignore[no-untyped-call]
        return self._registry

    def experiments_of(self, caller: Caller) -> set[str]:
        """Experiment ids holding runs of the caller's job (or, for OWN, of the caller)."""
        column, value = ("client_id", caller.client_id)
        if caller.scope is not ReadScope.OWN:
            column, value = ("job", caller.job)
        with self._queue_lock:
            rows = self._queue.execute(
                f"SELECT DISTINCT mlflow_experiment_id FROM runs WHERE {column} = ?",
                (value,),
            ).fetchall()
        return {str(row[0]) for row in rows if row[0]}

    # -- the RPCs ---------------------------------------------------------------------------

    async def Call(
        self, request: tracking_pb2.TrackingCall, context: grpc.aio.ServicerContext
    ) -> tracking_pb2.TrackingReply:
        caller = await self._caller(request.client_id, request.job, context)
        self.calls += 1
        loop = asyncio.get_running_loop()
        ctx = self._context(caller)
        own = self._own_run_read(caller, request)
        try:
            payload = None
            if own is not None:  # with its events on their way added, not waiting for them
                payload = await loop.run_in_executor(
                    self._pool, self._answer_own, ctx, request, own
                )
            if payload is None:  # after the caller's writes are in MLflow
                await self._fresh(request.client_id, request.fresh_run_keys, context)
                payload = await loop.run_in_executor(
                    self._pool, answer, ctx, request.method, request.request
                )
        except MlflowException as exc:
            return tracking_pb2.TrackingReply(
                error_code=exc.error_code, message=str(exc.message)[:16_000]
            )
        except Exception as exc:
            _logger.exception("tracking call %s failed", request.method[:100])
            return tracking_pb2.TrackingReply(
                error_code="INTERNAL_ERROR", message=f"{type(exc).__name__}: {exc}"[:16_000]
            )
        return tracking_pb2.TrackingReply(response=payload)

    async def Download(
        self, request: tracking_pb2.ArtifactRead, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[artifacts_pb2.ArtifactData]:
        caller = await self._caller(request.client_id, request.job, context)
        await self._fresh(request.client_id, request.fresh_run_keys, context)
        loop = asyncio.get_running_loop()
        try:
            local = await loop.run_in_executor(self._pool, self._fetch, caller, request)
        except MlflowException as exc:
            code = _GRPC_CODES.get(exc.error_code, grpc.StatusCode.UNAVAILABLE)
            await context.abort(code, str(exc.message))
            return
        try:
            with open(local, "rb") as f:
                offset = 0
                while data := await loop.run_in_executor(None, f.read, ARTIFACT_CHUNK_BYTES):
                    yield artifacts_pb2.ArtifactData(
                        offset=offset, data=data, crc32=zlib.crc32(data)
                    )
                    offset += len(data)
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------

    def _context(self, caller: Caller) -> Context:
        return Context(
            store=self._store,
            registry=self.registry,
            caller=caller,
            experiments_of=self.experiments_of,
            artifact_location=self._artifact_location,
            tracking_uri=self._tracking_uri,
            run_id_of_key=lambda key: self._ingestor.mlflow_run_id(
                owned_key(caller.client_id, key)
            ),
            seen=self._seen,
        )

    def _fetch(self, caller: Caller, request: tracking_pb2.ArtifactRead) -> Path:
        """Downloads one file into a temporary directory of its own; returns its path."""
        path = posixpath.normpath(request.path or "")
        if not request.path or path.startswith(("..", "/")) or "\\" in path:
            raise MlflowException(
                f"bad artifact path {request.path[:200]!r}", error_code=INVALID_PARAMETER_VALUE
            )
        ctx = self._context(caller)
        if request.model_id:
            root = visible_model(ctx, request.model_id).artifact_location
        else:
            run_id = ctx.run_id_of_key(request.run_id) or request.run_id
            root = visible_run(ctx, run_id).info.artifact_uri
        tmp = Path(tempfile.mkdtemp(prefix="trackbridge-read-"))
        try:
            repo = artifact_repository(root, self._tracking_uri)
            local = Path(repo.download_artifacts(path, str(tmp)))  # type: ignore[no-untyped-call]
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, MlflowException) and exc.error_code != "INTERNAL_ERROR":
                raise
            raise MlflowException(
                f"No such artifact {request.path!r}: {exc}", error_code=RESOURCE_DOES_NOT_EXIST
            ) from None
        if not local.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise MlflowException(
                f"{request.path!r} is a directory; list it and read its files",
                error_code=INVALID_PARAMETER_VALUE,
            )
        moved = tmp / "file"
        local.replace(moved)
        return moved

    async def _caller(self, client_id: str, job: str, context: grpc.aio.ServicerContext) -> Caller:
        if not client_id or len(client_id) > 256 or not job or len(job) > 256:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "client_id and job must be 1 to 256 characters"
            )
        metadata = tuple(context.invocation_metadata() or ())
        token = _bearer(metadata)
        if self._viewer_token and token and hmac.compare_digest(token, self._viewer_token):
            return Caller(client_id, job, self._scope, viewer=True)
        try:
            identity = self._authenticator.authenticate(metadata, context.auth_context())
        except Refused as exc:
            await context.abort(exc.code, exc.message)
            raise
        if identity is not None and not identity.allows(client_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{shown(identity.name)} may not read as client {shown(client_id)}",
            )
        return Caller(client_id, job, self._scope)

    def _own_run_read(
        self, caller: Caller, call: tracking_pb2.TrackingCall
    ) -> tuple[Any, str] | None:
        """The request and run id of a read that may be answered with the caller's events on
        their way added (server/tracking/overlay.py); None when it waits for them."""
        if not self._own_queue or caller.viewer:
            return None
        found = overlay.target(call.method, call.request)
        return found if found is not None and found[1] else None

    def _answer_own(
        self, ctx: Context, call: tracking_pb2.TrackingCall, found: tuple[Any, str]
    ) -> bytes | None:
        """MLflow's answer with the caller's events on their way added, read before MLflow is
        asked (on a worker thread: the events are decoded); None when the read must wait for
        them instead (events the overlay cannot add, or more than the answer's page). The
        flusher writes them at its next turn, many reads' worth in one call: asking it to
        write at once held MLflow's answer up behind that write (SQLite's one writer)."""
        message, run_id = found
        pending = self._pending_of(ctx.caller, run_id)
        if pending is None:
            return None
        return pending.apply(call.method, message, answer(ctx, call.method, call.request))

    def _pending_of(self, caller: Caller, run_id: str) -> overlay.Pending | None:
        """The plain events on their way of the caller's own run ``run_id`` (its MLflow id or
        its key); None for another's run, one not in MLflow yet or quarantined, a file of it
        on its way, or events the overlay cannot add."""
        try:
            with self._queue_lock:
                row = self._queue.execute(
                    "SELECT run_key, flushed_seq FROM runs WHERE client_id = ?"
                    " AND quarantine = '' AND mlflow_run_id != ''"
                    " AND (mlflow_run_id = ? OR run_key = ?)",
                    (caller.client_id, run_id, owned_key(caller.client_id, run_id)),
                ).fetchone()
                if row is None:
                    return None
                pending = overlay.pending_of(self._queue, row[0], row[1])
        except sqlite3.Error:  # the read waits for MLflow instead, as it always could
            _logger.exception("reading client %s's events on their way", shown(caller.client_id))
            return None
        if pending is None or self._uploads_pending({row[0]}):
            return None
        return pending

    async def _fresh(
        self, client_id: str, run_keys: Iterable[str], context: grpc.aio.ServicerContext
    ) -> None:
        """Waits until the caller's acknowledged events of these runs, and their staged files,
        are in MLflow: for as long as MLflow takes writes (up to the caller's deadline), and
        :data:`FRESH_WAIT_S` at most while MLflow's writes fail."""
        marks: dict[str, int] = {}
        # The queue and the staged files know a run by its owned key (its client's id and run
        # key); a logged model's files also by the model's id, as the client sent it.
        asked = list(run_keys)[:_MAX_FRESH_KEYS]
        keys = {owned_key(client_id, k) for k in asked} | set(asked)
        for key in keys:
            acked = self._ingestor.lookup(key).acked_seq
            if acked:
                marks[key] = acked
        if not marks and not self._uploads_pending(keys):
            return
        self._flush_soon()
        remaining = context.time_remaining()
        limit = FRESH_LIMIT_S if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        start = time.monotonic()
        failing_since: float | None = None
        self.waiting += 1
        try:
            while (behind := self._behind(marks)) or self._uploads_pending(keys):
                now = time.monotonic()
                error = self._mlflow_error()
                if not error:
                    failing_since = None
                elif failing_since is None:
                    failing_since = now
                failing_for = None if failing_since is None else now - failing_since
                why = stop_waiting(now - start, failing_for, limit)
                if why:
                    # Redacted before it is cut: a cut password would escape the log's filter.
                    why = f"{why}: {redact_text(error)[:300]}" if error else why
                    _logger.warning(
                        "client %s reads before its last %d runs' events reached MLflow"
                        " (waited %.0f s, %s): answering with what MLflow has",
                        shown(client_id),
                        len(marks),
                        now - start,
                        why,
                    )
                    return
                if behind:  # the flusher wakes it the moment that run's writes move on
                    await self.flushes.wait(behind[0], _POLL_S)
                else:
                    await asyncio.sleep(_POLL_S)
        finally:
            self.waiting -= 1

    def _behind(self, marks: dict[str, int]) -> list[str]:
        """The runs whose caller's events up to ``marks`` are not all in MLflow yet (a
        quarantined run's are held until an operator replays them: the read does not wait)."""
        if not marks:
            return []
        placeholders = ",".join("?" * len(marks))
        with self._queue_lock:
            rows = self._queue.execute(
                "SELECT run_key, flushed_seq, quarantine != '' FROM runs"
                f" WHERE run_key IN ({placeholders})",
                tuple(marks),
            ).fetchall()
        flushed = {key: seq for key, seq, held in rows if not held}
        held = {key for key, _seq, is_held in rows if is_held}
        return [k for k, seq in marks.items() if k not in held and flushed.get(k, 0) < seq]


def stop_waiting(waited_s: float, failing_for_s: float | None, limit_s: float) -> str:
    """Why a call stops waiting for its caller's writes now ('': it waits on): MLflow's writes
    have failed for :data:`FRESH_WAIT_S` (``failing_for_s``; None: they do not fail), or the
    caller's deadline is near (``limit_s``)."""
    if failing_for_s is not None and failing_for_s >= FRESH_WAIT_S:
        return "MLflow failing"
    if waited_s >= limit_s:
        return "its deadline near"
    return ""


def _bearer(metadata: Iterable[tuple[str, Any]]) -> str:
    for key, value in metadata:
        if key == AUTHORIZATION_KEY:
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""
