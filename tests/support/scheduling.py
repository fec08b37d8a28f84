"""How the slow tier's tests are shared among xdist workers (.ci/test: ``-n 3 --dist
loadfile``): each file's tests stay on one worker (its module fixtures, such as a shared MLflow
server, are built once), except in the files listed in ``SPLIT_BY_PARAMETER``, whose tests are
grouped by the first word of their parameter id (the deployment matrix: one group per
deployment, so the deployments run side by side). And the long poles go out first.

xdist itself hands files out by test count, so the long single-test files went last and one
worker ran a two-minute file while the others had nothing left to do. (``--dist loadgroup``
would be the stock way to split a file, but it does not group anything under pytest 9: it
renames ``item._nodeid``, which pytest 9 no longer reads.)
"""

from __future__ import annotations

import re
from typing import Any

LONG_POLES = (
    "tests/compat/test_conformance.py",  # 63 script processes
    "tests/e2e/test_bench.py",  # one bench run with every section, and the sweep
    "tests/compat/test_deployments.py::s3",  # two deployments, PostgreSQL and moto: ~110 CPU s
    "tests/faults/test_experiment_startup.py",  # 10 kills and restarts
    "tests/compat/test_frameworks.py",  # transformers and Lightning, 8 processes: ~100 CPU s
    "tests/compat/test_deployments.py::default",  # with evaluate and Lightning: ~70 CPU s
    "tests/faults/test_faults.py",
    "tests/compat/test_deployments.py::basic",
    "tests/fleet/test_fleet_faults.py",
    "tests/compat/test_deployments.py::local",
    "tests/deploy/test_topology.py",
    "tests/compat/test_deployments.py::embedded",  # no MLflow server
    "tests/e2e/test_flower.py",
    "tests/fleet/test_fleet_leases.py",
    "tests/e2e/test_nvflare.py",
)
"""The slow tier's longest work units (CI's ``--durations`` on a quiet 2-core box; the compat
ones by the CPU seconds they cost, which is what decides on a CPU-bound box), longest first,
the deployments between other long files, so that the workers rarely run several of them (each
two or three scripts at once) side by side; the rest follow in collection order."""

SPLIT_BY_PARAMETER = frozenset({"tests/compat/test_deployments.py"})
_FIRST_WORD = re.compile(r"\[([^\]\-]+)")


def path_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def work_unit(nodeid: str) -> str:
    """The tests that go to one worker together: a file, or in a split file the tests whose
    parameter ids share their first word (``[s3-proxied-swap]`` and ``[s3-receiver-zero]``)."""
    path = path_of(nodeid)
    if path in SPLIT_BY_PARAMETER:
        found = _FIRST_WORD.search(nodeid)
        if found:
            return f"{path}::{found.group(1)}"
    return path


def rank(nodeid: str) -> int:
    """Where a test's work unit goes in the order work is handed out (long poles first)."""
    unit = work_unit(nodeid)
    return LONG_POLES.index(unit) if unit in LONG_POLES else len(LONG_POLES)


def scheduler(config: Any, log: Any) -> Any:
    """``--dist loadfile`` with the split files split, handing out work units in the order
    the workers collected them (tests/conftest.py puts the long poles first)."""
    from xdist.scheduler import LoadScopeScheduling  # only where xdist runs the tests

    class LongPolesFirst(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # the collected order, not xdist's by test count
    return LongPolesFirst(config, log)
