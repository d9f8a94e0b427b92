"""Start, stop and steer the Neon SQL-over-HTTP stand-in (tests/neon-gateway/gateway.mjs).

Used when ``E2E_METADATA=neon``: one gateway for the session, in front of the PostgreSQL from
postgres_server.py. Tests reach it through the ``neon_gateway`` fixture to count the SQL requests
a registry operation makes (``stats``/``reset_stats``), to slow the database down (``set_delay``)
or to take it away (``stop``/``start``; a restart keeps the same port, so the registry's
configured endpoint stays valid).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import requests

from logfile import ChildProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DIR = REPO_ROOT / "tests" / "neon-gateway"
DEPS_SCRIPT = REPO_ROOT / "scripts" / "neon-gateway-deps"

# Every gateway created in this session (the failure-report hook reads their logs).
ALL_GATEWAYS: list["NeonGateway"] = []


class GatewayStartError(RuntimeError):
    pass


def install_deps() -> None:
    """npm ci in tests/neon-gateway unless already done (scripts/neon-gateway-deps is idempotent)."""
    r = subprocess.run([str(DEPS_SCRIPT)], capture_output=True, text=True)
    if r.returncode != 0:
        raise GatewayStartError(f"{DEPS_SCRIPT} failed:\n{r.stdout}{r.stderr}")


class NeonGateway(ChildProcess):
    def __init__(self, pg_host: str, pg_port: int, log_path: Path, name: str = "neon-gateway"):
        self.name = name
        self.pg_host = pg_host
        self.pg_port = pg_port
        self.log_path = Path(log_path)
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        ALL_GATEWAYS.append(self)

    @property
    def url(self) -> str:
        """The SQL endpoint, http://127.0.0.1:PORT/sql (known after the first start)."""
        assert self.port is not None, "the gateway was never started"
        return f"http://127.0.0.1:{self.port}/sql"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "NeonGateway":
        """Start it; the first start picks a free port, later ones reuse it."""
        if self.running():
            return self
        node = os.environ.get("NODE") or shutil.which("node")
        if not node:
            raise GatewayStartError("node not found (E2E_METADATA=neon needs Node.js >= 18)")
        listen = f"127.0.0.1:{self.port or 0}"
        cmd = [node, str(GATEWAY_DIR / "gateway.mjs"), "--listen", listen,
               "--pg-host", self.pg_host, "--pg-port", str(self.pg_port)]
        line = self._spawn_announcing(cmd, GATEWAY_DIR, timeout)
        prefix = "listening http://127.0.0.1:"
        if not (line.startswith(prefix) and line.endswith("/sql")):
            self.stop()
            raise GatewayStartError(f"the gateway did not start ({line!r}):\n{self.log_tail()}")
        self.port = int(line[len(prefix):-len("/sql")])
        return self

    # -- test-only endpoints ---------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``{"requests": <POST /sql handled since the last reset>}``."""
        r = requests.get(f"{self.base_url}/__test/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def reset_stats(self) -> None:
        requests.post(f"{self.base_url}/__test/reset-stats", timeout=10).raise_for_status()

    def set_delay(self, ms: int) -> None:
        """Every following POST /sql waits ``ms`` before it is answered (0 turns it off)."""
        requests.post(f"{self.base_url}/__test/delay", json={"ms": ms}, timeout=10).raise_for_status()

    def query(self, database: str, sql: str, params: Optional[list] = None) -> list[list[Optional[str]]]:
        """Runs one statement as Neon's driver would (raw text, array rows) and returns the rows.

        For tests that look at the registry's metadata directly. Raises on an error answer.
        """
        r = requests.post(self.url, json={"query": sql, "params": params or []}, timeout=30, headers={
            "Neon-Connection-String": f"postgresql://postgres:e2e@ep-e2e.localtest.me/{database}",
            "Neon-Raw-Text-Output": "true",
            "Neon-Array-Mode": "true",
        })
        if r.status_code != 200:
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:500]}")
        return r.json()["rows"]
