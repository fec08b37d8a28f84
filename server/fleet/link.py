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
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

from bridge.worker import OnFailure, Worker
from server.fleet import subjects
from server.fleet.config import FleetConfig
from server.ingest.backend import NotServing

_logger = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
"""How long a receiver's start waits for a first NATS server to answer."""
DUPLICATE_WINDOW_S = 600.0
"""How long JetStream remembers a message id: a client's retries of one batch fall inside it."""


class LinkFailed(NotServing):
    """The link's event loop failed: no NATS call can be made (the receiver is NOT_SERVING)."""

    def __init__(self, failure: str) -> None:
        super().__init__(f"the receiver's fleet worker failed ({failure})")


class NatsLink:
    """The connection, the JetStream context and the fleet's buckets."""

    def __init__(self, config: FleetConfig, name: str) -> None:
        self.config = config
        self._name = name
        self._loop = asyncio.new_event_loop()
        # FAIL: the connection, its subscriptions and every call in flight belong to this loop;
        # once it is gone the receiver can neither take nor flush batches (NOT_SERVING).
        self.worker = Worker(
            "fleet", self._run_loop, on_failure=OnFailure.FAIL, failed=self._fail_calls
        )
        self._calls: set[concurrent.futures.Future[Any]] = set()
        self._calls_lock = threading.Lock()
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
        self.worker.start()
        self.run(self._start(), timeout_s + CONNECT_TIMEOUT_S)

    def _run_loop(self, worker: Worker) -> None:
        self._loop.run_forever()
        if not worker.stopping.is_set():
            raise RuntimeError("the NATS event loop stopped on its own")

    async def _start(self) -> None:
        try:
            await asyncio.wait_for(self._dial(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise TimeoutError(
                f"no NATS server answered within {CONNECT_TIMEOUT_S:.0f} s"
            ) from None
        await self._ensure()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        """Runs ``coro`` on the link's loop and waits for it (from any other thread); raises
        :class:`LinkFailed` at once when the loop's worker has failed."""
        return self.submit(coro).result(timeout_s)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Starts ``coro`` on the link's loop; the caller waits as it likes (a failed link
        fails the future, so nobody waits for a dead thread)."""
        with self._calls_lock:
            if self.worker.failure:
                coro.close()
                future: concurrent.futures.Future[T] = concurrent.futures.Future()
                future.set_exception(LinkFailed(self.worker.failure))
                return future
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            self._calls.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._calls_lock:
            self._calls.discard(future)

    def _fail_calls(self, worker: Worker) -> None:
        """The loop failed: every call still in flight fails with the reason."""
        with self._calls_lock:
            calls, self._calls = self._calls, set()
        for future in calls:
            # One that finished meanwhile keeps its answer.
            with contextlib.suppress(RuntimeError, concurrent.futures.InvalidStateError):
                if future.set_running_or_notify_cancel():
                    future.set_exception(LinkFailed(worker.failure))

    def stop(self) -> None:
        """Closes the connection and the loop (no drain: it can hang on pull subscriptions)."""
        self._closing = True
        if self.worker.alive:
            if self.nc is not None:
                try:
                    self.run(self.nc.close(), 5.0)
                except Exception as exc:
                    _logger.warning("closing the NATS connection: %s", exc)
            self.worker.stopping.set()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.worker.join(time.monotonic() + 5.0)

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
