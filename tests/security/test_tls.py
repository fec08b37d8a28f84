"""TLS and mutual TLS on a real receiver, with certificates made in the test: who is let in,
who is not (wrong CA, expired, no certificate, plaintext), renewal without a restart, and no
plaintext off loopback unless asked for."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.channel import ChannelSecurity
from client_sdk._transport import Transport, TransportError
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.mlflow_reads import all_points, wait_for_children
from tests.support.procs import TRACKBRIDGE_EXE, child_env, wait_until
from tests.support.security import (
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    issue_token,
    make_ca,
    make_leaf,
    no_secret_leaks,
    secure_channel,
    server_leaf,
)

__all__ = ["no_secret_leaks"]
pytestmark = pytest.mark.usefixtures("no_secret_leaks")


def _tls_args(cert: tuple[Path, Path], client_ca: Path | None = None) -> tuple[str, ...]:
    args = ("--tls-cert", str(cert[0]), "--tls-key", str(cert[1]))
    return (*args, "--tls-client-ca", str(client_ca)) if client_ca else args


@pytest.mark.timeout(180)
def test_clients_that_trust_the_receivers_ca_get_in_and_others_do_not(
    tmp_path: Path, start_receiver: Any, mlflow_client: Any, job: str
) -> None:
    ca, rogue = make_ca(tmp_path, "ca"), make_ca(tmp_path, "rogue-ca")
    data_dir = tmp_path / "receiver-data"
    token = issue_token(data_dir, "site-1")
    receiver = start_receiver(
        data_dir=data_dir, extra_args=_tls_args(server_leaf(ca, tmp_path, "rx"))
    )

    config = WriterConfig(
        receiver=receiver.address, client_id="site-1", job=job, spool_dir=str(tmp_path / "spool"),
        tls_ca=str(ca.path), token=token,
    )  # fmt: skip
    with Writer(config=config) as writer:
        writer.start_run()
        for step in range(20):
            writer.log_metric("acc", step / 20, step=step, timestamp=TS + step)
        assert writer.flush(timeout_s=30)
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert len(all_points(mlflow_client, run)["acc"]) == 20

    refused = {
        "a client trusting another CA": secure_channel(receiver.address, rogue.path),
        "a client trusting the system roots only": secure_channel(receiver.address, None),
        "a plaintext client": grpc.insecure_channel(receiver.address),
    }
    for case, channel in refused.items():
        with channel:
            outcome = call(channel, PUBLISH, batch("site-1"), bearer(token), timeout_s=10)
        assert outcome.code == grpc.StatusCode.UNAVAILABLE, (case, outcome)
    assert receiver.alive()


@pytest.mark.timeout(120)
def test_a_client_refuses_a_receiver_whose_certificate_expired(
    tmp_path: Path, start_receiver: Any
) -> None:
    ca = make_ca(tmp_path, "ca")
    expired = server_leaf(ca, tmp_path, "rx-expired", expired=True)
    receiver = start_receiver(extra_args=_tls_args(expired))
    transport = Transport(receiver.address, 10.0, ChannelSecurity(tls_ca=str(ca.path)))
    try:
        with pytest.raises(TransportError) as excinfo:
            transport.publish(batch("site-1").SerializeToString())
    finally:
        transport.close()
    assert excinfo.value.code == "UNAVAILABLE", excinfo.value
    assert "expired" in receiver.log_path.read_text(), receiver.log_tail()


@pytest.mark.timeout(180)
def test_with_mutual_tls_the_client_certificate_is_the_client_id(
    tmp_path: Path, start_receiver: Any
) -> None:
    ca, rogue = make_ca(tmp_path, "ca"), make_ca(tmp_path, "rogue-ca")
    clients = make_ca(tmp_path, "client-ca")
    receiver = start_receiver(
        extra_args=_tls_args(server_leaf(ca, tmp_path, "rx"), client_ca=clients.path)
    )
    site1 = make_leaf(clients, tmp_path, "site-1", common_name="site-1")
    by_san = make_leaf(clients, tmp_path, "san", common_name="Site Seven", dns=("site-7",))

    def publish(cert: tuple[Path, Path] | None, claim: str) -> Any:
        with secure_channel(receiver.address, ca.path, cert) as channel:
            return call(channel, PUBLISH, batch(claim), timeout_s=10)

    assert publish(site1, "site-1").code == grpc.StatusCode.OK
    assert publish(by_san, "site-7").code == grpc.StatusCode.OK
    denied = publish(site1, "site-2")
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED, denied
    assert "'site-1'" in denied.details and "'site-2'" in denied.details

    refused = {
        "no certificate": None,
        "a certificate from another CA": make_leaf(rogue, tmp_path, "forged", common_name="site-1"),
        "an expired certificate": make_leaf(
            clients, tmp_path, "old", common_name="site-1", expired=True
        ),
    }
    for case, cert in refused.items():
        outcome = publish(cert, "site-1")
        assert outcome.code == grpc.StatusCode.UNAVAILABLE, (case, outcome)

    # The client SDK's own path: a certificate in the config.
    security = ChannelSecurity(tls_ca=str(ca.path), tls_cert=str(site1[0]), tls_key=str(site1[1]))
    transport = Transport(receiver.address, 10.0, security)
    try:
        assert transport.publish(batch("site-1").SerializeToString()).acked_seq == 2
    finally:
        transport.close()
    assert receiver.alive()


@pytest.mark.timeout(180)
def test_a_renewed_certificate_is_served_without_a_restart(
    tmp_path: Path, start_receiver: Any
) -> None:
    old_ca, new_ca = make_ca(tmp_path, "old-ca"), make_ca(tmp_path, "new-ca")
    cert, key = server_leaf(old_ca, tmp_path, "rx")
    receiver = start_receiver(extra_args=_tls_args((cert, key)))
    with secure_channel(receiver.address, old_ca.path) as channel:
        assert call(channel, PUBLISH, batch("site-1")).code == grpc.StatusCode.OK

    new_cert, new_key = server_leaf(new_ca, tmp_path, "rx-renewed")
    os.replace(new_key, key)
    os.replace(new_cert, cert)

    def served_by_new_ca() -> bool:
        with secure_channel(receiver.address, new_ca.path) as channel:
            return call(channel, PUBLISH, batch("site-1"), timeout_s=10).code == grpc.StatusCode.OK

    wait_until(served_by_new_ca, 30, interval_s=0.5, what="the renewed certificate")
    with secure_channel(receiver.address, old_ca.path) as channel:
        assert call(channel, PUBLISH, batch("site-1")).code == grpc.StatusCode.UNAVAILABLE
    assert "reloaded the TLS certificate" in receiver.log_path.read_text()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_plaintext_is_refused_off_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), "serve", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=child_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to serve plaintext gRPC on 0.0.0.0:0" in result.stderr
    assert "--tls-cert" in result.stderr and "--insecure-plaintext" in result.stderr
    assert not (tmp_path / "queue.db").exists(), "it must refuse before opening anything"
