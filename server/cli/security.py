"""Command-line parts of securing a receiver: ``serve``'s security flags, ``trackbridge token``
(issue, list, revoke, keygen; signed tokens in :mod:`server.cli.signed_tokens`) and
``trackbridge doctor``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from bridge import envvars
from server.cli.args import check_readable, existing_data_dir
from server.cli.signed_tokens import (
    add_signed_arguments,
    is_signed_issue,
    issue_signed,
    revoke_signed,
    revoke_signed_client,
)
from server.config import DEFAULT_DATA_DIR, ReceiverConfig
from server.flush.credentials import export_secret_files, install_log_redaction
from server.security.config import (
    DEFAULT_MAX_BATCH_EVENTS,
    DEFAULT_MAX_CALLS_PER_CLIENT,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_RATE_BURST_EVENTS,
    DEFAULT_RATE_EVENTS_PER_S,
    SecurityConfig,
)
from server.security.guard import fleet_tokens
from server.security.tokens import TOKEN_PREFIX, TokenInfo, TokenStore


def add_serve_security_args(p: argparse.ArgumentParser) -> None:
    """The security and limit flags of ``trackbridge serve``."""
    tls = p.add_argument_group("transport security (TLS, client identity)")
    tls.add_argument(
        "--tls-cert",
        metavar="PEM",
        help=f"certificate chain to serve (env {envvars.TRACKBRIDGE_SERVE_TLS_CERT});"
        " reloaded when the file changes",
    )
    tls.add_argument(
        "--tls-key",
        metavar="PEM",
        help=f"its private key (env {envvars.TRACKBRIDGE_SERVE_TLS_KEY})",
    )
    tls.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA; the certificate's CN or SAN is the"
        f" client id (mutual TLS; env {envvars.TRACKBRIDGE_SERVE_TLS_CLIENT_CA})",
    )
    tls.add_argument(
        "--insecure-plaintext",
        action="store_true",
        default=None,
        help="allow plaintext gRPC on a non-loopback address (only behind another encryption)",
    )
    tls.add_argument(
        "--require-tokens",
        action="store_true",
        default=None,
        help="require client tokens even before any is issued (they are required anyway once"
        " `trackbridge token issue` has issued one)",
    )
    tls.add_argument(
        "--token-keys",
        metavar="FILE",
        help="accept signed client tokens made with these keys (the fleet's; env"
        f" {envvars.TRACKBRIDGE_TOKEN_KEYS_FILE}, or the keys themselves in"
        f" {envvars.TRACKBRIDGE_TOKEN_KEYS}); makes tokens required; re-read when it changes",
    )
    tls.add_argument(
        "--token-revocations",
        metavar="FILE",
        help="the fleet's list of revoked signed tokens (env"
        f" {envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE}); re-read when it changes",
    )
    limits = p.add_argument_group("per-client limits")
    limits.add_argument(
        "--max-message-bytes",
        type=int,
        metavar="BYTES",
        help=f"largest gRPC message (default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    limits.add_argument(
        "--max-batch-events",
        type=int,
        metavar="EVENTS",
        help=f"most events in one batch (default {DEFAULT_MAX_BATCH_EVENTS})",
    )
    limits.add_argument(
        "--rate-limit",
        type=float,
        metavar="EVENTS_PER_S",
        help=f"per-client sustained rate, 0 for none (default {DEFAULT_RATE_EVENTS_PER_S:.0f})",
    )
    limits.add_argument(
        "--rate-burst",
        type=int,
        metavar="EVENTS",
        help=f"per-client burst (default {DEFAULT_RATE_BURST_EVENTS})",
    )
    limits.add_argument(
        "--max-calls-per-client",
        type=int,
        metavar="N",
        help=f"calls one client may have in flight, 0 for no limit (default"
        f" {DEFAULT_MAX_CALLS_PER_CLIENT})",
    )


def security_from_args(args: argparse.Namespace) -> SecurityConfig:
    """The SecurityConfig that ``serve``'s flags (then the environment) describe; raises
    ValueError (one line) for bad settings, token key and revocation files included."""
    config = SecurityConfig.resolve(
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure_plaintext=args.insecure_plaintext,
        require_tokens=args.require_tokens,
        token_keys_file=args.token_keys,
        token_revocations_file=args.token_revocations,
        max_message_bytes=args.max_message_bytes,
        max_batch_events=args.max_batch_events,
        rate_events_per_s=args.rate_limit,
        rate_burst_events=args.rate_burst,
        max_calls_per_client=args.max_calls_per_client,
    )
    fleet_tokens(config)  # a missing or malformed file: one clear line before anything starts
    return config


def check_security_files(args: argparse.Namespace) -> None:
    """Fails in one line when a TLS file named on ``serve``'s command line cannot be read."""
    for flag in ("tls_cert", "tls_key", "tls_client_ca"):
        check_readable(getattr(args, flag), f"--{flag.replace('_', '-')}")


