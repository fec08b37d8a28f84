"""The live hub's side of freshness: when each logged point reaches a Watch viewer."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

_logger = logging.getLogger(__name__)

_JOIN_S = 5.0


class LiveWatcher:
    """A viewer of the receiver's Watch stream that notes each metric point's lag.

    The lag is the time from the point's log call (its timestamp, ms) until the update that
    carries it arrives here. ``error`` says why nothing could be watched, if so.

    Args:
        address: The receiver's gRPC address.
        job: The job to watch.
        key: The metric whose points are timed.
        timeout_s: Longest the stream stays open.
    """

    def __init__(self, address: str, job: str, key: str, timeout_s: float) -> None:
        self.lags_ns: list[int] = []
        self.events_dropped = 0
        self.error = ""
        self._key = key
        self._channel = grpc.insecure_channel(address)
        self._call: Any = None
        try:
            from bridge.pb.v1 import watch_pb2, watch_pb2_grpc
        except ImportError:
            self.error = "this receiver has no Watch service"
            return
        stub = watch_pb2_grpc.WatchStub(self._channel)  # type: ignore[no-untyped-call]
        request = watch_pb2.WatchRequest(job=job, include_events=True)
        self._call = stub.Watch(request, timeout=timeout_s)
        self._thread = threading.Thread(target=self._read, name="bench-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for update in self._call:
                now = time.time()
                self.events_dropped += update.events_dropped
                for batch in update.batches:
                    for event in batch.events:
                        if event.WhichOneof("kind") == "metric" and event.metric.key == self._key:
                            lag_s = now - event.metric.timestamp_ms / 1000
                            self.lags_ns.append(int(lag_s * 1e9))
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.error = f"{exc.code().name}: {exc.details()}"

    def close(self) -> None:
        """Ends the stream and the reading thread."""
        if self._call is not None:
            self._call.cancel()
            self._thread.join(_JOIN_S)
        self._channel.close()
