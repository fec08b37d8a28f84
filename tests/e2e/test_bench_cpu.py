"""The benchmark's CPU accounting (bench/procs.py ``tree_cpu_s``, bench/postgres.py
``cluster_cpu_s``): what a process tree used, the processes that ended included, as the bulk
section reports PostgreSQL's and the script section MLflow's server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.postgres import cluster_cpu_s, start_postgres, stop_postgres
from bench.procs import cpu_s, tree_cpu_s

# Spins until the process itself has used ``seconds`` of CPU, then prints and waits for stdin.
_BURN = """
import sys, time
while time.process_time() < float(sys.argv[1]):
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def _burner(seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _BURN, str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "burnt\n"
    return proc


@pytest.mark.slow
def test_tree_cpu_counts_live_and_ended_children() -> None:
    before = tree_cpu_s(os.getpid())
    ended = _burner(0.3)
    ended.communicate("\n")  # reaped: its time is now this process's children's time
    live = _burner(0.3)
    try:
        assert cpu_s(live.pid) >= 0.25
        # Both burnt 0.3 s (the clock ticks at 10 ms: 0.25 is a safe floor for each).
        assert tree_cpu_s(os.getpid()) - before >= 0.5
        # A process's own figure leaves its children out.
        assert cpu_s(os.getpid()) < tree_cpu_s(os.getpid()) - 0.25
    finally:
        live.communicate("\n")


def test_tree_cpu_of_a_process_that_is_not_there() -> None:
    # PID 0 is never a process under /proc: nothing used, nothing raised.
    assert tree_cpu_s(0) == 0.0


@pytest.mark.slow
def test_cluster_cpu_counts_a_backend_that_has_ended() -> None:
    import psycopg2

    pg = start_postgres()
    try:
        before = cluster_cpu_s(pg)
        conn = psycopg2.connect(
            host="127.0.0.1", port=pg.port, user="postgres", password=pg.password,
            dbname="postgres",
        )  # fmt: skip
        with conn.cursor() as cur:  # a backend busy for a while
            cur.execute("SELECT pg_backend_pid()")
            (backend,) = cur.fetchone()
            cur.execute(
                "SELECT count(*) FROM generate_series(1, 3000000) a, generate_series(1, 3) b"
            )
            assert cur.fetchone() == (9_000_000,)
        spent = cpu_s(backend)
        assert spent > 0  # 9 million rows counted: tens of clock ticks on any machine
        conn.close()  # the backend ends; the postmaster reaps it and counts its time
        while Path(f"/proc/{backend}").exists():  # gone once reaped
            time.sleep(0.01)
        assert cluster_cpu_s(pg) - before >= spent
    finally:
        stop_postgres(pg)
