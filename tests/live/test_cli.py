"""``trackbridge top`` in a real pseudo-terminal (see pty_support) and ``tail`` as a process."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from tests.support.live import LIVE_ARGS, artifact_path, live_writers
from tests.support.procs import (
    TRACKBRIDGE_EXE,
    MlflowServer,
    ReceiverProcess,
    launch_receiver,
    wait_until,
)
from tests.support.pty import spawn_in_pty

CLIENTS = ["site-a", "site-b", "site-c"]
EXPECT_S = 30
TERMINAL_ENV = {"TERM": "xterm", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def live_receiver(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReceiverProcess]:
    """One receiver (live endpoints on) for the tests that each watch a job of their own: a
    receiver started and stopped per test cost more CPU than the test's own work."""
    receiver = launch_receiver(
        tmp_path_factory.mktemp("live-cli"), mlflow_server.uri, extra_args=LIVE_ARGS
    )
    try:
        yield receiver
    finally:
        code = receiver.stop()
    assert code == 0, receiver.log_tail()


def _row(client: str, value: str) -> str:
    """A top row of ``client`` whose latest ``x`` is ``value`` (colour codes allowed)."""
    return rf"{client}\s+(?:\x1b\[[\d;]*m)?connected[^\r\n]*\bx={re.escape(value)}(?:\s|$)"


@pytest.mark.timeout(120)
def test_top_shows_every_client_and_follows_them(
    live_receiver: ReceiverProcess, job: str, tmp_path: Path
) -> None:
    receiver = live_receiver
    with live_writers(receiver.address, job, CLIENTS, tmp_path) as writers:
        for n, writer in enumerate(writers.values()):
            writer.log_metric("x", float(n + 1), step=1)
            assert writer.flush(20)
        top = spawn_in_pty(
            [str(TRACKBRIDGE_EXE), "top", "--receiver", receiver.address, "--job", job],
            rows=40,
            cols=200,
            env=TERMINAL_ENV,
            timeout=EXPECT_S,
        )
        try:
            top.expect(r"3 clients: 3 connected")
            for n, client in enumerate(CLIENTS):
                top.expect(_row(client, str(n + 1)))
            # New values show up in later frames, without restarting top.
            writers["site-b"].log_metric("x", 42.5, step=2)
            assert writers["site-b"].flush(20)
            top.expect(_row("site-b", "42.5"))
            top.expect(_row("site-a", "1"))  # the other rows are still drawn
            frame = top.before
            top.sendintr()
            top.expect(pexpect.EOF)
        except pexpect.ExceptionPexpect as exc:
            raise AssertionError(f"top's screen so far:\n{top.before}") from exc
        finally:
            top.close(force=True)
        assert top.exitstatus == 0, top.before
    artifact_path("top.txt").write_text(frame)


@pytest.mark.timeout(120)
def test_tail_prints_one_clients_events(
    live_receiver: ReceiverProcess, job: str, tmp_path: Path
) -> None:
    receiver = live_receiver
    out_path = tmp_path / "tail.out"
    err_path = tmp_path / "tail.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        tail = subprocess.Popen(
            [
                str(TRACKBRIDGE_EXE),
                "tail",
                "--receiver",
                receiver.address,
                "--job",
                job,
                "--client",
                "site-b",
                "--count",
                "5",
            ],
            stdout=out,
            stderr=err,
        )
    try:
        with live_writers(receiver.address, job, ["site-a", "site-b"], tmp_path) as writers:
            step = 0

            def logged_until_tail_exits() -> bool:
                nonlocal step
                for writer in writers.values():
                    writer.log_metric("loss", 1.0 / (step + 1), step=step)
                step += 1
                return tail.poll() is not None

            wait_until(logged_until_tail_exits, 60, interval_s=0.2, what="tail to print 5")
    finally:
        if tail.poll() is None:
            tail.kill()
        tail.wait(timeout=10)
    lines = out_path.read_text().splitlines()
    assert tail.returncode == 0, lines
    assert len(lines) == 5, lines
    assert all(line.startswith(f"{job}/site-b run ") for line in lines), lines
    metric_lines = [line for line in lines if " metric loss=" in line]
    assert metric_lines, lines
    # Sequence numbers are the client's own, in order, without gaps.
    seqs = [int(line.split(" #")[1].split()[0]) for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + 5)), lines
    told = err_path.read_text()
    assert f"waiting for events of client 'site-b' of job '{job}'" in told, told


@pytest.mark.timeout(120)
def test_tail_of_an_unknown_job_says_what_it_waits_for(
    start_receiver: Callable[..., Any], job: str
) -> None:
    # A receiver of its own: "none has sent anything" is said of a receiver no client used.
    receiver = start_receiver(extra_args=LIVE_ARGS)
    with subprocess.Popen(
        [str(TRACKBRIDGE_EXE), "tail", "--receiver", receiver.address, "--job", "nope"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as tail:
        try:
            assert tail.stderr is not None
            line = tail.stderr.readline()  # bounded by the test's timeout
            assert line.startswith("trackbridge tail: waiting for events of every client"), line
            assert "'nope'" in line and receiver.address in line, line
            assert "none has sent anything" in line, line
            assert "Ctrl-C" in line, line
            assert tail.poll() is None  # and it goes on waiting
        finally:
            tail.terminate()
            tail.wait(timeout=10)


@pytest.mark.timeout(120)
def test_top_n_draws_n_frames_and_exits(live_receiver: ReceiverProcess, job: str) -> None:
    receiver = live_receiver
    result = subprocess.run(
        [str(TRACKBRIDGE_EXE), "top", "-n", "2", "--receiver", receiver.address, "--job", job],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
        env={**TERMINAL_ENV, "COLUMNS": "80", "LINES": "24"},
    )
    assert result.returncode == 0, result
    assert result.stdout.count("trackbridge top") == 2, result.stdout
    assert result.stderr == "", result.stderr


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_top_reports_an_unreachable_receiver_and_keeps_trying(tmp_path: Path) -> None:
    from tests.support.procs import free_port

    top = spawn_in_pty(
        [str(TRACKBRIDGE_EXE), "top", "--receiver", f"127.0.0.1:{free_port()}"],
        rows=24,
        cols=120,
        env=TERMINAL_ENV,
        timeout=EXPECT_S,
    )
    try:
        # UNAVAILABLE, or DEADLINE_EXCEEDED when a loaded machine is slow to refuse.
        top.expect(r"unreachable \((UNAVAILABLE|DEADLINE_EXCEEDED)\); retrying")
        top.expect(r"unreachable \((UNAVAILABLE|DEADLINE_EXCEEDED)\); retrying")  # goes on
        assert top.isalive()
        top.sendintr()
        top.expect(pexpect.EOF)
    finally:
        top.close(force=True)
