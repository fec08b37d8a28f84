"""Tools for fault tests: a TCP proxy the test can cut, and helpers to read spools and queues."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.support.procs import CLIENTS_DIR

STREAM_CLIENT = CLIENTS_DIR / "stream_points.py"


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to an upstream port on 127.0.0.1.

    ``cut()`` drops every open connection and, until ``restore()``, closes each new one as
    soon as it is accepted: what a client sees when the network between it and its peer fails.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._open = True
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def set_upstream(self, port: int) -> None:
        """Sends new connections to ``port`` and drops the ones to the old upstream."""
        self.upstream_port = port
        self._drop_all()

    def cut(self) -> None:
        """Drops every connection and closes new ones at once."""
        with self._lock:  # a connection being made now is either dropped here or closed
            self._open = False
        self._drop_all()

    def has_connections(self) -> bool:
        """Whether any connection goes through the proxy now."""
        with self._lock:
            return bool(self._sockets)

    def restore(self) -> None:
        """Forwards new connections again."""
        with self._lock:
            self._open = True

    def close(self) -> None:
        """Stops the proxy (bounded)."""
        self._closed.set()
        self._drop_all()
        self._thread.join(timeout=5)
        self._listener.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if not self._open:  # cut while it was being made: it must not outlive the cut
                    client.close()
                    upstream.close()
                    continue
                self._sockets.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def start_stream_client(
    receiver: str,
    client_id: str,
    job: str,
    spool_dir: Path,
    out: Path,
    *,
    points: int,
    rate: float,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Starts ``tests/support/clients/stream_points.py`` as a process (stderr: ``out``.log)."""
    cmd = [
        sys.executable,
        str(STREAM_CLIENT),
        "--receiver", receiver,
        "--client-id", client_id,
        "--job", job,
        "--spool-dir", str(spool_dir),
        "--points", str(points),
        "--rate", str(rate),
        "--out", str(out),
        *extra,
    ]  # fmt: skip
    with out.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def read_result(out: Path) -> dict[str, Any]:
    """The JSON summary a stream client wrote at its end."""
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def spooled_events(spool_dir: Path) -> int:
    """Events stored in every spool file under ``spool_dir``."""
    total = 0
    for path in spool_dir.glob("*.spool.db"):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM batches")
            total += int(row.fetchone()[0])
        except sqlite3.OperationalError:
            continue  # the writer is still creating it
        finally:
            conn.close()
    return total


def acked_events(data_dir: Path) -> int:
    """Events a receiver has durably stored, over all runs (from its queue.db)."""
    path = data_dir / "queue.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        try:
            row = conn.execute("SELECT COALESCE(SUM(acked_seq), 0) FROM runs").fetchone()
        except sqlite3.OperationalError:
            return 0
        return int(row[0])
    finally:
        conn.close()


def queue_drained(data_dir: Path) -> bool:
    """Whether a receiver has every batch it stored in MLflow (its queue.db holds none)."""
    path = data_dir / "queue.db"
    if not path.exists():
        return False
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]) == 0
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def metric_points(client: Any, run_id: str, key: str) -> list[tuple[float, int, int]]:
    """Every stored point of ``key`` as sorted ``(value, step, timestamp)`` tuples."""
    history = client.get_metric_history(run_id, key)
    return sorted((m.value, m.step, m.timestamp) for m in history)


def expected_points(points: int, base_ts: int) -> list[tuple[float, int, int]]:
    """What ``stream_points.py --points N`` logs for metric ``x``."""
    return [(float(i), i, base_ts + i) for i in range(points)]
