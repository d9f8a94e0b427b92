"""The Cloudflare Worker for scripts/bench: the built Worker (worker/cloudflare/build) in workerd
through the Miniflare harness (tests/cloudflare/mf-serve.mjs), with the local stand-ins of its
backends, as the end-to-end suite runs it (tests/e2e/cloudflare_host.py): metadata in the
machine's PostgreSQL (or a throwaway cluster, tests/e2e/postgres_server.py) behind the Neon
SQL-over-HTTP gateway stand-in (tests/neon-gateway), blobs on the Skynet portal stand-in
(tests/skynet-portal). Each fresh database is migrated with the native `openregistry migrate`,
as a deployment does.

`setup()` installs and builds what is missing (scripts/neon-gateway-deps, skynet-portal-deps,
cloudflare-deps, build-worker) and raises `EdgeUnavailable` with the reason when it cannot; the
benchmark then reports the Worker as not measured. Every process is a `servers.Server`: started
on a free loopback port, stopped by its PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import servers

REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "tests" / "cloudflare" / "mf-serve.mjs"
WORKER_BUILD = REPO / "worker" / "cloudflare" / "build" / "index.js"
GATEWAY = REPO / "tests" / "neon-gateway" / "gateway.mjs"
PORTAL = REPO / "tests" / "skynet-portal" / "portal.mjs"
SETUP_SCRIPTS = ("neon-gateway-deps", "skynet-portal-deps", "cloudflare-deps", "build-worker")
API_KEY = "bench-key"


class EdgeUnavailable(RuntimeError):
    """The Worker cannot be measured on this machine (the message says why)."""


def node() -> str:
    found = os.environ.get("NODE") or shutil.which("node")
    if not found:
        raise EdgeUnavailable("node not found (the Worker runs in workerd through Node.js >= 20.3)")
    return found


def setup(log) -> None:
    """The stand-ins' npm packages, the Worker toolchain and a build of the current Worker."""
    node()
    for script in SETUP_SCRIPTS:
        log(f"worker setup: scripts/{script}")
        try:
            r = subprocess.run([str(REPO / "scripts" / script)], capture_output=True, text=True,
                               timeout=1800, cwd=REPO)
        except subprocess.TimeoutExpired:
            raise EdgeUnavailable(f"scripts/{script} took longer than 30 minutes") from None
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            raise EdgeUnavailable(f"scripts/{script} failed: {' / '.join(tail)}")
    if not WORKER_BUILD.exists():
        raise EdgeUnavailable(f"{WORKER_BUILD.relative_to(REPO)} is missing after scripts/build-worker")


def bundle_size() -> dict[str, int]:
    """scripts/worker-size's figures: raw and gzip -9 bytes of the JS module and the WASM module."""
    r = subprocess.run([str(REPO / "scripts" / "worker-size")], capture_output=True, text=True,
                       timeout=300, cwd=REPO, env={**os.environ, "MAX_GZIP_BYTES": str(1 << 40)})
    if r.returncode != 0:
        raise RuntimeError(f"scripts/worker-size failed: {(r.stderr or r.stdout)[-500:]}")
    out: dict[str, int] = {}
    for name, raw, gz in re.findall(r"^\s+(\S+)\s+(\d+) B raw\s+(\d+) B gzip -9$", r.stdout, re.M):
        key = "wasm" if name.endswith(".wasm") else "js"
        out[f"{key}_raw"] = int(raw)
        out[f"{key}_gzip"] = int(gz)
    total = re.search(r"gzip total: (\d+) B", r.stdout)
    if not total or "wasm_raw" not in out:
        raise RuntimeError(f"scripts/worker-size: unexpected output: {r.stdout[-500:]}")
    out["gzip_total"] = int(total.group(1))
    return out


def e2e_module(name: str):
    """A module of the end-to-end suite (tests/e2e), imported at run time."""
    sys.path.insert(0, str(REPO / "tests" / "e2e"))
    try:
        return __import__(name)
    except ImportError as exc:
        raise EdgeUnavailable(f"tests/e2e/{name}.py: {exc}") from exc
    finally:
        sys.path.pop(0)


