"""Every bad invocation of ``trackbridge`` is one line on stderr naming the problem and the
fix, exit status 2, no traceback: a table of them, each run as a real process."""

# ruff: noqa: E501 - the table reads best one case a line

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT, TRACKBRIDGE_EXE, free_port

pytestmark = pytest.mark.slow  # every test here runs the CLI as a process

Argv = Callable[["Scene"], list[str]]


@dataclass
class Scene:
    """What a case may point at: a file, an empty folder, a read-only mount, a port in use."""

    tmp: Path
    file: Path
    empty: Path
    read_only: Path
    busy_port: int

    @property
    def missing(self) -> Path:
        return self.tmp / f"missing-{uuid.uuid4().hex[:6]}"


# (case id, argv, words the one line must contain)
CASES: list[tuple[str, Argv, tuple[str, ...]]] = [
    ("status-missing-dir", lambda s: ["status", "--data-dir", str(s.missing)], ("no data directory", "--data-dir")),
    ("status-dir-is-file", lambda s: ["status", "--data-dir", str(s.file)], ("not a directory",)),
    ("status-no-queue", lambda s: ["status", "--data-dir", str(s.empty)], ("no receiver queue",)),
    ("status-default-dir", lambda s: ["status"], ("no data directory at trackbridge-data",)),
    ("serve-port-out-of-range", lambda s: ["serve", "--listen", "127.0.0.1:99999"], ("--listen", "out of range")),
    ("serve-listen-not-host-port", lambda s: ["serve", "--listen", "50551"], ("not HOST:PORT",)),
    ("serve-data-dir-is-file", lambda s: ["serve", "--data-dir", str(s.file)], ("is a file", "--data-dir")),
    ("serve-data-dir-read-only", lambda s: ["serve", "--data-dir", str(s.read_only / "data")], ("cannot write", "read-only", "--data-dir")),
    ("serve-data-dir-in-proc", lambda s: ["serve", "--data-dir", "/proc/trackbridge-data"], ("cannot write", "--data-dir")),
    ("serve-grpc-port-in-use", lambda s: ["serve", "--data-dir", str(s.tmp / "d1"), "--listen", f"127.0.0.1:{s.busy_port}", "--http-listen", "off"], ("in use", "--listen")),
    ("serve-http-port-in-use", lambda s: ["serve", "--data-dir", str(s.tmp / "d2"), "--listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{s.busy_port}"], ("in use", "--http-listen")),
    ("serve-http-public-no-token", lambda s: ["serve", "--data-dir", str(s.tmp / "d3"), "--http-listen", "0.0.0.0:0"], ("viewer token",)),
    ("serve-negative-timeout", lambda s: ["serve", "--shutdown-timeout", "-1"], ("--shutdown-timeout", "positive")),
    ("serve-negative-flush", lambda s: ["serve", "--flush-interval", "-0.5"], ("--flush-interval", "positive")),
    ("serve-queue-unknown", lambda s: ["serve", "--queue", "kafka://h:9092"], ("--queue", "nats://")),
    ("serve-queue-not-host-port", lambda s: ["serve", "--queue", "nats://h"], ("--queue", "not host:port")),
    ("serve-queue-bad-option", lambda s: ["serve", "--queue", "nats://h:4222?replicas=2"], ("replicas must be 1, 3 or 5",)),
    ("serve-no-flush-alone", lambda s: ["serve", "--no-flush"], ("--no-flush", "--queue nats://")),
    ("serve-queue-with-aggregate", lambda s: ["serve", "--queue", "nats://h:4222", "--aggregate", "eval/*"], ("--aggregate", "embedded queue")),
    ("flush-without-queue", lambda s: ["flush"], ("--queue", "TRACKBRIDGE_QUEUE")),
    ("serve-zero-publish-budget", lambda s: ["serve", "--publish-budget", "0"], ("--publish-budget", "positive")),
    ("serve-huge-publish-budget", lambda s: ["serve", "--publish-budget", "1e9"], ("--publish-budget", "at most 10000000")),
    ("serve-not-a-number", lambda s: ["serve", "--client-timeout", "soon"], ("not a number",)),
    ("serve-missing-tls-file", lambda s: ["serve", "--tls-cert", str(s.missing), "--tls-key", str(s.missing)], ("--tls-cert", "no file")),
    ("serve-ready-file-folder", lambda s: ["serve", "--data-dir", str(s.tmp / "d4"), "--ready-file", str(s.missing / "r.json")], ("--ready-file",)),
    ("serve-sink-unknown", lambda s: ["serve", "--sink", "kafka"], ("unknown sink", "mlflow or jsonl:DIR")),
    ("serve-sink-jsonl-no-dir", lambda s: ["serve", "--sink", "jsonl:"], ("unknown sink", "jsonl:DIR")),
    ("serve-sink-two-dirs", lambda s: ["serve", "--sink", "jsonl:/a", "--sink", "jsonl:/b"], ("two JSON-lines directories",)),
    ("serve-sink-dir-is-file", lambda s: ["serve", "--data-dir", str(s.tmp / "d5"), "--sink", f"jsonl:{s.file}"], ("is a file", "--sink jsonl:DIR")),
    ("serve-sink-dir-read-only", lambda s: ["serve", "--data-dir", str(s.tmp / "d6"), "--sink", f"jsonl:{s.read_only / 'files'}"], ("cannot write", "read-only", "--sink jsonl:DIR")),
    ("serve-tracking-uri-trackbridge", lambda s: ["serve", "--tracking-uri", "trackbridge://127.0.0.1:50551"], ("--tracking-uri", "points at a trackbridge receiver", "http://HOST:5000")),
    ("serve-tracking-uri-no-scheme", lambda s: ["serve", "--tracking-uri", "localhost:5000"], ("no scheme", "http://localhost:5000")),
    ("serve-tracking-uri-typo", lambda s: ["serve", "--tracking-uri", "htpp://127.0.0.1:5000"], ("no scheme 'htpp'", "did you mean http://")),
    ("serve-tracking-uri-bad-port", lambda s: ["serve", "--tracking-uri", "http://127.0.0.1:abc"], ("port 'abc'", "http://127.0.0.1:PORT")),
    ("serve-tracking-uri-no-host", lambda s: ["serve", "--tracking-uri", "http://:5000"], ("names no host",)),
    ("serve-tracking-uri-file-store", lambda s: ["serve", "--tracking-uri", "./mlruns"], ("file store", "sqlite:///", "MLFLOW_ALLOW_FILE_STORE")),
    ("serve-tracking-uri-no-driver", lambda s: ["serve", "--tracking-uri", "mysql+mysqldb://u:secret@127.0.0.1/db"], ("driver 'MySQLdb'", "not installed", "u:***@")),
    ("serve-tracking-uri-unknown-driver", lambda s: ["serve", "--tracking-uri", "postgresql+nodriver://u:p@127.0.0.1/db"], ("no driver", "postgresql+nodriver")),
    ("serve-tracking-uri-sqlite-no-folder", lambda s: ["serve", "--tracking-uri", f"sqlite:///{s.missing}/mlflow.db"], ("no folder", "SQLite")),
    ("serve-bad-fsync", lambda s: ["serve", "--fsync", "sometimes"], ("--fsync", "normal")),
    ("serve-empty-aggregate", lambda s: ["serve", "--aggregate", ""], ("--aggregate", "eval/*")),
    ("serve-zero-aggregate-deadline", lambda s: ["serve", "--aggregate", "eval/*", "--aggregate-deadline", "0"], ("--aggregate-deadline", "positive")),
    ("token-issue-missing-dir", lambda s: ["token", "issue", "--client", "site-1", "--data-dir", str(s.tmp / "typo")], ("no data directory", "mkdir")),
    ("token-list-missing-dir", lambda s: ["token", "list", "--data-dir", str(s.tmp / "typo")], ("no data directory",)),
    ("token-revoke-missing-dir", lambda s: ["token", "revoke", "--client", "a", "--data-dir", str(s.tmp / "typo")], ("no data directory",)),
    ("token-issue-no-client", lambda s: ["token", "issue", "--data-dir", str(s.empty)], ("--client",)),
    ("health-negative-timeout", lambda s: ["health", "--timeout", "-1"], ("--timeout", "positive")),
    ("health-bad-address", lambda s: ["health", "--receiver", "localhost"], ("--receiver", "HOST:PORT")),
    ("health-missing-ca", lambda s: ["health", "--tls-ca", str(s.missing)], ("--tls-ca", "no file")),
    ("sync-missing-folder", lambda s: ["sync", str(s.missing)], ("no spool folder", "TRACKBRIDGE_SPOOL_DIR")),
    ("sync-folder-is-file", lambda s: ["sync", str(s.file)], ("not a folder",)),
    ("sync-negative-timeout", lambda s: ["sync", "--timeout", "-5", str(s.empty)], ("--timeout", "positive")),
    ("sync-dead-receiver", lambda s: ["sync", str(s.empty), "--receiver", f"127.0.0.1:{free_port()}"], ("no receiver answers", "UNAVAILABLE", "--receiver")),
    ("top-unreachable-n1", lambda s: ["top", "-n", "1", "--receiver", f"127.0.0.1:{free_port()}"], ("unreachable", "--receiver")),
    ("top-zero-frames", lambda s: ["top", "-n", "0"], ("-n", "at least 1")),
    ("tail-zero-count", lambda s: ["tail", "--count", "0"], ("--count", "at least 1")),
    ("tail-bad-receiver", lambda s: ["tail", "--receiver", "127.0.0.1:0"], ("--receiver", "out of range")),
    ("doctor-missing-dir", lambda s: ["doctor", "--data-dir", str(s.missing)], ("no data directory",)),
    ("bench-unknown-section", lambda s: ["bench", "--only", "speed"], ("speed", "latency, ingest, end_to_end, freshness, scale")),
    ("bench-only-lists-sections", lambda s: ["bench", "--only"], ("latency, ingest, end_to_end, freshness, scale",)),
    ("bench-negative-size", lambda s: ["bench", "--clients", "-4"], ("--clients", "at least 1")),
    ("demo-no-clients", lambda s: ["demo", "--clients", "0"], ("--clients", "at least 1")),
    ("demo-data-dir-is-file", lambda s: ["demo", "--exit", "--data-dir", str(s.file)], ("is a file",)),
    ("unknown-command", lambda s: ["serv"], ("invalid choice", "serve")),
]  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "empty").mkdir()
    read_only = tmp / "read-only"
    read_only.mkdir()
    # Root may write anywhere its mode bits say no; only a read-only mount really refuses.
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(read_only)], check=True
    )
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        yield Scene(tmp, tmp / "a-file", tmp / "empty", read_only, busy.getsockname()[1])
    finally:
        busy.close()
        subprocess.run(["umount", str(read_only)], check=True)


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACKBRIDGE_", "MLFLOW_"))}
    return env | {"HOME": str(tmp), "XDG_CACHE_HOME": str(tmp / "cache")}


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.timeout(120)
def test_a_bad_invocation_is_one_line_and_exit_2(
    scene: Scene, argv: Argv, words: tuple[str, ...], tmp_path: Path
) -> None:
    args = argv(scene)
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    shown = f"trackbridge {' '.join(args)}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert result.returncode == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("trackbridge"), shown
    for word in words:
        assert word in lines[0], shown
    assert result.stdout == "", shown
    # Nothing was made where the user pointed by mistake.
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "trackbridge-data").exists()


