"""An HTTP proxy in front of a real ``mlflow server``: it records every ``log-batch`` call MLflow
answered (so a test can tell which points were sent twice), can hold one answer back (a call
that reached MLflow while its caller is killed), can hold one call back before MLflow sees it
(an MLflow slow to answer), can fail one run's calls for a while (a run with trouble of its
own), and can lose answers (MLflow applied the call, then the connection was cut)."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"
HOLD_LIMIT_S = 120.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


@dataclass(frozen=True)
class LoggedBatch:
    """One log-batch call as MLflow answered it."""

    run_id: str
    points: tuple[tuple[str, float, int, int], ...]
    """(key, value, step, timestamp) of each metric in the call."""
    tags: dict[str, str]
    status: int


@dataclass
class Hold:
    """The answer to one log-batch call, kept back until released."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    call: LoggedBatch | None = None

    def release(self) -> None:
        self.released.set()


class MlflowProxy:
    """Forwards ``http://127.0.0.1:<port>`` to an MLflow server (``upstream``, http://host:port)."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._lock = threading.Lock()
        self.calls: list[LoggedBatch] = []
        self.requests: list[tuple[str, str, bytes]] = []
        """(method, path, body) of every request, in order."""
        self._hold_after: int | None = None
        self._hold_points = 1
        self._hold: Hold | None = None
        self._held_call: tuple[Callable[[bytes], bool], Hold] | None = None
        self._calls_held: list[Hold] = []
        self._fail: Callable[[str], bool] | None = None
        self._losing: Callable[[str, str, bytes], bool] | None = None
        self.lost: list[tuple[str, str, bytes]] = []
        """(method, path, body) of every call whose answer was lost, in order."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self)

            do_POST = do_PATCH = do_DELETE = do_PUT = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.uri = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def hold_answer(self, after_calls: int, min_points: int = 1) -> Hold:
        """Keeps back MLflow's answer to the first log-batch call of at least ``min_points``
        metric points after ``after_calls`` more calls (MLflow has stored it; its caller does
        not know)."""
        hold = Hold()
        with self._lock:
            self._hold_after = len(self.calls) + after_calls
            self._hold_points = min_points
            self._hold = hold
        return hold

    def hold_call(self, matches: Callable[[bytes], bool]) -> Hold:
        """Keeps the next log-batch call whose body ``matches`` from MLflow until released
        (MLflow has not seen it; its caller waits for the answer)."""
        hold = Hold()
        with self._lock:
            self._held_call = (matches, hold)
            self._calls_held.append(hold)
        return hold

    def fail_runs(self, failing: Callable[[str], bool] | None) -> None:
        """Answers 503 to every call that names a run for which ``failing(run_id)`` is true
        (None: forward everything again)."""
        with self._lock:
            self._fail = failing

    def lose_answers(self, losing: Callable[[str, str, bytes], bool] | None) -> None:
        """Forwards each call for which ``losing(method, path, body)`` is true (asked in
        arrival order, under the proxy's lock) to MLflow, then closes the connection without
        its answer: MLflow applied it, its caller cannot know (None: answer everything)."""
        with self._lock:
            self._losing = losing

    def accepted_points(self) -> list[tuple[str, tuple[str, float, int, int]]]:
        """(run id, point) of every metric point in calls MLflow accepted, in order."""
        with self._lock:
            calls = list(self.calls)
        return [(c.run_id, p) for c in calls if c.status == 200 for p in c.points]

    def requests_naming(self, text: str) -> int:
        """How many requests so far carried ``text`` (a run id, an experiment name)."""
        needle = text.encode()
        quoted = urllib.parse.quote(text).encode()
        with self._lock:
            return sum(
                needle in body or needle in path.encode() or quoted in path.encode()
                for _method, path, body in self.requests
            )

    def close(self) -> None:
        with self._lock:
            for hold in [self._hold, *self._calls_held]:
                if hold is not None:
                    hold.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        run_id = _run_id(handler.path, body)
        with self._lock:
            self.requests.append((handler.command, handler.path, body))
            failing = self._fail
            held = self._held_call
            if held and handler.path.split("?")[0].endswith(LOG_BATCH) and held[0](body):
                self._held_call = None
            else:
                held = None
            lose = self._losing is not None and self._losing(handler.command, handler.path, body)
            if lose:
                self.lost.append((handler.command, handler.path, body))
        if held is not None:
            held[1].arrived.set()
            held[1].released.wait(HOLD_LIMIT_S)
        if failing is not None and run_id and failing(run_id):
            _reply(handler, 503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}', {})
            return
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
            out_headers = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        finally:
            conn.close()
        if handler.path.split("?")[0].endswith(LOG_BATCH):
            self._record(_logged(body, status))
        if lose:
            handler.close_connection = True  # no answer: the caller sees the connection drop
            return
        _reply(handler, status, data, out_headers)

    def _record(self, call: LoggedBatch) -> None:
        with self._lock:
            self.calls.append(call)
            hold = self._hold
            due = hold is not None and self._hold_after is not None
            due = due and len(self.calls) >= (self._hold_after or 0) and call.status == 200
            due = due and len(call.points) >= self._hold_points
            if due:
                self._hold = None
        if due and hold is not None:
            hold.call = call
            hold.arrived.set()
            hold.released.wait(HOLD_LIMIT_S)


def _run_id(path: str, body: bytes) -> str:
    if body:
        with contextlib.suppress(ValueError, AttributeError):
            found = json.loads(body).get("run_id") or json.loads(body).get("run_uuid")
            if found:
                return str(found)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    return (query.get("run_id") or query.get("run_uuid") or [""])[0]


def _logged(body: bytes, status: int) -> LoggedBatch:
    request = json.loads(body or b"{}")
    points = tuple(
        (m["key"], float(m["value"]), int(m.get("step", 0)), int(m["timestamp"]))
        for m in request.get("metrics", [])
    )
    tags = {t["key"]: t["value"] for t in request.get("tags", [])}
    return LoggedBatch(str(request.get("run_id", "")), points, tags, status)


def _reply(
    handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]
) -> None:
    try:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except OSError:
        pass  # the caller is gone (killed while its answer was held)
