"""MLflow calls the receiver answers (reads, and writes whose ids MLflow hands out), for the
MLflow-compatible layers: MLflow's own request messages as bytes, so that this module needs no
mlflow (the layers that have mlflow build and parse the messages).

Read-your-writes: before a call, the caller's logged events and files are flushed to the
receiver (bounded), and the call names the runs whose events the receiver must have written to
MLflow before it answers.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

from bridge.pb.v1 import tracking_pb2
from client_sdk._transport import TrackingTransport, TransportError
from client_sdk.config import WriterConfig


class RelayError(Exception):
    """A call that failed: ``reached`` says whether MLflow itself refused it (``error_code``
    is then MLflow's) or the receiver could not be reached (a gRPC status name)."""

    def __init__(self, error_code: str, message: str, *, reached: bool) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message
        self.reached = reached


class Relay:
    """One channel to the receiver's Tracking service."""

    def __init__(self, config: WriterConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._transport: TrackingTransport | None = None

    def _channel(self) -> TrackingTransport:
        with self._lock:
            if self._transport is None:
                self._transport = TrackingTransport(self._config.receiver, self._config.security)
            return self._transport

    def call(self, method: str, payload: bytes, fresh: Iterable[str], timeout_s: float) -> bytes:
        """MLflow's serialized response to one call; raises RelayError."""
        request = tracking_pb2.TrackingCall(
            client_id=self._config.client_id,
            job=self._config.job,
            method=method,
            request=payload,
            fresh_run_keys=list(fresh),
        )
        try:
            reply = self._channel().call(request, timeout_s)
        except TransportError as exc:
            raise RelayError(exc.code, str(exc), reached=False) from None
        if reply.error_code:
            raise RelayError(reply.error_code, reply.message, reached=True)
        return reply.response

    def download(
        self,
        dest: Path,
        *,
        path: str,
        run_id: str = "",
        model_id: str = "",
        fresh: Iterable[str] = (),
        timeout_s: float,
    ) -> None:
        """Writes one artifact file of a run or logged model to ``dest``; raises RelayError
        (``RESOURCE_DOES_NOT_EXIST`` for a missing file)."""
        request = tracking_pb2.ArtifactRead(
            client_id=self._config.client_id,
            job=self._config.job,
            run_id=run_id,
            model_id=model_id,
            path=path,
            fresh_run_keys=list(fresh),
        )
        part = dest.with_name(dest.name + ".part")
        try:
            with part.open("wb") as f:
                offset = 0
                for chunk in self._channel().download(request, timeout_s):
                    if chunk.offset != offset or zlib.crc32(chunk.data) != chunk.crc32:
                        raise RelayError("DATA_LOSS", f"a damaged chunk of {path}", reached=False)
                    f.write(chunk.data)
                    offset += len(chunk.data)
        except TransportError as exc:
            part.unlink(missing_ok=True)
            code = {
                "NOT_FOUND": "RESOURCE_DOES_NOT_EXIST",
                "PERMISSION_DENIED": "PERMISSION_DENIED",
                "INVALID_ARGUMENT": "INVALID_PARAMETER_VALUE",
            }.get(exc.code)
            raise RelayError(code or exc.code, str(exc), reached=code is not None) from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(dest)

    def close(self) -> None:
        """Closes the channel."""
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
