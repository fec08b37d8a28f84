"""Signed tokens across a fleet: issued once, accepted by every receiver holding the fleet's
keys (none of which issued them), refused once expired or revoked (without a restart), bound
to one client, and rotated by adding and removing keys while the receivers run. No key and no
token shows in any log, output or process list."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from server.security.signed import parse_keys, sign
from tests.support.bystander import start_bystander
from tests.support.mlflow_reads import TAG_CLIENT_ID, all_points, wait_for_children
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, child_env, wait_until
from tests.support.security import (
    CLI_TIMEOUT_S,
    LEDGER,
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    no_secret_leaks,
    trackbridge,
    write_secret,
)

__all__ = ["no_secret_leaks"]
pytestmark = pytest.mark.usefixtures("no_secret_leaks")


def _remember_keys(path: Path) -> None:
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            LEDGER.remember(line.split(" ", 1)[1].strip())


def _keygen(keys: Path, key_id: str) -> None:
    done = trackbridge("token", "keygen", "--keys", str(keys), "--key-id", key_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", "the key goes to the file only"
    _remember_keys(keys)


def _issue(keys: Path, client_id: str, *extra: str) -> tuple[str, str]:
    """``token issue --signed``: (the token, its id); the token is remembered as a secret."""
    command = [TRACKBRIDGE_EXE, "token", "issue", "--signed", "--keys", keys, "--client", client_id]
    done = subprocess.run(
        [*command, *extra],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    token = LEDGER.remember(done.stdout.strip())
    LEDGER.remember(token.rsplit(".", 1)[1])  # its signature
    LEDGER.output("token issue --signed stderr", done.stderr)
    token_id = done.stderr.split(" id ", 1)[1].split(",", 1)[0]
    assert token_id.startswith("tbs_") and len(token.split(".")) == 3, done.stderr
    return token, token_id


def _publish(receiver: ReceiverProcess, token: str, client_id: str) -> Any:
    with grpc.insecure_channel(receiver.address) as channel:
        return call(channel, PUBLISH, batch(client_id), bearer(token))


def _refused_everywhere(
    receivers: list[ReceiverProcess], token: str, client: str, why: str
) -> None:
    def refused() -> bool:
        for receiver in receivers:
            outcome = _publish(receiver, token, client)
            if outcome.code != grpc.StatusCode.UNAUTHENTICATED or why not in outcome.details:
                return False
            assert token not in outcome.details
        return True

    wait_until(refused, 30, what=f"every receiver to refuse the token ({why})")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_signed_tokens_work_across_the_fleet_and_stop_when_expired_or_revoked(
    start_receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    keys = tmp_path / "fleet-keys.secret"
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    _keygen(keys, "k1")
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    fleet_args = ("--token-keys", str(keys), "--token-revocations", str(revoked))
    r1, r2 = (start_receiver(extra_args=fleet_args) for _ in range(2))
    for receiver in (r1, r2):
        cmdline = Path(f"/proc/{receiver.proc.pid}/cmdline").read_bytes().decode()
        LEDGER.output(f"receiver {receiver.port} command line", cmdline)
        listed = trackbridge("token", "list", "--data-dir", str(receiver.data_dir), "--json")
        assert json.loads(listed.stdout) == [], "no receiver issued any token"

    site_a, _ = _issue(keys, "site-a", "--expires-in", "1h")
    bystander_token, _ = _issue(keys, "bystander-fleet")
    bystander = start_bystander(
        r1.address,
        tmp_path,
        client_id="bystander-fleet",
        token_file=write_secret(tmp_path / "bystander.secret", bystander_token),
        points=1000,
        rate=100.0,
    )
    try:
        # A token no receiver issued, accepted by one that never saw it.
        writer = Writer(
            config=WriterConfig(
                receiver=r2.address,
                client_id="site-a",
                job=job,
                spool_dir=str(tmp_path / "spool-a"),
                token=site_a,
            )
        )
        writer.start_run("a-run")
        for i in range(100):
            writer.log_metric("x", float(i), step=i, timestamp=TS + i)
        writer.end_run()
        assert writer.close(timeout_s=60) == 0
        assert repr(writer.config).count(site_a) == 0

        # It is site-a's: it never writes as site-b, on either receiver.
        for receiver in (r1, r2):
            outcome = _publish(receiver, site_a, "site-b")
            assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome
            assert "'site-a'" in outcome.details and "'site-b'" in outcome.details

        # Expired: refused, naming the token's id (never the token).
        expired, claims = sign(
            parse_keys(keys.read_text(), "keys"), "site-a", 60, now_s=time.time() - 3600
        )
        LEDGER.remember(expired)
        for receiver in (r1, r2):
            outcome = _publish(receiver, expired, "site-a")
            assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
            assert f"client token {claims.shown_id} expired at" in outcome.details

        # Revoked in the fleet's list: refused by both within seconds, no restart.
        site_c, site_c_id = _issue(keys, "site-c")
        site_d, _ = _issue(keys, "site-d")
        for receiver in (r1, r2):
            for token, client in ((site_c, "site-c"), (site_d, "site-d")):
                assert _publish(receiver, token, client).code == grpc.StatusCode.OK
        done = trackbridge("token", "revoke", site_c_id, "--revocations", str(revoked))
        assert done.returncode == 0, done.stderr
        _refused_everywhere([r1, r2], site_c, "site-c", f"client token {site_c_id} was revoked")
        done = trackbridge(
            "token", "revoke", "--client", "site-d", "--revocations", str(revoked),
            "--data-dir", str(tmp_path / "no-store"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _refused_everywhere([r1, r2], site_d, "site-d", "was revoked")
        assert not (tmp_path / "no-store").exists()
        # Other clients' tokens go on working.
        assert _publish(r1, site_a, "site-a").code == grpc.StatusCode.OK

        # Rotation, step 1: a new signing key, seen by the running receivers.
        _keygen(keys, "k2")
        site_e, _ = _issue(keys, "site-e")

        def accepted(token: str, client: str) -> bool:
            return all(_publish(r, token, client).code == grpc.StatusCode.OK for r in (r1, r2))

        wait_until(lambda: accepted(site_e, "site-e"), 30, what="the new key's token accepted")
        assert accepted(site_a, "site-a"), "tokens of the old key stay valid until it goes"
        bystander.assert_delivered(mlflow_client)
    except BaseException:
        bystander.stop()
        raise

    # Rotation, step 2: the old key removed; its tokens stop working, the new ones do not.
    k2_line = keys.read_text().splitlines()[0]
    assert k2_line.startswith("k2 ")
    write_secret(keys, k2_line)
    _refused_everywhere([r1, r2], site_a, "site-a", "a key this receiver does not hold")
    assert accepted(site_e, "site-e")

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert run.data.tags[TAG_CLIENT_ID] == "site-a" and run.info.status == "FINISHED"
    assert all_points(mlflow_client, run) == {"x": [("x", float(i), i, TS + i) for i in range(100)]}
    assert r1.alive() and r2.alive(), "nothing needed a restart"
    for receiver in (r1, r2):
        log = receiver.log_path.read_text()
        assert "token keys re-read: verifying with k2, k1" in log
        assert "token revocation list re-read" in log


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bad_fleet_token_settings_are_one_clear_line(tmp_path: Path) -> None:
    keys = tmp_path / "fleet-keys.secret"
    short = write_secret(keys, "k1 c2hvcnQtc2VjcmV0")  # 12 bytes
    data_dir = str(tmp_path / "data")
    cases = {
        "missing keys": (("--token-keys", str(tmp_path / "nope.keys")), "cannot read"),
        "short key": (("--token-keys", str(short)), "12 bytes; at least 32"),
        "revocations alone": (
            ("--token-revocations", str(tmp_path / "r.txt")),
            "a token revocation list needs the fleet's token keys",
        ),
    }
    for case, (args, problem) in cases.items():
        done = trackbridge("serve", "--data-dir", data_dir, "--http-listen", "off", *args)
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert problem in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
            case,
            done.stderr,
        )
        assert "Traceback" not in done.stderr
    keys = tmp_path / "good-keys.secret"
    _keygen(keys, "k1")
    done = trackbridge(
        "serve", "--data-dir", data_dir, "--http-listen", "off", "--token-keys", str(keys),
        "--token-revocations", str(tmp_path / "missing.txt"),
    )  # fmt: skip
    assert done.returncode == 2 and "missing.txt: cannot read" in done.stderr, done.stderr

    done = trackbridge("token", "issue", "--signed", "--client", "site-1")
    assert done.returncode == 2 and "needs the fleet's keys" in done.stderr, done.stderr
    done = trackbridge("token", "issue", "--keys", str(keys), "--client", "s", "--expires-in", "x")
    assert done.returncode == 2 and "--expires-in" in done.stderr, done.stderr
    done = trackbridge("token", "revoke", "tbs_0123456789ab")
    assert done.returncode == 2 and "--revocations FILE" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
