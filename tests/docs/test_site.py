"""The documentation site builds strictly (a broken link, a page missing from the navigation or
a failed generated block fails), its reference covers every command and variable, and the
README is the short front door whose commands CI and the demo depend on."""

from __future__ import annotations

import argparse
import ast
import html
import os
import re
import subprocess
from pathlib import Path

import pytest

from server.cli.main import build_parser
from tests.support.procs import TRACKBRIDGE_EXE

pytestmark = pytest.mark.slow  # builds the site with mkdocs as a process

REPO = Path(__file__).resolve().parents[2]
DEMO_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -c .ci/constraints.txt -e '.[server,torch]'"
    " && .venv/bin/trackbridge demo"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built by ``trackbridge docs --build`` (``mkdocs build --strict``)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(TRACKBRIDGE_EXE), "docs", "--build", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _text(site: Path, page: str) -> str:
    raw = (site / page / "index.html").read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def _commands(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, list[str]]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                flags = [
                    s
                    for a in sub._actions
                    if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
                    for s in a.option_strings
                    if s.startswith("--")
                ]
                found.append((f"{path} {name}", flags))
                found += _commands(sub, f"{path} {name}")
    return found


@pytest.mark.timeout(300)
def test_every_command_and_flag_is_in_the_cli_reference(site: Path) -> None:
    raw = (site / "reference" / "cli" / "index.html").read_text()
    sections = {}
    for part in raw.split("<h2 id=")[1:]:
        heading, _, body = part.partition("</h2>")
        name = html.unescape(re.sub(r"<[^>]+>", "", heading.split(">", 1)[1])).strip(" ¶")
        sections[name] = html.unescape(re.sub(r"<[^>]+>", "", body))
    for command, flags in _commands(build_parser(), "trackbridge"):
        assert command in sections, command
        for flag in flags:
            assert flag in sections[command], (command, flag)


def test_every_environment_variable_is_in_the_configuration_reference(site: Path) -> None:
    text = _text(site, "reference/configuration")
    tree = ast.parse((REPO / "bridge" / "envvars.py").read_text())
    names = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    ]
    assert len(names) > 20
    for name in names:
        assert name in text, name
    for field in ("spool_dir", "flush_interval_s", "require_tokens", "token_keys"):
        assert field in text, field


def test_the_python_api_is_rendered(site: Path) -> None:
    text = _text(site, "reference/python-api")
    for name in ("Writer", "log_metric", "WriterConfig", "ReceiverConfig", "client_sdk.mlflow"):
        assert name in text, name


def test_every_page_is_in_the_site(site: Path) -> None:
    pages = [p.relative_to(REPO / "docs") for p in (REPO / "docs").rglob("*.md")]
    assert len(pages) >= 25
    for page in pages:
        built = (
            page.with_suffix("") / "index.html"
            if page.stem != "index"
            else page.with_suffix(".html")
        )
        assert (site / built).is_file(), page


def test_readme_is_the_short_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert blocks[:2] == [DEMO_COMMAND, "bash .ci/test"]
    assert "exec bash .ci/test" in (REPO / ".ci" / "run").read_text()
    for link in re.findall(r"\]\(([^)#]+)\)", readme):
        if not link.startswith("http"):
            assert (REPO / link).exists(), link
