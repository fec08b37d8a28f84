"""What both examples' launchers share: a receiver when none is given, processes in their own
process groups (stopped as groups, waited for), loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, ready: object, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Polls ``ready()`` until true; fails when ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not ready():  # type: ignore[operator]
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    """Whether something accepts on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """Processes started in their own sessions, stopped together (SIGTERM, then SIGKILL)."""

    def __init__(self, work: Path, env: Mapping[str, str]) -> None:
        self.work = work
        self.env = dict(env)
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: Sequence[str | Path], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Starts ``cmd`` with its output in ``<work>/<name>.log``."""
        with (self.work / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(c) for c in cmd],
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stops every group, newest first, and waits for each."""
        for proc in reversed(self._procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in reversed(self._procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
            _signal_group(proc, signal.SIGKILL)  # what the group's leader left behind
        self._procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, sig)


AGGREGATE_DEADLINE_S = 10.0
"""How long the examples' receiver waits for a round's missing sites before it writes the
round's aggregate (a later site is recorded late: see ``trackbridge status``)."""


def start_receiver(
    procs: Processes, data_dir: Path, tracking_uri: str | None, aggregate: tuple[str, ...] = ()
) -> str:
    """``trackbridge serve`` on a loopback port (the embedded MLflow store unless
    ``tracking_uri``), aggregating the metrics ``aggregate`` names across the sites; returns
    its address once it is ready."""
    ready = procs.work / "receiver-ready.json"
    cmd: list[str | Path] = [BIN / "trackbridge", "serve", "--listen", "127.0.0.1:0"]
    cmd += ["--data-dir", data_dir, "--ready-file", ready, "--flush-interval", "0.5"]
    for pattern in aggregate:
        cmd += ["--aggregate", pattern]
    if aggregate:
        cmd += ["--aggregate-deadline", str(AGGREGATE_DEADLINE_S)]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    proc = procs.start("receiver", cmd)
    wait_for("the receiver", ready.exists, 60, proc)
    return f"127.0.0.1:{json.loads(ready.read_text())['port']}"


def receiver_http_port(procs: Processes) -> int | None:
    """The live page's port of the receiver :func:`start_receiver` started (None: not one)."""
    ready = procs.work / "receiver-ready.json"
    if not ready.exists():
        return None
    port = json.loads(ready.read_text()).get("http_port")
    return int(port) if port else None


def stop_receiver(procs: Processes) -> None:
    """SIGTERM to the receiver alone: it drains its queue to MLflow, then exits."""
    procs.stop(timeout_s=60)
