"""Per-batch admission: batch size, the client's rate, and whether it may write as the client
it claims to be. Called by the Ingest service once a batch is decoded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from bridge.protocol import RETRY_AFTER_KEY
from server.security.auth import caller, shown
from server.security.config import SecurityConfig
from server.security.quota import LogThrottle, RateLimiter

_logger = logging.getLogger(__name__)


class Admission:
    """Refuses, with a status that says why, what the receiver will not take from a caller."""

    def __init__(self, config: SecurityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_events = config.max_batch_events
        self._rate = RateLimiter(config.rate_events_per_s, config.rate_burst_events, clock)
        self._log = LogThrottle()
        self.batches_throttled = 0
        self.calls_denied = 0

    async def admit(self, context: grpc.aio.ServicerContext, client_id: str, events: int) -> None:
        """Checks a decoded batch's size and charges the client's rate, before the (costlier)
        validation. Aborts with INVALID_ARGUMENT or RESOURCE_EXHAUSTED (with a retry delay)."""
        if events > self._max_events:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"invalid batch: {events} events; this receiver takes at most"
                f" {self._max_events} per batch (send smaller batches)",
            )
        identity = caller()
        key = identity.name if identity is not None else client_id
        wait_s = self._rate.take(key, events)
        if wait_s > 0:
            self.batches_throttled += 1
            if self._log.allow(f"rate {key}"):
                _logger.warning("client %s is over its rate limit; told to wait", shown(key))
            retry_ms = max(1, int(wait_s * 1000) + 1)
            context.set_trailing_metadata(((RETRY_AFTER_KEY, str(retry_ms)),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"client {shown(key)} is over its rate limit; retry after {retry_ms} ms",
            )

    async def check_claim(self, context: grpc.aio.ServicerContext, client_id: str) -> None:
        """Aborts with PERMISSION_DENIED (and logs it) when the authenticated caller claims a
        client id that is not its own."""
        identity = caller()
        if identity is None or identity.allows(client_id):
            return
        self.calls_denied += 1
        if self._log.allow(f"claim {identity.name}"):
            _logger.warning(
                "refused %s from %s: it claims client %s (%s)",
                shown(identity.name),
                context.peer(),
                shown(client_id),
                identity.proof,
            )
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"this caller is client {shown(identity.name)} ({identity.proof}) and may not"
            f" write as client {shown(client_id)}",
        )
