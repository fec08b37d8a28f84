"""The live view over HTTP: the page, its Server-Sent Events stream, its JSON API and ``/metrics``.

An ASGI app (Starlette) served by uvicorn inside the receiver's own event loop; both come with
MLflow, which the receiver needs anyway. What is ours is the policy: with a viewer token every
route wants it (``Authorization: Bearer``, the ``trackbridge_viewer`` cookie, or ``?token=``,
which a page address trades for the cookie); without one, only loopback Host names are
answered, so that a web page elsewhere cannot reach the view through DNS rebinding. Every
answer carries a strict Content-Security-Policy (scripts and styles from this origin only),
and uvicorn answers 503 past :data:`MAX_CONNECTIONS` open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from importlib import resources
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.errors import StartupError
from server.config import is_loopback
from server.live import wire
from server.live.hub import Hub

_logger = logging.getLogger(__name__)

COOKIE = "trackbridge_viewer"
MAX_CONNECTIONS = 256
"""Open connections (mostly page streams) past which new requests get 503."""
_KEEPALIVE_S = 15.0
_STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
    "vendor/uPlot.LICENSE": "text/plain; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_SSE_HEADERS = {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}

Handler = Callable[[Request], Awaitable[Response]]


class HttpListenError(StartupError, OSError):
    """The live view's address cannot be served (in use, not local, no permission)."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the receiver owns SIGTERM and SIGINT (it drains
    its queue on them) and stops this server itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class LiveHttpServer:
    """Serves the live view of a hub.

    Args:
        hub: The receiver's live hub.
        token: The viewer token; "" requires none (then only loopback Host names are served).
        metrics_text: Renders ``/metrics`` (body, content type).
        receiver_state: The receiver's own state for the page's header, for one job.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        token: str,
        metrics_text: Callable[[], tuple[bytes, str]],
        receiver_state: Callable[[str], dict[str, Any]],
    ) -> None:
        self._hub = hub
        self._token = token
        self._metrics_text = metrics_text
        self._receiver_state = receiver_state
        files = resources.files("server.live") / "static"
        self._static = {name: (files / name).read_bytes() for name in _STATIC}
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/", self._guard(self._page)),
                Route("/jobs/{job:path}", self._guard(self._page)),
                Route("/static/{name:path}", self._guard(self._file)),
                Route("/metrics", self._guard(self._metrics)),
                Route("/api/jobs", self._guard(self._jobs)),
                Route("/api/jobs/{rest:path}", self._guard(self._job_api)),
            ]
        )
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)

    async def start(self, host: str, port: int) -> int:
        """Listens on ``host:port``; returns the bound port.

        Raises:
            HttpListenError: The address cannot be bound; the message says which and why.
        """
        sock = _bind(host, port)
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=MAX_CONNECTIONS,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
            server_header=False,
            date_header=False,
            h11_max_incomplete_event_size=16 * 1024,
        )
        server = self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="trackbridge-http")
        while not server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise HttpListenError(f"the live view did not start on {host}:{port}")
            await asyncio.sleep(0.01)
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stops listening; open streams end (the hub has closed them) or are cut."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        done, _ = await asyncio.wait([self._task], timeout=5.0)
        if not done:
            self._server.force_exit = True
            self._task.cancel()
        self._server = None

    # -- policy --------------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Wraps a route: Host check or token, then the security headers on every answer."""

        async def guarded(request: Request) -> Response:
            response = await self._admit(request)
            if response is None:
                response = await handler(request)
            response.headers.update(_SECURITY_HEADERS)
            return response

        return guarded

    async def _admit(self, request: Request) -> Response | None:
        if not self._token:
            if not _loopback_host(request.headers.get("host", "")):
                return PlainTextResponse("loopback host names only\n", 403)
            return None
        page = request.url.path == "/" or request.url.path.startswith("/jobs/")
        offered = request.query_params.get("token")
        if not self._authorized(request):
            if page and offered is not None:
                return PlainTextResponse("wrong viewer token\n", 401)
            return PlainTextResponse(
                "viewer token required: open this address with ?token=<viewer token>\n",
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if page and offered is not None:
            # Trade the token in the address for a cookie, and drop it from the address bar.
            response = RedirectResponse(_raw_path(request), 303)
            response.set_cookie(COOKIE, self._token, httponly=True, samesite="strict")
            return response
        return None

    def _authorized(self, request: Request) -> bool:
        token = self._token.encode()
        offered = [request.query_params.get("token"), request.cookies.get(COOKIE)]
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
        return any(o is not None and hmac.compare_digest(o.encode(), token) for o in offered)

    # -- routes --------------------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        return self._send_static("index.html")

    async def _file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return await self._not_found(request, None)
        return self._send_static(name)

    def _send_static(self, name: str) -> Response:
        return Response(self._static[name], media_type=_STATIC[name])

    async def _metrics(self, request: Request) -> Response:
        body, content_type = self._metrics_text()
        return Response(body, headers={"Content-Type": content_type})

    async def _jobs(self, request: Request) -> Response:
        return _json(wire.jobs(self._hub))

    async def _job_api(self, request: Request) -> Response:
        # From the raw path: a job's name may hold a "/", sent as %2F.
        segments = _raw_path(request).split("/")[3:]
        metrics = _metrics(request.query_params)
        if len(segments) == 1:
            job = unquote(segments[0])
            return _json(wire.snapshot(self._hub, job, metrics, self._receiver_state(job)))
        if len(segments) == 2 and segments[1] == "csv":
            key = request.query_params.get("metric", "")
            text = wire.chart_csv(self._hub, unquote(segments[0]), key)
            return Response(text, media_type="text/csv; charset=utf-8")
        if len(segments) == 2 and segments[1] == "events":
            job = unquote(segments[0])
            return StreamingResponse(self._stream(job, metrics), headers=_SSE_HEADERS)
        return await self._not_found(request, None)

    async def _stream(self, job: str, metrics: frozenset[str] | None) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        sub = self._hub.subscribe(job)
        try:
            while not sub.closed:
                if not await sub.wait(_KEEPALIVE_S):
                    yield b": keepalive\n\n"
                    continue
                resync, deltas, _, _ = sub.take()
                receiver = self._receiver_state(job)
                if resync:
                    text: str | None = wire.snapshot(self._hub, job, metrics, receiver)
                else:
                    text = wire.delta(deltas, metrics, receiver)
                if text is not None:
                    yield f"data: {text}\n\n".encode()
        finally:
            self._hub.unsubscribe(sub)

    async def _not_found(self, request: Request, exc: Exception | None) -> Response:
        response = PlainTextResponse("not found\n", 404)
        response.headers.update(_SECURITY_HEADERS)
        return response

    async def _not_allowed(self, request: Request, exc: Exception | None) -> Response:
        response = PlainTextResponse("GET only\n", 405, headers={"Allow": "GET"})
        response.headers.update(_SECURITY_HEADERS)
        return response


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (bound here, so that a failure is ours to word)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise HttpListenError(
            f"cannot serve the live view on {host}:{port} ({exc.strerror or exc}):"
            " pass --http-listen HOST:PORT, or off"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise HttpListenError(
            f"cannot serve the live view on {host}:{port} ({(exc.strerror or str(exc)).lower()}):"
            " pass --http-listen HOST:PORT (port 0 picks a free one), or off"
        ) from None
    sock.setblocking(False)
    return sock


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1").split("?", 1)[0] if raw else request.url.path


def _metrics(query: Mapping[str, str]) -> frozenset[str] | None:
    raw = query.get("metrics")
    if raw is None:
        return None
    return frozenset(m for m in raw.split(",") if m)


def _loopback_host(host_header: str) -> bool:
    host = host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header
    if host.startswith("["):
        host = host[1 : host.index("]")] if "]" in host else host
    return is_loopback(host)


def _json(text: str) -> Response:
    return Response(text, media_type="application/json")
