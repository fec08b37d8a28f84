"""The whole fleet on every receiver's live page and Watch stream.

Each receiver tells the others, over core NATS (no persistence, no replication cost), what it
accepted (``tb.live``: the batch as published, with the run's acknowledged sequence), what its
flusher wrote (``tb.flushed``) and which clients asked about their runs (``tb.heard``). Every
receiver feeds what it hears into its own hub, as if its own clients had sent it; the
connection has ``no_echo`` set, so a receiver never hears itself. A receiver that starts late
shows a client from its next batch on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.pb.v1 import events_pb2
from server.live.hub import Hub

_logger = logging.getLogger(__name__)

LIVE_SUBJECT = "tb.live"
FLUSHED_SUBJECT = "tb.flushed"
ACKED_HEADER = "Tb-Acked"

HubOf = Callable[[], tuple[asyncio.AbstractEventLoop, Hub]]
"""The receiver's event loop and hub (asked for once messages come: both are made later)."""


class FleetLive:
    """Publishes this receiver's live news and feeds the others' into its hub."""

    def __init__(self, hub_of: HubOf | None) -> None:
        self._hub_of = hub_of
        self._nc: Client | None = None

    async def attach(self, nc: Client) -> None:
        """Subscribes to the other receivers' news."""
        self._nc = nc
        if self._hub_of is None:
            return
        await nc.subscribe(LIVE_SUBJECT, cb=self._on_batch)
        await nc.subscribe(FLUSHED_SUBJECT, cb=self._on_flushed)

    async def accepted(self, part: bytes, acked_seq: int) -> None:
        """Tells the fleet that this receiver accepted a batch (or a part of one)."""
        await self._tell(LIVE_SUBJECT, part, {ACKED_HEADER: str(acked_seq)})

    async def written(self, key: str, last_seq: int, events: int, run: tuple[str, str]) -> None:
        """Tells the fleet that this receiver's flusher wrote a run up to ``last_seq``."""
        news = {"key": key, "last": last_seq, "events": events, "run": list(run)}
        await self._tell(FLUSHED_SUBJECT, json.dumps(news).encode(), None)

    async def _tell(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        if self._nc is None:
            return
        try:  # the live view is advisory: a full reconnect buffer must not fail a batch
            await self._nc.publish(subject, data, headers=headers)
        except Exception as exc:
            _logger.debug("could not tell the fleet on %s: %s", subject, exc)

    def heard(self, key: str) -> None:
        """A client asked another receiver about its run (a heartbeat)."""
        made = self._hub()
        if made is not None:
            loop, hub = made
            loop.call_soon_threadsafe(hub.heartbeat, key)

    def _hub(self) -> tuple[asyncio.AbstractEventLoop, Hub] | None:
        """The receiver's loop and hub; None before the receiver has made its hub."""
        if self._hub_of is None:
            return None
        try:
            return self._hub_of()
        except AttributeError:  # news that came while the receiver was starting
            return None

    async def _on_batch(self, msg: Msg) -> None:
        try:
            batch = events_pb2.EventBatch.FromString(msg.data)
            acked = int((msg.headers or {}).get(ACKED_HEADER, "0"))
        except Exception as exc:  # a bad message from a peer must not stop the others
            _logger.debug("ignored a live message: %s", exc)
            return
        made = self._hub()
        if made is not None:
            loop, hub = made
            loop.call_soon_threadsafe(hub.received, batch, acked)

    async def _on_flushed(self, msg: Msg) -> None:
        try:
            news = json.loads(msg.data)
            key, last, events = str(news["key"]), int(news["last"]), int(news["events"])
            run_id, experiment_id = (str(x) for x in news["run"])
        except Exception as exc:
            _logger.debug("ignored a flushed message: %s", exc)
            return
        made = self._hub()
        if made is not None:
            made[1].flushed_elsewhere(key, last, events)
            if run_id:
                made[1].set_mlflow_run(key, run_id, experiment_id)
