"""Receiver addresses as a gRPC target: one receiver at a time, any of several.

``TRACKBRIDGE_RECEIVER`` is ``host:port`` or a comma-separated list of them. The channel uses
gRPC's own ``pick_first`` policy with ``shuffleAddressList`` (gRFC A62): each client connects
to one receiver picked at random, stays on it while the connection lives, and moves to another
when it fails. ``round_robin`` would instead send each batch of a run to the next receiver,
spreading every run over all of them: its tag changes and its end would reach MLflow through
different queues in no fixed order, for no gain (a client has one batch in flight at a time).

One name may stand for all receivers (a Kubernetes headless Service, a DNS name with several
A records): gRPC's DNS resolver returns every address and re-resolves when connections fail.
A list is turned into one ``ipv4:``/``ipv6:`` target; names in it are resolved once, when the
channel is made (a writer's start, or a forked child's first use).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Any

_logger = logging.getLogger(__name__)

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}]})
"""The channel's load-balancing policy: one receiver at a time, picked at random."""


def split_receivers(receiver: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` as ``[(host, port), ...]`` (IPv6 hosts in brackets).

    Raises:
        ValueError: An entry is not ``host:port``.
    """
    entries = []
    for item in receiver.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"receiver must be host:port[,host:port...], got {receiver!r}")
        entries.append((host.strip("[]"), int(port)))
    return entries


def channel_target(receiver: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """The gRPC target for ``receiver`` and the channel options that go with it."""
    entries = split_receivers(receiver)
    options: tuple[tuple[str, Any], ...] = (("grpc.service_config", SERVICE_CONFIG),)
    if len(entries) == 1:
        return receiver.strip(), options
    by_family: dict[str, list[str]] = {"ipv4": [], "ipv6": []}
    for host, port in entries:
        for family, address in _resolve(host, port):
            by_family[family].append(address)
    family = max(by_family, key=lambda f: len(by_family[f]))
    if not by_family[family]:
        _logger.warning("trackbridge: no receiver in %r resolves yet; trying the first", receiver)
        return receiver.split(",", maxsplit=1)[0].strip(), options
    # TLS checks the certificate against the authority: the first entry's name.
    host, port = entries[0]
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    addresses = ",".join(dict.fromkeys(by_family[family]))
    return f"{family}:{addresses}", (*options, ("grpc.default_authority", authority))


def _resolve(host: str, port: int) -> list[tuple[str, str]]:
    """``[(family, "address:port"), ...]`` for a host name or an IP literal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if ip.version == 4:
            return [("ipv4", f"{ip}:{port}")]
        return [("ipv6", f"[{ip}]:{port}")]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        _logger.warning("trackbridge: cannot resolve receiver %s: %s", host, exc)
        return []
    found = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family == socket.AF_INET:
            found.append(("ipv4", f"{sockaddr[0]}:{port}"))
        elif family == socket.AF_INET6:
            found.append(("ipv6", f"[{sockaddr[0]}]:{port}"))
    return found
