"""Reserved ``trackbridge.*`` tags: receivers alone set them (they say whose a run is).

Every client entry point refuses them at the call, with MLflow's error code and words; a
receiver refuses them too when they arrive raw over gRPC, so that a client who forges the
owner tags of a run of its own cannot draw another client's data into it when that client
fails over to a receiver that never saw it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import mlflow.exceptions
import pytest

import client_sdk.mlflow as tb_mlflow
from bridge.errors import MlflowException
from bridge.pb.v1 import events_pb2
from client_sdk.config import WriterConfig
from client_sdk.integrations.nvflare import MLflowWriter
from client_sdk.mlflow._state import STATE
from client_sdk.writer import Writer
from tests.support.bystander import start_bystander
from tests.support.compat import base_env, receiver_idle
from tests.support.faults import TcpProxy
from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    TAG_RUN_KEY,
    all_points,
    child_runs,
    job_runs,
    user_tags,
)
from tests.support.procs import wait_until
from tests.support.security import (
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    issue_token,
    metric_event,
    no_secret_leaks,
    write_secret,
)

__all__ = ["no_secret_leaks"]

RESERVED = ("trackbridge.client_id", "trackbridge.run_key", "trackbridge.rank")


def _message(key: str, path: str = "key") -> str:
    return (
        f"Invalid value \"{key}\" for parameter '{path}' supplied: tag keys starting with"
        " 'trackbridge.' are reserved: the trackbridge receiver sets them (they name the run's"
        " owner); use another key"
    )


# A run start's tags go to MLflow after the ones MLflow adds itself (mlflow.user,
# mlflow.source.*, ...: how many depends on the environment), so its index is not fixed.
ANY_TAG = re.compile(r"tags\[\d+\]\.key")


def _refused(call_site: Any, key: str, path: str | re.Pattern[str] = "key", *, rest: bool) -> None:
    """``call_site()`` raises MLflow's INVALID_PARAMETER_VALUE for ``key``; ``rest``: as the
    MLflow REST client shows a server's refusal (``client_sdk.mlflow``, plugin, NVFlare)."""
    with pytest.raises((MlflowException, mlflow.exceptions.MlflowException)) as excinfo:
        call_site()
    exc = excinfo.value
    assert type(exc).__name__ in ("MlflowException", "RestException")
    assert exc.error_code == "INVALID_PARAMETER_VALUE"
    if isinstance(path, re.Pattern):
        named = re.search(r"for parameter '([^']*)'", exc.message)
        assert named is not None and path.fullmatch(named.group(1)), exc.message
        path = named.group(1)
    expected = _message(key, path)
    assert exc.message == (f"INVALID_PARAMETER_VALUE: {expected}" if rest else expected)


