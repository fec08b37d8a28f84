"""``trackbridge docs``: serves (or builds) the documentation site of a clone of the repository.

The site's pages are ``docs/`` and its layout ``mkdocs.yml`` at the repository root; neither is
in the wheel, so the command works from a clone with the ``docs`` extra installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

from server.cli.args import UsageError, host_port

REPO = Path(__file__).resolve().parents[2]


def add_docs_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``docs`` to the CLI."""
    p = sub.add_parser("docs", help="serve the documentation site locally (from a clone)")
    p.add_argument(
        "--listen",
        type=host_port,
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="where to serve it (default 127.0.0.1:8000)",
    )
    p.add_argument(
        "--build",
        type=Path,
        metavar="DIR",
        help="build the site into DIR instead (strictly: a broken link fails), then exit",
    )
    p.set_defaults(func=_docs)


def _docs(args: argparse.Namespace) -> int:
    config = REPO / "mkdocs.yml"
    if not config.is_file():
        raise UsageError(
            f"no mkdocs.yml beside the installed code ({REPO}): the documentation comes with a"
            " clone of the repository"
        )
    if importlib.util.find_spec("mkdocs") is None:
        raise UsageError("MkDocs is not installed: pip install -c .ci/constraints.txt -e '.[docs]'")
    command = [sys.executable, "-m", "mkdocs"]
    if args.build is not None:
        command += ["build", "--strict", "-f", str(config), "-d", str(args.build.resolve())]
    else:
        command += ["serve", "-f", str(config), "-a", args.listen]
    return subprocess.call(command, cwd=REPO)
