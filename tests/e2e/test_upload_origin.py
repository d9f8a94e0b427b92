"""Big layers past the edge's body limit through the upload origin (OPENREGISTRY_UPLOAD_ORIGIN).

Under E2E_HOST=cloudflare only: the Worker in workerd, whose body limit is the Workers Free/Pro
plan's 100 MB (the default OCI-Chunk-Max-Length, enforced on declared lengths), and a native
registry as the origin (as the Akash container would be) sharing the Worker's PostgreSQL (through
the Neon gateway), its Skynet portal and its token signing key, with authentication on.

* without the origin, a 150 MB single-PATCH push is refused at the edge (413 SIZE_INVALID);
* with it, the Worker forwards the upload start and answers the origin's session Location; the
  same 150 MB PATCH lands there and the layer is pulled from the Worker, digest verified;
* which real clients follow a cross-origin upload Location with their credentials: skopeo and
  oras-py are measured (where their PATCH went, from the origin's access log).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import oras.auth.utils
import oras.provider
import pytest
import requests

import cloudflare_host
from authkit import Accounts, AuthRegistryServer, SigningKey, bearer, remember
from ocihttp import MIB, OCI_LAYER, assert_error, sha256_digest
from ocilayout import Layout, random_tar_layer

pytestmark = pytest.mark.skipif(
    not cloudflare_host.CLOUDFLARE,
    reason="the upload origin is measured with the Worker at the edge (E2E_HOST=cloudflare)")

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"
BIG = 150 * 1000 * 1000  # 150 MB: past the Workers Free/Pro plan's 100 MB request body limit
REPO = "alice/big"


class NativeAuthRegistry(AuthRegistryServer):
    """The native binary even under E2E_HOST=cloudflare: the origin."""

    @property
    def is_worker(self) -> bool:
        return False

    @property
    def is_spin(self) -> bool:
        return False


class Pair:
    def __init__(self, origin, edge, plain, password):
        self.origin, self.edge, self.plain, self.password = origin, edge, plain, password

    def token(self, server, scope=f"repository:{REPO}:pull,push") -> str:
        return bearer(server, [scope], "alice", self.password)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, neon_backend, shared_storage):
    root = tmp_path_factory.mktemp("upload-origin")
    key = SigningKey.generate()
    remember(key.paserk_secret, key.paserk_secret[len("k4.secret."):])
    # The native origin and the Workers share one bucket (S3 over fetch() on the Workers: their R2
    # binding, which the native origin cannot reach, is left unbound with E2E_R2=off).
    env = {**neon_backend.registry_env("upload-origin"), **shared_storage.registry_env(),
           "E2E_R2": "off",
           "OPENREGISTRY_AUTH": "true", "OPENREGISTRY_TOKEN_KEY": key.paserk_secret}
    cloudflare_host.migrate(env)
    origin = NativeAuthRegistry(root / "origin", name="origin", env=env).start()
    edge = AuthRegistryServer(root / "edge", name="edge",
                              env={**env, "OPENREGISTRY_UPLOAD_ORIGIN": origin.base_url}).start()
    plain = AuthRegistryServer(root / "plain", name="plain", env=env).start()
    accounts = Accounts(origin, root / "cli.log")
    accounts.create_user("alice")
    password = accounts.create_token("alice", name="big")
    yield Pair(origin, edge, plain, password)
    for server in (plain, edge, origin):
        server.stop()


def patch_streamed(location: str, token: str, size: int) -> tuple[http.client.HTTPResponse, bytes, str]:
    """One PATCH of `size` random-ish bytes declared with Content-Length, streamed in 1 MiB
    writes; returns the answer, its body and the sha256 of what was sent."""
    url = urllib.parse.urlsplit(location)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    conn.putrequest("PATCH", url.path + (f"?{url.query}" if url.query else ""))
    for name, value in (("Authorization", f"Bearer {token}"), ("Content-Type", "application/octet-stream"),
                        ("Content-Length", str(size))):
        conn.putheader(name, value)
    conn.endheaders()
    sent = 0
    try:
        while sent < size:
            piece = block[: min(MIB, size - sent)]
            conn.send(piece)
            digest.update(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the body: the answer is already there
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer, body, f"sha256:{digest.hexdigest()}"


def start_upload(server, token: str) -> requests.Response:
    r = requests.post(f"{server.base_url}/v2/{REPO}/blobs/uploads/",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 202, r.text
    return r


def absolute(server, location: str) -> str:
    return location if location.startswith("http") else f"{server.base_url}{location}"


def test_without_the_origin_a_150_mb_single_patch_push_is_refused_at_the_edge(pair):
    token = pair.token(pair.plain)
    r = start_upload(pair.plain, token)
    assert r.headers["OCI-Chunk-Max-Length"] == "100000000"
    location = absolute(pair.plain, r.headers["Location"])
    assert location.startswith(pair.plain.base_url), "without an origin the session is the edge's"
    answer, body, _ = patch_streamed(location, token, BIG)
    assert answer.status == 413, body[:300]
    error = json.loads(body)["errors"][0]
    assert error["code"] == "SIZE_INVALID" and error["detail"] == {"limit": 100000000}


def test_with_the_origin_a_150_mb_single_patch_push_lands_and_is_pulled_from_the_edge(pair):
    token = pair.token(pair.edge)
    r = start_upload(pair.edge, token)
    location = r.headers["Location"]
    assert location.startswith(f"{pair.origin.base_url}/v2/{REPO}/blobs/uploads/"), location
    answer, body, digest = patch_streamed(location, token, BIG)
    assert answer.status == 202, body[:300]
    done = requests.put(absolute(pair.origin, answer.headers["Location"]), params={"digest": digest},
                        headers={"Authorization": f"Bearer {token}"}, timeout=120)
    assert done.status_code == 201, done.text
    # Pulled from the edge (the Worker), streamed and hashed.
    pulled = hashlib.sha256()
    size = 0
    with requests.get(f"{pair.edge.base_url}/v2/{REPO}/blobs/{digest}",
                      headers={"Authorization": f"Bearer {token}"}, stream=True, timeout=300) as got:
        assert got.status_code == 200, got.text[:300]
        for chunk in got.iter_content(MIB):
            pulled.update(chunk)
            size += len(chunk)
    assert (f"sha256:{pulled.hexdigest()}", size) == (digest, BIG)


def origin_patches(pair) -> int:
    """Requests that carried upload bytes (PATCH, or the closing PUT) to the origin's sessions."""
    lines = pair.origin.log_tail(2_000_000).splitlines()
    return sum(1 for line in lines if "/blobs/uploads/" in line
               and ("method=PATCH" in line or "method=PUT" in line))


