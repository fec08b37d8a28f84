"""One receiver per port: a second ``trackbridge serve`` on a gRPC or HTTP port another process
holds exits 2 with one line naming the port and the fix; the first one goes on serving."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.bystander import start_bystander
from tests.support.procs import TRACKBRIDGE_EXE, MlflowServer, ReceiverProcess, child_env, free_port


def _serve(tmp_path: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(TRACKBRIDGE_EXE), "serve", "--data-dir", str(tmp_path / "second-data"),
           "--tracking-uri", uri, *args]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        raise AssertionError(f"a second receiver started on a held port:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_second_receiver_on_a_held_port_is_refused_and_the_first_goes_on(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_server: MlflowServer,
    mlflow_client: object,
    tmp_path: Path,
) -> None:
    http_port = free_port()
    first = start_receiver(extra_args=("--http-listen", f"127.0.0.1:{http_port}"))
    bystander = start_bystander(first.address, tmp_path)
    try:
        grpc_held = ("--listen", f"127.0.0.1:{first.port}", "--http-listen", "off")
        line = _one_line(_serve(tmp_path, mlflow_server.uri, *grpc_held))
        assert f"127.0.0.1:{first.port}" in line and "--listen" in line, line

        http_held = ("--listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{http_port}")
        line = _one_line(_serve(tmp_path, mlflow_server.uri, *http_held))
        assert f"127.0.0.1:{http_port}" in line and "--http-listen" in line, line

        with socket.create_server(("127.0.0.1", 0)) as other:  # not a receiver at all
            taken = other.getsockname()[1]
            other_held = ("--listen", f"127.0.0.1:{taken}", "--http-listen", "off")
            line = _one_line(_serve(tmp_path, mlflow_server.uri, *other_held))
            assert f"127.0.0.1:{taken}" in line
        bystander.assert_delivered(mlflow_client)
    finally:
        bystander.stop()
    assert first.alive(), first.log_tail()
