"""The client's one gRPC choke point: a long-lived channel, and RpcError mapped to our errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import grpc

from bridge.channel import ChannelSecurity
from bridge.errors import TrackbridgeError
from bridge.pb.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    tracking_pb2,
    tracking_pb2_grpc,
)
from bridge.protocol import AWAIT_RUN_ID_KEY, PUBLISH_METHOD, RETRY_AFTER_KEY
from client_sdk._fork_gate import clean_fork, grpc_call
from client_sdk._targets import channel_target

_logger = logging.getLogger(__name__)

# Codes that mean "the same batch may succeed later".
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
        # Credentials can be fixed on the receiver side while the client keeps its data.
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)

# Keepalive must agree with the receiver's settings (server/receiver.py), or it answers
# too_many_pings.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.enable_retries", 0),  # tenacity owns retrying
    # Reconnect soon after the receiver is back (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def _retry_after_s(exc: grpc.RpcError) -> float:
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == RETRY_AFTER_KEY:
            try:
                return max(0.0, int(value) / 1000)
            except ValueError:
                return 0.0
    return 0.0


class TransportError(TrackbridgeError):
    """A Publish call that failed; ``retryable`` says whether to try the same batch again."""

    def __init__(
        self, code: str, message: str, *, retryable: bool, retry_after_s: float = 0.0
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        """The receiver's requested pause before the next attempt (RESOURCE_EXHAUSTED)."""


@contextlib.contextmanager
def _rpc(*, long: bool = False, retry: frozenset[grpc.StatusCode] = _RETRYABLE) -> Iterator[None]:
    """One call into gRPC: through the fork gate (``long`` calls are not waited for), and its
    failure as a TransportError, retryable for the codes in ``retry``. The one place that maps
    gRPC's errors to the client's."""
    try:
        with grpc_call(long=long):
            yield
    except grpc.RpcError as exc:
        code = exc.code()
        raise TransportError(
            code.name,
            exc.details() or "",
            retryable=code in retry,
            retry_after_s=_retry_after_s(exc),
        ) from None


class EventTransport(Protocol):
    """What the sender and a spool's delivery need of a receiver (:class:`Transport`; the
    in-process tests put a fake that fails on command in its place)."""

    def publish(self, payload: bytes, timeout_s: float | None = None) -> ingest_pb2.Ack:
        """Sends one serialized EventBatch; returns the ack or raises TransportError."""

    def get_run(
        self,
        client_id: str,
        run_key: str,
        timeout_s: float | None = None,
        *,
        await_id: bool = False,
    ) -> ingest_pb2.Ack:
        """How far a run has got (``await_id``: held until its MLflow run id is known, within
        ``timeout_s``); raises TransportError."""

    def close(self) -> None:
        """Lets go of the connection."""


class Transport:
    """Sends batches to one receiver over one channel."""

    def __init__(
        self, address: str, timeout_s: float, security: ChannelSecurity | None = None
    ) -> None:
        self._timeout_s = timeout_s
        self._channel = _open_channel(address, security, CHANNEL_OPTIONS)
        if self._channel is None:
            return
        self._stub = ingest_pb2_grpc.IngestStub(self._channel)  # type: ignore[no-untyped-call]
        # Batches are serialized once, by the sender, and sent as they were spooled.
        self._publish_raw = self._channel.unary_unary(
            PUBLISH_METHOD,
            request_serializer=None,
            response_deserializer=ingest_pb2.Ack.FromString,
        )

    def publish(self, payload: bytes, timeout_s: float | None = None) -> ingest_pb2.Ack:
        """Sends one serialized EventBatch; returns the receiver's ack or raises TransportError."""
        if self._channel is None:
            raise _forked_mid_call()
        return self._call(self._publish_raw, payload, timeout_s)

    def get_run(
        self,
        client_id: str,
        run_key: str,
        timeout_s: float | None = None,
        *,
        await_id: bool = False,
    ) -> ingest_pb2.Ack:
        """Asks how far a run has got (acked sequence, MLflow ids); ``await_id``: the receiver
        answers once it has the run's MLflow id, or near the deadline."""
        if self._channel is None:
            raise _forked_mid_call()
        query = ingest_pb2.RunQuery(client_id=client_id, run_key=run_key)
        timeout = self._timeout_s if timeout_s is None else timeout_s
        if not await_id:
            return self._call(self._stub.GetRun, query, timeout_s)
        wait = ((AWAIT_RUN_ID_KEY, str(int(timeout * 1000))),)
        return self._call(self._stub.GetRun, query, timeout_s, wait)  # forks need not wait

    def _call(
        self, method: Any, request: Any, timeout_s: float | None, metadata: Any = None
    ) -> ingest_pb2.Ack:
        timeout = self._timeout_s if timeout_s is None else max(timeout_s, 0.001)
        with _rpc(long=metadata is not None):
            ack: ingest_pb2.Ack = method(request, timeout=timeout, metadata=metadata)
        return ack

    def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            self._channel.close()