def prepare_secrets() -> None:
    """Reads the ``MLFLOW_TRACKING_*_FILE`` secrets into the environment and keeps every
    configured secret out of the log. Exits with status 2, naming the problem, on failure."""
    try:
        export_secret_files(os.environ)
    except ValueError as exc:
        print(f"trackbridge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    install_log_redaction(os.environ)


def add_security_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``token`` and ``doctor``."""
    data_dir_help = f"the receiver's data directory (default ./{DEFAULT_DATA_DIR})"
    token = sub.add_parser("token", help="issue, list and revoke client tokens")
    actions = token.add_subparsers(dest="token_command", required=True)
    issue = actions.add_parser("issue", help="print a new token for a client (shown once)")
    issue.add_argument("--client", required=True, help="the client id the token is bound to")
    issue.add_argument("--data-dir", help=data_dir_help)
    issue.set_defaults(func=_token_issue)
    listing = actions.add_parser("list", help="the tokens issued (never their secrets)")
    listing.add_argument("--data-dir", help=data_dir_help)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token (by id) or all of a client's")
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("token_id", nargs="?", help="the token's id, as `token list` shows it")
    target.add_argument("--client", help="revoke every token of this client")
    revoke.add_argument("--data-dir", help=data_dir_help)
    revoke.set_defaults(func=_token_revoke)
    keygen = actions.add_parser("keygen", help="make a key for signed tokens (the fleet's)")
    add_signed_arguments(issue, revoke, keygen)

    doctor = sub.add_parser(
        "doctor",
        help="check that the receiver can reach, log in to and write to MLflow",
        description="Checks MLflow with the receiver's settings (MLFLOW_TRACKING_* variables,"
        " *_FILE variants included): reachable, credentials accepted, each --experiment"
        " present (created if missing) and writable. Exit status 0 when every check passes,"
        " 1 otherwise. Never prints a secret.",
    )
    doctor.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else embedded")
    doctor.add_argument("--data-dir", help=data_dir_help)
    doctor.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="an experiment (job) to check write permission to; repeatable (default: the jobs"
        " in the receiver's queue)",
    )
    doctor.set_defaults(func=_doctor)


def _data_dir(args: argparse.Namespace) -> Path:
    return ReceiverConfig.resolve(data_dir=args.data_dir).data_dir


def _store(args: argparse.Namespace) -> TokenStore:
    # An existing directory only: a mistyped --data-dir must not become a new, empty one.
    return TokenStore(existing_data_dir(_data_dir(args)) / "tokens.db")


def _token_issue(args: argparse.Namespace) -> int:
    if is_signed_issue(args):
        return issue_signed(args)
    store = _store(args)
    try:
        token = store.issue(args.client)
    except ValueError as exc:
        print(f"trackbridge token: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(token, flush=True)
    print(
        f"token for client {args.client!r}, id {token.split('.')[0]}; it is not shown again."
        f" Give it to that client as {envvars.TRACKBRIDGE_TOKEN} (or in a file named by"
        f" {envvars.TRACKBRIDGE_TOKEN_FILE}). Every client needs one from now on.",
        file=sys.stderr,
    )
    return 0


def _token_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        tokens = store.list_tokens()
    finally:
        store.close()
    if args.json:
        print(json.dumps([_token_dict(t) for t in tokens], indent=2))
        return 0
    print(f"{'id':<18} {'client':<24} {'created (UTC)':<20} state")
    for t in tokens:
        state = f"revoked {_utc(t.revoked_ms)}" if t.revoked_ms else "valid"
        name = f"{TOKEN_PREFIX}{t.token_id}"
        print(f"{name:<18} {t.client_id[:24]:<24} {_utc(t.created_ms):<20} {state}")
    return 0


def _token_dict(t: TokenInfo) -> dict[str, object]:
    return {
        "token_id": f"{TOKEN_PREFIX}{t.token_id}",
        "client_id": t.client_id,
        "created_ms": t.created_ms,
        "revoked_ms": t.revoked_ms,
    }


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _token_revoke(args: argparse.Namespace) -> int:
    if args.token_id is not None and not args.token_id.startswith(TOKEN_PREFIX):
        return revoke_signed(args.token_id, args.revocations)
    signed = False
    if args.client is not None:
        try:
            signed = revoke_signed_client(args.client, args.revocations)
        except (ValueError, OSError) as exc:
            print(f"trackbridge token revoke: {exc}", file=sys.stderr)
            return 2
        if signed and not (_data_dir(args) / "tokens.db").exists():
            return 0  # no receiver-issued tokens here to revoke
    store = _store(args)
    try:
        if args.client is not None:
            count = store.revoke_client(args.client)
        else:
            count = int(store.revoke(args.token_id))
    finally:
        store.close()
    what = f"client {args.client!r}" if args.client is not None else args.token_id
    print(f"revoked {count} token(s) of {what}")
    return 0 if count or signed else 1


def _doctor(args: argparse.Namespace) -> int:
    from server.cli.doctor import queued_jobs, run_doctor

    with contextlib.suppress(ValueError):  # the doctor reports it, as a failed check
        export_secret_files(os.environ)
    install_log_redaction(os.environ)
    config = ReceiverConfig.resolve(data_dir=args.data_dir, tracking_uri=args.tracking_uri)
    if args.data_dir is not None:
        existing_data_dir(config.data_dir)
    experiments = args.experiment or queued_jobs(config.data_dir)
    return run_doctor(config.effective_tracking_uri, experiments, config.data_dir)
