"""One receiver per port: refusing to start on a port another process holds.

gRPC sets ``SO_REUSEPORT`` on its listening sockets unless told not to, and Linux then lets a
second process bind the same port and splits new connections between the two: clients of one
deployment would be spread over two queues without a word. The receiver turns the option off
(``grpc.so_reuseport`` 0 in :data:`SERVER_OPTIONS`) and, before gRPC binds, tries the address
itself, so that a held port gets one clear line instead of gRPC's own error log.
"""

from __future__ import annotations

import errno
import socket

from bridge.errors import StartupError

GRPC_FLAG = "--listen"
HTTP_FLAG = "--http-listen"

# Must agree with the clients' keepalive (client_sdk/_transport.py), or they get too_many_pings.
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),  # one receiver per port (above)
)
"""The receiver's gRPC server options."""


class PortInUse(StartupError, OSError):
    """Another process listens on the address the receiver was told to use."""


def check_free(host: str, port: int, *, what: str, flag: str) -> None:
    """Raises PortInUse when ``host:port`` is taken (port 0 always is free).

    Args:
        host: The host part of the listen address (``[::]`` or a name are fine).
        port: The port.
        what: What would listen there, for the message ("gRPC", "the live view").
        flag: The option that chooses the address, for the message.
    """
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return  # gRPC or asyncio reports a bad host itself
    for family, kind, proto, _name, address in found:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC and asyncio do: a port in TIME_WAIT is free, one with a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return
                raise PortInUse(
                    f"cannot start {what} on {host}:{port}: another process holds the port"
                    f" (another receiver?); stop it, or give this receiver another port with"
                    f" {flag}",
                ) from None


def in_use(exc: OSError) -> bool:
    """Whether an error from binding says the address is taken."""
    return exc.errno == errno.EADDRINUSE
