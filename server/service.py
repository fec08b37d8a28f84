"""The gRPC face of the receiver: the Ingest service. The one place that maps failures to
gRPC status codes."""

from __future__ import annotations

import logging

import grpc

from bridge.convert import batch_from_proto
from bridge.errors import BatchRejected
from bridge.pb.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from bridge.protocol import RETRY_AFTER_KEY
from server.ingest import Ingestor, NotOwner
from server.queue import Backlog

_logger = logging.getLogger(__name__)


class IngestService(ingest_pb2_grpc.IngestServicer):
    """Validates each batch, hands it to the Ingestor and answers once it is durable."""

    def __init__(
        self, ingestor: Ingestor, backlog: Backlog, max_backlog_events: int, retry_after_s: float
    ) -> None:
        self._ingestor = ingestor
        self._backlog = backlog
        self._max_backlog = max_backlog_events
        self._retry_after_ms = str(int(retry_after_s * 1000))
        self.batches_rejected = 0
        self.batches_throttled = 0

    async def Publish(
        self, request: events_pb2.EventBatch, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.Ack:
        try:
            batch_from_proto(request)
        except BatchRejected as exc:
            self.batches_rejected += 1
            _logger.warning("rejected a batch from client %r: %s", request.client_id[:64], exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid batch: {exc}")
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
        try:
            accepted = await self._ingestor.submit(request)
        except NotOwner as exc:
            _logger.warning("refused client %r: %s", request.client_id[:64], exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except Exception:
            _logger.exception("could not store a batch")
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the receiver could not store the batch"
            )
        return ingest_pb2.Ack(
            run_key=request.run_key,
            acked_seq=accepted.acked_seq,
            mlflow_run_id=accepted.run_id,
            mlflow_experiment_id=accepted.experiment_id,
        )

    async def GetRun(
        self, request: ingest_pb2.RunQuery, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.Ack:
        try:
            state = self._ingestor.lookup(request.client_id, request.run_key)
        except NotOwner as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        return ingest_pb2.Ack(
            run_key=request.run_key,
            acked_seq=state.acked_seq,
            mlflow_run_id=state.run_id,
            mlflow_experiment_id=state.experiment_id,
        )
