"""``trackbridge demo``: train N small torch models that log through a receiver into a local
MLflow store (``python -m demo`` runs the same)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from demo.run import run_demo
from server.cli.logs import configure_logging
from server.config import DEFAULT_DATA_DIR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trackbridge demo`` (``python -m demo``)."""
    p = argparse.ArgumentParser(prog="trackbridge demo", description=__doc__)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50, help="training steps per epoch")
    p.add_argument("--job", default="demo")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--flush-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--step-delay",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="pause per training step, so the live page has something to show (default 0.05)",
    )
    args = p.parse_args(argv)
    return run_demo(
        clients=args.clients,
        epochs=args.epochs,
        steps=args.steps,
        job=args.job,
        data_dir=args.data_dir,
        flush_interval_s=args.flush_interval,
        step_delay_s=args.step_delay,
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
