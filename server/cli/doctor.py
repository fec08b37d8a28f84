"""``trackbridge doctor``: can this receiver reach MLflow, log in, and write where it must?

Checks, in order, each with a precise reason when it fails and never a secret: the credential
settings (``*_FILE`` variants read, certificate paths readable), that MLflow answers, that it
accepts the credentials, and for each experiment named that it exists (it is created when
missing, as the receiver would) and that the receiver may write to it (it sets the experiment
tag ``trackbridge.doctor``, which needs the same EDIT permission as logging).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import envvars
from bridge.secret import redact_text
from server.flush.credentials import configured_secrets, describe_mlflow_auth, export_secret_files
from server.flush.mlflow_state import diagnose
from server.queue import integrity
from server.queue.schema import QUEUE_FILE

PROBE_TAG = "trackbridge.doctor"
_TIMEOUT_S = "10"


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check."""

    ok: bool
    check: str
    detail: str


class _Failed(Exception):
    pass


class Doctor:
    """Runs the checks against one tracking URI, with the credentials in ``environ``."""

    def __init__(self, tracking_uri: str, environ: MutableMapping[str, str] = os.environ) -> None:
        self._uri = tracking_uri
        self._env = environ
        self.findings: list[Finding] = []

    def run(self, experiments: Sequence[str]) -> list[Finding]:
        """Every check, stopping at the first that makes the later ones meaningless."""
        try:
            self._credentials()
            self._reach()
            client = self._login()
            for name in experiments:
                self._experiment(client, name)
        except _Failed:
            pass
        return self.findings

    def _ok(self, check: str, detail: str) -> None:
        self.findings.append(Finding(True, check, detail))

    def _fail(self, check: str, detail: str, *, fatal: bool = True) -> None:
        self.findings.append(Finding(False, check, detail))
        if fatal:
            raise _Failed

    def _explain(self, check: str, exc: Exception, *, fatal: bool = True) -> None:
        text = redact_text(f"{type(exc).__name__}: {exc}", configured_secrets(self._env))
        self._fail(check, f"{diagnose(text)}\n          ({text[:600]})", fatal=fatal)

    def _credentials(self) -> None:
        try:
            loaded = export_secret_files(self._env)
        except ValueError as exc:
            self._fail("credentials", str(exc))
        source = f" ({', '.join(loaded)} read from files)" if loaded else ""
        if "@" in self._uri.partition("://")[2].partition("/")[0]:
            source += (
                "; the tracking URI holds a user too (anyone who can list processes sees it:"
                f" prefer {envvars.MLFLOW_TRACKING_USERNAME} and"
                f" {envvars.MLFLOW_TRACKING_PASSWORD_FILE})"
            )
        self._ok("credentials", f"{describe_mlflow_auth(self._env)}{source}")
        for name in (
            envvars.MLFLOW_TRACKING_SERVER_CERT_PATH,
            envvars.MLFLOW_TRACKING_CLIENT_CERT_PATH,
        ):
            path = self._env.get(name)
            if path and not os.access(path, os.R_OK):
                self._fail("credentials", f"{name}: cannot read {path}")
            if path:
                self._ok("credentials", f"{name}: {path}")

    def _reach(self) -> None:
        if not self._uri.startswith(("http://", "https://")):
            self._ok("reach", f"local store {redact_text(self._uri)}")
            return
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:
            creds = get_default_host_creds(self._uri)  # type: ignore[no-untyped-call]
            response = http_request(  # type: ignore[no-untyped-call]
                creds, "/health", "GET", max_retries=0, timeout=10
            )
        except Exception as exc:
            self._explain("reach", exc)
            return
        if response.status_code != 200:
            self._fail("reach", f"{self._uri}/health answered HTTP {response.status_code}")
        self._ok("reach", f"MLflow answers at {redact_text(self._uri)}")

    def _login(self) -> Any:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._uri)
        try:
            client.search_experiments(max_results=1)
        except Exception as exc:
            self._explain("login", exc)
        self._ok("login", f"MLflow accepts the receiver ({describe_mlflow_auth(self._env)})")
        return client

    def _experiment(self, client: Any, name: str) -> None:
        check = f"experiment {name!r}"
        ok, experiment = self._attempt(check, lambda: client.get_experiment_by_name(name))
        if not ok:
            return
        if experiment is None:
            ok, exp_id = self._attempt(check, lambda: client.create_experiment(name))
            if not ok:
                return
            self._ok(check, f"created (id {exp_id})")
        elif experiment.lifecycle_stage != "active":
            detail = "is deleted: restore it in MLflow or use another job name"
            self._fail(check, detail, fatal=False)
            return
        else:
            exp_id = experiment.experiment_id
            self._ok(check, f"found (id {exp_id})")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ok, _ = self._attempt(check, lambda: client.set_experiment_tag(exp_id, PROBE_TAG, stamp))
        if ok:
            self._ok(check, f"writable (set tag {PROBE_TAG}={stamp})")

    def _attempt(self, check: str, call: Callable[[], Any]) -> tuple[bool, Any]:
        try:
            return True, call()
        except Exception as exc:
            self._explain(check, exc, fatal=False)
            return False, None


def format_findings(tracking_uri: str, findings: Sequence[Finding]) -> str:
    """A report for people: one line per check, reasons indented under failures."""
    lines = [f"trackbridge doctor: MLflow at {redact_text(tracking_uri)}"]
    for f in findings:
        lines.append(f"  {'ok  ' if f.ok else 'FAIL'}  {f.check}: {f.detail}")
    failed = sum(not f.ok for f in findings)
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def queued_jobs(data_dir: Path) -> list[str]:
    """The jobs a receiver's queue knows (the experiments it writes to by default)."""
    path = data_dir / "queue.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT DISTINCT job FROM runs ORDER BY job")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def queue_findings(data_dir: Path) -> list[Finding]:
    """Whether the receiver's queue is whole; the way to salvage it when it is not."""
    wrong = integrity.problem(data_dir)
    path = data_dir / QUEUE_FILE
    if wrong is None:
        return [Finding(True, "queue", f"{path} is whole" if path.exists() else "none yet")]
    steps = "".join(
        f"\n          {n}. {step}" for n, step in enumerate(integrity.recovery_steps(data_dir), 1)
    )
    return [Finding(False, "queue", f"{path} is damaged ({wrong}); to recover:{steps}")]


def run_doctor(tracking_uri: str, experiments: Sequence[str], data_dir: Path | None = None) -> int:
    """Runs the checks and prints the report; exit code 0 when all pass, 1 otherwise."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", _TIMEOUT_S)
    findings = queue_findings(data_dir) if data_dir is not None else []
    findings += Doctor(tracking_uri).run(experiments)
    print(format_findings(tracking_uri, findings), flush=True)
    if not experiments:
        print("(write permission not checked: no jobs queued yet; name them with --experiment)")
    return 0 if findings and all(f.ok for f in findings) else 1
