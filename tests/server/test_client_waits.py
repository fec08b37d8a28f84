"""What a client waits for on the receiver, and what it must not wait for (issue 23).

A ``start_run`` waits for its MLflow run id: the receiver answers its GetRun the moment the run
exists in MLflow (server/ingest/waits.py), not at the client's next poll.

A read through the receiver (zero-code ``MlflowClient().search_runs``) waits for the caller's
writes to reach MLflow (read-your-writes) for as long as MLflow takes writes, however slowly
(a fixed bound answered reads on a loaded box without the writes before them), but not for an
artifact upload that missed its retry window and was set aside: that file may take minutes,
the read answers now, and why the file is not in MLflow is in ``trackbridge status``.

A real receiver (gRPC on 127.0.0.1:0, its queue and staging directory) in this process, so that
the upload's retry window can be short; the session's real ``mlflow server``; the reading client
a zero-code MLflow script in a process of its own. The upload fails as it would on a full or
misconfigured artifact volume: the experiment's artifact location lies under a regular file.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, RunStart
from client_sdk._transport import Transport
from server.artifacts import uploader as uploader_module
from server.background import BackgroundReceiver
from server.cli.status import format_status, read_status
from server.config import ReceiverConfig
from server.tracking import service as service_module
from tests.support.mlflow_proxy import MlflowProxy
from tests.support.procs import MlflowServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SCRIPT = """
import json, sys
import mlflow
from mlflow.tracking import MlflowClient

