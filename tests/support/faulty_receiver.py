"""``python -m tests.support.faulty_receiver serve ...``: the real ``trackbridge`` CLI with a
fault injected for tests, kept out of the product: with ``FAULT_AFTER_ENV`` set to N, the
ingest thread's post-commit step raises after N commits went through."""

from __future__ import annotations

import os
import sys

from server.cli.main import main
from server.ingest.ingestor import Ingestor

FAULT_AFTER_ENV = "TRACKBRIDGE_TEST_INGEST_FAULT_AFTER"
"""Read only here: commits the ingest thread completes before its post-commit step raises."""


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


if __name__ == "__main__":
    _inject(int(os.environ[FAULT_AFTER_ENV]))
    sys.exit(main())
