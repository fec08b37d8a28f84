"""Helpers for the MLflow-compatibility tests: running scripts three ways, reading back what
MLflow holds as a comparable snapshot, and showing the difference readably.

A snapshot keeps what a user sees in MLflow: experiments (by name), runs (by name, or by
position for generated names, and by nesting), statuses, params, user tags (plus the few
``mlflow.*`` tags the logging calls themselves set), every metric point and every artifact's
path and bytes. Bridge-added runs and tags (``trackbridge.*``) are left out.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFORMANCE_DIR = Path(__file__).resolve().parents[1] / "compat" / "conformance"
SCRIPT_TIMEOUT_S = 300.0

GENERATED_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{1,3}$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
COMPARED_MLFLOW_TAGS = frozenset(
    {"mlflow.note.content", "mlflow.loggedArtifacts", "mlflow.loggedImages"}
)
BRIDGE_ROLE = "trackbridge.role"


def swap_import(source: str) -> str:
    """The script with ``import mlflow`` changed to the bridge's module (or, in a script that
    has no ``import mlflow``, its ``from mlflow import ...``): the only edit a user makes. Other
    imports (``import mlflow.sklearn``) stay as they are."""
    swapped, count = re.subn(
        r"^import mlflow([ \t]*(#.*)?)$",
        r"import client_sdk.mlflow as mlflow\1",
        source,
        flags=re.MULTILINE,
    )
    if count == 0:
        swapped, count = re.subn(
            r"^from mlflow import ", "from client_sdk.mlflow import ", source, count=1, flags=re.M
        )
    assert count == 1, "a conformance script imports mlflow once, as `import mlflow`"
    return swapped


@dataclass
class ScriptRun:
    """How one script run ended."""

    script: str
    mode: str
    returncode: int
    output: str
    seconds: float = 0.0
    files: tuple[str, ...] = ()
    """What the script left in its working directory (relative paths)."""


def run_script(script: Path, mode: str, env: dict[str, str], cwd: Path) -> ScriptRun:
    """Runs a script (bounded) in its own process and keeps its output."""
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(script)],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return ScriptRun(script.stem, mode, -9, f"timed out after {SCRIPT_TIMEOUT_S} s\n{out}")
    seconds = time.monotonic() - started
    left = tuple(
        sorted(
            p.relative_to(cwd).as_posix()
            for p in cwd.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p != script
        )
    )
    return ScriptRun(script.stem, mode, done.returncode, done.stdout + done.stderr, seconds, left)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a script run: this one, minus MLflow and trackbridge settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "TRACKBRIDGE_")) and k != "PYTEST_CURRENT_TEST"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    env.update(extra)
    return env


def receiver_idle(data_dir: Path) -> bool:
    """True when a receiver has written everything it holds to MLflow (events and files)."""
    for name, table in (("queue.db", "batches"), ("artifacts.db", "uploads")):
        path = data_dir / name
        if not path.exists():
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            (count,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        finally:
            conn.close()
        if count:
            return False
    return True


# -- snapshots ---------------------------------------------------------------------------------


def _value(value: float) -> Any:
    return "nan" if math.isnan(value) else value


def _artifacts(client: Any, run_id: str) -> dict[str, str]:
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, dst_path=tmp, tracking_uri=client.tracking_uri
            )
        )
        found = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = _UUID.sub("<uuid>", path.relative_to(root).as_posix())
            data = path.read_bytes()
            found[relative] = f"{len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()[:16]}"
        return found


def _all_runs(client: Any, experiment_ids: list[str]) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def snapshot(client: Any, prefix: str, *, timestamps: bool) -> dict[str, Any]:
    """What MLflow holds for the experiments named ``prefix`` or ``prefix-...``."""
    experiments = {
        e.experiment_id: e.name
        for e in client.search_experiments(max_results=1000)
        if e.name == prefix or e.name.startswith(f"{prefix}-")
    }
    runs = _all_runs(client, list(experiments)) if experiments else []
    by_id = {r.info.run_id: r for r in runs}
    bridge_parents = {i for i, r in by_id.items() if r.data.tags.get(BRIDGE_ROLE) == "parent"}
    runs = [r for r in runs if r.info.run_id not in bridge_parents]
    runs.sort(key=lambda r: (r.info.start_time, json.dumps(r.data.params, sort_keys=True)))
    names: dict[str, str] = {}
    seen: defaultdict[tuple[str, str], int] = defaultdict(int)
    state: dict[str, Any] = {}
    for run in runs:
        parent_id = run.data.tags.get("mlflow.parentRunId")
        parent = names.get(parent_id, "") if parent_id not in bridge_parents else ""
        name = run.info.run_name or ""
        label = "<generated name>" if GENERATED_NAME.match(name) else name
        where = f"{experiments[run.info.experiment_id]}:{parent}/{label}"
        ordinal = seen[(where, label)]
        seen[(where, label)] += 1
        names[run.info.run_id] = f"{parent}/{label}#{ordinal}"
        state[f"{where}#{ordinal}"] = _run_state(client, run, timestamps=timestamps)
    return state


def _run_state(client: Any, run: Any, *, timestamps: bool) -> dict[str, Any]:
    metrics = {}
    for key in sorted(run.data.metrics):
        history = client.get_metric_history(run.info.run_id, key)
        points = [
            [_value(m.value), m.step] + ([m.timestamp] if timestamps else []) for m in history
        ]
        if not timestamps:
            # MLflow keeps one point per (value, step, timestamp): whether the same value logged
            # twice at a step is one point or two depends on the millisecond clock (the bridge's
            # calls take microseconds, MLflow's own milliseconds), so compare distinct points.
            points = [json.loads(p) for p in dict.fromkeys(json.dumps(p) for p in points)]
        metrics[key] = sorted(points, key=json.dumps)
    tags = {
        k: v
        for k, v in run.data.tags.items()
        if not k.startswith(("mlflow.", "trackbridge.")) or k in COMPARED_MLFLOW_TAGS
    }
    full = client.get_run(run.info.run_id)
    inputs = full.inputs.dataset_inputs if full.inputs else []
    outputs = full.outputs.model_outputs if full.outputs else []
    return {
        "status": run.info.status,
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(tags.items())),
        "metrics": metrics,
        "artifacts": _artifacts(client, run.info.run_id),
        "inputs": sorted(
            [
                d.dataset.name,
                d.dataset.digest,
                d.dataset.source_type,
                sorted((t.key, t.value) for t in d.tags),
            ]
            for d in inputs
        ),
        "models": sorted(
            (_model_state(client, o.model_id, o.step) for o in outputs), key=json.dumps
        ),
    }


def _model_state(client: Any, model_id: str, step: int) -> dict[str, Any]:
    """A logged model as a user sees it: name, status, params, user tags, registrations,
    metrics, and its files (paths only: MLmodel records ids and times)."""
    model = client.get_logged_model(model_id)
    files: list[str] = []
    folders = [""]
    while folders:  # listed with this client (a models:/ download would use the default URI)
        for info in client.list_logged_model_artifacts(model_id, folders.pop() or None):
            (folders if info.is_dir else files).append(info.path)
    # MLflow's models:/name/version download writes registered_model_meta into the downloaded
    # directory, which is the artifact store itself when the client reaches that store as a
    # local path (these tests' MLflow servers), not through the bridge: left out.
    files = sorted(f for f in files if f != "registered_model_meta")
    registrations = json.loads(model.tags.get("mlflow.modelVersions", "[]"))
    return {
        "name": model.name,
        "step": step,
        "status": str(model.status),
        "params": dict(sorted(model.params.items())),
        "tags": {
            k: v
            for k, v in sorted(model.tags.items())
            if not k.startswith(("mlflow.", "trackbridge."))
        },
        "registered": sorted(f"{r['name']}/{r['version']}" for r in registrations),
        "metrics": sorted(
            ([m.key, _value(m.value), m.step] for m in model.metrics or []), key=json.dumps
        ),
        "files": files,
    }


def diff(expected: dict[str, Any], actual: dict[str, Any], label: str) -> str:
    """A unified diff of two snapshots ("" when equal)."""
    if expected == actual:
        return ""
    a = json.dumps(expected, indent=1, sort_keys=True).splitlines()
    b = json.dumps(actual, indent=1, sort_keys=True).splitlines()
    lines = difflib.unified_diff(a, b, "real mlflow", label, lineterm="", n=4)
    text = "\n".join(lines)
    return text if len(text) < 20_000 else text[:20_000] + "\n... (diff cut)"
