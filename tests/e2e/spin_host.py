"""``E2E_HOST=spin``: the registry under test is the Spin component (worker/spin), built by
``scripts/build-spin`` and run by the Spin-compatible test host (tests/spin-host, built by
``scripts/spin-host-deps``) from the repository's own ``spin.toml``.

Like the Worker, the component has no embedded stores, so this mode implies ``E2E_METADATA=neon``
and ``E2E_STORAGE=s3``. Settings reach it the way ``spin up`` passes them: every
``OPENREGISTRY_X`` of the registry's environment becomes the application variable
``openregistry_x`` through ``SPIN_VARIABLE_OPENREGISTRY_X``; the outbound allow-list in
``spin.toml`` is filled from the same variables (the gateway's origin is
``openregistry_database_origin``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT / "spin.toml"
COMPONENT = REPO_ROOT / "worker" / "spin" / "build" / "openregistry_spin.wasm"
TEST_HOST = REPO_ROOT / ".tools" / "bin" / "spin-test-host"
DEPS_SCRIPT = REPO_ROOT / "scripts" / "spin-host-deps"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-spin"


class SpinError(RuntimeError):
    pass


def command(listen: str, data_dir: Path, host_args: str = "") -> list[str]:
    """The test host's command line for the component on ``listen`` (host:port); ``host_args`` are
    extra test-host options (e.g. Akamai Functions' limits: ``--max-body-bytes 10485760``)."""
    for path, how in ((TEST_HOST, DEPS_SCRIPT), (COMPONENT, BUILD_SCRIPT)):
        if not path.exists():
            raise SpinError(f"{path} is missing: run {how.relative_to(REPO_ROOT)} "
                            f"(E2E_BUILD_SPIN=1 makes the suite run it)")
    return [str(TEST_HOST), "--manifest", str(MANIFEST), "--wasm", str(COMPONENT),
            "--listen", listen, "--kv-dir", str(data_dir / "kv"), *host_args.split()]


def variables(env: dict[str, str]) -> dict[str, str]:
    """``env`` with each ``OPENREGISTRY_*`` setting also given as Spin's ``SPIN_VARIABLE_*``."""
    out = dict(env)
    settings = {k: v for k, v in env.items() if k.startswith("OPENREGISTRY_")}
    endpoint = settings.get("OPENREGISTRY_DATABASE_HTTP_ENDPOINT")
    if endpoint and "OPENREGISTRY_DATABASE_ORIGIN" not in settings:
        parts = urlsplit(endpoint)
        settings["OPENREGISTRY_DATABASE_ORIGIN"] = f"{parts.scheme}://{parts.netloc}"
    blobs = settings.get("OPENREGISTRY_S3_ENDPOINT") or settings.get("OPENREGISTRY_SKYNET_PORTAL")
    if blobs and "OPENREGISTRY_BLOB_ORIGIN" not in settings:
        # Path-style S3 and Skynet: the allow-list entry is the endpoint's origin.
        parts = urlsplit(blobs)
        settings["OPENREGISTRY_BLOB_ORIGIN"] = f"{parts.scheme}://{parts.netloc}"
    if settings.get("OPENREGISTRY_AUTH", "").lower() not in ("true", "1", "yes", "on"):
        # As the Worker harness does: a test registry on loopback is deliberately open.
        settings.setdefault("OPENREGISTRY_OPEN", "true")
    for name, value in settings.items():
        out[f"SPIN_VARIABLE_{name}"] = value
    return out


def prepare() -> None:
    """Once per session: (with E2E_BUILD_SPIN=1) the test host and a fresh component build."""
    import subprocess

    if os.environ.get("E2E_BUILD_SPIN") == "1":
        for script in (DEPS_SCRIPT, BUILD_SCRIPT):
            r = subprocess.run([str(script)], capture_output=True, text=True)
            if r.returncode != 0:
                raise SpinError(f"{script} failed:\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    command("127.0.0.1:0", Path("."))  # raises with the instructions when something is missing
