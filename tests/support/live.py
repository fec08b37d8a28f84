"""Helpers for the live-view tests: the receiver's HTTP port, HTTP requests, writers that
heartbeat often, raw publishing, a browser, and where test artifacts go."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests.support.procs import CLIENTS_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
STREAM_CLIENT = CLIENTS_DIR / "stream_points.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LIVE_ARGS = ("--http-listen", "127.0.0.1:0")


def http_port(receiver: Any) -> int:
    """The HTTP port a receiver started by conftest's ``launch_receiver`` wrote to its ready
    file (``ready-<name>.json`` next to its ``receiver-<name>.log``)."""
    name = receiver.log_path.stem.removeprefix("receiver-")
    ready = receiver.log_path.parent / f"ready-{name}.json"
    port = json.loads(ready.read_text())["http_port"]
    assert isinstance(port, int) and port > 0, f"no http_port in {ready}"
    return port


@dataclass
class Response:
    """An HTTP response, read whole."""

    status: int
    headers: Mapping[str, str]
    """Case-insensitive, as HTTP's header names are."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def get(url: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> Response:
    """GET without following redirects; error statuses are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local http
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return Response(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Response(exc.code, exc.headers, exc.read())


def first_sse_message(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Opens an SSE stream and returns its first ``data:`` message, parsed."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local http
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local http
        assert response.headers["Content-Type"] == "text/event-stream"
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                message: dict[str, Any] = json.loads(line[6:])
                return message
    raise AssertionError("the stream ended before its first message")


def make_live_writer(receiver: str, client_id: str, job: str, spool_dir: Path) -> Any:
    """A Writer that heartbeats every 0.3 s, so that a short client timeout means 'gone'."""
    from client_sdk.config import WriterConfig
    from client_sdk.writer import Writer

    config = WriterConfig(
        receiver=receiver,
        client_id=client_id,
        job=job,
        spool_dir=str(spool_dir / client_id),
        heartbeat_s=0.3,
    )
    return Writer(config=config)


@contextmanager
def live_writers(
    receiver: str, job: str, client_ids: list[str], spool_dir: Path
) -> Iterator[dict[str, Any]]:
    """Writers by client id, closed (bounded) on exit."""
    writers = {c: make_live_writer(receiver, c, job, spool_dir) for c in client_ids}
    try:
        yield writers
    finally:
        for writer in writers.values():
            writer.close(timeout_s=10)


def start_stream_client(
    receiver: str, client_id: str, job: str, tmp_path: Path, points: int
) -> subprocess.Popen[bytes]:
    """A client process that logs ``x`` = 0..points-1, then holds (heartbeating) until killed.

    Its output goes to ``<client_id>.log`` in ``tmp_path``.
    """
    with (tmp_path / f"{client_id}.log").open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                str(STREAM_CLIENT),
                "--receiver",
                receiver,
                "--client-id",
                client_id,
                "--job",
                job,
                "--spool-dir",
                str(tmp_path / f"spool-{client_id}"),
                "--points",
                str(points),
                "--rate",
                "0",
                "--out",
                str(tmp_path / f"{client_id}.json"),
                "--heartbeat",
                "0.3",
                "--hold",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def publish_raw(address: str, batch: Any) -> Any:
    """Publishes one EventBatch message the way a client does; returns the Ack."""
    from bridge.pb.v1 import ingest_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub: Any = ingest_pb2_grpc.IngestStub(channel)
        return stub.Publish(batch, timeout=10)


def artifact_path(name: str) -> Path:
    """Where a test artifact (screenshot) goes: ``test-artifacts/`` (gitignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
