"""The receiver's small HTTP server: the live page, its SSE stream, its API and ``/metrics``.

Hand-written on asyncio streams, in the receiver's event loop: GET only, one request per
connection, static files read once from the package. With a viewer token every route wants
it (``Authorization: Bearer``, the ``trackbridge_viewer`` cookie, or ``?token=``, which the
page trades for the cookie); without one, only loopback Host names are answered, so that a
web page elsewhere cannot reach the view through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from server.config import is_loopback
from server.live import wire as live_json
from server.live.hub import Hub
from server.live.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

_logger = logging.getLogger(__name__)

COOKIE = "trackbridge_viewer"
_STATIC_TYPES = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}
_HEADER_TIMEOUT_S = 10.0
_WRITE_TIMEOUT_S = 30.0
_KEEPALIVE_S = 15.0
MAX_CONNECTIONS = 256
"""Open connections (mostly page streams) past which new ones get 503."""
_SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


class _Request:
    def __init__(self, method: str, target: str, headers: Mapping[str, str]) -> None:
        split = urlsplit(target)
        self.method = method
        self.raw_path = split.path
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        self.headers = headers

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return unquote(value)
        return None


class LiveHttpServer:
    """Serves the live view of a hub.

    Args:
        hub: The receiver's live hub.
        token: The viewer token; "" requires none (then only loopback Host names are served).
        metrics_text: Renders ``/metrics``.
        receiver_state: The receiver's own state, for the page's header.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        token: str,
        metrics_text: Callable[[], str],
        receiver_state: Callable[[], dict[str, Any]],
    ) -> None:
        self._hub = hub
        self._token = token
        self._metrics_text = metrics_text
        self._receiver_state = receiver_state
        files = resources.files("server.live") / "static"
        self._static = {name: (files / name).read_bytes() for name in _STATIC_TYPES}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listens on ``host:port``; returns the bound port."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=16 * 1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stops listening and ends open streams."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5.0)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self._handlers) > MAX_CONNECTIONS:
                await _send(writer, HTTPStatus.SERVICE_UNAVAILABLE, b"too many viewers\n")
                return
            request = await self._read_request(reader)
            if request is not None:
                await self._route(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the receiver is stopping
        except Exception:
            _logger.exception("live view: request failed")
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEADER_TIMEOUT_S)
        except (asyncio.LimitOverrunError, ValueError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return None
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return _Request(parts[0], parts[1], headers)

    async def _route(
        self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if req.method != "GET":
            await _send(writer, HTTPStatus.METHOD_NOT_ALLOWED, b"GET only\n", [("Allow", "GET")])
            return
        if not self._token and not _loopback_host(req.headers.get("host", "")):
            await _send(writer, HTTPStatus.FORBIDDEN, b"loopback host names only\n")
            return
        segments = [unquote(s) for s in req.raw_path.split("/")[1:]]
        page = segments == [""] or (segments[0] == "jobs" and len(segments) <= 2)
        if self._token and not self._authorized(req):
            if page and req.query.get("token") is not None:
                await _send(writer, HTTPStatus.UNAUTHORIZED, b"wrong viewer token\n")
                return
            body = b"viewer token required: open this address with ?token=<viewer token>\n"
            await _send(writer, HTTPStatus.UNAUTHORIZED, body, [("WWW-Authenticate", "Bearer")])
            return
        if self._token and page and "token" in req.query:
            # Trade the token in the address for a cookie, and drop it from the address bar.
            cookie = f"{COOKIE}={quote(self._token)}; HttpOnly; SameSite=Strict; Path=/"
            extra = [("Location", req.raw_path), ("Set-Cookie", cookie)]
            await _send(writer, HTTPStatus.SEE_OTHER, b"", extra)
            return
        if page:
            await self._send_static(writer, "index.html")
        elif len(segments) == 2 and segments[0] == "static" and segments[1] in _STATIC_TYPES:
            await self._send_static(writer, segments[1])
        elif segments == ["metrics"]:
            body = self._metrics_text().encode()
            await _send(writer, HTTPStatus.OK, body, [("Content-Type", METRICS_CONTENT_TYPE)])
        elif segments == ["api", "jobs"]:
            await _send_json(writer, live_json.jobs(self._hub))
        elif len(segments) == 3 and segments[:2] == ["api", "jobs"]:
            text = live_json.snapshot(self._hub, segments[2], _metrics(req), self._receiver_state())
            await _send_json(writer, text)
        elif len(segments) == 4 and segments[:2] == ["api", "jobs"] and segments[3] == "events":
            await self._stream(segments[2], _metrics(req), reader, writer)
        else:
            await _send(writer, HTTPStatus.NOT_FOUND, b"not found\n")

    def _authorized(self, req: _Request) -> bool:
        token = self._token.encode()
        offered = [req.query.get("token"), req.cookie(COOKIE)]
        scheme, _, credentials = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
        return any(o is not None and hmac.compare_digest(o.encode(), token) for o in offered)

    async def _send_static(self, writer: asyncio.StreamWriter, name: str) -> None:
        headers = [("Content-Type", _STATIC_TYPES[name])]
        await _send(writer, HTTPStatus.OK, self._static[name], headers)

    async def _stream(
        self,
        job: str,
        metrics: frozenset[str] | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        head = [("Content-Type", "text/event-stream"), ("X-Accel-Buffering", "no")]
        await _send(writer, HTTPStatus.OK, None, head)
        writer.write(b"retry: 2000\n\n")
        sub = self._hub.subscribe(job)
        hangup = asyncio.ensure_future(reader.read(1))  # the browser went away (EOF)
        try:
            while not sub.closed and not hangup.done():
                if not await sub.wait(_KEEPALIVE_S):
                    writer.write(b": keepalive\n\n")
                else:
                    resync, deltas, _, _ = sub.take()
                    receiver = self._receiver_state()
                    if resync:
                        text: str | None = live_json.snapshot(self._hub, job, metrics, receiver)
                    else:
                        text = live_json.delta(deltas, metrics, receiver)
                    if text is not None:
                        writer.write(f"data: {text}\n\n".encode())
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)
        finally:
            hangup.cancel()
            self._hub.unsubscribe(sub)


def _metrics(req: _Request) -> frozenset[str] | None:
    raw = req.query.get("metrics")
    if raw is None:
        return None if "metrics" not in req.query else frozenset()
    return frozenset(m for m in raw.split(",") if m)


def _loopback_host(host_header: str) -> bool:
    host = host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header
    if host.startswith("["):
        host = host[1 : host.index("]")] if "]" in host else host
    return is_loopback(host)


async def _send_json(writer: asyncio.StreamWriter, text: str) -> None:
    await _send(writer, HTTPStatus.OK, text.encode(), [("Content-Type", "application/json")])


async def _send(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    body: bytes | None,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    """Writes a response head and, unless ``body`` is None (a stream follows), its body."""
    lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
    all_headers = [*_SECURITY_HEADERS, ("Cache-Control", "no-store"), *(headers or [])]
    if not any(name == "Content-Type" for name, _ in all_headers):
        all_headers.append(("Content-Type", "text/plain; charset=utf-8"))
    if body is not None:
        all_headers.append(("Content-Length", str(len(body))))
    all_headers.append(("Connection", "close"))
    lines += [f"{name}: {value}" for name, value in all_headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)