PLUGIN = """
import mlflow

with mlflow.start_run(run_name="plugin-run"):
    for label, call in {
        "set_tag": lambda: mlflow.set_tag("trackbridge.client_id", "someone-else"),
        "set_tags": lambda: mlflow.set_tags({"ok": "1", "trackbridge.run_key": "k"}),
    }.items():
        try:
            call()
        except mlflow.exceptions.MlflowException as exc:
            print(f"{label}|{exc.error_code}|{exc.message}")
    mlflow.set_tag("plain", "yes")
try:
    mlflow.start_run(run_name="never", tags={"trackbridge.job": "j"})
except mlflow.exceptions.MlflowException as exc:
    print(f"start_run|{exc.error_code}|{exc.message}")
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_every_client_entry_point_refuses_reserved_tags_at_the_call(
    receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    # The Writer.
    writer = Writer(receiver=receiver.address, client_id=f"{job}-writer", job=job)
    try:
        for key in RESERVED:
            _refused(lambda k=key: writer.start_run("never", tags={k: "x"}), key, rest=False)
        assert writer.active_run is None, "a refused start starts nothing"
        writer.start_run("writer-run", tags={"team": "a"})
        for key in RESERVED:
            _refused(lambda k=key: writer.set_tag(k, "x"), key, rest=False)
            _refused(lambda k=key: writer.set_tags({"fine": "1", k: "x"}), key, rest=False)
        writer.set_tag("plain", "yes")
        writer.log_metric("m", 1.0, step=0, timestamp=TS)
        writer.end_run()
    finally:
        assert writer.close(timeout_s=30) == 0

    # client_sdk.mlflow (worded as MLflow's REST client words a server's refusal).
    tb_mlflow.configure(receiver=receiver.address, client_id=f"{job}-fluent", job=job)
    try:
        _refused(
            lambda: tb_mlflow.start_run(run_name="never", tags={"trackbridge.client_id": "x"}),
            "trackbridge.client_id",
            ANY_TAG,
            rest=True,
        )
        with tb_mlflow.start_run(run_name="fluent-run"):
            _refused(
                lambda: tb_mlflow.set_tag("trackbridge.run_key", "k"),
                "trackbridge.run_key",
                rest=True,
            )
            _refused(
                lambda: tb_mlflow.set_tags({"ok": "1", "trackbridge.role": "parent"}),
                "trackbridge.role",
                "tags[1].key",
                rest=True,
            )
            tb_mlflow.set_tag("plain", "yes")
        assert tb_mlflow.flush(30)
    finally:
        while tb_mlflow.active_run() is not None:
            tb_mlflow.end_run()
        STATE.reset_session()
        STATE.receiver = None

    # NVFlare's MLflowWriter.
    _refused(
        lambda: MLflowWriter(receiver.address, "site-x", job, tags={"trackbridge.client_id": "y"}),
        "trackbridge.client_id",
        "tags[0].key",
        rest=True,
    )
    site_writer = MLflowWriter(
        receiver.address, f"{job}-site", job, run_name="nvflare-run", experiment_name=job
    )
    with site_writer as site:
        site.log_metric("m", 1.0, 0)
        _refused(
            lambda: site.set_tag("trackbridge.client_id", "y"), "trackbridge.client_id", rest=True
        )
        _refused(
            lambda: site.set_tags({"trackbridge.run_key": "k"}),
            "trackbridge.run_key",
            "tags[0].key",
            rest=True,
        )
        site.set_tag("plain", "yes")

    # The zero-code plugin: the real mlflow package, MLFLOW_TRACKING_URI=trackbridge://...
    env = base_env(
        MLFLOW_TRACKING_URI=f"trackbridge://{receiver.address}",
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_CLIENT_ID=f"{job}-plugin",
        TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "plugin-spool"),
    )
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = dict(line.split("|", 1) for line in done.stdout.splitlines() if "|" in line)
    # (real mlflow adds its own tags to a start first: the entry's index is theirs)
    start_line = lines.pop("start_run")
    index = re.search(r"tags\[(\d+)\]\.key", start_line)
    assert index is not None, start_line
    assert start_line == "INVALID_PARAMETER_VALUE|INVALID_PARAMETER_VALUE: " + _message(
        "trackbridge.job", f"tags[{index.group(1)}].key"
    )
    assert lines == {
        "set_tag": f"INVALID_PARAMETER_VALUE|INVALID_PARAMETER_VALUE: {_message(RESERVED[0])}",
        "set_tags": "INVALID_PARAMETER_VALUE|INVALID_PARAMETER_VALUE: "
        + _message("trackbridge.run_key", "tags[1].key"),
    }, done.stdout

    # In MLflow: the four runs, each with only the receiver's tags naming it and its client's.
    wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the receiver to drain")
    # (NVFlare's runs are flat, not under the job's parent, and named as NVFlare names them)
    nvflare_run = f"{job}-site-{job[:6]}-{job}-nvflare-run"
    runs = {r.info.run_name: r for r in child_runs(job_runs(mlflow_client, job))}
    runs["nvflare-run"] = runs.pop(nvflare_run)
    assert sorted(runs) == ["fluent-run", "nvflare-run", "plugin-run", "writer-run"]
    owners = {
        "writer-run": f"{job}-writer",
        "fluent-run": f"{job}-fluent",
        "nvflare-run": f"{job}-site",
        "plugin-run": f"{job}-plugin",
    }
    for name, run in runs.items():
        assert run.data.tags[TAG_CLIENT_ID] == owners[name], name
        expected = {"plain": "yes", "team": "a"} if name == "writer-run" else {"plain": "yes"}
        if name == "nvflare-run":  # NVFlare's MLflowReceiver tags its runs so
            expected.update({"job_id": job, "run_name": nvflare_run})
        assert user_tags(run) == expected, (name, user_tags(run))
        reserved = {k: v for k, v in run.data.tags.items() if k.startswith("trackbridge.")}
        assert set(reserved) <= {
            "trackbridge.client_id",
            "trackbridge.job",
            "trackbridge.run_key",
            "trackbridge.role",
            "trackbridge.heard_ms",
        }, (name, reserved)
        assert reserved["trackbridge.role"] == "client"
        assert reserved[TAG_RUN_KEY] not in ("k", "x")


def _start(name: str, start_time_ms: int = 0, **tags: str) -> events_pb2.Event:
    event = events_pb2.Event()
    event.run_start.run_name = name
    event.run_start.start_time_ms = start_time_ms
    for key, value in tags.items():
        event.run_start.tags[key] = value
    return event


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("no_secret_leaks")
def test_a_receiver_refuses_forged_owner_tags_sent_raw(
    start_receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    issuer = tmp_path / "issuer"
    bystander_id = f"bystander-{uuid.uuid4().hex[:8]}"
    tokens = {c: issue_token(issuer, c) for c in ("site-a", "site-b", bystander_id)}
    dirs = []
    for name in ("receiver-1", "receiver-2"):
        (tmp_path / name).mkdir(mode=0o700)
        for path in issuer.glob("tokens.db*"):
            shutil.copy2(path, tmp_path / name / path.name)
        dirs.append(tmp_path / name)
    r1, r2 = (start_receiver(data_dir=d) for d in dirs)
    bystander = start_bystander(
        r2.address,
        tmp_path,
        client_id=bystander_id,
        token_file=write_secret(tmp_path / "bystander.secret", tokens[bystander_id]),
        points=1000,
        rate=100.0,
    )
    proxy = TcpProxy(r1.port)
    writer = Writer(
        config=WriterConfig(
            receiver=proxy.address,
            client_id="site-b",
            job=job,
            spool_dir=str(tmp_path / "spool-b"),
            token=tokens["site-b"],
        )
    )
    try:
        writer.start_run("b-run")
        for i in range(50):
            writer.log_metric("x", float(i), step=i, timestamp=TS + i)
        assert writer.flush(timeout_s=60)

        def b_key() -> str | None:
            for run in child_runs(job_runs(mlflow_client, job)):
                if run.data.tags.get(TAG_CLIENT_ID) == "site-b":
                    return str(run.data.tags[TAG_RUN_KEY])
            return None

        key = wait_until(b_key, 60, what="B's run in MLflow")
        # A makes a run of its own look like B's, older than B's (the oldest match wins).
        owner_tags = {TAG_CLIENT_ID: "site-b", TAG_RUN_KEY: key}
        tag = events_pb2.Event()
        tag.tag.key, tag.tag.value = TAG_CLIENT_ID, "site-b"
        other = events_pb2.Event()
        other.tag.key, other.tag.value = "trackbridge.provisional", "1 x"
        delete = events_pb2.Event()
        delete.delete_tag.key = TAG_RUN_KEY
        forgeries = {
            "owner tags on the start": [_start("forged", 1, **owner_tags)],
            "owner tag set later": [_start("forged", 1), tag, metric_event("x", 666.0, 1)],
            "another reserved tag": [_start("forged", 1), other],
            "an owner tag deleted": [_start("forged", 1), delete],
        }
        site_a = bearer(tokens["site-a"])
        with grpc.insecure_channel(r1.address) as channel:
            for case, events in forgeries.items():
                forged = batch("site-a", job, run_key=uuid.uuid4().hex, events=events)
                outcome = call(channel, PUBLISH, forged, site_a)
                assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (case, outcome)
                assert "reserved" in outcome.details and "trackbridge." in outcome.details, (
                    case,
                    outcome.details,
                )
            # The SDK's own rank tag, and ordinary tags, pass.
            fine = [_start("a-run", 0, **{"trackbridge.rank": "0", "site": "a"})]
            outcome = call(channel, PUBLISH, batch("site-a", job, events=fine), site_a)
            assert outcome.code == grpc.StatusCode.OK, outcome

        # B fails over to a receiver that never saw it: its data still goes to B's run.
        assert r1.stop() == 0, r1.log_tail()
        proxy.set_upstream(r2.port)
        for i in range(50, 100):
            writer.log_metric("x", float(i), step=i, timestamp=TS + i)
        writer.end_run("FINISHED")
        assert writer.close(timeout_s=60) == 0
    except BaseException:
        bystander.stop()
        raise
    finally:
        writer.close(timeout_s=5)
        proxy.close()

    def b_finished() -> Any:
        for run in child_runs(job_runs(mlflow_client, job)):
            if run.data.tags.get(TAG_CLIENT_ID) == "site-b" and run.info.status == "FINISHED":
                return run
        return None

    run = wait_until(b_finished, 90, what="B's run, finished")
    wait_until(lambda: receiver_idle(r2.data_dir), 60, what="receiver 2 to drain")
    runs = child_runs(job_runs(mlflow_client, job))
    assert sorted((r.info.run_name, r.data.tags[TAG_CLIENT_ID]) for r in runs) == [
        ("a-run", "site-a"),
        ("b-run", "site-b"),
    ]
    assert all_points(mlflow_client, run) == {"x": [("x", float(i), i, TS + i) for i in range(100)]}
    (a_run,) = [r for r in runs if r.info.run_name == "a-run"]
    assert a_run.data.tags["trackbridge.rank"] == "0" and a_run.data.tags["site"] == "a"
    bystander.assert_delivered(mlflow_client)
