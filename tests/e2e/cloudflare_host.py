"""``E2E_HOST=cloudflare``: the registry under test is the Cloudflare Worker (worker/cloudflare),
built by ``scripts/build-worker`` and run in workerd through the Miniflare harness
(``tests/cloudflare/mf-serve.mjs``), with its KV namespace on disk under the registry's data dir.

The Worker has no embedded stores, so this mode implies ``E2E_METADATA=neon`` (PostgreSQL behind
the Neon gateway stand-in) and ``E2E_STORAGE=skynet`` (the Skynet portal stand-in). Each fresh
database is migrated with the native ``openregistry migrate`` (the documented deploy step) before
a Worker uses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = os.environ.get("E2E_HOST", "").strip().lower() or "native"
if HOST not in ("native", "cloudflare", "spin"):
    raise RuntimeError(f"E2E_HOST must be unset, 'native', 'cloudflare' or 'spin', not {HOST!r}")
CLOUDFLARE = HOST == "cloudflare"
SPIN = HOST == "spin"
# An edge host (the Worker or the Spin component): no embedded stores, no data directory, no CLI.
EDGE = CLOUDFLARE or SPIN

HARNESS = REPO_ROOT / "tests" / "cloudflare" / "mf-serve.mjs"
WORKER_BUILD = REPO_ROOT / "worker" / "cloudflare" / "build" / "index.js"
DEPS_SCRIPT = REPO_ROOT / "scripts" / "cloudflare-deps"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-worker"

SKIP_NATIVE_ONLY = "native host only: the edge hosts have no data directory or CLI of their own"


class CloudflareError(RuntimeError):
    pass


def node() -> str:
    found = os.environ.get("NODE") or shutil.which("node")
    if not found:
        raise CloudflareError("node not found (E2E_HOST=cloudflare needs Node.js >= 20.3)")
    return found


def worker_command(listen: str, persist_dir: Path) -> list[str]:
    """The harness command for one Worker on ``listen`` (host:port), KV/cache under ``persist_dir``."""
    if not WORKER_BUILD.exists():
        raise CloudflareError(
            f"{WORKER_BUILD} is missing: run scripts/cloudflare-deps and scripts/build-worker "
            f"(E2E_BUILD_WORKER=1 makes the suite build it)"
        )
    return [node(), str(HARNESS), "--listen", listen, "--persist", str(persist_dir)]


def prepare() -> None:
    """Once per session: the tools, and (with E2E_BUILD_WORKER=1) a fresh build of the Worker."""
    for script in ([DEPS_SCRIPT, BUILD_SCRIPT] if os.environ.get("E2E_BUILD_WORKER") == "1" else []):
        r = subprocess.run([str(script)], capture_output=True, text=True)
        if r.returncode != 0:
            raise CloudflareError(f"{script} failed:\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    if not WORKER_BUILD.exists():
        worker_command("127.0.0.1:0", Path("."))  # raises with the instructions


def migrate(env: dict[str, str]) -> None:
    """Apply the schema to a fresh database, as a deployment does before an edge host serves it."""
    from registry_server import openregistry_bin

    binary = openregistry_bin()
    if not binary.exists():
        raise CloudflareError(
            f"{binary} not found: E2E_HOST=cloudflare migrates each database with the native "
            f"`openregistry migrate` (cargo build --release -p openregistry-native, or set OPENREGISTRY_BIN)"
        )
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    r = subprocess.run(
        [str(binary), "migrate", "--data-dir", str(scratch / "openregistry-e2e-migrate")],
        env={**os.environ, **env, "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=120,
    )
    if r.returncode != 0:
        raise CloudflareError(f"openregistry migrate failed:\n{r.stderr[-4000:]}")


def process_tree_rss_kib(pid: int) -> dict[int, tuple[str, int]]:
    """``{pid: (name, VmRSS KiB)}`` for ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: dict[int, tuple[str, int]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss = int(fields.get("VmRSS", "0 kB").split()[0])
        out[p] = (fields.get("Name", "?").strip(), rss)
        todo.extend(children.get(p, []))
    return out


def workerd_rss_kib(harness_pid: int) -> Optional[int]:
    """The RSS of the workerd process under a harness, if running."""
    for name, rss in process_tree_rss_kib(harness_pid).values():
        if name == "workerd":
            return rss
    return None


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