class Postgres:
    """The end-to-end suite's PostgreSQL helper (tests/e2e/postgres_server.py)."""

    def __init__(self) -> None:
        postgres_server = e2e_module("postgres_server")
        try:
            self.pg = postgres_server.ensure_postgres()
        except (postgres_server.PostgresError, OSError, subprocess.SubprocessError) as exc:
            raise EdgeUnavailable(f"no PostgreSQL: {exc}") from exc
        self.databases: list[str] = []

    def create_database(self) -> str:
        name = self.pg.create_database("bench")
        self.databases.append(name)
        return name

    def close(self) -> None:
        try:
            for name in self.databases:
                self.pg.drop_database(name)
        finally:
            self.pg.stop()


class NeonGateway(servers.Server):
    kind = "neon-gateway"
    label = "Neon gateway stand-in"
    ready_path = "/__test/stats"

    def __init__(self, workdir: Path, name: str, pg_host: str, pg_port: int):
        super().__init__(workdir, name)
        self.pg_host, self.pg_port = pg_host, pg_port

    def command(self) -> list[str]:
        return [node(), str(GATEWAY), "--listen", self.host, "--pg-host", self.pg_host,
                "--pg-port", str(self.pg_port), "--quiet"]

    @property
    def url(self) -> str:
        return f"http://{self.host}/sql"


class SkynetPortal(servers.Server):
    kind = "skynet-portal"
    label = "Skynet portal stand-in"
    ready_path = "/__test/stats"

    def command(self) -> list[str]:
        return [node(), str(PORTAL), "--listen", self.host, "--data-dir", str(self.data_dir),
                "--require-api-key", API_KEY, "--quiet"]


class Worker(servers.Server):
    """The Worker in workerd (mf-serve.mjs), its KV namespace and cache under its data dir."""

    kind = "worker"
    label = "Cloudflare Worker"
    ready_path = "/v2/"

    def __init__(self, workdir: Path, name: str, backend_env: dict[str, str]):
        super().__init__(workdir, name)
        self.backend_env = backend_env

    def command(self) -> list[str]:
        # --direct: workerd on the port itself, no TCP front (see mf-serve.mjs).
        return [node(), str(HARNESS), "--listen", self.host, "--persist", str(self.data_dir), "--direct"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREGISTRY_")}
        env.update(self.backend_env)
        return env

    def start(self, timeout: float = 60.0) -> "Worker":
        super().start(timeout)
        return self

    def workerd_rss_kib(self) -> Optional[int]:
        return e2e_module("cloudflare_host").workerd_rss_kib(self.pid)


class EdgeStack:
    """PostgreSQL and the gateway for the whole run; a portal, a database and a Worker per
    `worker()` call (each fresh: nothing carries over between rounds)."""

    def __init__(self, workdir: Path, or_bin: Path):
        self.workdir = workdir / "edge"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.or_bin = or_bin
        self.seq = 0
        self.postgres = Postgres()
        self.gateway: Optional[NeonGateway] = None
        try:
            self.gateway = NeonGateway(self.workdir, "neon-gateway", self.postgres.pg.host,
                                       self.postgres.pg.port).start()
        except BaseException:
            self.postgres.close()
            raise

    def worker(self) -> tuple[Worker, SkynetPortal]:
        """A fresh portal, a fresh migrated database and a Worker using both."""
        assert self.gateway is not None
        self.seq += 1
        portal = SkynetPortal(self.workdir, f"{self.seq:02d}-portal").start()
        try:
            database = self.postgres.create_database()
            env = {
                "OPENREGISTRY_DATABASE_URL": f"postgresql://postgres:openregistry@ep-bench.localtest.me/{database}",
                "OPENREGISTRY_DATABASE_HTTP_ENDPOINT": self.gateway.url,
                "OPENREGISTRY_SKYNET_PORTAL": f"http://{portal.host}",
                "OPENREGISTRY_SKYNET_API_KEY": API_KEY,
            }
            r = subprocess.run([str(self.or_bin), "migrate", "--data-dir", str(self.workdir / "migrate")],
                               env={**os.environ, **env, "NO_COLOR": "1"}, capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"openregistry migrate failed: {r.stderr[-1000:]}")
            return Worker(self.workdir, f"{self.seq:02d}-worker", env).start(), portal
        except BaseException:
            portal.wipe()
            raise

    def close(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            self.postgres.close()
