"""The client's files and its sync command, without a receiver: permissions, the staging quota,
what close() reports, and one clear line (exit 2) for every bad invocation of sync."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from client_sdk import ArtifactNotStaged, CloseResult, Writer, WriterConfig
from tests.support.procs import free_port
from tests.support.spools import modes, sync


def _writer(spool: Path, **overrides: float) -> Writer:
    # Nothing listens there: every event and artifact stays in the spool.
    config = WriterConfig(
        receiver=f"127.0.0.1:{free_port()}",
        client_id="site-files",
        job="files",
        spool_dir=str(spool),
        rpc_timeout_s=0.2,
        **overrides,  # type: ignore[arg-type]
    )
    return Writer(config=config)


@pytest.mark.timeout(60)
def test_spool_files_are_private_and_close_says_what_is_left(tmp_path: Path) -> None:
    spool = tmp_path / "new" / "spool"
    writer = _writer(spool)
    writer.start_run()
    for i in range(100):
        writer.log_metric("x", float(i), step=i)
    model = tmp_path / "model.bin"
    model.write_bytes(os.urandom(10_000))
    writer.log_artifact(model, "checkpoints")
    assert writer.flush(timeout_s=0.5) is False
    got = modes(spool)
    result = writer.close(timeout_s=0.5)
    assert isinstance(result, CloseResult)
    # The run start, 100 points and the run end; nothing dropped; the file staged.
    assert (result.undelivered_events, result.dropped_events, result.artifacts_left) == (102, 0, 1)
    assert result == 102 and str(result) == "102" and json.dumps(result) == "102"
    assert oct(os.stat(spool).st_mode & 0o777) == "0o700"
    assert {name for name in got if name.endswith((".db", "-wal", "-shm", ".lock"))}
    for name, mode in got.items():
        assert mode == ("0o700" if (spool / name).is_dir() else "0o600"), (name, mode)
    assert sorted(p.name for p in spool.glob("artifacts/*/*/*")) == ["manifest.json", "model.bin"]


@pytest.mark.timeout(60)
def test_an_artifact_over_the_staging_quota_is_refused_at_the_call(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "spool", max_staged_artifact_bytes=5_000)
    writer.start_run()
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 6_000)
    with pytest.raises(ArtifactNotStaged) as caught:
        writer.log_artifact(big)
    assert caught.value.errno == errno.EDQUOT
    assert "staging quota" in str(caught.value) and "big.bin" in str(caught.value)
    assert not list((tmp_path / "spool").glob("artifacts/*/*/big.bin")), "nothing was kept"
    small = tmp_path / "small.txt"
    small.write_text("fits")
    writer.log_artifact(small)  # the rest of the quota is still there
    assert writer.close(timeout_s=0.5).artifacts_left == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sync_refuses_bad_invocations_in_one_line(tmp_path: Path) -> None:
    missing = sync(str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "no spool folder at" in missing.stderr
    assert "Traceback" not in missing.stderr
    tmp_path.joinpath("spool").mkdir()
    lonely = sync(str(tmp_path / "spool"), "--to-another-receiver")
    assert lonely.returncode == 2 and "needs --receiver" in lonely.stderr
    bad = sync(str(tmp_path / "spool"), "--receiver", "no-port-here")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    assert bad.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sync_says_why_the_receiver_is_unreachable(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "spool")
    writer.start_run()
    writer.log_metric("x", 1.0)
    writer.close(timeout_s=0.2)
    done = sync(str(tmp_path / "spool"), "--timeout", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if "unreachable" in x)
    assert "UNAVAILABLE" in line and writer.config.receiver in line, done.stdout
    assert "events delivered 0, left 3" in done.stdout