class ArtifactTransport:
    """Streams artifact files to one receiver on a connection of their own, so that a large file
    never delays the event batches."""

    def __init__(self, address: str, security: ChannelSecurity | None = None) -> None:
        # A local subchannel pool keeps this channel off the event channel's connection.
        options = (*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))
        self._channel = _open_channel(address, security, options)
        self._stub: Any = (
            artifacts_pb2_grpc.ArtifactsStub(self._channel)  # type: ignore[no-untyped-call]
            if self._channel is not None
            else None
        )

    def upload(
        self, chunks: Iterator[artifacts_pb2.ArtifactChunk], timeout_s: float
    ) -> artifacts_pb2.ArtifactAck:
        """Streams one file (header, data, trailer); raises TransportError."""
        if self._stub is None:
            raise _forked_mid_call()
        # A checksum mismatch (DATA_LOSS) is worth sending the file again.
        with _rpc(long=True, retry=_RETRYABLE | {grpc.StatusCode.DATA_LOSS}):
            ack: artifacts_pb2.ArtifactAck = self._stub.Upload(chunks, timeout=timeout_s)
        return ack

    def info(self, timeout_s: float) -> artifacts_pb2.ReceiverInfo:
        """Where the receiver's data can be read; raises TransportError."""
        if self._stub is None:
            raise _forked_mid_call()
        with _rpc(retry=frozenset(grpc.StatusCode)):
            info: artifacts_pb2.ReceiverInfo = self._stub.Info(
                artifacts_pb2.ReceiverInfoRequest(), timeout=timeout_s
            )
        return info

    def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            self._channel.close()


class TrackingTransport:
    """MLflow calls and artifact reads, answered by the receiver (tracking.proto), on a
    connection of their own so that a slow read never delays the event batches."""

    def __init__(self, address: str, security: ChannelSecurity | None = None) -> None:
        options = (*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1))
        self._channel = _open_channel(address, security, options)
        self._stub: Any = (
            tracking_pb2_grpc.TrackingStub(self._channel)  # type: ignore[no-untyped-call]
            if self._channel is not None
            else None
        )

    def call(
        self, request: tracking_pb2.TrackingCall, timeout_s: float
    ) -> tracking_pb2.TrackingReply:
        """One MLflow call; raises TransportError when it did not reach the receiver's MLflow."""
        if self._stub is None:
            raise _forked_mid_call()
        with _rpc(long=True):
            reply: tracking_pb2.TrackingReply = self._stub.Call(request, timeout=timeout_s)
        return reply

    def download(
        self, request: tracking_pb2.ArtifactRead, timeout_s: float
    ) -> Iterator[artifacts_pb2.ArtifactData]:
        """Streams one artifact file's chunks; raises TransportError (NOT_FOUND: no such file)."""
        if self._stub is None:
            raise _forked_mid_call()
        with _rpc(long=True):
            yield from self._stub.Download(request, timeout=timeout_s)

    def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            self._channel.close()


def _open_channel(
    address: str, security: ChannelSecurity | None, options: tuple[tuple[str, Any], ...]
) -> grpc.Channel | None:
    """A channel to ``address``; None in a process forked mid-call (see _fork_gate.py).

    Channels connect lazily and reconnect by themselves; one serves every thread. ``address``
    may list several receivers: gRPC picks one and fails over (_targets.py).
    """
    if not clean_fork():
        _logger.warning(
            "this process was forked while its parent was inside a gRPC call: it sends "
            "nothing to the receiver (gRPC could abort it); what it logs stays in its spool "
            "for `trackbridge sync`"
        )
        return None
    target, lb_options = channel_target(address)
    channel: grpc.Channel = (security or ChannelSecurity()).open_channel(
        target, (*options, *lb_options)
    )
    return channel


def _forked_mid_call() -> TransportError:
    return TransportError(
        "UNAVAILABLE", "no gRPC in a process forked mid-call (see the warning)", retryable=True
    )
