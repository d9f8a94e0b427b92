"""The web app in a real browser: Debian's Chromium, headless, driven by playwright-core
(tests/webapp/scenario.mjs) against a registry with authentication, a public URL on
``localhost`` (WebAuthn refuses IP addresses as relying-party ids) and self-service sign-up.

Runs once per host: the native binary on its embedded stores, the Worker in workerd, the Spin
component (not again under E2E_METADATA=neon natively: the web app's code is the same).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import cloudflare_host
from authkit import AuthRegistryServer, SigningKey, remember
from ocilayout import Layout, gzip_bytes, random_tar_layer

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO = REPO_ROOT / "tests" / "webapp" / "scenario.mjs"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not cloudflare_host.EDGE and os.environ.get("E2E_METADATA", "").strip() != "",
    reason="the web app runs once per host: natively on the embedded stores",
)


def _env() -> dict[str, str]:
    env = {
        "OPENREGISTRY_AUTH": "true",
        "OPENREGISTRY_PUBLIC_URL": "http://localhost:{port}",
        "OPENREGISTRY_SIGNUP": "true",
    }
    if cloudflare_host.EDGE:
        key = SigningKey.generate()
        remember(key.paserk_secret)
        env["OPENREGISTRY_TOKEN_KEY"] = key.paserk_secret
    return env


def test_the_web_app_in_chromium_signs_up_pushes_browses_and_refuses_forgeries(registry_factory, work_dir):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: scripts/e2e-deps installs Debian's chromium"
    assert (SCENARIO.parent / "node_modules" / "playwright-core").exists(), \
        "playwright-core is missing: scripts/e2e-deps runs npm ci in tests/webapp"
    server = registry_factory("webapp", env=_env(), server_class=AuthRegistryServer)
    layout = Layout(work_dir / "layout").init()
    image = layout.add_image([(gzip_bytes(random_tar_layer(30_000, "app.bin")), OCI_LAYER_GZIP)])
    layout.tag(image, "v1")
    env = {
        **os.environ,
        "BASE_URL": f"http://localhost:{server.port}",
        "LAYOUT": str(layout.root),
        "CHROMIUM": CHROMIUM,
    }
    proc = subprocess.run(["node", str(SCENARIO)], env=env, capture_output=True, text=True, timeout=240)
    print(proc.stdout)
    assert proc.returncode == 0, f"the browser scenario failed:\n{proc.stdout}\n{proc.stderr[-6000:]}\n{server.log_tail()}"
