"""Fixtures the fault tests share: proxies that cut a client off its receiver or a receiver off
MLflow, and stream-client processes that are always killed (bounded) at teardown."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.faults import TcpProxy, start_stream_client
from tests.support.mlflow_proxy import MlflowProxy
from tests.support.procs import MlflowServer


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    """A TCP proxy clients reach their receiver through; ``set_upstream`` points it."""
    p = TcpProxy(upstream_port=1)
    yield p
    p.close()


@pytest.fixture
def mlflow_proxy(mlflow_server: MlflowServer) -> Iterator[MlflowProxy]:
    """An HTTP proxy in front of the session's MLflow server, for receivers to reach it by."""
    p = MlflowProxy(mlflow_server.uri)
    yield p
    p.close()


@pytest.fixture
def stream_client() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts stream clients; kills (bounded) any a test left running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = start_stream_client(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
