"""``python -m tests.support.faulty_receiver serve ...``: the real ``trackbridge`` CLI with a
fault injected for tests, kept out of the product: with ``FAULT_AFTER_ENV`` set to N, the
ingest thread's post-commit step raises after N commits went through; with
``AGGREGATE_FAULTS_ENV`` set to N, the aggregator's pass raises its first N times."""

from __future__ import annotations

import os
import sys

from server.aggregate.aggregator import Aggregator
from server.cli.main import main
from server.ingest.ingestor import Ingestor

FAULT_AFTER_ENV = "TRACKBRIDGE_TEST_INGEST_FAULT_AFTER"
"""Read only here: commits the ingest thread completes before its post-commit step raises."""
AGGREGATE_FAULTS_ENV = "TRACKBRIDGE_TEST_AGGREGATE_FAULTS"
"""Read only here: how many of the aggregator's first passes raise."""


class InjectedFault(RuntimeError):
    """The fault a test asked for."""


def _inject(after: int) -> None:
    original = Ingestor._after_commit
    done = 0

    def after_commit(self: Ingestor, *args: object) -> None:
        nonlocal done
        if done >= after:
            raise InjectedFault(f"injected after {after} commits")
        done += 1
        original(self, *args)  # type: ignore[arg-type]

    Ingestor._after_commit = after_commit  # type: ignore[method-assign,assignment]


def _inject_aggregate(faults: int) -> None:
    original = Aggregator.write_due
    left = faults

    def write_due(self: Aggregator) -> int:
        nonlocal left
        if left > 0:
            left -= 1
            raise InjectedFault(f"aggregate pass failed ({faults - left} of {faults})")
        return original(self)

    Aggregator.write_due = write_due  # type: ignore[method-assign]


if __name__ == "__main__":
    if FAULT_AFTER_ENV in os.environ:
        _inject(int(os.environ[FAULT_AFTER_ENV]))
    if AGGREGATE_FAULTS_ENV in os.environ:
        _inject_aggregate(int(os.environ[AGGREGATE_FAULTS_ENV]))
    sys.exit(main())
