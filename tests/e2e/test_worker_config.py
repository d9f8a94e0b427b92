"""The Worker's configuration (E2E_HOST=cloudflare only): vars and secrets under the native host's
names, no embedded defaults at the edge, chunk limits advertised from configuration."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

import pytest
import requests

from cloudflare_host import CLOUDFLARE, HARNESS, node, wait_gone
from ocihttp import OciClient, check_error_document, error_codes

pytestmark = pytest.mark.skipif(not CLOUDFLARE, reason="configuration of the Cloudflare Worker (E2E_HOST=cloudflare)")


def start_bare_worker(work_dir, env: dict[str, str]):
    """The harness with exactly these OPENREGISTRY_* settings (nothing from the fixtures)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENREGISTRY_")}
    clean.update(env)
    log = open(work_dir / "worker.log", "ab")
    proc = subprocess.Popen([node(), str(HARNESS), "--listen", "127.0.0.1:0", "--persist", str(work_dir / "data")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=clean,
                            start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode().strip() if ready else ""
    assert line.startswith("listening http://127.0.0.1:"), line
    return proc, line[len("listening "):], log


def stop(proc, log):
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0
    wait_gone(proc.pid)
    proc.stdout.close()
    log.close()


@pytest.mark.parametrize("missing", ["OPENREGISTRY_DATABASE_URL", "OPENREGISTRY_S3_ENDPOINT"])
def test_a_missing_database_or_storage_answers_503_with_an_oci_error(work_dir, missing):
    # Without the R2 binding (E2E_R2=off) the Worker needs S3 or a Skynet portal.
    env = {
        "OPENREGISTRY_DATABASE_URL": "postgresql://u:p@ep-x.example.com/db",
        "OPENREGISTRY_DATABASE_HTTP_ENDPOINT": "http://127.0.0.1:9/sql",
        "OPENREGISTRY_SKYNET_PORTAL": "http://127.0.0.1:9",
        "E2E_R2": "off",
    }
    if missing == "OPENREGISTRY_DATABASE_URL":
        del env[missing]
    else:
        del env["OPENREGISTRY_SKYNET_PORTAL"]
    proc, url, log = start_bare_worker(work_dir, env)
    try:
        for method, path in [("GET", "/v2/"), ("POST", "/v2/a/blobs/uploads/"), ("GET", "/v2/a/tags/list")]:
            r = requests.request(method, url + path, timeout=30)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            check_error_document(method, url + path, r.status_code, r.content)
            assert error_codes(r) == ["UNAVAILABLE"]
            assert missing in r.json()["errors"][0]["message"]
    finally:
        stop(proc, log)


def test_chunk_limits_are_advertised_from_configuration(registry_factory):
    server = registry_factory("chunks", env={"OPENREGISTRY_CHUNK_MIN_LENGTH": "1048576",
                                             "OPENREGISTRY_CHUNK_MAX_LENGTH": "52428800"})
    client = OciClient(server.base_url)
    r = client.post("/v2/cfg/limits/blobs/uploads/", data=b"")
    assert r.status_code == 202
    assert r.headers.get("OCI-Chunk-Min-Length") == "1048576"
    assert r.headers.get("OCI-Chunk-Max-Length") == "52428800"
    client.close()


def test_by_default_the_max_chunk_is_the_free_plan_body_limit(registry_factory):
    # Its own Worker without settings: the shared one models a 500 MB plan (see conftest).
    server = registry_factory("default-limits")
    client = OciClient(server.base_url)
    r = client.post("/v2/cfg/default/blobs/uploads/", data=b"")
    assert r.status_code == 202
    assert r.headers.get("OCI-Chunk-Max-Length") == "100000000"
    assert int(r.headers.get("OCI-Chunk-Min-Length")) <= 100_000_000
    # A chunk declaring more is refused before a byte is stored.
    client.close()


def test_a_chunk_declaring_more_than_the_limit_is_refused_before_it_is_stored(registry_factory):
    server = registry_factory("small-limit", env={"OPENREGISTRY_CHUNK_MIN_LENGTH": "1024",
                                                  "OPENREGISTRY_CHUNK_MAX_LENGTH": "4096"})
    client = OciClient(server.base_url)
    r = client.post("/v2/cfg/small/blobs/uploads/", data=b"")
    location = r.headers["Location"]
    big = client.patch(location, data=os.urandom(4097), headers={"Content-Type": "application/octet-stream"})
    assert big.status_code == 413, big.text[:300]
    assert big.json()["errors"][0] == {
        "code": "SIZE_INVALID", "detail": {"limit": 4096},
        "message": "the body is larger than this registry's chunk limit of 4096 bytes "
                   "(OCI-Chunk-Max-Length); send smaller chunks"}
    status = client.get(location)
    assert status.status_code == 204 and status.headers.get("Range") in (None, "0-0"), dict(status.headers)
    client.close()


def test_a_bad_setting_answers_503_naming_it(registry_factory, work_dir):
    proc, url, log = start_bare_worker(work_dir, {
        "OPENREGISTRY_DATABASE_URL": "postgresql://u:p@ep-x.example.com/db",
        "OPENREGISTRY_SKYNET_PORTAL": "http://127.0.0.1:9",
        "OPENREGISTRY_CHUNK_MAX_LENGTH": "lots",
    })
    try:
        r = requests.get(url + "/v2/", timeout=30)
        assert r.status_code == 503
        assert "OPENREGISTRY_CHUNK_MAX_LENGTH" in r.json()["errors"][0]["message"]
    finally:
        stop(proc, log)


def _downloads_for_second_get(client, portal, repo, digest) -> int:
    assert client.get(f"/v2/{repo}/blobs/{digest}").status_code == 200
    time.sleep(0.5)  # the Cache API write happens after the answer (waitUntil)
    portal.reset_stats()
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    return portal.stats()["downloads"], r.content


@pytest.fixture
def counting_portal(work_dir):
    """A Skynet portal stand-in that counts downloads, for Workers storing there (E2E_R2=off):
    R2 reads cannot be counted from outside."""
    from skynet_portal import SkynetPortal, install_deps
    install_deps()
    portal = SkynetPortal(work_dir / "portal-data", log_path=work_dir / "portal.log").start()
    yield portal
    portal.stop()


@pytest.fixture
def portal_worker(registry_factory, counting_portal):
    def make(env=None):
        return registry_factory("cache", env={**counting_portal.registry_env(), "E2E_R2": "off", **(env or {})})
    return make


def test_immutable_blobs_come_from_the_cache_api_and_a_delete_purges_them(portal_worker, counting_portal, repo):
    client = OciClient(portal_worker().base_url)
    skynet_portal = counting_portal
    data = os.urandom(300_000)
    digest = client.push_blob(repo, data)
    downloads, body = _downloads_for_second_get(client, skynet_portal, repo, digest)
    assert body == data
    assert downloads == 0, "the second GET of an immutable blob went to the portal again"
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    time.sleep(0.5)
    assert client.get(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_the_cache_api_can_be_turned_off(portal_worker, counting_portal):
    skynet_portal = counting_portal
    server = portal_worker({"OPENREGISTRY_EDGE_CACHE": "false"})
    client = OciClient(server.base_url)
    digest = client.push_blob("cfg/nocache", b"x" * 1000)
    downloads, _ = _downloads_for_second_get(client, skynet_portal, "cfg/nocache", digest)
    assert downloads == 1
    client.close()


def test_authentication_at_the_edge_with_a_configured_key(module_registry_factory, skynet_portal):
    """OPENREGISTRY_AUTH with OPENREGISTRY_TOKEN_KEY (the Worker has no data dir to keep a key
    in): users from the native CLI against the same database, Docker's token flow, a push and a
    pull with tokens the Worker signed, and nothing for anonymous callers of a private repository.
    (test_auth.py covers authentication in depth against the native host.)"""
    from authkit import Accounts, AuthRegistryServer, DockerAuthClient, SigningKey, get_token, verify_token

    key = SigningKey.generate()
    server = module_registry_factory("edge-auth", env={"OPENREGISTRY_AUTH": "true",
                                                       "OPENREGISTRY_TOKEN_KEY": key.paserk_secret},
                                     server_class=AuthRegistryServer)
    accounts = Accounts(server, server.workdir / "cli.log")
    accounts.create_user("alice")
    password = accounts.create_token("alice")

    alice = DockerAuthClient(server, "alice", password, "alice/app")
    data = os.urandom(100_000)
    digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    r = alice.request("POST", f"/v2/alice/app/blobs/uploads/?digest={digest}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert verify_token(alice.token, key.public), "the Worker did not sign with the configured key"
    r = alice.request("GET", f"/v2/alice/app/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    alice.close()

    anonymous = get_token(server, ["repository:alice/app:pull"])
    assert anonymous.status_code == 200
    r = requests.get(f"{server.base_url}/v2/alice/app/blobs/{digest}",
                     headers={"Authorization": f"Bearer {anonymous.json()['token']}"}, timeout=30)
    assert r.status_code in (401, 403, 404), r.status_code
    assert r.content != data
