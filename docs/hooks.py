"""MkDocs hook: fills the reference pages from the code, so they cannot drift from it.

A page asks for a generated block with a marker line (``<!-- generated: NAME -->``):

- ``cli``: every ``trackbridge`` command, subcommand and flag, walked from the argparse parser
  (``server.cli.main.build_parser``); ``demo`` and ``bench`` by their own ``--help``;
- ``envvars``: every variable named in ``bridge/envvars.py``, with its docstring;
- ``config-fields``: the fields of the configuration dataclasses, with their docstrings.

Listed in ``mkdocs.yml`` under ``hooks:``; ``tests/docs/test_site.py`` builds the site with
``--strict``. A new generated block is a new entry in ``GENERATORS``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)

CONFIG_CLASSES = (
    ("client_sdk/config.py", "WriterConfig", "client (`client_sdk.WriterConfig`)"),
    ("server/config.py", "ReceiverConfig", "receiver (`server.config.ReceiverConfig`)"),
    (
        "server/security/config.py",
        "SecurityConfig",
        "receiver security (`ReceiverConfig.security`)",
    ),
    ("server/aggregate/config.py", "AggregateConfig", "aggregates (`ReceiverConfig.aggregate`)"),
    ("server/fleet/config.py", "FleetConfig", "fleet mode (`ReceiverConfig.fleet`)"),
)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: replaces each marker line with its generated Markdown."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --- the command line -------------------------------------------------------------------------


def cli_reference() -> str:
    """Markdown for every command of ``trackbridge``, from its parser."""
    from server.cli.main import _LAUNCHED, build_parser

    parser = build_parser()
    parts = [_options_table(parser, "trackbridge")]
    for path, sub, text in _subcommands(parser, ["trackbridge"]):
        name = " ".join(path)
        parts.append(f"## `{name}`\n\n{_cell(text)}\n")
        module = _LAUNCHED.get(path[1], ("", ""))[0] if len(path) == 2 else ""
        if module:
            parts.append(_launched_help(module))
            continue
        parts.append(f"```text\n{sub.format_usage().strip()}\n```\n")
        parts.append(_options_table(sub, name))
    return "\n".join(parts)


def _subcommands(
    parser: argparse.ArgumentParser, path: list[str]
) -> Iterator[tuple[list[str], argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield [*path, name], sub, helps.get(name, "")
                yield from _subcommands(sub, [*path, name])


def _options_table(parser: argparse.ArgumentParser, name: str) -> str:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            flag = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0:
                flag += f" `{action.metavar or action.dest.upper()}`"
        else:
            flag = f"`{action.metavar or action.dest}` (positional)"
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) else f"`{default}`"
        if isinstance(action.choices, list | tuple):
            shown += f" (one of {', '.join(f'`{c}`' for c in action.choices)})"
        help_text = (action.help or "") % {"default": default, "prog": name}
        rows.append(f"| {flag} | {_cell(help_text)} | {shown} |")
    if not rows:
        return ""
    return "| option | what | default |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _launched_help(module: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    shown = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    return f"Run from a clone of the repository (not in the wheel).\n\n```text\n{shown.stdout}```\n"


# --- environment variables and config fields ----------------------------------------------------


def _documented(tree: ast.Module | ast.ClassDef) -> Iterator[tuple[ast.stmt, str]]:
    """Statements of a module or class body followed by a string (an attribute docstring)."""
    body = tree.body
    for stmt, after in itertools.pairwise(body):
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            yield stmt, after.value.value


def envvars_reference() -> str:
    """Markdown table of every variable ``bridge/envvars.py`` names."""
    tree = ast.parse((REPO / "bridge" / "envvars.py").read_text())
    rows = []
    for stmt, doc in _documented(tree):
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            side, _, text = doc.partition(":")
            rows.append(f"| `{stmt.value.value}` | {_cell(side)} | {_cell(text)} |")
    return "| variable | read by | what |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def config_reference() -> str:
    """Markdown tables of the configuration dataclasses' fields."""
    parts = []
    for path, cls_name, title in CONFIG_CLASSES:
        tree = ast.parse((REPO / path).read_text())
        cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls_name)
        defaults = _defaults(path, cls_name)
        rows = []
        for stmt, doc in _documented(cls):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                kind = ast.unparse(stmt.annotation)
                default = defaults.get(stmt.target.id) or _default(stmt.value)
                rows.append(f"| `{stmt.target.id}` | `{kind}` | {default} | {_cell(doc)} |")
        parts.append(
            f"### {title}\n\n| field | type | default | what |\n|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n"
        )
    return "\n".join(parts)


def _defaults(path: str, cls_name: str) -> dict[str, str]:
    """The fields' plain default values, as the imported class has them."""
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    shown = {}
    for f in dataclasses.fields(getattr(module, cls_name)):
        if f.default is not dataclasses.MISSING and f.repr:
            shown[f.name] = f"`{_cell(repr(f.default))}`"
    return shown


def _default(value: ast.expr | None) -> str:
    if value is None:
        return "required"
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for kw in value.keywords:
            if kw.arg == "default":
                return f"`{_cell(ast.unparse(kw.value))}`"
            if kw.arg == "default_factory":
                return f"`{_cell(ast.unparse(kw.value))}()`"
        return "required"
    return f"`{_cell(ast.unparse(value))}`"


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "envvars": envvars_reference,
    "config-fields": config_reference,
}
