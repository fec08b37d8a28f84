"""The gRPC face of the receiver: the Ingest service. The one place that maps failures to
gRPC status codes.

Every run key a client sends is scoped by its authenticated client id before anything else
sees it (:mod:`server.security.ownership`): a client addresses only its own runs.
"""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf.message import DecodeError

from bridge.convert import check_batch
from bridge.errors import BatchRejected
from bridge.pb.v1 import events_pb2, ingest_pb2
from bridge.protocol import AWAIT_RUN_ID_KEY, INGEST_SERVICE, RETRY_AFTER_KEY
from server.config import ReceiverConfig
from server.ingest.backend import IngestBackend, NotServing, QueueFull, RunRefusedHere
from server.ingest.disk import DiskReserve
from server.ingest.pacing import PublishPacer
from server.ingest.waits import KeyWaits
from server.live.hub import Hub
from server.queue.sqlite import Backlog
from server.security.admission import Admission
from server.security.config import SecurityConfig
from server.security.ownership import owned_key, run_key_problem
from server.security.quota import LogThrottle

_logger = logging.getLogger(__name__)


class IngestService:
    """Validates each batch, hands it to the queue and answers once it is durable, with the
    linger that keeps the receiver's clients within its publish budget (pacing.py)."""

    def __init__(
        self,
        ingestor: IngestBackend,
        backlog: Backlog,
        config: ReceiverConfig,
        *,
        hub: Hub | None = None,
        admission: Admission | None = None,
        disk: DiskReserve | None = None,
    ) -> None:
        self._hub = hub
        self.run_ids = KeyWaits()
        """GetRun calls waiting for a run's MLflow id; the receiver tells it of new ids."""
        self._admission = Admission(SecurityConfig()) if admission is None else admission
        self._log = LogThrottle()  # a flood of bad batches must not flood the log
        self._ingestor = ingestor
        self._backlog = backlog
        self._max_backlog = config.max_backlog_events
        # A client told to back off waits a flush interval (a second at least): sooner, nothing
        # has drained.
        self._retry_after_ms = str(int(max(1.0, config.flush_interval_s) * 1000))
        self._pacer = PublishPacer(config.publish_budget_per_s)
        self._disk = disk
        self.batches_rejected = 0
        self.batches_throttled = 0
        self.batches_disk_low = 0
        """Batches refused while the data directory was below its free-space reserve."""

    def handler(self) -> grpc.GenericRpcHandler:
        """The Ingest service's handlers. Publish takes raw bytes: undecodable input is then
        ours to answer (INVALID_ARGUMENT), and a batch is stored as it arrived."""
        return grpc.method_handlers_generic_handler(
            INGEST_SERVICE,
            {
                "Publish": grpc.unary_unary_rpc_method_handler(
                    self.Publish,
                    request_deserializer=None,
                    response_serializer=ingest_pb2.Ack.SerializeToString,
                ),
                "GetRun": grpc.unary_unary_rpc_method_handler(
                    self.GetRun,
                    request_deserializer=ingest_pb2.RunQuery.FromString,
                    response_serializer=ingest_pb2.Ack.SerializeToString,
                ),
            },
        )

    async def Publish(self, payload: bytes, context: grpc.aio.ServicerContext) -> ingest_pb2.Ack:
        try:
            request = events_pb2.EventBatch.FromString(payload)
        except DecodeError as exc:
            self.batches_rejected += 1
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid batch: cannot decode EventBatch: {exc}"
            )
        # Size and rate before the costlier validation; the caller's identity after it.
        await self._admission.admit(context, request.client_id, len(request.events))
        try:
            check_batch(request)
        except BatchRejected as exc:
            self.batches_rejected += 1
            if self._log.allow("rejected"):
                _logger.warning("rejected a batch from client %r: %s", request.client_id[:64], exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid batch: {exc}")
        await self._check_run_key(context, request.run_key, "batch")
        await self._admission.check_claim(context, request.client_id)
        key = owned_key(request.client_id, request.run_key)
        if self._backlog.events >= self._max_backlog:
            # MLflow is slower than the clients (or down): make them wait, in their spools.
            self.batches_throttled += 1
            if self.batches_throttled == 1 or self.batches_throttled % 1000 == 0:
                _logger.warning(
                    "backlog full (%d events not yet in MLflow): telling clients to back off"
                    " (%d batches so far)",
                    self._backlog.events,
                    self.batches_throttled,
                )
            context.set_trailing_metadata(((RETRY_AFTER_KEY, self._retry_after_ms),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"receiver backlog is full ({self._backlog.events} events not yet in MLflow);"
                f" retry after {self._retry_after_ms} ms",
            )
        low = self._disk.shortfall(len(payload)) if self._disk is not None else ""
        if low:  # the flusher needs the room left, to record progress and free space
            self.batches_disk_low += 1
            context.set_trailing_metadata(((RETRY_AFTER_KEY, self._retry_after_ms),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, low)
        try:
            accepted = await self._ingestor.submit(request, key, payload)
        except RunRefusedHere as exc:
            self.batches_rejected += 1
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except NotServing as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except QueueFull as exc:
            self.batches_throttled += 1
            context.set_trailing_metadata(((RETRY_AFTER_KEY, self._retry_after_ms),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the queue is full: {exc}")
        except Exception:
            if self._log.allow("store"):  # a queue that is down fails every batch
                _logger.exception("could not store a batch")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the receiver could not store the batch"
            )
        if self._hub is not None:
            self._hub.received(request, accepted.acked_seq)
        return ingest_pb2.Ack(
            run_key=request.run_key,
            acked_seq=accepted.acked_seq,
            mlflow_run_id=accepted.run_id,
            mlflow_experiment_id=accepted.experiment_id,
            advised_linger_s=self._pacer.heard(key),
        )

    async def GetRun(
        self, request: ingest_pb2.RunQuery, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.Ack:
        await self._check_run_key(context, request.run_key, "query")
        await self._admission.check_claim(context, request.client_id)
        key = owned_key(request.client_id, request.run_key)
        state = self._ingestor.lookup(key)
        deadline = time.monotonic() + _await_s(context)
        while not state.run_id and state.acked_seq and (left := deadline - time.monotonic()) > 0:
            await self.run_ids.wait(key, left)  # a start_run waits for its id (waits.py)
            state = self._ingestor.lookup(key)
        if self._hub is not None:
            self._hub.heartbeat(key)
        return ingest_pb2.Ack(
            run_key=request.run_key,
            acked_seq=state.acked_seq,
            mlflow_run_id=state.run_id,
            mlflow_experiment_id=state.experiment_id,
        )

    async def _check_run_key(
        self, context: grpc.aio.ServicerContext, run_key: str, what: str
    ) -> None:
        problem = run_key_problem(run_key)
        if problem is not None:
            self.batches_rejected += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid {what}: {problem}")


def _await_s(context: grpc.aio.ServicerContext) -> float:
    """How long a GetRun may wait for the run's MLflow id: what its caller asked for
    (``AWAIT_RUN_ID_KEY``), within its deadline; 0 for callers that did not ask."""
    for key, value in context.invocation_metadata() or ():
        if key == AWAIT_RUN_ID_KEY:
            try:
                asked = max(0.0, int(value) / 1000)
            except ValueError:
                return 0.0
            remaining = context.time_remaining()
            return asked if remaining is None else min(asked, remaining - 0.1)
    return 0.0
