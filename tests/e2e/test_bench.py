"""``trackbridge bench --quick`` (and ``--sweep --quick``) run, report every section, and leave
no process behind. Every section runs in one invocation (``--only`` naming them all: the plain
run's and the fleet sections a plain run leaves out), so the bench's own start and its MLflow
server are paid once.

Benchmarks are not tests: nothing here asserts a speed, only that the command works, that its
JSON parses and holds a number for every figure, and that it cleans up after itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BENCH_TIMEOUT_S = 240.0
EVERY_SECTION_TIMEOUT_S = 840.0
_MARK_VAR = "TRACKBRIDGE_BENCH_TEST_MARK"
# Smaller still than --quick: these tests check that every section runs and reports, not
# the figures, so each section gets just enough work to measure something.
SMALL = (
    "--writer-calls", "5000", "--mlflow-sync-calls", "20", "--mlflow-async-calls", "50",
    "--clients", "2", "--ingest-seconds", "1", "--e2e-clients", "2", "--events", "2000",
    "--fresh-clients", "4", "--fresh-seconds", "2", "--connections", "20",
    "--recovery-runs", "2", "--recovery-points", "500",
    "--job-start-clients", "10", "--linger-clients", "10", "--parallel-clients", "2",
    "--script-runs", "5", "--script-reads", "3",
    "--mlflow-workers", "1",  # MLflow's default 4 would start 4 server processes on CI's 2 cores
)  # fmt: skip

# Section -> figures (dotted paths) that must be finite numbers.
FIGURES = {
    "latency": (
        "writer.p50_us",
        "writer.p99_us",
        "mlflow_sync.p50_us",
        "mlflow_sync.p99_us",
        "mlflow_async.p50_us",
        "mlflow_async.p99_us",
        "mlflow_async_buffered.p50_us",
    ),
    "ingest": ("clients", "events", "events_per_s", "receiver_rss_mb"),
    "end_to_end": (
        "events",
        "bridge_events_per_s",
        "mlflow_log_batch_events_per_s",
        "ratio",
        "points_in_mlflow",
    ),
    "freshness": ("flush_interval_s", "points", "p50_ms", "p99_ms"),
    "scale": ("connections", "connected", "receiver_rss_mb", "receiver_rss_idle_mb"),
    "recovery": ("points", "events_left_at_kill", "caught_up_s", "points_sent_again"),
    "aggregate": ("clients", "rounds", "p50_ms", "max_ms"),
}


def _bench_command() -> list[str]:
    script = Path(sys.executable).parent / "trackbridge"
    if script.exists():
        return [str(script), "bench"]
    return [sys.executable, "-m", "server.cli.main", "bench"]


def _figure(results: dict[str, Any], section: str, path: str) -> Any:
    value: Any = results[section]
    for part in path.split("."):
        value = value[part]
    return value


def _processes_with_env(entry: str) -> list[str]:
    """Processes whose environment holds ``entry`` (children inherit the bench's)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if entry.encode() in environ.read_bytes().split(b"\0"):
                cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(f"{environ.parent.name}: {cmdline[:200].decode(errors='replace')}")
    return found


def _run_bench(
    tmp_path: Path, mark: str, *args: str, timeout_s: float = BENCH_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        [*_bench_command(), *args],
        cwd=tmp_path,
        env={**os.environ, _MARK_VAR: mark},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench ends its children on SIGTERM
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
        pytest.fail(f"bench --quick ran over {timeout_s} s\n{out}\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


SWEEP_FIGURES = {
    "latency": ("p50_us", "p99_us", "rate_per_s", "bare_call_p50_us"),
    "ingest": ("events_per_s", "receiver_cpu_cores"),
    "freshness": ("p50_ms", "p99_ms", "live_p99_ms"),
    "scale": ("connected", "receiver_rss_mb"),
}


@pytest.mark.slow
@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_sweep_quick_measures_every_point(tmp_path: Path) -> None:
    from bench.sweep import points

    json_path = tmp_path / "sweep.json"
    mark = uuid.uuid4().hex
    done = _run_bench(
        tmp_path, mark, "--sweep", "--quick", "--mlflow-workers", "1", "--json", str(json_path)
    )

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    rows = json.loads(json_path.read_text())["rows"]
    assert [row["point"]["section"] for row in rows] == [p.section for p in points(quick=True)]
    for row in rows:
        section, figures = row["point"]["section"], row["figures"]
        assert "error" not in figures, row
        for name in SWEEP_FIGURES[section]:
            value = figures[name]
            assert isinstance(value, int | float) and math.isfinite(value), (name, row)
    paced = [row for row in rows if row["point"]["section"] == "latency"]
    assert [row["figures"]["rate_per_s"] for row in paced] == [
        row["point"]["value"] for row in paced
    ]
    assert "| figure | varied | setting | measured |" in done.stdout
    assert not _processes_with_env(f"{_MARK_VAR}={mark}")


FLEET_FIGURES = {
    "job_start": (
        "alone.all_runs_s",
        "alone.one_run_s",
        "shared.all_runs_s",
        "mlflow.runs_per_s",
        "mlflow.job_s",
    ),
    "parallel_flush": (
        "sqlite.log_batch_events_per_s",
        "sqlite.bridge_1_events_per_s",
        "sqlite.bridge_4_events_per_s",
        "postgres.log_batch_events_per_s",
        "postgres.bridge_4_events_per_s",
        "postgres.ratio",
        "postgres_freshness.p99_ms",
    ),
    "linger": (
        "fixed.live_p99_ms",
        "adaptive.live_p99_ms",
        "fixed.many_publishes_per_s",
        "adaptive.many_publishes_per_s",
    ),
    "fleet_queue": ("sqlite.events_per_s", "nats.events_per_s", "ratio"),
    "bulk": (
        "sqlite.log_batch_events_per_s",
        "sqlite.bridge_bulk_events_per_s",
        "sqlite.inserts_alone_events_per_s",
        "postgres.bridge_bulk_events_per_s",
        "postgres.ratio",
        "postgres_freshness.p99_ms",
        "postgres.bridge_bulk_cpu_s.clients",
        "postgres.bridge_bulk_cpu_s.receiver",
        "postgres.bridge_bulk_cpu_s.database",
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(EVERY_SECTION_TIMEOUT_S + 60)
def test_bench_quick_reports_every_section(tmp_path: Path) -> None:
    """Every section in one run: the plain run's, and those it leaves out (a job's start,
    parallel flushing on SQLite and on a PostgreSQL cluster the bench starts itself, the
    writer's linger, the SQLite queue against a NATS JetStream cluster the bench starts
    itself, the tutorial-shaped script direct, import swap and zero-code, the bulk writer)."""
    from bench.config import SECTIONS

    json_path = tmp_path / "r.json"
    png_path = tmp_path / "r.png"
    mark = uuid.uuid4().hex
    done = _run_bench(
        tmp_path, mark, "--quick", *SMALL, "--only", ",".join(SECTIONS),
        "--json", str(json_path), "--png", str(png_path), timeout_s=EVERY_SECTION_TIMEOUT_S,
    )  # fmt: skip

    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}"
    results = json.loads(json_path.read_text())
    assert results["quick"] is True
    for section, paths in (FIGURES | FLEET_FIGURES).items():
        assert section in results, f"section {section} missing"
        assert "error" not in results[section], results[section]
        for path in paths:
            value = _figure(results, section, path)
            assert isinstance(value, int | float), f"{section}.{path} = {value!r}"
            assert not isinstance(value, bool), f"{section}.{path} = {value!r}"
            assert math.isfinite(value), f"{section}.{path} = {value!r}"
    assert results["end_to_end"]["points_in_mlflow"] == results["end_to_end"]["events"]
    assert results["scale"]["connected"] == results["scale"]["connections"]
    assert results["recovery"]["points_in_mlflow"] == results["recovery"]["points"]
    assert {row["status"] for row in results["targets"]} <= {"met", "missed", "n/a"}
    for store in ("sqlite", "postgres"):
        figures = results["parallel_flush"][store]
        assert figures["bridge_4_points_in_mlflow"] == figures["events"]
        assert figures["bridge_1_points_in_mlflow"] == figures["events"]
    for store in ("sqlite", "postgres"):
        figures = results["bulk"][store]
        assert figures["bridge_bulk_points_in_mlflow"] == figures["events"]
        assert figures["bridge_mlflow_store_points_in_mlflow"] == figures["events"]
    # Each part of the end to end did work that the bench saw: the receiver, the clients (their
    # own CPU, reported on exit). PostgreSQL's share of 2,000 points may be under one clock
    # tick a backend; tests/e2e/test_bench_cpu.py checks the cluster's accounting itself.
    cpu = results["bulk"]["postgres"]["bridge_bulk_cpu_s"]
    assert cpu["receiver"] > 0 and cpu["clients"] > 0 and cpu["database"] >= 0, cpu
    assert "database" not in results["bulk"]["sqlite"]["bridge_bulk_cpu_s"]
    assert "CPU meanwhile" in done.stdout
    for name in ("sqlite", "nats"):
        figures = results["fleet_queue"][name]
        assert figures["points_in_mlflow"] == results["fleet_queue"]["events"]
    script = results["script_wall"]
    assert "error" not in script, script
    for name in ("direct_s", "swap_s", "zero_code_s", "swap_ratio", "zero_code_ratio"):
        assert isinstance(script[name], float) and math.isfinite(script[name]), script
    for name in ("swap_alone_ratio", "zero_code_alone_ratio"):
        assert isinstance(script[name], float) and math.isfinite(script[name]), script
    assert script["runs"] == 5
    # MLflow's server did the work of every way's script (direct: its calls; bridged: the
    # receiver's, counted until it had written everything).
    assert set(script["mlflow_cpu_s"]) == {"direct", "swap", "zero", "swap_alone", "zero_alone"}
    assert all(seconds > 0 for seconds in script["mlflow_cpu_s"].values()), script
    assert "MLflow server's CPU for the script" in done.stdout
    reads = script["reads"]  # each mode's script checked that every read held its writes
    assert reads["points"] == 3
    for name in ("direct_s", "swap_ratio", "zero_code_ratio", "swap_alone_ratio"):
        assert isinstance(reads[name], float) and math.isfinite(reads[name]), reads
    assert "each read back at once" in done.stdout
    # Every script logged where its mode says: one that fell back to MLflow's own default
    # store would leave an mlflow.db in the working directory (seen: swap_alone ran direct).
    assert not (tmp_path / "mlflow.db").exists()
    titles = ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "(h)", "(i)", "(j)", "(k)", "(l)")
    for title in (*titles, "(m)", "(n)", "targets", "import swap", "zero-code"):
        assert title in done.stdout, title

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in done.stdout
    else:
        assert png_path.read_bytes().startswith(b"\x89PNG")

    leftovers = _processes_with_env(f"{_MARK_VAR}={mark}")
    assert not leftovers, f"bench left processes running: {leftovers}"
