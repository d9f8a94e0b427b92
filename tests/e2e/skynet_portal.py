"""Start, stop and steer the Skynet portal stand-in (tests/skynet-portal/portal.mjs).

Used when ``E2E_STORAGE=skynet``: one portal for the session, its data under the session's
temporary directory, started with ``--require-api-key`` so that a client forgetting the key
fails. Tests reach it through the ``skynet_portal`` fixture to count what the registry sent
(``stats``/``reset_stats``), to inject faults (``faults``) or to take the portal away
(``stop``/``start``; a restart keeps the port and the data, so the registry's configured
portal URL and the skylinks it stored stay valid).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import requests

from logfile import ChildProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
PORTAL_DIR = REPO_ROOT / "tests" / "skynet-portal"
DEPS_SCRIPT = REPO_ROOT / "scripts" / "skynet-portal-deps"
API_KEY = "e2e-key"

# Every portal created in this session (the failure-report hook reads their logs).
ALL_PORTALS: list["SkynetPortal"] = []


class PortalStartError(RuntimeError):
    pass


def install_deps() -> None:
    """npm ci in tests/skynet-portal unless already done (scripts/skynet-portal-deps is idempotent)."""
    r = subprocess.run([str(DEPS_SCRIPT)], capture_output=True, text=True)
    if r.returncode != 0:
        raise PortalStartError(f"{DEPS_SCRIPT} failed:\n{r.stdout}{r.stderr}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class SkynetPortal(ChildProcess):
    kind = "skynet-portal"

    def __init__(self, data_dir: Path, log_path: Path, api_key: Optional[str] = API_KEY,
                 name: str = "skynet-portal"):
        self.name = name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path)
        self.api_key = api_key
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        ALL_PORTALS.append(self)

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (known after the first start)."""
        assert self.port is not None, "the portal was never started"
        return f"http://127.0.0.1:{self.port}"

    def registry_env(self) -> dict[str, str]:
        """What every registry process gets to store its blobs here."""
        env = {"OPENREGISTRY_SKYNET_PORTAL": self.url}
        if self.api_key is not None:
            env["OPENREGISTRY_SKYNET_API_KEY"] = self.api_key
        return env

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 20.0) -> "SkynetPortal":
        """Start it; the first start picks a free port, later ones reuse it (and the data)."""
        if self.running():
            return self
        node = os.environ.get("NODE") or shutil.which("node")
        if not node:
            raise PortalStartError("node not found (E2E_STORAGE=skynet needs Node.js >= 18)")
        cmd = [node, str(PORTAL_DIR / "portal.mjs"), "--listen", f"127.0.0.1:{self.port or 0}",
               "--data-dir", str(self.data_dir)]
        if self.api_key is not None:
            cmd += ["--require-api-key", self.api_key]
        line = self._spawn_announcing(cmd, PORTAL_DIR, timeout)
        m = re.fullmatch(r"listening http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise PortalStartError(f"the Skynet portal did not start ({line!r}):\n{self.log_tail()}")
        self.port = int(m.group(1))
        return self

    # -- test-only endpoints (no API key needed) ---------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset: skyfileUploads, tusCreates, patches, concatenations,
        downloads (GET), heads, metadata, pins, unauthorized, bytesStored, bytesServed."""
        r = requests.get(f"{self.url}/__test/stats", timeout=10)
        r.raise_for_status()
        return r.json()

    def reset_stats(self) -> None:
        requests.post(f"{self.url}/__test/reset-stats", timeout=10).raise_for_status()

    def faults(self, **kw: int) -> dict[str, int]:
        """Replace the injected faults; no argument resets them. Keys (snake_case or camelCase):
        fail_patch=N (the Nth following TUS PATCH answers 500 and writes nothing),
        drop_patch=N with after_bytes=B (the Nth following PATCH has its connection destroyed
        after B bytes were received and written; skyd's 40 MiB rule then decides what is kept),
        delay_ms=M (every portal response waits M ms)."""
        r = requests.post(f"{self.url}/__test/faults", json={_camel(k): v for k, v in kw.items()}, timeout=10)
        r.raise_for_status()
        return r.json()