def test_skopeo_follows_the_cross_origin_upload_location_with_its_credentials(pair, tmp_path):
    src = Layout(tmp_path / "src").init()
    manifest = src.add_image([(random_tar_layer(3 * MIB, "a.bin"), OCI_LAYER),
                              (random_tar_layer(200_000, "b.bin"), OCI_LAYER)])
    src.tag(manifest, "v1")
    before = origin_patches(pair)
    auth_file = tmp_path / "auth.json"
    auth_file.write_text("{}")
    ref = f"docker://{pair.edge.host}/{REPO}:skopeo"
    proc = subprocess.run([SKOPEO, "--registries-conf", "/dev/null", "copy", "--preserve-digests",
                           "--dest-tls-verify=false", "--dest-creds", f"alice:{pair.password}",
                           "--authfile", str(auth_file), f"oci:{src.root}:v1", ref],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert origin_patches(pair) > before, "skopeo's layer bytes did not go to the origin"
    token = pair.token(pair.edge, f"repository:{REPO}:pull")
    r = requests.get(f"{pair.edge.base_url}/v2/{REPO}/manifests/skopeo",
                     headers={"Authorization": f"Bearer {token}", "Accept": manifest["mediaType"]}, timeout=30)
    assert r.status_code == 200 and sha256_digest(r.content) == manifest["digest"]


def test_oras_follows_the_cross_origin_upload_location_with_its_credentials(pair, tmp_path, monkeypatch):
    (tmp_path / "data.bin").write_bytes(os.urandom(2 * MIB))
    monkeypatch.chdir(tmp_path)
    before = origin_patches(pair)
    pusher = oras.provider.Registry(hostname=pair.edge.host, insecure=True)
    pusher.auth.set_basic_auth("alice", pair.password)
    ping = requests.get(f"{pair.edge.base_url}/v2/", timeout=30).headers["WWW-Authenticate"]
    wanted = oras.auth.utils.parse_auth_header(f'{ping},scope="repository:{REPO}:pull,push"')
    pusher.auth.token = pusher.auth.request_token(wanted)
    remember(pusher.auth.token)
    resp = pusher.push(f"{pair.edge.host}/{REPO}:oras", files=["data.bin"])
    assert resp.status_code == 201
    assert origin_patches(pair) > before, "oras-py's bytes did not go to the origin"
