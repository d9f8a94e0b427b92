"""The read path cache, end to end, on the host under test with its cache on — natively
``OPENREGISTRY_CACHE_BYTES`` (set here), the Worker (isolate memory in front of the Cache API) and
Spin (its key-value store) by default — with authentication on and the metadata in PostgreSQL
behind the Neon gateway stand-in, which counts the round trips:

* a warm anonymous pull of a public five-layer image by skopeo asks the database nothing (the
  token request included: the anonymous pull decision is cached with the tags);
* where a tag moved, the next pull sees it at once; where a manifest was deleted, it is never
  served again; where a repository was made private, anonymous pulls stop at once;
* a private repository's cached manifest and blobs are refused to a token without pull.

On the Worker both with the Cache API (the default) and with Workers KV (`OPENREGISTRY_EDGE_CACHE=kv`).

Runs where the metadata is reached over HTTP (``E2E_METADATA=neon``, always on the edge hosts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from authkit import Accounts, AuthRegistryServer, SigningKey, basic, bearer, client_with, remember
from ocihttp import OCI_LAYER, OCI_MANIFEST, assert_error, sha256_digest
from ocilayout import Layout, random_tar_layer
import cloudflare_host
from registry_server import KIND

pytestmark = [
    pytest.mark.skipif(KIND == "distribution", reason="OpenRegistry's own cache and auth"),
]

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"
CACHE_BYTES = str(64 * 1024 * 1024)


# The Worker runs it twice: with the Cache API (the default) and with Workers KV (`kv`, for
# workers.dev); the other hosts have one kind of cache.
STORES = ["default", "kv"] if cloudflare_host.CLOUDFLARE else ["default"]


@pytest.fixture(scope="module", params=STORES)
def cached(module_registry_factory, neon_backend, request):
    if neon_backend is None:
        pytest.skip("the round trips are counted by the Neon gateway stand-in (E2E_METADATA=neon)")
    env = {"OPENREGISTRY_AUTH": "true"}
    if request.param == "kv":
        env["OPENREGISTRY_EDGE_CACHE"] = "kv"
    if not cloudflare_host.EDGE:
        env["OPENREGISTRY_CACHE_BYTES"] = CACHE_BYTES  # on by default at the edge only
    else:
        key = SigningKey.generate()
        remember(key.paserk_secret)
        env["OPENREGISTRY_TOKEN_KEY"] = key.paserk_secret
    server = module_registry_factory(f"edge-cache-{request.param}", env=env, server_class=AuthRegistryServer)
    accounts = Accounts(server, module_registry_factory.root / f"cli-edge-cache-{request.param}.log")
    accounts.create_user("alice")
    password = accounts.create_token("alice", name="e2e")
    return server, password, neon_backend.gateway


def skopeo(*args: str, auth_file: Path) -> str:
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(auth_file))
    proc = subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def set_visibility(server, password: str, repo: str, visibility: str) -> None:
    r = requests.put(f"{server.base_url}/api/repositories/{repo}/visibility", json={"visibility": visibility},
                     headers={"Authorization": basic("alice", password)}, timeout=30)
    assert r.status_code == 200, r.text


def test_a_warm_anonymous_pull_makes_no_database_round_trip(cached, work_dir):
    server, password, gateway = cached
    auth_file = work_dir / "auth.json"
    auth_file.write_text("{}")
    src = Layout(work_dir / "src").init()
    layers = [(random_tar_layer(40_000 + 10_000 * i, f"l{i}.bin"), OCI_LAYER) for i in range(5)]
    manifest = src.add_image(layers)
    src.tag(manifest, "v1")
    ref = f"docker://{server.host}/alice/app:v1"
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"alice:{password}", f"oci:{src.root}:v1", ref,
           auth_file=auth_file)
    set_visibility(server, password, "alice/app", "public")

    def pull(name: str) -> None:
        dst = Layout(work_dir / name)
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", "--src-no-creds", ref, f"oci:{dst.root}:v1",
               auth_file=auth_file)
        assert dst.resolve("v1")["digest"] == manifest["digest"]

    gateway.reset_stats()
    pull("cold")
    cold = gateway.stats()["requests"]
    assert cold > 0, "the first pull asks the database"
    gateway.reset_stats()
    pull("warm")
    assert gateway.stats()["requests"] == 0, "a warm pull (token, manifest, config, five layers) asks nothing"

    # Made private here: the next anonymous pull is refused at once (no waiting for the cache).
    set_visibility(server, password, "alice/app", "private")
    anon = bearer(server, ["repository:alice/app:pull"])
    client = client_with(server, anon)
    try:
        r = client.request("GET", "/v2/alice/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert_error(r, 401, {"UNAUTHORIZED"})
        # A private repository's cached blob: refused to a token without pull, served with one.
        layer = manifest_layers(server, password)[0]
        assert_error(client.request("GET", f"/v2/alice/app/blobs/{layer}"), 401, {"UNAUTHORIZED"})
    finally:
        client.close()
    own = client_with(server, bearer(server, ["repository:alice/app:pull"], "alice", password))
    try:
        assert own.request("GET", f"/v2/alice/app/blobs/{manifest_layers(server, password)[0]}").status_code == 200
    finally:
        own.close()


def manifest_layers(server, password: str) -> list[str]:
    client = client_with(server, bearer(server, ["repository:alice/app:pull"], "alice", password))
    try:
        r = client.request("GET", "/v2/alice/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        return [layer["digest"] for layer in r.json()["layers"]]
    finally:
        client.close()


def test_a_moved_tag_and_a_deleted_manifest_are_seen_at_once_where_they_changed(cached):
    server, password, gateway = cached
    client = client_with(server, bearer(server, ["repository:alice/moving:pull,push,delete"], "alice", password))
    try:
        first, first_digest = client.push_image("alice/moving", "latest", layers=[b"one"])
        for _ in range(2):  # cached by tag and by digest
            assert client.request("GET", "/v2/alice/moving/manifests/latest",
                                  headers={"Accept": OCI_MANIFEST}).content == first
            client.request("GET", f"/v2/alice/moving/manifests/{first_digest}", headers={"Accept": OCI_MANIFEST})
        second, second_digest = client.push_image("alice/moving", "latest", layers=[b"two"])
        r = client.request("GET", "/v2/alice/moving/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert r.headers["Docker-Content-Digest"] == second_digest, "the moved tag is seen at once here"
        assert sha256_digest(r.content) == second_digest

        r = client.request("DELETE", f"/v2/alice/moving/manifests/{first_digest}")
        assert r.status_code == 202, r.text
        for method in ("HEAD", "GET"):
            r = client.request(method, f"/v2/alice/moving/manifests/{first_digest}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 404, f"{method} of a deleted manifest answered {r.status_code}"
        r = client.request("DELETE", f"/v2/alice/moving/manifests/{second_digest}")
        assert r.status_code == 202, r.text
        r = client.request("GET", "/v2/alice/moving/manifests/latest", headers={"Accept": OCI_MANIFEST})
        assert_error(r, 404, {"MANIFEST_UNKNOWN"})
    finally:
        client.close()
