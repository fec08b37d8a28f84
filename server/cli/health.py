"""``trackbridge health``: asks a receiver's grpc.health.v1 service, for container health
checks and scripts (exit 0 when it is SERVING, 1 otherwise)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from bridge import envvars
from server.cli.args import check_readable, dial_address, positive_float
from server.config import DEFAULT_LISTEN

_WILDCARDS = ("0.0.0.0", "::", "[::]", "")  # noqa: S104 - names, not binds


def local_address(env: Mapping[str, str] = os.environ) -> str:
    """The address to check by default: the receiver's own ``TRACKBRIDGE_LISTEN`` (a wildcard
    host becomes loopback), else the default listen address."""
    host, _, port = env.get(envvars.TRACKBRIDGE_LISTEN, DEFAULT_LISTEN).rpartition(":")
    return f"{'127.0.0.1' if host in _WILDCARDS else host}:{port}"


def add_health_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``health`` to the CLI."""
    p = sub.add_parser("health", help="check a receiver's gRPC health (exit 0: serving)")
    p.add_argument(
        "--receiver",
        type=dial_address,
        metavar="HOST:PORT",
        help="receiver to ask (default: TRACKBRIDGE_LISTEN, a wildcard host as 127.0.0.1)",
    )
    # The old spelling, kept working for scripts and probes written before --receiver.
    p.add_argument("--address", type=dial_address, dest="address", help=argparse.SUPPRESS)
    p.add_argument("--service", default="", help='service name (default "": the whole server)')
    p.add_argument(
        "--timeout", type=positive_float, default=5.0, metavar="SECONDS", help="default 5"
    )
    p.add_argument("--tls-ca", help="CA bundle: check over TLS")
    p.add_argument("--tls-server-name", help="name the certificate must carry (with --tls-ca)")
    p.set_defaults(func=_health)


def target(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str:
    """The address ``health`` asks: ``--receiver`` (or the deprecated ``--address``), else
    the receiver's own listen address."""
    if args.address is not None:
        print("trackbridge health: --address is deprecated; use --receiver", file=sys.stderr)
    return str(args.receiver or args.address or local_address(env))


def _health(args: argparse.Namespace) -> int:
    check_readable(args.tls_ca, "--tls-ca")
    address = target(args)
    tls_ca = Path(args.tls_ca) if args.tls_ca else None
    status = check(address, args.service, args.timeout, tls_ca, args.tls_server_name)
    print(f"{address}: {status}")
    return 0 if status == "SERVING" else 1


def check(
    address: str,
    service: str = "",
    timeout_s: float = 5.0,
    tls_ca: Path | None = None,
    tls_server_name: str | None = None,
) -> str:
    """The health status name (``SERVING``, ``NOT_SERVING``...), or the gRPC error code's."""
    import grpc  # here, not at the top: the CLI's other commands start without gRPC
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
