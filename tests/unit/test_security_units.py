"""Pure logic of the security pieces: token store, rate limiter, redaction, configuration,
authentication decisions, certificate reloading, and the secret scan the other tests rely on."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

import grpc
import pytest

from bridge.channel import ChannelSecurity
from bridge.secret import redact_text
from client_sdk.config import WriterConfig
from server.config import ReceiverConfig
from server.flush.credentials import RedactingFilter, export_secret_files
from server.flush.mlflow_state import diagnose
from server.security.auth import Authenticator, Refused
from server.security.config import SecurityConfig
from server.security.quota import InFlight, LogThrottle, RateLimiter
from server.security.tls import CertificateError, CertificateFiles
from server.security.tokens import TokenRefused, TokenStore
from tests.support.security import SecretLedger, make_ca, make_leaf, server_leaf


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- tokens ------------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_bound_to_a_client_and_revocable(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    issuer = TokenStore(path)
    receiver = TokenStore(path)  # another connection, as the running receiver holds
    assert not receiver.has_any()
    token = issuer.issue("site-1")
    secret = token.split(".", 1)[1]
    assert token.startswith("tbt_") and len(secret) >= 40
    assert receiver.has_any()
    assert receiver.verify(token) == "site-1"
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), secret, "", "tbt_x.y"):
        with pytest.raises(TokenRefused) as excinfo:
            receiver.verify(bad)
        assert secret not in str(excinfo.value)
    token_id = token.split(".", 1)[0]
    assert issuer.revoke(token_id)
    with pytest.raises(TokenRefused, match="revoked"):
        receiver.verify(token)
    assert receiver.has_any(), "a receiver that once issued tokens keeps requiring them"
    (info,) = issuer.list_tokens()
    assert info.client_id == "site-1" and info.revoked_ms > 0
    assert secret not in repr(info)
    issuer.close()
    receiver.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert secret.encode() not in on_disk
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as conn:
        (digest,) = conn.execute("SELECT digest FROM tokens").fetchone()
    assert len(digest) == 32


def test_revoking_a_client_revokes_all_its_tokens_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    first, second, other = store.issue("a"), store.issue("a"), store.issue("b")
    assert store.revoke_client("a") == 2
    for token in (first, second):
        with pytest.raises(TokenRefused):
            store.verify(token)
    assert store.verify(other) == "b"
    with pytest.raises(ValueError, match="client id"):
        store.issue("")
    store.close()


# -- authentication decisions ------------------------------------------------------------------


def test_authentication_decides_by_token_and_certificate(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    open_receiver = Authenticator(store, require_tokens=False, mutual_tls=False)
    assert open_receiver.authenticate((), {}) is None, "no tokens issued: open (loopback)"
    strict = Authenticator(store, require_tokens=True, mutual_tls=False)
    with pytest.raises(Refused) as excinfo:
        strict.authenticate((), {})
    assert excinfo.value.code == grpc.StatusCode.UNAUTHENTICATED

    token = store.issue("site-1")
    identity = open_receiver.authenticate((("authorization", f"Bearer {token}"),), {})
    assert identity is not None and identity.allows("site-1") and not identity.allows("site-2")
    with pytest.raises(Refused):  # once a token exists, every call needs one
        open_receiver.authenticate((), {})
    with pytest.raises(Refused):
        open_receiver.authenticate((("authorization", f"Basic {token}"),), {})

    mtls = Authenticator(store, require_tokens=False, mutual_tls=True)
    peer = {"x509_common_name": [b"site-1"], "x509_subject_alternative_name": [b"site-1.lab"]}
    both = mtls.authenticate((("authorization", f"Bearer {token}"),), peer)
    assert both is not None and both.client_ids == {"site-1"}
    other = {"x509_common_name": [b"site-9"]}
    with pytest.raises(Refused) as excinfo:
        mtls.authenticate((("authorization", f"Bearer {token}"),), other)
    assert excinfo.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Refused) as excinfo:
        mtls.authenticate((("authorization", f"Bearer {token}"),), {})
    assert "certificate" in excinfo.value.message
    store.close()


# -- limits ------------------------------------------------------------------------------------


def test_the_rate_limiter_is_a_token_bucket_per_client() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=100, burst=200, clock=clock)
    assert limiter.take("a", 150) == 0.0
    assert limiter.take("a", 100) == pytest.approx(0.5)  # 50 left, 100 needed at 100/s
    assert limiter.take("b", 200) == 0.0, "another client has its own bucket"
    clock.now += 0.5
    assert limiter.take("a", 100) == 0.0
    assert limiter.take("a", 0) == pytest.approx(0.01), "every call costs at least 1"
    clock.now += 10
    assert limiter.take("a", 5000) == 0.0, "a batch past the burst passes when the bucket is full"
    assert limiter.take("a", 1) == pytest.approx(48.01), "and leaves the bucket in debt"
    assert RateLimiter(0, 1, clock=clock).take("a", 10**9) == 0.0, "rate 0: no limit"


def test_the_rate_limiter_forgets_the_least_recent_client_past_its_bound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock, max_clients=2)
    for client in ("a", "b", "c"):
        assert limiter.take(client, 1) == 0.0
    assert limiter.take("a", 1) == 0.0, "'a' was forgotten: a full bucket again"
    assert limiter.take("c", 1) > 0


def test_calls_in_flight_and_log_lines_are_bounded() -> None:
    in_flight = InFlight(limit=2)
    assert in_flight.acquire("a") and in_flight.acquire("a") and not in_flight.acquire("a")
    assert in_flight.acquire("b")
    in_flight.release("a")
    assert in_flight.acquire("a")
    assert all(InFlight(limit=0).acquire("a") for _ in range(100))
    clock = FakeClock()
    throttle = LogThrottle(per_window=2, window_s=60, clock=clock)
    assert [throttle.allow("x") for _ in range(3)] == [True, True, False]
    assert throttle.allow("y")
    clock.now += 60
    assert throttle.allow("x")


# -- secrets out of sight ----------------------------------------------------------------------


def test_redaction_of_text_reprs_and_log_records() -> None:
    assert redact_text("http://svc:pa:ss@mlflow:5000/x") == "http://svc:***@mlflow:5000/x"
    assert redact_text("token tbt_1.sekrit-value here", ["sekrit-value"]) == "token tbt_1.*** here"
    writer = WriterConfig(client_id="c", token="tbt_1.sekrit-value")
    assert "sekrit-value" not in repr(writer) and "token='***'" in repr(writer)
    assert "token=''" in repr(WriterConfig(client_id="c"))
    receiver = ReceiverConfig(
        tracking_uri="https://svc:hunter2hunter2@mlflow", viewer_token="vt-1234"
    )
    assert "hunter2hunter2" not in repr(receiver) and "vt-1234" not in repr(receiver)
    assert "https://svc:***@mlflow" in repr(receiver)
    assert "sekrit-value" not in repr(ChannelSecurity(token="tbt_1.sekrit-value"))

    logger = logging.getLogger("trackbridge.test.redaction")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter(["sekrit-value"]))
    logger.addHandler(handler)
    try:
        logger.warning("login with %s failed", "sekrit-value")
        try:
            raise RuntimeError("bad password sekrit-value for http://u:pw@host")
        except RuntimeError:
            logger.exception("flush failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "sekrit-value" not in text and "u:pw@" not in text
    assert "login with *** failed" in text and "RuntimeError: bad password ***" in text


def test_secret_files_are_exported_for_mlflow_and_errors_never_show_them(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret-pass\n")
    env = {"MLFLOW_TRACKING_PASSWORD_FILE": str(password)}
    assert export_secret_files(env) == ["MLFLOW_TRACKING_PASSWORD"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pass"
    assert export_secret_files(env) == ["MLFLOW_TRACKING_PASSWORD"], "idempotent"
    env["MLFLOW_TRACKING_PASSWORD"] = "other-pass"
    with pytest.raises(ValueError, match="not both") as excinfo:
        export_secret_files(env)
    assert "s3cret" not in str(excinfo.value) and "other-pass" not in str(excinfo.value)
    with pytest.raises(ValueError, match="cannot read") as excinfo:
        export_secret_files({"MLFLOW_TRACKING_TOKEN_FILE": str(tmp_path / "missing")})
    assert "missing" in str(excinfo.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        export_secret_files({"MLFLOW_TRACKING_TOKEN_FILE": str(tmp_path / "empty")})


def test_mlflow_errors_are_explained() -> None:
    assert "HTTP 401" in diagnose("API request ... failed with error code 401 != 200")
    assert "HTTP 403" in diagnose("RestException: PERMISSION_DENIED: Permission denied")
    assert "CA bundle" in diagnose("SSLError: certificate verify failed")
    assert "cannot be reached" in diagnose("ConnectionError: Connection refused")
    assert diagnose("something else") == "MLflow call failed"


def test_the_secret_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    ledger = SecretLedger()
    ledger.remember("planted-secret-123")
    ledger.roots.add(tmp_path)
    (tmp_path / "receiver.log").write_text("all fine")
    assert ledger.leaks() == []
    (tmp_path / "receiver.log").write_text("oops planted-secret-123")
    ledger.output("doctor", "and planted-secret-123 here")
    assert len(ledger.leaks()) == 2


# -- configuration -----------------------------------------------------------------------------


def test_plaintext_only_on_loopback_unless_explicitly_allowed() -> None:
    for listen in ("127.0.0.1:0", "localhost:1", "[::1]:5"):
        ReceiverConfig(listen=listen)
    with pytest.raises(ValueError, match=r"refusing to serve plaintext gRPC on 0\.0\.0\.0:50551"):
        ReceiverConfig(listen="0.0.0.0:50551")
    ReceiverConfig(listen="0.0.0.0:50551", security=SecurityConfig(insecure_plaintext=True))
    tls = SecurityConfig(tls_cert="c.pem", tls_key="k.pem")
    ReceiverConfig(listen="10.1.2.3:50551", security=tls)
    with pytest.raises(ValueError, match="together"):
        SecurityConfig(tls_cert="c.pem")
    with pytest.raises(ValueError, match="mutual TLS"):
        SecurityConfig(tls_client_ca="ca.pem")
    env = {"TRACKBRIDGE_SERVE_TLS_CERT": "c.pem", "TRACKBRIDGE_SERVE_TLS_KEY": "k.pem"}
    assert SecurityConfig.resolve(env=env).tls
    assert ReceiverConfig.resolve(listen="0.0.0.0:1", env=env).security.tls


def test_client_security_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        ChannelSecurity(tls_cert="c.pem")
    with pytest.raises(ValueError) as excinfo:
        WriterConfig(client_id="c", token="tbt_1.se cret")
    assert "se cret" not in str(excinfo.value)
    token_file = tmp_path / "token"
    token_file.write_text("tbt_1.from-a-file\n")
    env = {"TRACKBRIDGE_TOKEN_FILE": str(token_file), "TRACKBRIDGE_TLS_CA": "ca.pem"}
    config = WriterConfig.resolve(client_id="c", env=env)
    assert (config.token, config.tls_ca, config.security.tls) == (
        "tbt_1.from-a-file",
        "ca.pem",
        True,
    )
    env["TRACKBRIDGE_TOKEN"] = "tbt_1.from-env"
    assert WriterConfig.resolve(client_id="c", env=env).token == "tbt_1.from-env"
    assert WriterConfig.resolve(client_id="c", env=env, token="tbt_1.arg").token == "tbt_1.arg"
    with pytest.raises(ValueError, match="cannot read"):
        ChannelSecurity(tls_ca=str(tmp_path / "none.pem")).open_channel("127.0.0.1:1", ())


# -- certificate files -------------------------------------------------------------------------


def test_certificate_files_are_checked_and_bad_renewals_skipped(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    cert, key = server_leaf(ca, tmp_path, "rx")
    _, other_key = make_leaf(ca, tmp_path, "other", common_name="other")
    with pytest.raises(CertificateError, match="does not match"):
        CertificateFiles(SecurityConfig(tls_cert=str(cert), tls_key=str(other_key)))
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        CertificateFiles(SecurityConfig(tls_cert=str(key), tls_key=str(key)))

    files = CertificateFiles(SecurityConfig(tls_cert=str(cert), tls_key=str(key)))
    assert files._fetch() is None, "unchanged files: keep serving"
    key.write_text("half written")
    os.utime(key, ns=(1, 1))
    assert files._fetch() is None, "a pair that does not load is skipped"
    new_cert, new_key = server_leaf(ca, tmp_path, "rx2")
    os.replace(new_key, key)
    os.replace(new_cert, cert)
    assert files._fetch() is not None, "a good renewal is served"
