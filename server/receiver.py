"""The receiver daemon: gRPC ingest, durable queue, timed flusher, health, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from bridge.pb.v1 import events_pb2, watch_pb2_grpc
from bridge.protocol import INGEST_SERVICE
from bridge.worker import Workers
from server.aggregate.aggregator import Aggregator
from server.artifacts.service import ArtifactRelay
from server.config import ReceiverConfig
from server.data_dir import DataDirClaim, create_private, secure
from server.fleet.start import open_fleet
from server.flush import probes
from server.flush.bulk import open_sink
from server.flush.credentials import configured_secrets, set_mlflow_client_defaults
from server.flush.files_only import FileFlusher
from server.flush.flusher import Flusher
from server.flush.jsonl import JsonlSink
from server.flush.mirror import Mirror
from server.flush.mlflow_state import record_errors
from server.flush.progress import Observers
from server.flush.store_identity import StoreIdentity
from server.ingest.backend import IngestBackend
from server.ingest.disk import MIB, DiskReserve, reusable_bytes
from server.ingest.ingestor import Ingestor
from server.ingest.service import IngestService
from server.live.hub import Hub
from server.live.links import mlflow_ui_url, page_url
from server.live.model import Counters
from server.live.view import Live
from server.live.watch import WatchService
from server.ports import GRPC_FLAG, HTTP_FLAG, SERVER_OPTIONS, PortInUse, check_free, in_use
from server.queue.gaps import GapLog
from server.queue.schema import QUEUE_FILE, QueueCorrupt
from server.queue.sqlite import Backlog, Queue, RunRecord, connect
from server.security.guard import Guard
from server.tracking.service import TrackingService
from server.worker_state import record_failed

_logger = logging.getLogger(__name__)


class Receiver:
    """One receiver: start it in a running event loop, stop it to drain."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.port = 0
        self.http_port: int | None = None
        """The live view's HTTP port, once started (None when it is off)."""
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._conns: list[sqlite3.Connection] = []
        self.workers = Workers()
        """Every background worker, for health, status and /metrics (bridge/worker.py)."""
        self._mirror: Mirror | None = None
        self.flusher: Flusher | FileFlusher
        self.tracking: TrackingService | None = None
        """MLflow's API for clients (None without the MLflow sink)."""
        self.artifacts: ArtifactRelay | None = None
        """Artifact uploads to MLflow (None without the MLflow sink)."""

    async def start(self) -> int:
        """Opens the queue, starts the flusher and serves gRPC; returns the bound port."""
        set_mlflow_client_defaults(os.environ)
        cfg = self.config
        secure(cfg.data_dir)
        self._claim = DataDirClaim(cfg.data_dir)
        try:
            return await self._start(cfg)
        except BaseException:
            if self._mirror is not None:
                self._mirror.close()
            self._claim.release()
            raise

    async def _start(self, cfg: ReceiverConfig) -> int:
        self.guard = Guard(cfg.security, cfg.data_dir)
        queue_path = cfg.data_dir / QUEUE_FILE
        for _ in range(4):
            self._conns.append(connect(queue_path, cfg.sqlite_synchronous))
        ingest_conn, flush_conn, status_conn, aggregate_conn = self._conns
        self._loop = asyncio.get_running_loop()
        create_private(cfg.data_dir / "artifacts.db")
        if cfg.jsonl_dir is not None:
            files = JsonlSink(cfg.jsonl_dir, fsync=cfg.sqlite_synchronous == "FULL")
            files.open()
            self._mirror = Mirror(Queue(flush_conn), [files])
        try:  # the first reads walk every table: a damaged file shows here, at start
            runs = Queue(ingest_conn).runs()  # the aggregate runs too: the (aggregate) client
            self.backlog = Backlog(Queue(ingest_conn).pending_events())
            if self._mirror is not None:  # its reads may set damaged batches aside: backlog
                self._mirror = Mirror(Queue(flush_conn, self.backlog), self._mirror.sinks)
            self.aggregator = self._aggregator_for(cfg, aggregate_conn)
            self.ingestor = self._ingest_for(cfg, ingest_conn)
            observer = self.hub_for(cfg, runs)
            if cfg.mlflow_sink:
                self.flusher = self._mlflow_flusher(cfg, flush_conn, observer)
            else:
                assert self._mirror is not None  # the config has at least one sink
                self.flusher = FileFlusher(
                    Queue(flush_conn, self.backlog),
                    self._mirror,
                    interval_s=cfg.flush_interval_s,
                    backlog=self.backlog,
                    observer=observer,
                )
        except sqlite3.DatabaseError as exc:
            raise QueueCorrupt(queue_path, exc) from None
        self.service = self._service_for(cfg, status_conn)
        self._status = Queue(status_conn)
        self.live = Live(
            self.hub,
            cfg,
            counters=self.counters,
            mlflow_reachable=lambda: not self.flusher.last_error,
            health=self._health,
            runs=runs,
            not_serving=self._not_serving,
        )
        if self.live.history is not None:
            self.workers.add(self.live.history.worker)
        server = self._grpc_server(cfg)
        host, _, port = cfg.listen.rpartition(":")
        check_free(host, int(port), what="gRPC", flag=GRPC_FLAG)
        if cfg.http_address is not None:
            check_free(*cfg.http_address, what="the live view", flag=HTTP_FLAG)
        self.port = self.guard.bind(server, cfg.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        self.http_port = await self._start_live(cfg)
        secure(cfg.data_dir)  # what the parts created on a first start
        self._start_workers(cfg)
        await server.start()
        self._server = server
        for service in ("", INGEST_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        _logger.info("receiver listening on port %d, data in %s", self.port, cfg.data_dir)
        return self.port

    def _start_workers(self, cfg: ReceiverConfig) -> None:
        """Starts the threads, and the tasks that keep ``status``'s state files."""
        self.ingestor.start()
        self.flusher.start()
        if self.aggregator is not None:
            self.aggregator.start()
        errors = record_errors(
            lambda: self.flusher.last_error, cfg.data_dir, configured_secrets(), sinks=cfg.sinks
        )
        self._mlflow_state = asyncio.create_task(errors)
        self._workers_state = asyncio.create_task(
            record_failed(self.workers, cfg.data_dir, self.disk.shortfall)
        )
        if self.artifacts is not None:
            self.artifacts.start()

    def _mlflow_flusher(self, cfg: ReceiverConfig, conn: sqlite3.Connection, hub: Hub) -> Flusher:
        """The MLflow side: the sink, the flusher, artifact uploads and MLflow's API."""
        queue_path = cfg.data_dir / QUEUE_FILE
        if cfg.embedded:
            create_private(cfg.data_dir / "mlflow.db")
        artifacts = (cfg.data_dir / "artifacts").resolve().as_uri() if cfg.embedded else None
        sink = open_sink(
            cfg.effective_tracking_uri,
            bulk=cfg.bulk_write,
            artifact_location=artifacts,
            receiver_id=self._claim.receiver_id,
        )
        self.artifacts = ArtifactRelay(
            cfg.data_dir, cfg.effective_tracking_uri, self.ingestor, cfg.flush_interval_s
        )
        self.tracking = TrackingService(
            tracking_uri=cfg.effective_tracking_uri,
            artifact_location=artifacts,
            queue_path=queue_path,
            ingestor=self.ingestor,
            flush_soon=lambda: self.flusher.flush_soon(),  # noqa: PLW0108 - made below
            uploads_pending=self.artifacts.store.pending_for,
            mlflow_error=lambda: self.flusher.last_error,
            authenticator=self.guard.authenticator,
            viewer_token=cfg.viewer_token,
            scope=cfg.read_scope,
            own_queue=cfg.fleet is None,
        )
        return Flusher(
            Queue(conn, self.backlog),
            sink,
            interval_s=cfg.flush_interval_s,
            on_run=self._on_run,
            backlog=self.backlog,
            last_seen=self.ingestor.last_seen,
            lease_s=cfg.run_lease_s,
            observer=Observers(hub, self.tracking.flushes),
            identity=StoreIdentity(
                cfg.data_dir,
                cfg.effective_tracking_uri,
                lambda: probes.store_id(sink.client),
            ),
            receiver_id=self._claim.receiver_id,
            gaps=GapLog(conn),
            calls=self.tracking.journal,
            mirror=self._mirror,
            round_as_step=cfg.round_as_step,
            workers=cfg.flush_workers,
            alone=cfg.alone or cfg.embedded,
        )

    def _service_for(self, cfg: ReceiverConfig, conn: sqlite3.Connection) -> IngestService:
        """The Ingest service, with the workers it needs and the data directory's reserve."""
        for part in (self.ingestor, self.aggregator, self.flusher, self.artifacts):
            if part is not None:  # in stop order (Receiver.stop)
                self.workers.add(
                    part.uploader.worker if isinstance(part, ArtifactRelay) else part.worker
                )
        reserve = cfg.disk_reserve_mib * MIB
        wal = cfg.data_dir / f"{QUEUE_FILE}-wal"
        self.disk = DiskReserve(cfg.data_dir, reserve, lambda: reusable_bytes(conn, wal))
        return IngestService(
            self.ingestor, self.backlog, cfg, hub=self.hub, admission=self.guard.admission,
            disk=self.disk,
        )  # fmt: skip

    def _grpc_server(self, cfg: ReceiverConfig) -> grpc.aio.Server:
        """The gRPC server with every service the receiver offers (not listening yet)."""
        server = grpc.aio.server(
            options=self.guard.server_options(SERVER_OPTIONS),
            interceptors=(self.guard.interceptor,),
        )
        server.add_generic_rpc_handlers((self.service.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        watch = WatchService(self.hub, cfg.viewer_token, self.live.receiver_state)
        watch_pb2_grpc.add_WatchServicer_to_server(watch, server)  # type: ignore[no-untyped-call]
        if self.artifacts is not None and self.tracking is not None:
            self.artifacts.register(server)
            self.tracking.register(server)
        return server

    def _ingest_for(self, cfg: ReceiverConfig, conn: sqlite3.Connection) -> IngestBackend:
        """This receiver's own queue, or (fleet mode) the JetStream cluster the fleet shares."""
        if cfg.fleet is None:
            return Ingestor(
                Queue(conn), self._stored, self.backlog, gaps=GapLog(conn),
                aggregates=self.aggregator,
            )  # fmt: skip
        return open_fleet(
            cfg.fleet,
            Queue(conn),
            self._stored,
            lambda: self.flusher.flush_soon(),  # noqa: PLW0108 - the flusher comes later
            self.backlog,
            name=f"trackbridge {self._claim.receiver_id}",
            hub_of=lambda: (self._loop, self.hub),
            mlflow_failing=lambda: bool(self.flusher.last_error),
        )

    def _aggregator_for(self, cfg: ReceiverConfig, conn: sqlite3.Connection) -> Aggregator | None:
        if not cfg.aggregate.enabled:
            return None
        return Aggregator(
            conn, cfg.aggregate, on_stored=self._aggregated, on_written=self._show_aggregates
        )

    def hub_for(self, cfg: ReceiverConfig, runs: list[RunRecord]) -> Hub:
        """Makes the live hub (it knows the queue's runs before their clients are heard)."""
        self.hub = Hub(
            live_points=cfg.live_points,
            client_timeout_s=cfg.client_timeout_s,
            mlflow_ui_url=mlflow_ui_url(cfg.effective_tracking_uri) if cfg.mlflow_sink else "",
            runs=runs,
        )
        return self.hub

    async def _start_live(self, cfg: ReceiverConfig) -> int | None:
        address = cfg.http_address
        try:
            return await self.live.start()
        except OSError as exc:
            if address is None or not in_use(exc):
                raise
            raise PortInUse(
                f"cannot start the live view on {address[0]}:{address[1]}: another process holds"
                f" the port; stop it, or give this receiver another port with {HTTP_FLAG}"
            ) from None

    def live_url(self, job: str = "") -> str:
        """The live page's address (of one job, when named); "" when the page is off."""
        address = self.config.http_address
        if address is None or self.http_port is None:
            return ""
        return page_url(address[0], self.http_port, job)

    def _not_serving(self) -> dict[str, str]:
        """Why health is NOT_SERVING, by part: failed workers, a data directory past its reserve."""
        low = self.disk.shortfall()
        return {**self.workers.failed(), **({"disk": low} if low else {})}

    def _stored(self, run_key: str, count: int) -> None:
        self.flusher.stored(run_key, count)

    def _show_aggregates(self, batch: events_pb2.EventBatch) -> None:
        self._loop.call_soon_threadsafe(self.hub.aggregated, batch)

    def _aggregated(self, run_key: str, count: int) -> None:
        self.backlog.add(count)
        self.flusher.stored(run_key, count)
        self.flusher.flush_soon()  # a round's aggregate is awaited: no flush interval

    def _on_run(self, run_key: str, run_id: str, experiment_id: str) -> None:
        self.ingestor.set_mlflow_run(run_key, run_id, experiment_id)
        self.hub.set_mlflow_run(run_key, run_id, experiment_id)
        if run_id:
            self.service.run_ids.known(run_key)

    def counters(self) -> Counters:
        """Current counters (safe to call from any thread)."""
        uploader = self.artifacts.uploader if self.artifacts is not None else None
        return Counters(
            events_stored=self.ingestor.events_stored,
            events_duplicate=self.ingestor.events_duplicate,
            events_flushed=self.flusher.stats.events_flushed,
            batches_rejected=self.service.batches_rejected,
            batches_throttled=self.service.batches_throttled,
            backlog_events=self.backlog.events,
            dead_letters=self.flusher.stats.dead_letters,
            mlflow_errors=self.flusher.stats.mlflow_errors,
            queued_batches=self._status.pending_count(),
            calls_unauthenticated=self.guard.interceptor.calls_refused,
            calls_permission_denied=self.guard.admission.calls_denied,
            calls_over_in_flight=self.guard.interceptor.calls_throttled,
            batches_rate_limited=self.guard.admission.batches_throttled,
            quarantined_runs=self.flusher.stats.quarantined_runs,
            held_events=self.flusher.stats.held_events,
            metric_points_written=self.flusher.stats.metric_points_written,
            recovered_events=self.flusher.stats.recovered_events,
            batches_disk_low=self.service.batches_disk_low,
            disk_free_bytes=self.disk.free_bytes,
            workers=tuple((w.name, w.failure, w.restarts) for w in self.workers),
            artifacts_uploaded=uploader.uploaded if uploader else 0,
            artifacts_refused=uploader.failed if uploader else 0,
            artifacts_set_aside=uploader.set_aside if uploader else 0,
            events_damaged=self._status.damaged_events(),
            reads_waiting=self.tracking.waiting if self.tracking is not None else 0,
        )

    async def stop(self, grace_s: float = 5.0) -> bool:
        """Stops accepting, stores what is in flight, flushes the queue to MLflow; True when
        everything reached MLflow within the shutdown budget."""
        if self._server is None:
            return True
        await self.live.stop()  # viewers' streams would hold the gRPC grace period
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        self._server = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.ingestor.stop, grace_s)
        if self.aggregator is not None:  # what is due goes into the queue, then to MLflow
            await loop.run_in_executor(None, self.aggregator.stop, grace_s)
        drained = await loop.run_in_executor(
            None, self.flusher.stop, self.config.shutdown_timeout_s
        )
        if not drained:
            _logger.warning("stopped with batches still queued; they are flushed on next start")
        if self.artifacts is not None and self.tracking is not None:
            await loop.run_in_executor(None, self.artifacts.stop, self.config.shutdown_timeout_s)
            self.tracking.close()
        if self._mirror is not None and not self.flusher.running:
            self._mirror.close()  # never under a flusher still writing (reused descriptors)
        self._mlflow_state.cancel()
        self._workers_state.cancel()
        self.guard.close()
        for conn in self._conns:
            conn.close()
        self._claim.release()
        return drained


async def serve(config: ReceiverConfig, on_ready: Callable[[Receiver], None] | None = None) -> bool:
    """Runs a receiver until SIGTERM or SIGINT, then drains; returns whether all was flushed."""
    receiver = Receiver(config)
    await receiver.start()
    if on_ready is not None:
        on_ready(receiver)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _logger.info("shutting down: draining the queue to MLflow")
    return await receiver.stop()
