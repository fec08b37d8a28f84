"""One root for trackbridge's errors, with the receiver's startup errors under StartupError
(the CLI catches that one name), and one place that maps gRPC's errors on the client."""

from __future__ import annotations

import grpc
import pytest

from bridge.errors import BatchRejected, MlflowException, StartupError, TrackbridgeError
from bridge.protocol import RETRY_AFTER_KEY
from client_sdk._transport import TransportError, _rpc
from client_sdk.spool.names import SpoolError
from server.data_dir import DataDirInUse
from server.fleet.start import FleetUnreachable
from server.flush.jsonl import JsonlDamaged, JsonlInUse
from server.live.http import HttpListenError
from server.ports import PortInUse
from server.queue.schema import QueueCorrupt
from server.security.tls import CertificateError

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("error", "also"),
    [
        (DataDirInUse, RuntimeError),
        (QueueCorrupt, Exception),
        (PortInUse, OSError),
        (HttpListenError, OSError),
        (FleetUnreachable, Exception),
        (JsonlDamaged, Exception),
        (JsonlInUse, Exception),
        (CertificateError, ValueError),
    ],
)
def test_startup_errors_share_one_root_and_keep_their_old_bases(
    error: type[Exception], also: type[Exception]
) -> None:
    assert issubclass(error, StartupError)
    assert issubclass(error, TrackbridgeError)
    assert issubclass(error, also)


def test_the_other_errors_share_the_root() -> None:
    for error in (MlflowException, BatchRejected, TransportError, SpoolError):
        assert issubclass(error, TrackbridgeError)


class _Failed(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, code: grpc.StatusCode, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._trailers = code, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "it failed"

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailers


@pytest.mark.parametrize(
    ("code", "retry", "retryable"),
    [
        (grpc.StatusCode.UNAVAILABLE, None, True),
        (grpc.StatusCode.INVALID_ARGUMENT, None, False),
        (grpc.StatusCode.DATA_LOSS, None, False),
        (grpc.StatusCode.DATA_LOSS, frozenset({grpc.StatusCode.DATA_LOSS}), True),
    ],
)
def test_grpc_errors_are_mapped_in_one_place(
    code: grpc.StatusCode, retry: frozenset[grpc.StatusCode] | None, retryable: bool
) -> None:
    trailers = ((RETRY_AFTER_KEY, "1500"),)
    mapped = _rpc() if retry is None else _rpc(retry=retry)
    with pytest.raises(TransportError) as excinfo, mapped:
        raise _Failed(code, trailers)
    error = excinfo.value
    assert (error.code, error.retryable, error.retry_after_s) == (code.name, retryable, 1.5)
    assert str(error) == f"{code.name}: it failed"
