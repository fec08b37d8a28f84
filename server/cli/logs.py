"""Logging for the command-line entry points (libraries never configure logging)."""

from __future__ import annotations

import logging


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG when ``verbose``) to stderr, with MLflow's chatty loggers at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # MLflow's own loggers are chatty at INFO (migrations, experiment creation).
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
