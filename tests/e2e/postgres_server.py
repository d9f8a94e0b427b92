"""A PostgreSQL for the E2E_METADATA=neon runs.

The machine's own on 127.0.0.1:5432 when ``postgres`` can log in there (trust auth), else a
throwaway cluster: ``initdb`` into a temp dir and ``pg_ctl start`` on a free port, stopped and
removed by ``stop()``. Also creates and drops uniquely named databases (through ``psql``).

Python twin of tests/neon-gateway/postgres.mjs; keep the two in step.
``NEON_GATEWAY_THROWAWAY_PG=1`` skips the machine's PostgreSQL and always starts a throwaway cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432


class PostgresError(RuntimeError):
    pass


def _bin_dirs() -> list[Path]:
    """Debian keeps the server tools in /usr/lib/postgresql/<version>/bin (newest first)."""
    dirs = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    return sorted(dirs, key=lambda d: float(d.parent.name) if d.parent.name.replace(".", "").isdigit() else 0,
                  reverse=True)


def _tool(name: str) -> str:
    for d in _bin_dirs():
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found:
        return found
    raise PostgresError(f"{name} not found (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((DEFAULT_HOST, 0))
        return s.getsockname()[1]


def _as_owner(args: list[str]) -> list[str]:
    """initdb refuses to run as root: then run the cluster as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Postgres:
    """A reachable PostgreSQL; superuser ``postgres`` with trust auth."""

    def __init__(self, host: str, port: int, data_root: Optional[Path] = None):
        self.host = host
        self.port = port
        self.data_root = data_root  # set for a throwaway cluster
        self.log_path = data_root / "postgres.log" if data_root else None

    @property
    def throwaway(self) -> bool:
        return self.data_root is not None

    def psql(self, sql: str, database: str = "postgres", timeout: float = 60) -> str:
        env = dict(os.environ, PGCONNECT_TIMEOUT="5")
        cmd = [_tool("psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", database,
               "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if r.returncode != 0:
            raise PostgresError(f"psql -c {sql!r} failed: {r.stderr.strip()}")
        return r.stdout

    def create_database(self, prefix: str = "e2e") -> str:
        """Creates a database with a fresh unique name (``prefix_<hex>``) and returns the name."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if not self.throwaway:
            return
        data = self.data_root / "data"
        if data.exists():
            subprocess.run(_as_owner([_tool("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True)
        shutil.rmtree(self.data_root, ignore_errors=True)


def _machine_postgres() -> Optional[Postgres]:
    pg = Postgres(DEFAULT_HOST, DEFAULT_PORT)
    try:
        pg.psql("SELECT 1", timeout=15)
        return pg
    except (PostgresError, subprocess.TimeoutExpired):
        return None


def _start_throwaway() -> Postgres:
    root = Path(tempfile.mkdtemp(prefix="neon-gw-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(DEFAULT_HOST, _free_port(), root)
    data = root / "data"

    def run(args: list[str]) -> None:
        r = subprocess.run(_as_owner(args), capture_output=True, text=True)
        if r.returncode != 0:
            log = pg.log_path.read_text(errors="replace")[-4000:] if pg.log_path.exists() else ""
            raise PostgresError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}\n{log}")

    try:
        run([_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N"])
        run([_tool("pg_ctl"), "-D", str(data), "-l", str(pg.log_path), "-w", "-t", "60", "start",
             "-o", f"-k {root} -h {DEFAULT_HOST} -p {pg.port} -c fsync=off"])
    except BaseException:
        pg.stop()
        raise
    return pg


def ensure_postgres() -> Postgres:
    """The machine's PostgreSQL if it answers, else a throwaway cluster (call ``stop()`` at the end)."""
    if os.environ.get("NEON_GATEWAY_THROWAWAY_PG") != "1":
        pg = _machine_postgres()
        if pg is not None:
            return pg
    return _start_throwaway()