mlflow.set_experiment(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.log_param("alpha", "0.5")
    mlflow.log_text("hello", "notes/a.txt")
    print(json.dumps({"run_id": run.info.run_id}), flush=True)
    sys.stdin.readline()  # the test: the file is set aside now
    # A read MLflow answers (the process's own run would be answered from what it logged
    # when the receiver is slow to answer).
    (got,) = MlflowClient().search_runs([run.info.experiment_id])
    print(json.dumps({"params": got.data.params, "id": got.info.run_id}), flush=True)
"""


SLOW_SCRIPT = """
import json, sys
import mlflow
from mlflow.tracking import MlflowClient

mlflow.set_experiment(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.log_param("alpha", "0.5")
    (got,) = MlflowClient().search_runs([run.info.experiment_id])
    print(json.dumps({"params": got.data.params, "id": run.info.run_id}), flush=True)
"""


HELD_SCRIPT = """
import json, sys
import mlflow
from mlflow.tracking import MlflowClient

mlflow.set_experiment(sys.argv[1])
run = mlflow.start_run()
mlflow.log_param("alpha", "0.5")
print(json.dumps({"run_id": run.info.run_id}), flush=True)
sys.stdin.readline()  # the test: the run is deleted in MLflow, and quarantined
mlflow.log_param("beta", "1")  # held with the run
got = MlflowClient().get_run(run.info.run_id)
print(json.dumps({"params": got.data.params, "stage": got.info.lifecycle_stage}), flush=True)
"""


OWN_READS_SCRIPT = """
import json, sys
import mlflow
from mlflow.tracking import MlflowClient

mlflow.set_experiment(sys.argv[1])
client = MlflowClient()
with mlflow.start_run() as run:
    mlflow.log_param("warmup", "1")
    mlflow.log_metric("loss", 1.0, step=0)
    print(json.dumps({"run_id": run.info.run_id}), flush=True)
    sys.stdin.readline()  # the test: MLflow is slow to take the next write
    mlflow.log_param("alpha", "0.5")
    mlflow.log_metric("loss", 0.5, step=1)
    history = client.get_metric_history(run.info.run_id, "loss")
    data = client.get_run(run.info.run_id).data
    print(json.dumps({
        "history": [[m.step, m.value] for m in history],
        "params": data.params,
        "metrics": data.metrics,
    }), flush=True)
    sys.stdin.readline()
"""


def _background(data_dir: Path, tracking_uri: str) -> BackgroundReceiver:
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        http_listen="off",
        flush_interval_s=0.2,
        shutdown_timeout_s=20.0,
    )
    return BackgroundReceiver(config)


@pytest.fixture
def receiver(
    tmp_path: Path, mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[BackgroundReceiver]:
    monkeypatch.setattr(uploader_module, "_RETRY_WINDOW_S", 0.5)
    background = _background(tmp_path / "data", mlflow_server.uri)
    background.start()
    try:
        yield background
    finally:
        background.stop()


class _Script:
    """A zero-code MLflow script through the receiver on ``port``, in a process of its own,
    that prints one JSON line each time it has something to say; killed on leaving ``with``
    if it has not ended."""

    def __init__(self, script: str, tmp_path: Path, port: int, job: str) -> None:
        path = tmp_path / "client.py"
        path.write_text(script)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACKBRIDGE_"))}
        env.update(
            MLFLOW_TRACKING_URI=f"trackbridge://127.0.0.1:{port}",
            TRACKBRIDGE_JOB=job,
            TRACKBRIDGE_CLIENT_ID="reader",
            TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "spool"),
            PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), env.get("PYTHONPATH", "")]),
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(path), job],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def answer(self) -> dict[str, Any]:
        """The script's next line; fails with its stderr if it ended without one."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            _out, err = self.proc.communicate(timeout=60)
            raise AssertionError(f"the script ended without answering:\n{err}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def say(self, line: str) -> dict[str, Any]:
        """Tells the script to go on; its next line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        return self.answer()

    def finish(self) -> str:
        """Waits for the script's end; what it printed since its last answer. Fails with its
        stderr if it failed."""
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, err
        return out

    def __enter__(self) -> _Script:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)  # waits, and closes its pipes


@pytest.mark.parametrize("moment", ["set_aside", "retrying"])
def test_a_read_does_not_wait_for_an_upload_set_aside_or_retried(
    receiver: BackgroundReceiver,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    job: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
) -> None:
    """``retrying``: the read comes while the failed upload is retried inside its window (a
    long one here); the read does not wait for it (it did, for the whole window, before),
    and the file reaches MLflow once the volume is mended."""
    if moment == "retrying":
        monkeypatch.setattr(uploader_module, "_RETRY_WINDOW_S", 120.0)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the artifact directory should be")
    MlflowClient(mlflow_server.uri).create_experiment(
        job, artifact_location=(blocker / "artifacts").as_uri()
    )
    r = receiver.receiver
    uploader = r.artifacts.uploader if r.artifacts is not None else None
    assert uploader is not None
    with _Script(SCRIPT, tmp_path, r.port, job) as script:
        run_id = script.answer()["run_id"]
        if moment == "retrying":
            wait_until(lambda: uploader.retrying == 1, 60, what="the upload to be retried")
        else:
            wait_until(lambda: uploader.set_aside == 1, 60, what="the artifact to be set aside")
        caplog.set_level(logging.WARNING, logger="server.tracking.service")
        answer = script.say("read")
        script.finish()
    # The read has the run's data, and it did not sit out its read-your-writes bound.
    assert answer == {"params": {"alpha": "0.5"}, "id": run_id}
    assert not [rec for rec in caplog.records if "reads before" in rec.getMessage()]
    if moment == "retrying":
        assert uploader.retrying == 1 and uploader.set_aside == 0  # the read came meanwhile
        blocker.unlink()  # the volume mended: the retry gets through
        wait_until(lambda: uploader.uploaded == 1, 60, what="the retried upload")
        files = MlflowClient(mlflow_server.uri).list_artifacts(run_id, "notes")
        assert [f.path for f in files] == ["notes/a.txt"]
        return
    # Why the file is not in MLflow: in trackbridge status, with its reason.
    status = format_status(read_status(r.config.data_dir))
    assert "notes/a.txt" in status and "past its retry window" in status, status
    assert "NotADirectoryError" in status or "FileExistsError" in status, status


def test_a_read_waits_for_its_writes_while_mlflow_is_slow_to_take_them(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    job: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow holds the call with the script's param (slow, not failing) while the script
    reads its run: the read waits past the bound that applies once MLflow fails (none here)
    and answers with the param. Before, a read gave up after a fixed 10 s and answered with
    what MLflow had: on a loaded CI box, ``mlflow.load_table`` found no run."""
    monkeypatch.setattr(service_module, "FRESH_WAIT_S", 0.0)  # only failing MLflow ends a wait
    proxy = MlflowProxy(mlflow_server.uri)
    hold = proxy.hold_call(lambda body: b'"alpha"' in body)
    background = _background(tmp_path / "data", proxy.uri)
    background.start()
    try:
        r = background.receiver
        caplog.set_level(logging.WARNING, logger="server.tracking.service")
        with _Script(SLOW_SCRIPT, tmp_path, r.port, job) as script:
            wait_until(hold.arrived.is_set, 120, what="the param's call to reach the proxy")
            proc = script.proc
            wait_until(  # the gauge /metrics shows as trackbridge_reads_waiting
                lambda: r.counters().reads_waiting == 1 or proc.poll() is not None,
                120,
                what="the read to wait for the param (or the script to end)",
            )
            assert proc.poll() is None, "the read was answered before its write reached MLflow"
            hold.release()
            out = script.finish()
    finally:
        hold.release()
        background.stop()
        proxy.close()
    assert json.loads(out)["params"] == {"alpha": "0.5"}
    assert not [rec for rec in caplog.records if "reads before" in rec.getMessage()]


def test_a_read_of_its_own_run_does_not_wait_for_its_new_points_and_params(
    mlflow_server: MlflowServer, tmp_path: Path, job: str
) -> None:
    """A script checks what it just logged (``get_metric_history``, ``get_run``) while MLflow
    holds the write of it: the reads are answered at once, with what MLflow has and the
    script's points and params on their way, as MLflow answers once it has them (before, each
    read waited for that write: the script was slower than with MLflow itself)."""
    proxy = MlflowProxy(mlflow_server.uri)
    background = _background(tmp_path / "data", proxy.uri)
    background.start()
    hold = proxy.hold_call(lambda body: b'"alpha"' in body)
    try:
        r = background.receiver
        with _Script(OWN_READS_SCRIPT, tmp_path, r.port, job) as script:
            run_id = script.answer()["run_id"]
            direct = MlflowClient(mlflow_server.uri)
            wait_until(lambda: direct.get_run(run_id).data.params, 60, what="the first param")
            got: list[dict[str, Any]] = []
            reader = threading.Thread(target=lambda: got.append(script.say("go")), daemon=True)
            reader.start()
            wait_until(
                lambda: got or r.counters().reads_waiting or script.proc.poll() is not None,
                120,
                what="the script's reads to be answered (or to wait)",
            )
            assert got, "a read of the script's own run waited for MLflow to take its writes"
            assert "alpha" not in direct.get_run(run_id).data.params  # still held from MLflow
            hold.release()

            def mlflow_has_all() -> bool:  # the param and the point may go in separate calls
                data = direct.get_run(run_id).data
                return "alpha" in data.params and data.metrics.get("loss") == 0.5

            wait_until(mlflow_has_all, 60, what="MLflow to hold the new param and point")
            mlflow_now = direct.get_run(run_id).data
            history_now = [[m.step, m.value] for m in direct.get_metric_history(run_id, "loss")]
            assert script.proc.stdin is not None
            script.proc.stdin.write("done\n")
            script.proc.stdin.flush()
            script.finish()
    finally:
        hold.release()
        background.stop()
        proxy.close()
    (answer,) = got
    assert answer["history"] == [[0, 1.0], [1, 0.5]] == history_now
    assert answer["params"] == {"warmup": "1", "alpha": "0.5"} == mlflow_now.params
    assert answer["metrics"] == {"loss": 0.5} == mlflow_now.metrics


def test_a_read_does_not_wait_for_what_a_quarantined_run_holds(
    receiver: BackgroundReceiver,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    job: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller's run was deleted in MLflow (its later events are held until an operator
    restores and replays it): a read answers with what MLflow has, at once, instead of waiting
    for events that cannot reach MLflow until then."""
    r = receiver.receiver
    with _Script(HELD_SCRIPT, tmp_path, r.port, job) as script:
        run_id = script.answer()["run_id"]
        direct = MlflowClient(mlflow_server.uri)
        wait_until(lambda: direct.get_run(run_id).data.params, 60, what="the first param")
        direct.delete_run(run_id)  # in the MLflow UI, while its client runs
        caplog.set_level(logging.WARNING, logger="server.tracking.service")
        answer = script.say("go")
        script.finish()
    assert answer == {"params": {"alpha": "0.5"}, "stage": "deleted"}
    status = read_status(r.config.data_dir)
    assert [q["client_id"] for q in status["quarantined_runs"]] == ["reader"], status
    assert not [rec for rec in caplog.records if "reads before" in rec.getMessage()]


def test_a_start_runs_wait_for_its_id_is_answered_once_the_run_exists(
    receiver: BackgroundReceiver, mlflow_server: MlflowServer, job: str
) -> None:
    r = receiver.receiver
    transport = Transport(f"127.0.0.1:{r.port}", timeout_s=30.0)
    try:
        start = EventBatch("waiter", job, "run-1", 1, (RunStart(run_name="first"),))
        assert transport.publish(batch_to_proto(start).SerializeToString()).acked_seq == 1
        # One call, no polling: the receiver holds it until the flusher has made the run.
        ack = transport.get_run("waiter", "run-1", 60.0, await_id=True)
    finally:
        transport.close()
    assert ack.mlflow_run_id
    run = MlflowClient(mlflow_server.uri).get_run(ack.mlflow_run_id)
    assert (run.info.run_name, run.info.experiment_id) == ("first", ack.mlflow_experiment_id)
