"""Tools for the security tests: certificates made on the spot, a basic-auth MLflow server,
token and CLI helpers, raw gRPC calls with credentials, and a ledger of every secret the tests
configure, with the scan that proves none of them reached a log or an output."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.pb.v1 import events_pb2, ingest_pb2
from tests.support.procs import (
    MLFLOW_EXE,
    MLFLOW_START_TIMEOUT_S,
    TRACKBRIDGE_EXE,
    MlflowServer,
    _healthy,
    child_env,
    free_port,
    stop_mlflow_server,
)

PUBLISH = "/trackbridge.v1.Ingest/Publish"
GET_RUN = "/trackbridge.v1.Ingest/GetRun"
TS = 1_700_000_900_000
CLI_TIMEOUT_S = 120

# -- the secret ledger ---------------------------------------------------------------------------


class SecretLedger:
    """Every secret the tests configure, and the scan for them in logs and outputs."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.texts: list[tuple[str, str]] = []
        """(where, text) of command outputs to scan."""
        self.roots: set[Path] = set()
        """Directories whose files (logs, data directories) are scanned."""

    def remember(self, secret: str) -> str:
        """Adds a secret to look for; returns it."""
        self.secrets.add(secret)
        return secret

    def output(self, where: str, text: str) -> str:
        """Records a command's output for the scan; returns it."""
        self.texts.append((where, text))
        return text

    def leaks(self) -> list[str]:
        """Where a secret shows: in recorded outputs, or in any file under the roots."""
        found = []
        for where, text in self.texts:
            found += [f"{where}: {s[:6]}…" for s in self.secrets if s in text]
        for root in self.roots:
            for path in root.rglob("*"):
                if not path.is_file() or path.suffix == ".secret" or "mlflow-server" in str(path):
                    continue
                data = path.read_bytes()
                found += [f"{path}: {s[:6]}…" for s in self.secrets if s.encode() in data]
        return found


LEDGER = SecretLedger()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


@pytest.fixture
def no_secret_leaks(tmp_path: Path) -> Iterator[SecretLedger]:
    """Captures this process's log (clients log here) at DEBUG; afterwards, no configured
    secret may appear in it, in the recorded command outputs, or in any file under the test's
    directories (receiver logs, data directories, client spools)."""
    capture = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    LEDGER.roots.add(tmp_path)
    try:
        yield LEDGER
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
    LEDGER.output("in-process log", "\n".join(capture.lines))
    leaks = LEDGER.leaks()
    LEDGER.texts.clear()
    LEDGER.roots.discard(tmp_path)
    assert not leaks, f"secrets leaked: {leaks}"


def write_secret(path: Path, value: str) -> Path:
    """Writes a secret file (``.secret`` files are the only ones allowed to hold one)."""
    assert path.suffix == ".secret"
    path.write_text(value + "\n")
    path.chmod(0o600)
    LEDGER.remember(value)
    return path


# -- the trackbridge command ---------------------------------------------------------------------


def trackbridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``trackbridge ARGS`` (bounded); its output is recorded for the secret scan."""
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env=env if env is not None else child_env(),
    )
    LEDGER.output(f"trackbridge {args[0]} stdout", result.stdout)
    LEDGER.output(f"trackbridge {args[0]} stderr", result.stderr)
    return result


def issue_token(data_dir: Path, client_id: str) -> str:
    """``trackbridge token issue`` for a client; the token is remembered as a secret."""
    # Issued before the receiver's first start, as an operator would: into a directory that
    # exists (token commands refuse a missing one rather than make it).
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            str(TRACKBRIDGE_EXE),
            "token",
            "issue",
            "--client",
            client_id,
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=True,
        env=child_env(),
    )
    token = result.stdout.strip()
    assert token.startswith("tbt_"), result.stdout + result.stderr
    LEDGER.remember(token)
    LEDGER.remember(token.split(".", 1)[1])
    LEDGER.output("token issue stderr", result.stderr)
    return token


# -- raw calls -------------------------------------------------------------------------------------


def start_event() -> events_pb2.Event:
    event = events_pb2.Event()
    event.run_start.run_name = "raw"
    return event


def metric_event(key: str = "m", value: float = 1.0, step: int = 0) -> events_pb2.Event:
    event = events_pb2.Event()
    event.metric.key = key
    event.metric.value = value
    event.metric.step = step
    event.metric.timestamp_ms = TS + step
    return event


def batch(
    client_id: str,
    job: str = "secure-job",
    *,
    run_key: str | None = None,
    first_seq: int = 1,
    events: list[events_pb2.Event] | None = None,
) -> events_pb2.EventBatch:
    msg = events_pb2.EventBatch(
        client_id=client_id,
        job=job,
        run_key=run_key if run_key is not None else uuid.uuid4().hex,
        first_seq=first_seq,
    )
    msg.events.extend(events if events is not None else [start_event(), metric_event()])
    return msg


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Outcome:
    """How a raw call ended."""

    code: grpc.StatusCode
    details: str
    trailers: dict[str, str]
    response: Any = None


def call(
    channel: grpc.Channel,
    method: str,
    request: bytes | Any,
    metadata: tuple[tuple[str, str], ...] = (),
    timeout_s: float = 20.0,
) -> Outcome:
    """One unary call with raw or message request; never raises for a status."""
    payload = request if isinstance(request, bytes) else request.SerializeToString()
    stub = channel.unary_unary(
        method, request_serializer=None, response_deserializer=ingest_pb2.Ack.FromString
    )
    try:
        response = stub(payload, timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as exc:
        trailers = {k: v for k, v in (exc.trailing_metadata() or ())}
        return Outcome(exc.code(), exc.details() or "", trailers)
    return Outcome(grpc.StatusCode.OK, "", {}, response)


# -- certificates ----------------------------------------------------------------------------------


@dataclass
class Authority:
    """A certificate authority made for one test."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(directory: Path, name: str) -> Authority:
    """A self-signed CA, written to ``directory/name.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(key, cert, path)


def make_leaf(
    ca: Authority,
    directory: Path,
    name: str,
    *,
    common_name: str,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    expired: bool = False,
) -> tuple[Path, Path]:
    """A certificate signed by ``ca`` and its key: ``(cert.pem, key.pem)`` paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    if expired:
        start, end = _now() - datetime.timedelta(days=30), _now() - datetime.timedelta(days=1)
    else:
        start, end = _now() - datetime.timedelta(days=1), _now() + datetime.timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path = directory / f"{name}.crt.pem"
    key_path = directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_leaf(
    ca: Authority, directory: Path, name: str, *, expired: bool = False
) -> tuple[Path, Path]:
    """A receiver certificate valid for 127.0.0.1 and localhost."""
    return make_leaf(
        ca, directory, name, common_name="receiver", dns=("localhost",), ips=("127.0.0.1",),
        expired=expired,
    )  # fmt: skip


def secure_channel(
    address: str,
    ca: Path | None,
    cert: tuple[Path, Path] | None = None,
) -> grpc.Channel:
    """A TLS channel trusting ``ca`` (system roots when None), presenting ``cert``."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes() if ca is not None else None,
        private_key=cert[1].read_bytes() if cert else None,
        certificate_chain=cert[0].read_bytes() if cert else None,
    )
    return grpc.secure_channel(address, credentials)


# -- a basic-auth MLflow server ------------------------------------------------------------------

ADMIN_USER = "admin"


@dataclass
class AuthMlflow:
    """A running ``mlflow server --app-name basic-auth`` and its admin's password."""

    server: MlflowServer
    admin_password: str

    @property
    def uri(self) -> str:
        return self.server.uri

    def admin_env(self) -> dict[str, str]:
        """Environment variables that make MLflow's client the admin."""
        return {
            "MLFLOW_TRACKING_USERNAME": ADMIN_USER,
            "MLFLOW_TRACKING_PASSWORD": self.admin_password,
        }


def launch_auth_mlflow(root: Path) -> AuthMlflow:
    """Starts a real MLflow server with the basic-auth app: no access without a login
    (``default_permission = NO_PERMISSIONS``), its user store in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    admin_password = LEDGER.remember(f"admin-{uuid.uuid4().hex}")
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{root / 'auth.db'}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    log_path = root / f"mlflow-server-{port}.log"
    env = child_env(
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=LEDGER.remember(uuid.uuid4().hex),
    )
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(name, None)
    cmd = [
        str(MLFLOW_EXE), "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", port, proc, log_path)
    deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
    try:
        while not _healthy(f"{server.uri}/health"):
            if proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"basic-auth mlflow server did not start:\n{server.log_tail()}")
            time.sleep(0.2)
    except BaseException:
        stop_mlflow_server(server)
        raise
    return AuthMlflow(server, admin_password)


def auth_service_client(auth: AuthMlflow) -> Any:
    """MLflow's AuthServiceClient for the server (it acts as whoever the environment says).

    Importing the auth plugin loads MLflow's FastAPI app, whose starlette import warns about
    its own deprecation; that warning is MLflow's business, not this suite's.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=auth.uri)


def as_admin(auth: AuthMlflow) -> Any:
    """Patches this process's environment so MLflow's clients act as the admin; a context."""
    return _EnvPatch(auth.admin_env())


class _EnvPatch:
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for name, value in self._values.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value

    def __exit__(self, *exc: object) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
