"""The viewers' side of the Watch RPC (``trackbridge top`` and ``tail``): one stream that
reconnects by itself. Uses the generated stubs only: no client SDK, no MLflow."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from bridge.channel import ChannelSecurity
from bridge.pb.v1 import watch_pb2, watch_pb2_grpc

# Codes that a retry cannot fix: say why and stop.
_FATAL = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_MAX_BACKOFF_S = 5.0
VIEWER_FIX = "pass the receiver's viewer token (TRACKBRIDGE_VIEWER_TOKEN, or --viewer-token)"
"""What to do when the receiver refuses a viewer."""


class ViewerError(Exception):
    """The receiver refused the viewer (token, permission) or does not serve Watch."""


def watch(
    receiver: str,
    *,
    job: str = "",
    client_id: str = "",
    include_events: bool = False,
    security: ChannelSecurity | None = None,
    on_trouble: Callable[[str], None] = lambda message: None,
    stop: threading.Event | None = None,
) -> Iterator[watch_pb2.WatchUpdate]:
    """Yields the receiver's updates, reconnecting (with backoff) while it is unreachable.

    Args:
        receiver: The receiver's gRPC address ``host:port``.
        job: Only this job ("" for all).
        client_id: Only this client ("" for all).
        include_events: Also stream every accepted event.
        security: TLS settings, and the receiver's viewer token as the bearer token.
        on_trouble: Told, in words, why the stream is down before each reconnection.
        stop: Ends the stream when set (checked between reconnections).

    Raises:
        ViewerError: The receiver refused the viewer.
    """
    request = watch_pb2.WatchRequest(job=job, client_id=client_id, include_events=include_events)
    security = security if security is not None else ChannelSecurity()
    stop = stop if stop is not None else threading.Event()
    backoff = 0.5
    with security.open_channel(receiver, options=()) as channel:
        stub: Any = watch_pb2_grpc.WatchStub(channel)  # type: ignore[no-untyped-call]
        while not stop.is_set():
            try:
                for update in stub.Watch(request):
                    backoff = 0.5
                    yield update
                on_trouble("the receiver ended the stream")
            except grpc.RpcError as exc:
                code = exc.code()
                if code in _FATAL:
                    raise ViewerError(f"{code.name}: {exc.details()}") from None
                on_trouble(f"receiver {receiver} unreachable ({code.name}); retrying")
            stop.wait(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)
