"""``trackbridge tls init`` makes a deployment's CA, receiver certificate, and per-site client
certificates and tokens, owner-only where secret; a real receiver serves with those files, and
a real client process logs through mutual TLS with its token, configured by exactly the
settings the command printed."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow_reads import all_points, wait_for_children
from tests.support.procs import TRACKBRIDGE_EXE, child_env

pytestmark = pytest.mark.slow  # runs trackbridge tls init, a receiver and a client as processes

CLIENT = """
import sys
from client_sdk import Writer

with Writer(job=sys.argv[1]) as writer:  # receiver, client id, TLS files, token: environment
    writer.start_run()
    for step in range(20):
        writer.log_metric("acc", step / 20, step=step)
    assert writer.flush(timeout_s=60), "not delivered"
"""


def _tls_init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), "tls", "init", *args],
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tls_init_makes_what_a_receiver_and_its_sites_need(
    tmp_path: Path, start_receiver: Any, mlflow_client: Any, job: str
) -> None:
    pki, data_dir = tmp_path / "pki", tmp_path / "receiver-data"
    names = ("--name", "127.0.0.1", "--name", "localhost")
    sites = ("--client", "site-1", "--client", "site-2")
    made = _tls_init("--dir", str(pki), *names, *sites, "--data-dir", str(data_dir))
    assert made.returncode == 0, made.stderr
    for key in ("ca.key", "receiver.key", "clients/site-1.key", "clients/site-1.token"):
        assert _mode(pki / key) == 0o600, key
    assert _mode(pki / "clients") == 0o700
    assert _mode(data_dir / "tokens.db") == 0o600
    token = (pki / "clients" / "site-1.token").read_text().strip()
    assert token not in made.stdout

    # the serve flags it printed, on a free loopback port
    serve = re.search(r"trackbridge serve (.*)", made.stdout)
    assert serve
    flags = serve.group(1).split()
    listen = flags.index("--listen")
    del flags[listen : listen + 2]
    data = flags.index("--data-dir")
    assert flags.pop(data + 1) == str(data_dir)
    del flags[data]
    receiver = start_receiver(data_dir=data_dir, extra_args=tuple(flags))

    # site-1's settings as printed, the receiver's port being the one it got
    site = made.stdout.split("On site site-1")[1].split("On site site-2")[0]
    env = dict(re.findall(r"export (\w+)=(\S+)", site))
    assert env["TRACKBRIDGE_RECEIVER"] == "127.0.0.1:50551"
    env["TRACKBRIDGE_RECEIVER"] = receiver.address
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, job],
        capture_output=True, text=True, timeout=120, check=False, env=child_env(**env),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert len(all_points(mlflow_client, run)["acc"]) == 20
    assert run.data.tags["trackbridge.client_id"] == "site-1"

    # again: a new site signed by the same CA; nothing that exists is overwritten
    ca = (pki / "ca.pem").read_bytes()
    again = _tls_init("--dir", str(pki), "--client", "site-3", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert (pki / "ca.pem").read_bytes() == ca
    assert (pki / "clients" / "site-3.token").is_file()
    refused = _tls_init("--dir", str(pki), "--client", "site-1", "--data-dir", str(data_dir))
    assert refused.returncode == 2
    assert "site-1" in refused.stderr


def test_tls_init_needs_the_receivers_names(tmp_path: Path) -> None:
    refused = _tls_init("--dir", str(tmp_path / "pki"), "--client", "site-1")
    assert refused.returncode == 2
    assert "--name" in refused.stderr
    assert not (tmp_path / "pki").exists()
