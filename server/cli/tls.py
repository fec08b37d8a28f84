"""``trackbridge tls init``: the certificates and tokens of a secured deployment in one command.

Makes (or reuses) a CA in ``--dir``, a receiver certificate for the ``--name``s clients dial, and
for each ``--client`` a client certificate, its key and a token issued into the receiver's
``--data-dir``; then prints the ``serve`` command and each site's settings that use them.
Nothing that exists is overwritten, so running it again with new ``--client``s adds sites.

Layout of ``--dir``::

    ca.pem  ca.key                      the CA (keep ca.key off the receiver once done)
    receiver.pem  receiver.key          the receiver's certificate and key
    clients/SITE.pem  SITE.key  SITE.token   one site's files (hand them and ca.pem to it)
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from bridge import envvars
from server.cli.args import UsageError
from server.config import DEFAULT_DATA_DIR

if TYPE_CHECKING:
    from server.security.pki import Authority

DEFAULT_PORT = 50551
DEFAULT_DAYS = 825


def add_tls_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``tls init`` to the CLI."""
    tls = sub.add_parser("tls", help="make the CA, certificates and tokens of a deployment")
    actions = tls.add_subparsers(dest="tls_command", required=True)
    init = actions.add_parser(
        "init",
        help="a CA, a receiver certificate, and per-site client certificates and tokens",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    init.add_argument(
        "--dir", type=Path, required=True, help="where the files go (made 0700 if missing)"
    )
    init.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="HOST",
        help="a DNS name or IP address clients dial the receiver at; repeatable (needed the"
        " first time: the receiver certificate names them)",
    )
    init.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="CLIENT_ID",
        help="a site to make a client certificate and a token for; repeatable",
    )
    init.add_argument(
        "--data-dir",
        type=Path,
        help=f"the receiver's data directory, where tokens are kept (default ./{DEFAULT_DATA_DIR};"
        " made if missing)",
    )
    init.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the receiver's gRPC port, for the printed settings (default {DEFAULT_PORT})",
    )
    init.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"validity of the receiver and client certificates (default {DEFAULT_DAYS})",
    )
    init.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    from server.security import pki

    root: Path = args.dir.resolve()
    data_dir: Path = (args.data_dir or Path(DEFAULT_DATA_DIR)).resolve()
    clients_dir = root / "clients"
    receiver = (root / "receiver.pem", root / "receiver.key")
    _check(args, clients_dir, receiver)
    for folder in (root, clients_dir, data_dir):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_files = (root / "ca.pem", root / "ca.key")
    if ca_files[0].exists():
        try:
            ca = pki.load_ca(*ca_files)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the CA in {root}: {exc}") from None
        print(f"using the CA in {ca_files[0]}")
    else:
        ca = pki.make_ca(*ca_files, name=f"trackbridge CA ({args.name[0]})")
        print(f"made a CA: {ca_files[0]} (its key {ca_files[1]}: keep it off the receiver)")
    if args.name:
        pki.make_leaf(
            ca, *receiver, common_name=args.name[0], names=args.name, server=True, days=args.days
        )
        print(f"made the receiver certificate for {', '.join(args.name)}: {receiver[0]}")
    if args.client:
        _make_sites(args, ca, clients_dir, data_dir)
    _print_settings(args, root, data_dir, receiver)
    return 0


def _make_sites(args: argparse.Namespace, ca: Authority, clients_dir: Path, data_dir: Path) -> None:
    from server.security import pki
    from server.security.tokens import TokenStore

    store = TokenStore(data_dir / "tokens.db")
    try:
        for client in args.client:
            cert, key, token_file = _client_files(clients_dir, client)
            pki.make_leaf(ca, cert, key, common_name=client, names=[], server=False, days=args.days)
            pki.write_new(token_file, store.issue(client).encode() + b"\n", 0o600)
            print(f"made site {client}: {cert}, {key}, {token_file}")
    finally:
        store.close()


def _check(args: argparse.Namespace, clients_dir: Path, receiver: tuple[Path, Path]) -> None:
    """Refuses, before anything is made, what would fail or overwrite a file."""
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    if not receiver[0].exists() and not args.name:
        raise UsageError(
            "--name HOST is needed: the receiver certificate names the address"
            " clients dial (a DNS name or an IP address; repeat it for several)"
        )
    if receiver[0].exists() and args.name:
        raise UsageError(f"{receiver[0]} exists: move it aside to make one for other --name's")
    for client in args.client:
        if not client or "/" in client or client.startswith("."):
            raise UsageError(f"--client {client!r}: a client id, without '/'")
        taken = [p for p in _client_files(clients_dir, client) if p.exists()]
        if taken:
            raise UsageError(f"{taken[0]} exists: site {client!r} was made already")


def _client_files(clients_dir: Path, client: str) -> tuple[Path, Path, Path]:
    return (
        clients_dir / f"{client}.pem",
        clients_dir / f"{client}.key",
        clients_dir / f"{client}.token",
    )


def _print_settings(
    args: argparse.Namespace, root: Path, data_dir: Path, receiver: tuple[Path, Path]
) -> None:
    q = shlex.quote
    print("\nOn the receiver (mutual TLS and tokens both required):")
    print(
        f"  trackbridge serve --listen 0.0.0.0:{args.port} --data-dir {q(str(data_dir))}"
        f" --tls-cert {q(str(receiver[0]))} --tls-key {q(str(receiver[1]))}"
        f" --tls-client-ca {q(str(root / 'ca.pem'))} --require-tokens"
    )
    host = args.name[0] if args.name else "RECEIVER_HOST"
    for client in args.client:
        cert, key, token_file = _client_files(root / "clients", client)
        print(f"\nOn site {client} (copy ca.pem and its three files there; paths as made here):")
        settings = {
            envvars.TRACKBRIDGE_RECEIVER: f"{host}:{args.port}",
            envvars.TRACKBRIDGE_CLIENT_ID: client,
            envvars.TRACKBRIDGE_TLS_CA: str(root / "ca.pem"),
            envvars.TRACKBRIDGE_TLS_CERT: str(cert),
            envvars.TRACKBRIDGE_TLS_KEY: str(key),
            envvars.TRACKBRIDGE_TOKEN_FILE: str(token_file),
        }
        for name, value in settings.items():
            print(f"  export {name}={q(value)}")
    if os.name == "posix" and args.client:
        print("\nThe keys and tokens are owner-only (0600); keep them so on the sites.")
