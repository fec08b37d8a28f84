"""The viewer token: the page, its API, /metrics and the Watch stream refuse viewers without
it; a non-loopback HTTP address cannot be configured without one."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import watch_pb2, watch_pb2_grpc
from server.config import ReceiverConfig
from server.live.watch import peer_is_loopback
from tests.support.live import LIVE_ARGS, first_sse_message, get, http_port, live_writers
from tests.support.procs import TRACKBRIDGE_EXE

TOKEN = "viewer-token-0123456789"


def _watch_first(address: str, job: str, token: str | None) -> Any:
    """The first update that carries a client's latest values (a batch acked a moment ago is
    in the update after its digestion, a fifth of a second later at most)."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(address) as channel:
        stub: Any = watch_pb2_grpc.WatchStub(channel)
        stream = stub.Watch(watch_pb2.WatchRequest(job=job), metadata=metadata, timeout=20)
        try:
            for update in stream:
                if any(client.latest for client in update.clients):
                    return update
        finally:
            stream.cancel()
    raise AssertionError("the stream ended without the client's latest values")


@pytest.mark.timeout(120)
def test_http_and_watch_refuse_a_missing_or_wrong_token(
    start_receiver: Callable[..., Any], job: str, tmp_path: Path
) -> None:
    receiver = start_receiver(extra_args=(*LIVE_ARGS, "--viewer-token", TOKEN))
    base = f"http://127.0.0.1:{http_port(receiver)}"
    with live_writers(receiver.address, job, ["site-a"], tmp_path) as writers:
        writers["site-a"].log_metric("x", 1.0, step=1)
        assert writers["site-a"].flush(20)

        paths = ["/", f"/jobs/{job}", "/api/jobs", f"/api/jobs/{job}", "/metrics"]
        for path in [*paths, f"/api/jobs/{job}/events", "/static/app.js"]:
            assert get(base + path).status == 401, path
            assert get(base + path, {"Authorization": "Bearer nope"}).status == 401, path
            assert get(f"{base}{path}?token=nope").status == 401, path
        for path in paths:
            assert get(base + path, {"Authorization": f"Bearer {TOKEN}"}).status == 200, path
            cookie = {"Cookie": f"trackbridge_viewer={TOKEN}"}
            assert get(base + path, cookie).status == 200, path
        # The token in a page address is traded for a cookie and dropped from the address.
        traded = get(f"{base}/jobs/{job}?token={TOKEN}")
        assert traded.status == 303
        assert traded.headers["Location"] == f"/jobs/{job}"
        assert traded.headers["Set-Cookie"].startswith(f"trackbridge_viewer={TOKEN};")
        assert "HttpOnly" in traded.headers["Set-Cookie"]
        stream = first_sse_message(
            f"{base}/api/jobs/{job}/events", {"Authorization": f"Bearer {TOKEN}"}
        )
        assert stream["type"] == "snapshot"
        assert [c["id"] for c in stream["clients"]] == ["site-a"]

        for token, word in ((None, "required"), ("nope", "wrong")):
            with pytest.raises(grpc.RpcError) as refused:
                _watch_first(receiver.address, job, token)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert word in (refused.value.details() or "")
        update = _watch_first(receiver.address, job, TOKEN)
        assert [c.client_id for c in update.clients] == ["site-a"]
        assert update.clients[0].latest[0].key == "x"

        # The viewers say why they were refused, and fail.
        for command in ("top", "tail"):
            result = subprocess.run(
                [str(TRACKBRIDGE_EXE), command, "--receiver", receiver.address],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={"TRACKBRIDGE_VIEWER_TOKEN": "nope", "PATH": "/usr/bin:/bin"},
            )
            assert result.returncode == 2, result
            assert "UNAUTHENTICATED: wrong viewer token" in result.stderr


@pytest.mark.timeout(60)
def test_without_a_token_only_loopback_is_served(
    start_receiver: Callable[..., Any], job: str
) -> None:
    receiver = start_receiver(extra_args=LIVE_ARGS)
    base = f"http://127.0.0.1:{http_port(receiver)}"
    assert get(f"{base}/api/jobs").status == 200
    # A page elsewhere that rebinds its own name to 127.0.0.1 gets nothing.
    assert get(f"{base}/api/jobs", {"Host": "evil.example:80"}).status == 403
    assert get(f"{base}/api/jobs", {"Host": f"localhost:{http_port(receiver)}"}).status == 200
    assert get(f"{base}/nothing-here").status == 404


def test_a_public_http_address_needs_a_viewer_token() -> None:
    with pytest.raises(ValueError, match="viewer token is required"):
        ReceiverConfig(http_listen="0.0.0.0:8080")
    config = ReceiverConfig(http_listen="0.0.0.0:8080", viewer_token=TOKEN)
    assert config.http_address == ("0.0.0.0", 8080)
    assert TOKEN not in repr(config)
    assert ReceiverConfig(listen="127.0.0.1:50551").http_address == ("127.0.0.1", 50552)
    assert ReceiverConfig(listen="127.0.0.1:0").http_address == ("127.0.0.1", 0)
    assert ReceiverConfig(http_listen="off").http_address is None
    env = {"TRACKBRIDGE_HTTP_LISTEN": "[::1]:0", "TRACKBRIDGE_VIEWER_TOKEN": TOKEN}
    resolved = ReceiverConfig.resolve(env=env)
    assert resolved.http_address == ("::1", 0)
    assert resolved.viewer_token == TOKEN
    with pytest.raises(ValueError, match="http_listen"):
        ReceiverConfig(http_listen="nonsense")


def test_watch_peers_that_count_as_loopback() -> None:
    assert peer_is_loopback("ipv4:127.0.0.1:5000")
    assert peer_is_loopback("ipv6:[::1]:5000")
    assert peer_is_loopback("unix:/tmp/sock")
    assert not peer_is_loopback("ipv4:10.1.2.3:5000")
    assert not peer_is_loopback("ipv6:[2001:db8::1]:5000")
    assert not peer_is_loopback("")
