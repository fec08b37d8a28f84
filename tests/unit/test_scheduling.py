"""How the slow tier is shared among xdist workers (tests/support/scheduling.py): whole files,
the deployment matrix one group per deployment, long poles first."""

from __future__ import annotations

from pathlib import Path

from tests.compat.test_deployments import DEPLOYMENTS, SWAP, ZERO
from tests.support import scheduling

REPO = Path(__file__).resolve().parents[2]
MATRIX = "tests/compat/test_deployments.py::test_the_bridge_leaves_what_mlflow_itself_leaves"


def test_a_files_tests_stay_together_whatever_their_parameters() -> None:
    test = "tests/compat/test_conformance.py::test_script_leaves_the_same_mlflow_state"
    ids = [
        f"{test}[quickstart-import swap]",
        f"{test}[seeded-zero-code]",
        "tests/compat/test_conformance.py::test_every_conformance_script_is_listed",
    ]
    assert {scheduling.work_unit(i) for i in ids} == {"tests/compat/test_conformance.py"}


def test_the_matrix_runs_one_unit_per_deployment_the_s3_ones_sharing_theirs() -> None:
    units: dict[str, set[str]] = {}
    for name in DEPLOYMENTS:
        for mode in (SWAP, ZERO):
            units.setdefault(scheduling.work_unit(f"{MATRIX}[{name}-{mode}]"), set()).add(name)
    assert sorted(units.values(), key=sorted) == sorted(
        [
            {"basic-auth"},
            {"default"},
            {"embedded-sqlite"},
            {"local"},
            {"s3-proxied", "s3-receiver"},
        ],
        key=sorted,
    )


def test_long_poles_exist_and_go_first() -> None:
    for unit in scheduling.LONG_POLES:
        path, _, group = unit.partition("::")
        assert (REPO / path).is_file(), unit
        if group:  # a unit of a split file: a first word of its parameter ids
            assert path in scheduling.SPLIT_BY_PARAMETER, unit
            assert any(name.split("-")[0] == group for name in DEPLOYMENTS), unit
    ranks = [scheduling.rank(f"{MATRIX}[{name}-{SWAP}]") for name in DEPLOYMENTS]
    assert len(set(ranks)) == 5 and max(ranks) < len(scheduling.LONG_POLES), ranks
    assert scheduling.rank("tests/compat/test_conformance.py::test_x") == 0
    assert scheduling.rank("tests/cli/test_cli_errors.py::test_x") == len(scheduling.LONG_POLES)
