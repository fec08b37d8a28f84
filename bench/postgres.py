"""A throwaway PostgreSQL cluster on loopback (Debian's ``postgresql`` package), for MLflow's
store in the benchmark and the deployment tests: ``initdb`` in a temporary directory, password
authentication, no fsync unless asked, removed when stopped."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.procs import tree_cpu_s

PG_START_TIMEOUT_S = 60.0
_STOP = ("-m", "fast", "-w", "-t", "30", "stop")


class PostgresMissing(RuntimeError):
    """PostgreSQL is not installed."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` (Debian's layout).

    Raises:
        PostgresMissing: None is installed.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        raise PostgresMissing("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found[-1]).parent


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


@dataclass
class Postgres:
    """A running throwaway PostgreSQL cluster on 127.0.0.1."""

    root: Path
    port: int
    password: str

    def uri(self, database: str) -> str:
        """SQLAlchemy URI of ``database`` (psycopg2 driver)."""
        return f"postgresql+psycopg2://postgres:{self.password}@127.0.0.1:{self.port}/{database}"


def _as_postgres(cmd: list[str]) -> list[str]:
    # The server refuses to run as root: a root test run starts it as the postgres user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres(*, fsync: bool = False) -> Postgres:
    """initdb + pg_ctl start of a fresh cluster in a temp dir (password auth, loopback only)."""
    bin_dir = pg_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="trackbridge-pg-"))
    pwfile = root / "pw"
    password = secrets.token_hex(16)  # a throwaway cluster's own
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    port = free_port()
    pg = Postgres(root, port, password)
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(root / "data"),
                    "-U", "postgres",
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--no-sync",
                    "-E", "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=PG_START_TIMEOUT_S,
        )  # fmt: skip
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if fsync else 'off'} -c max_connections=100"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D", str(root / "data"),
                    "-l", str(root / "postgres.log"),
                    "-o", options,
                    "-w", "-t", str(int(PG_START_TIMEOUT_S)),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=PG_START_TIMEOUT_S + 10,
        )  # fmt: skip
    except BaseException:
        stop_postgres(pg)
        raise
    return pg


def create_database(pg: Postgres, name: str) -> None:
    """``CREATE DATABASE name`` through psycopg2 (the driver MLflow uses too)."""
    import psycopg2

    conn = psycopg2.connect(
        host="127.0.0.1", port=pg.port, user="postgres", password=pg.password, dbname="postgres"
    )
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def stop_postgres(pg: Postgres) -> None:
    """Stops the cluster (bounded) and removes its files."""
    if (pg.root / "data" / "postmaster.pid").exists():
        subprocess.run(
            _as_postgres([str(pg_bin_dir() / "pg_ctl"), "-D", str(pg.root / "data"), *_STOP]),
            capture_output=True,
            timeout=60,
            check=False,
        )
    shutil.rmtree(pg.root, ignore_errors=True)


def cluster_cpu_s(pg: Postgres) -> float:
    """CPU seconds the cluster has used so far: its postmaster and every backend, the ended
    ones included (bench/procs.py ``tree_cpu_s``)."""
    return tree_cpu_s(int((pg.root / "data" / "postmaster.pid").read_text().split()[0]))
