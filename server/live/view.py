"""Runs the live view inside the receiver's event loop: the hub's pump, the HTTP server and the
gRPC health of the ingest service (NOT_SERVING while the flusher cannot reach MLflow).

Updates are coalesced: the pump runs as soon as new data arrives but at most every
:data:`MIN_PUSH_INTERVAL_S`, and refreshes client states every :data:`STATE_PERIOD_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from bridge.pb.v1 import watch_pb2
from bridge.protocol import INGEST_SERVICE
from server.config import ReceiverConfig
from server.live.history import HistoryLoader
from server.live.http import LiveHttpServer
from server.live.hub import Hub
from server.live.metrics import Exporter
from server.live.rounds import RoundsView
from server.queue.schema import QUEUE_FILE
from server.queue.sqlite import RunRecord

if TYPE_CHECKING:
    from server.live.model import Counters

_logger = logging.getLogger(__name__)

MIN_PUSH_INTERVAL_S = 0.2
"""Viewers get at most this many updates a second (5): coalesced, not one per batch."""
STATE_PERIOD_S = 1.0
"""Client rows (rates, presence, backlogs) and the health check are refreshed this often."""


class Live:
    """The live view of one receiver.

    Args:
        hub: The receiver's hub.
        config: The receiver's configuration (HTTP address, viewer token).
        counters: The receiver's counters, for ``/metrics``.
        mlflow_reachable: Whether the flusher currently reaches MLflow.
        health: The receiver's gRPC health servicer.
        runs: The queue's runs at start: their charts are read back (a restarted receiver,
            server/live/history.py). Per-round health (server/live/rounds.py) is shown when
            the receiver aggregates.
        not_serving: Why the receiver cannot take batches, by part (a failed worker, a data
            directory past its reserve): while any, health is NOT_SERVING (the whole
            server's too).
    """

    def __init__(
        self,
        hub: Hub,
        config: ReceiverConfig,
        *,
        counters: Callable[[], Counters],
        mlflow_reachable: Callable[[], bool],
        health: HealthServicer,
        runs: Sequence[RunRecord] = (),
        not_serving: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self.hub = hub
        queue_path = config.data_dir / QUEUE_FILE
        self.history = (
            HistoryLoader(hub, list(runs), config.effective_tracking_uri, queue_path)
            if config.mlflow_sink and runs
            else None
        )
        self.rounds = RoundsView(queue_path) if config.aggregate.enabled else None
        self._config = config
        self._counters = counters
        self._mlflow_reachable = mlflow_reachable
        self._health = health
        self._not_serving = not_serving
        self._failed: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: LiveHttpServer | None = None
        self._serving: bool | None = None
        self._stopping = False
        self.pump_errors = 0
        self.exporter = Exporter(
            hub.client_counters,
            counters,
            mlflow_reachable,
            hub.flush_seconds,
            rounds=self.rounds.all if self.rounds is not None else dict,
        )

    async def start(self) -> int | None:
        """Starts the HTTP server and the pump; returns the HTTP port (None when off).

        Raises:
            HttpListenError: The HTTP address cannot be served.
        """
        port = None
        address = self._config.http_address
        if address is not None:
            self._http = LiveHttpServer(
                self.hub,
                token=self._config.viewer_token,
                metrics_text=self.exporter.render,
                receiver_state=self.receiver_json,
            )
            port = await self._http.start(*address)
        self.hub.wake = self._wake.set
        if self.history is not None:
            self.history.start(asyncio.get_running_loop().call_soon_threadsafe)
        self._task = asyncio.create_task(self._pump_loop(), name="trackbridge-live")
        return port

    async def stop(self) -> None:
        """Ends every viewer's stream, then the HTTP server and the pump."""
        self.hub.close_viewers()
        if self.history is not None:
            self.history.stop(0.0)  # between two runs' reads; its thread is a daemon
        if self.rounds is not None:
            self.rounds.close()
        if self._http is not None:
            await self._http.stop()
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # A flag, not cancellation: before Python 3.12, wait_for can swallow a cancel.
            done, _ = await asyncio.wait([self._task], timeout=5.0)
            if not done:
                self._task.cancel()

    def receiver_state(self) -> watch_pb2.ReceiverState:
        """The receiver's own state, for Watch."""
        return watch_pb2.ReceiverState(
            mlflow_reachable=self._mlflow_reachable(),
            backlog_events=self._counters().backlog_events,
            connected_clients=self.hub.connected_clients(),
            mlflow_ui_url=self.hub.mlflow_ui_url,
            round_lines=self.rounds.lines() if self.rounds is not None else (),
        )

    def receiver_json(self, job: str) -> dict[str, Any]:
        """The receiver's own state, for the page of ``job``: its backlog and the job's."""
        return {
            "mlflow_up": self._mlflow_reachable(),
            "sinks": list(self._config.sinks),
            "backlog": self._counters().backlog_events,
            "job_backlog": self.hub.job_backlog(job),
            "mlflow_ui": self.hub.mlflow_ui_url,
            "rounds": [r.as_json() for r in self.rounds.all().get(job, [])]
            if self.rounds is not None
            else [],
        }

    async def _pump_loop(self) -> None:
        last_push = last_states = -STATE_PERIOD_S
        while not self._stopping:
            now = time.monotonic()
            timeout = max(0.0, last_states + STATE_PERIOD_S - now)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            hold = last_push + MIN_PUSH_INTERVAL_S - time.monotonic()
            if hold > 0 and not self._stopping:
                await asyncio.sleep(hold)  # coalesce what arrives meanwhile
            if self._stopping:
                return
            self._wake.clear()
            now = time.monotonic()
            states_due = now - last_states >= STATE_PERIOD_S
            try:
                self.hub.pump(states_due=states_due)
                if states_due:
                    await self._update_health()
            except Exception:
                self.pump_errors += 1
                _logger.exception("live view: pump failed; going on")
            last_push = now
            if states_due:
                last_states = now

    async def _update_health(self) -> None:
        failed = self._not_serving()
        status = health_pb2.HealthCheckResponse
        if failed != self._failed:
            self._failed = failed
            for part, why in failed.items():
                _logger.error("health is NOT_SERVING: %s: %s", part, why)
            await self._health.set("", status.NOT_SERVING if failed else status.SERVING)
        serving = not failed and self._mlflow_reachable()
        previous, self._serving = self._serving, serving
        if serving == previous:
            return
        if not serving and not failed:  # a failed part was logged above
            _logger.info("MLflow is failing: health of %s is NOT_SERVING", INGEST_SERVICE)
        elif serving and previous is not None:
            _logger.info("MLflow is reachable again: %s is SERVING", INGEST_SERVICE)
        await self._health.set(INGEST_SERVICE, status.SERVING if serving else status.NOT_SERVING)
