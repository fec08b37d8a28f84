"""Command-line entries of the viewers: ``trackbridge top`` and ``trackbridge tail``."""

from __future__ import annotations

import argparse
import os

from bridge import envvars
from bridge.channel import ChannelSecurity
from server.cli.args import UsageError, check_readable, dial_address, positive_int

DEFAULT_RECEIVER = "127.0.0.1:50551"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--receiver",
        type=dial_address,
        metavar="HOST:PORT",
        help=f"the receiver's gRPC address (default TRACKBRIDGE_RECEIVER, else {DEFAULT_RECEIVER})",
    )
    p.add_argument(
        "--viewer-token",
        help="the receiver's viewer token (prefer env TRACKBRIDGE_VIEWER_TOKEN: flags show in ps)",
    )
    p.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="CA of the receiver's TLS certificate (default TRACKBRIDGE_TLS_CA; client"
        " certificate from TRACKBRIDGE_TLS_CERT/KEY when the receiver wants mutual TLS)",
    )


def _receiver(args: argparse.Namespace) -> str:
    if args.receiver is not None:
        return str(args.receiver)
    return os.environ.get(envvars.TRACKBRIDGE_RECEIVER, DEFAULT_RECEIVER)


def _security(args: argparse.Namespace) -> ChannelSecurity:
    """TLS as a client would have it; the viewer token (not a client's) as the bearer."""
    check_readable(args.tls_ca, "--tls-ca")
    token = args.viewer_token
    if token is None:
        token = os.environ.get(envvars.TRACKBRIDGE_VIEWER_TOKEN, "")
    try:
        return ChannelSecurity.resolve(tls_ca=args.tls_ca, token=token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add_viewer_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``top`` and ``tail`` to the ``trackbridge`` command."""
    top = sub.add_parser("top", help="live terminal view of a receiver's clients")
    _common(top)
    top.add_argument("--job", default="", help="only this job (default: all)")
    top.add_argument(
        "-n",
        "--iterations",
        type=positive_int,
        metavar="N",
        help="exit after N frames (default: never)",
    )
    top.set_defaults(func=_top)

    tail = sub.add_parser("tail", help="print a client's events as the receiver accepts them")
    _common(tail)
    tail.add_argument("--job", default="", help="only this job (default: all)")
    tail.add_argument("--client", default="", help="only this client id (default: all)")
    tail.add_argument("--count", type=positive_int, metavar="N", help="exit after N events")
    tail.set_defaults(func=_tail)


def _top(args: argparse.Namespace) -> int:
    from server.cli.top import run_top

    return run_top(
        _receiver(args), job=args.job, security=_security(args), iterations=args.iterations
    )


def _tail(args: argparse.Namespace) -> int:
    from server.cli.tail import run_tail

    return run_tail(
        _receiver(args),
        job=args.job,
        client_id=args.client,
        security=_security(args),
        count=args.count,
    )
