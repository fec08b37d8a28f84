"""The layout keeps the architecture: imports point one way, no module imports itself back
through others, and modules stay small enough to read whole."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.procs import REPO_ROOT

PRODUCT = ("bridge", "client_sdk", "server")
"""The packages the wheel installs: the only import names trackbridge claims."""
REPO_TOOLS = ("bench", "demo")
"""Tools of a clone (trackbridge bench, demo), kept out of the wheel: above the product, which
never imports them."""
PACKAGES = PRODUCT + REPO_TOOLS
MAX_MODULE_LINES = 400
"""A hard ceiling; modules aim for ~300 (generated protobuf code is not counted)."""
MAY_IMPORT = {
    "bridge": {"bridge"},
    "client_sdk": {"bridge", "client_sdk"},
    "server": {"bridge", "server"},
    "bench": {"bridge", "client_sdk", "server", "bench", "tests"},
    "demo": {"bridge", "client_sdk", "server", "demo"},
}
COMPOSITION_ROOT = "server.receiver"


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            rel = path.relative_to(REPO_ROOT)
            if rel.parts[:3] == ("bridge", "pb", "v1"):
                continue
            name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known or n.split(".")[0] in MAY_IMPORT)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: {i for i in _imports(p, known) if i != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_one_way() -> None:
    wrong = sorted(
        (module, target)
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[module.split(".")[0]]
    )
    assert wrong == []


def test_parts_never_import_the_composition_root() -> None:
    importers = sorted(
        module
        for module, targets in _graph().items()
        if COMPOSITION_ROOT in targets and module.startswith("server.")
    )
    # Only the entry points above the root start a receiver: the command line, and the
    # receiver on a thread of its own that the demo, benchmarks and tests embed.
    assert all(m.startswith("server.cli.") or m == "server.background" for m in importers), (
        importers
    )


def test_modules_stay_small() -> None:
    large = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert large == {}


def test_the_wheel_holds_the_product_packages_only() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    found = re.search(r"\[tool\.setuptools\.packages\.find\]\ninclude = (\[.*?\])", pyproject)
    assert found, "pyproject.toml: [tool.setuptools.packages.find] include"
    include = ast.literal_eval(found.group(1))
    assert sorted(include) == sorted(f"{p}*" for p in PRODUCT)
    graph = _graph()
    assert not [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if m.split(".")[0] in PRODUCT and t.split(".")[0] in REPO_TOOLS
    ]
