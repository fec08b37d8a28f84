"""``trackbridge demo``: train N small torch models that log through a receiver into a local
MLflow store (``python -m demo`` runs the same).

In a terminal the receiver and its live page stay up after training until Ctrl-C; with
``--exit``, or without a terminal (CI, scripts), the demo leaves as soon as everything is in
MLflow."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from server.cli.args import (
    Parser,
    UsageError,
    non_negative_float,
    positive_float,
    positive_int,
    writable_data_dir,
)
from server.cli.logs import configure_logging
from server.config import DEFAULT_DATA_DIR


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trackbridge demo`` (``python -m demo``)."""
    p = Parser(prog="trackbridge demo", description=__doc__)
    p.add_argument("--clients", type=positive_int, default=3, help="default 3")
    p.add_argument("--epochs", type=positive_int, default=4, help="default 4")
    p.add_argument("--steps", type=positive_int, default=50, help="training steps per epoch")
    p.add_argument("--job", default="demo")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--flush-interval", type=positive_float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--step-delay",
        type=non_negative_float,
        default=0.05,
        metavar="SECONDS",
        help="pause per training step, so the live page has something to show (default 0.05)",
    )
    p.add_argument(
        "--exit",
        action="store_true",
        help="leave once training is done and everything is in MLflow (default in a terminal:"
        " keep the receiver and the live page up until Ctrl-C)",
    )
    args = p.parse_args(argv)
    try:
        writable_data_dir(args.data_dir)
    except UsageError as exc:
        p.exit(2, f"trackbridge demo: {exc}\n")
    stay = not args.exit and sys.stdin.isatty()
    from demo.run import run_demo  # MLflow, gRPC and the receiver: only for a good invocation

    return run_demo(
        clients=args.clients,
        epochs=args.epochs,
        steps=args.steps,
        job=args.job,
        data_dir=args.data_dir,
        flush_interval_s=args.flush_interval,
        step_delay_s=args.step_delay,
        stay=stay,
        said_exit=args.exit,
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
