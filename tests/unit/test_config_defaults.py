"""Each receiver default is written once, as the ``ReceiverConfig`` field's default: ``serve``
without flags (and without the environment) makes exactly the default config, and each flag's
help shows the field's default."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from bridge import envvars
from server.cli.main import build_parser
from server.cli.serve import _serve_config, new_runs_line
from server.config import ReceiverConfig, default

pytestmark = pytest.mark.timeout(60)

FLAG_FIELDS = {
    "--listen": "listen",
    "--flush-interval": "flush_interval_s",
    "--flush-workers": "flush_workers",
    "--fsync": "sqlite_synchronous",
    "--shutdown-timeout": "shutdown_timeout_s",
    "--max-backlog": "max_backlog_events",
    "--disk-reserve": "disk_reserve_mib",
    "--publish-budget": "publish_budget_per_s",
    "--run-lease": "run_lease_s",
    "--read-scope": "read_scope",
    "--client-timeout": "client_timeout_s",
}
"""Flags whose help names their default, and the field that holds it."""


def _serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve: argparse.ArgumentParser = sub.choices["serve"]
    return serve


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in dir(envvars):
        if name.isupper():
            monkeypatch.delenv(getattr(envvars, name), raising=False)


def test_serve_without_flags_makes_the_default_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    args = build_parser().parse_args(["serve"])
    made = _serve_config(args)
    assert made == ReceiverConfig(security=made.security)
    assert ReceiverConfig.resolve(env={}) == ReceiverConfig(security=made.security)


def test_each_flags_help_shows_the_fields_default() -> None:
    actions = {opt: a for a in _serve_parser()._actions for opt in a.option_strings}
    for flag, name in FLAG_FIELDS.items():
        shown = re.search(r"default:? ([^;) ]+)", actions[flag].help or "")
        assert shown is not None, f"{flag}: its help names no default"
        value = default(name)
        want = f"{value:g}" if isinstance(value, float) else str(value)
        assert shown.group(1).lower() == want.lower(), f"{flag}: help {shown.group(1)}, {want}"
        assert actions[flag].default is None  # None: the environment, then the field's default


def test_the_configuration_page_shows_the_fields_defaults() -> None:
    """docs/reference/configuration.md's table, for the same flags."""
    page = (Path(__file__).resolve().parents[2] / "docs/reference/configuration.md").read_text()
    for flag, name in FLAG_FIELDS.items():
        row = next((line for line in page.splitlines() if re.search(rf"`{flag}[ `]", line)), None)
        assert row is not None, f"{flag}: not in the configuration page"
        cell = row.rstrip(" |").rsplit("|", 1)[1]
        shown = re.search(r"`([^`]+)`", cell)
        assert shown is not None, f"{flag}: the page shows no default"
        assert _same(shown.group(1), default(name)), f"{flag}: the page shows {cell.strip()}"


def _same(text: str, value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return text.lower() == str(value).lower()
    try:
        return float(text) == value
    except ValueError:
        return False


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--tracking-uri", "http://mlflow:5000"], "three MLflow calls each, safe beside other"),
        (["--tracking-uri", "http://mlflow:5000", "--alone"], "one MLflow call each (--alone"),
        (["--tracking-uri", "http://mlflow:5000", "--queue", "nats://n:4222"], "fleet's other"),
        ([], None),  # the embedded store: always alone, nothing to choose
        (["--tracking-uri", "http://mlflow:5000", "--sink", "jsonl:/tmp/x"], None),  # no MLflow
    ],
)
def test_the_banner_says_what_a_new_run_costs_and_how_to_make_it_one_call(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], says: str | None
) -> None:
    _clean_env(monkeypatch)
    line = new_runs_line(_serve_config(build_parser().parse_args(["serve", *flags])))
    if says is None:
        assert line is None
    else:
        assert line is not None and says in line, line
    if line is not None and "three" in line and "fleet" not in line:
        assert "--alone makes it one" in line
