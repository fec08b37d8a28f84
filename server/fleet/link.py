"""One connection to the fleet's NATS cluster, on an event loop thread of its own.

nats-py belongs to the loop it connected on (a call from another loop hangs), while the
receiver's callers are the gRPC loop and the flusher's threads: every call goes through
:meth:`NatsLink.run` (or :meth:`NatsLink.submit` for an asyncio caller elsewhere). The
connection retries servers forever (nats-py's default gives up after about two minutes), and
the stream, its lanes' consumers and the KV buckets are made here when missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from server.fleet import subjects
from server.fleet.config import FleetConfig

_logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
"""How long a receiver's start waits for a first NATS server to answer."""
DUPLICATE_WINDOW_S = 600.0
"""How long JetStream remembers a message id: a client's retries of one batch fall inside it."""


class NatsLink:
    """The connection, the JetStream context and the fleet's buckets."""

    def __init__(self, config: FleetConfig, name: str) -> None:
        self.config = config
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="trackbridge-nats", daemon=True
        )
        self.nc: Client | None = None
        self._closing = False
        self.js: JetStreamContext
        self.runs: KeyValue
        self.progress: KeyValue
        self.live: KeyValue

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop every NATS call runs on."""
        return self._loop

    def start(self, timeout_s: float = 30.0) -> None:
        """Connects and makes what is missing of the stream, consumers and buckets; raises
        TimeoutError when no server answers within ``CONNECT_TIMEOUT_S``."""
        self._thread.start()
        self.run(self._start(), timeout_s + CONNECT_TIMEOUT_S)

    async def _start(self) -> None:
        try:
            await asyncio.wait_for(self._dial(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(
                f"no NATS server answered within {CONNECT_TIMEOUT_S:.0f} s"
            ) from None
        await self._ensure()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Runs ``coro`` on the link's loop and waits for it (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Starts ``coro`` on the link's loop; the caller waits as it likes."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        """Closes the connection and the loop (no drain: it can hang on pull subscriptions)."""
        self._closing = True
        if self._thread.is_alive():
            if self.nc is not None:
                try:
                    self.run(self.nc.close(), 5.0)
                except Exception as exc:
                    _logger.warning("closing the NATS connection: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)

    async def _dial(self) -> None:
        self.nc = await nats.connect(
            servers=list(self.config.servers),
            name=self._name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            pending_size=64 * 1024 * 1024,
            no_echo=True,  # a receiver never hears its own live news (server/fleet/live.py)
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        self.js = self.nc.jetstream(timeout=self.config.publish_timeout_s)

    async def _ensure(self) -> None:
        await self._ensure_stream()
        self.runs = await self._bucket(subjects.RUNS_BUCKET)
        self.progress = await self._bucket(subjects.PROGRESS_BUCKET)
        self.live = await self._bucket(subjects.LIVE_BUCKET, ttl_s=15.0)

    async def _ensure_stream(self) -> None:
        cfg = self.config
        try:
            await self.js.stream_info(subjects.STREAM)
        except NotFoundError:
            await self.js.add_stream(
                api.StreamConfig(
                    name=subjects.STREAM,
                    subjects=[f"{subjects.SUBJECT_ROOT}.>"],
                    retention=api.RetentionPolicy.WORK_QUEUE,
                    # Full: the publish fails and the client backs off; nothing is dropped.
                    discard=api.DiscardPolicy.NEW,
                    max_bytes=cfg.max_bytes,
                    max_msg_size=cfg.max_message_bytes,
                    storage=api.StorageType.FILE,
                    num_replicas=cfg.replicas,
                    duplicate_window=DUPLICATE_WINDOW_S,
                    metadata={"trackbridge.partitions": str(cfg.partitions)},
                )
            )
        for lane in range(cfg.partitions):
            try:
                await self.js.consumer_info(subjects.STREAM, consumer_name(lane))
            except NotFoundError:
                await self.js.add_consumer(
                    subjects.STREAM,
                    api.ConsumerConfig(
                        durable_name=consumer_name(lane),
                        filter_subject=subjects.lane_filter(lane),
                        ack_policy=api.AckPolicy.EXPLICIT,
                        # One batch of a lane in flight fleet-wide: each run's order holds.
                        max_ack_pending=1,
                        ack_wait=cfg.ack_wait_s,
                        max_deliver=-1,
                    ),
                )

    async def _bucket(self, name: str, ttl_s: float | None = None) -> KeyValue:
        try:
            return await self.js.key_value(name)
        except (NotFoundError, BadRequestError):
            pass
        try:
            return await self.js.create_key_value(
                api.KeyValueConfig(
                    bucket=name,
                    history=1,
                    replicas=self.config.replicas,
                    storage=api.StorageType.FILE,
                    ttl=ttl_s,
                )
            )
        except BadRequestError:  # another receiver made it meanwhile
            return await self.js.key_value(name)

    async def _on_error(self, exc: Exception) -> None:
        # Without this callback nats-py logs a traceback for every reconnect attempt; before
        # the first connection, start() tells what failed once.
        if self.nc is not None and not self._closing:
            _logger.warning("NATS: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            _logger.warning("disconnected from NATS; reconnecting")

    async def _on_closed(self) -> None:
        if not self._closing:  # a close of nats-py's own is for good: no reconnect follows
            _logger.error("the NATS connection is closed; restart this receiver")

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url if self.nc is not None else None
        _logger.info("reconnected to NATS at %s", url.netloc if url is not None else "?")


def consumer_name(lane: int) -> str:
    """The durable consumer of one lane."""
    return f"flush-p{lane}"
