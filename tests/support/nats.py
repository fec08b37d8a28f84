"""The NATS JetStream cluster of the fleet-mode tests (bench/nats.py starts it) and the
parametrization that runs a delivery test on both queue backends."""

from __future__ import annotations

import socket

import pytest

from bench.nats import NatsCluster, nats_server_binary
from tests.support.procs import wait_until

__all__ = ["BOTH_BACKENDS", "NatsCluster", "nats_server_binary", "wait_for_port_closed"]

BOTH_BACKENDS = ["sqlite", pytest.param("nats", marks=pytest.mark.slow, id="nats")]
"""``@pytest.mark.parametrize("queue_backend", BOTH_BACKENDS, indirect=True)``: a test of the
receiver's delivery, run on its own SQLite queue and in fleet mode on a real NATS cluster."""


def wait_for_port_closed(port: int, timeout_s: float = 20.0) -> None:
    """Waits until nothing listens on a loopback port (a node really gone)."""

    def closed() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) != 0

    wait_until(closed, timeout_s, what=f"port {port} closed")
