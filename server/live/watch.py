"""The Watch RPC: a client's or a job's live state and events, streamed to viewers.

A viewer proves itself with the receiver's viewer token (``authorization: Bearer <token>``
metadata); a receiver without a viewer token serves Watch to loopback peers only.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterable

import grpc

from bridge.pb.v1 import events_pb2, watch_pb2, watch_pb2_grpc
from bridge.protocol import AUTHORIZATION_KEY
from server.config import is_loopback
from server.live.hub import Hub
from server.live.model import ClientRow

STATE_WAIT_S = 5.0
"""How long one wait for news lasts before the stream checks that it should go on."""


def client_state(row: ClientRow) -> watch_pb2.ClientState:
    """A hub row as its protobuf message."""
    return watch_pb2.ClientState(
        job=row.job,
        client_id=row.client_id,
        run_key=row.run_key,
        connected=row.connected,
        state=row.state,
        last_seen_ms=row.last_seen_ms,
        events_per_s=row.events_per_s,
        events_received=row.events_received,
        events_acked=row.events_acked,
        events_flushed=row.events_flushed,
        dead_letters=row.dead_letters,
        backlog_events=row.backlog_events,
        client_pending_events=row.client_pending_events,
        client_spool_bytes=row.client_spool_bytes,
        mlflow_run_id=row.mlflow_run_id,
        mlflow_experiment_id=row.mlflow_experiment_id,
        mlflow_run_url=row.mlflow_run_url,
        latest=[
            events_pb2.Metric(key=key, value=value, step=step, timestamp_ms=ts)
            for key, (step, value, ts) in row.latest.items()
        ],
    )


def peer_is_loopback(peer: str) -> bool:
    """Whether a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) is local."""
    kind, _, address = peer.partition(":")
    if kind == "unix":
        return True
    if kind == "ipv6":
        return is_loopback(address.rpartition("]")[0].lstrip("["))
    if kind == "ipv4":
        return is_loopback(address.rpartition(":")[0])
    return False


class WatchService(watch_pb2_grpc.WatchServicer):
    """Streams the hub's updates to authorised viewers."""

    def __init__(
        self, hub: Hub, token: str, receiver_state: Callable[[], watch_pb2.ReceiverState]
    ) -> None:
        self._hub = hub
        self._token = token
        self._receiver_state = receiver_state

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self._token:
            if not peer_is_loopback(context.peer()):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "this receiver has no viewer token: Watch is served to loopback viewers only",
                )
            return
        offered = ""
        for key, value in context.invocation_metadata() or ():
            if key == AUTHORIZATION_KEY and isinstance(value, str):
                offered = value
        scheme, _, token = offered.partition(" ")
        if scheme.lower() != "bearer" or not token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a viewer token is required")
        if not hmac.compare_digest(token.strip().encode(), self._token.encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong viewer token")

    async def Watch(
        self, request: watch_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[watch_pb2.WatchUpdate]:
        await self._authorize(context)
        sub = self._hub.subscribe(request.job, request.client_id, events=request.include_events)
        try:
            while not sub.closed:
                if not await sub.wait(STATE_WAIT_S):
                    continue
                resync, deltas, batches, dropped = sub.take()
                states = resync or any(delta.clients is not None for delta in deltas)
                if resync:
                    rows: Iterable[ClientRow] = self._hub.rows(request.job, request.client_id)
                else:
                    latest: dict[tuple[str, str], ClientRow] = {}
                    for delta in deltas:
                        for row in delta.clients or ():
                            if sub.matches(row.job, row.client_id):
                                latest[(row.job, row.client_id)] = row
                    rows = latest.values()
                update = watch_pb2.WatchUpdate(
                    time_ms=time.time_ns() // 1_000_000,
                    clients=[client_state(r) for r in rows],
                    batches=batches,
                    events_dropped=dropped,
                )
                if states:  # a viewer with no clients yet still learns the receiver's state
                    update.receiver.CopyFrom(self._receiver_state())
                if states or update.batches or update.events_dropped:
                    yield update
        finally:
            self._hub.unsubscribe(sub)