@pytest.mark.timeout(120)
def test_serve_refuses_an_inherited_tracking_uri_that_points_at_a_receiver(tmp_path: Path) -> None:
    """A shell set up for clients (MLFLOW_TRACKING_URI=trackbridge://) starting a receiver."""
    env = _env(tmp_path) | {"MLFLOW_TRACKING_URI": "trackbridge://127.0.0.1:50551"}
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), "serve", "--listen", "127.0.0.1:0", "--http-listen", "off"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result
    for words in ("MLFLOW_TRACKING_URI trackbridge://", "unset it for the receiver"):
        assert words in result.stderr, result
    assert not (tmp_path / "trackbridge-data").exists()


def test_serve_rejects_a_bad_value_before_loading_mlflow() -> None:
    script = (
        "import sys\n"
        "from server.cli.main import main\n"
        "try:\n"
        "    code = main(['serve', '--listen', '127.0.0.1:99999'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(code, sorted(m for m in ('mlflow', 'torch', 'server.receiver') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "2 []", result


def test_sync_help_and_readme_agree_on_the_default_spool_folder() -> None:
    from client_sdk.config import default_spool_dir
    from server.cli.main import default_spool_dir as cli_default

    shown = subprocess.run(
        [str(TRACKBRIDGE_EXE), "sync", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ["PATH"], "COLUMNS": "200"},
    )
    text = " ".join(shown.stdout.split())
    readme = " ".join((REPO_ROOT / "docs" / "reference" / "configuration.md").read_text().split())
    for where in ("$XDG_CACHE_HOME/trackbridge/spool", "~/.cache/trackbridge/spool"):
        assert where in text
        assert where in readme
    for env in ({}, {"XDG_CACHE_HOME": "/x/cache"}, {"HOME": "/home/u"}):
        assert str(cli_default(env)) == default_spool_dir(env)
    assert str(cli_default({"TRACKBRIDGE_SPOOL_DIR": "/s"})) == "/s"
