"""The Spin component (E2E_HOST=spin only): settings from Spin variables under the other hosts'
names in lower case, no embedded defaults, chunk limits from configuration, the outbound
allow-list of spin.toml enforced, and memory that does not grow with the bytes streamed.

The shared suite covers the registry's behaviour; this module covers what is Spin's own.
"""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import spin_host
from cloudflare_host import SPIN, wait_gone
from ocihttp import MIB, OciClient, check_error_document, error_codes

pytestmark = pytest.mark.skipif(not SPIN, reason="the Spin component (E2E_HOST=spin)")


def start_bare_component(work_dir: Path, settings: dict[str, str]):
    """The test host with exactly these OPENREGISTRY_* settings (nothing from the fixtures)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OPENREGISTRY_", "SPIN_VARIABLE_"))}
    env = spin_host.variables({**clean, **settings})
    log = open(work_dir / "spin.log", "ab")
    proc = subprocess.Popen(spin_host.command("127.0.0.1:0", work_dir), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=log, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline().decode().strip() if ready else ""
    assert line.startswith("listening on http://127.0.0.1:"), line
    return proc, line[len("listening on "):], log


def stop(proc, log):
    proc.terminate()
    assert proc.wait(20) == 0
    wait_gone(proc.pid)
    proc.stdout.close()
    log.close()


def test_a_missing_required_variable_stops_the_host_as_spin_up_does(work_dir):
    # spin.toml marks the database URL and the blob origin `required`: Spin refuses to start without them.
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OPENREGISTRY_", "SPIN_VARIABLE_"))}
    env = spin_host.variables({**clean, "OPENREGISTRY_SKYNET_PORTAL": "http://127.0.0.1:9"})
    r = subprocess.run(spin_host.command("127.0.0.1:0", work_dir), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0
    assert "openregistry_database_url" in r.stderr


def test_without_auth_or_open_every_request_is_refused_with_an_oci_503(work_dir):
    settings = {
        "OPENREGISTRY_DATABASE_URL": "postgresql://u:p@ep-x.example.com/db",
        "OPENREGISTRY_DATABASE_HTTP_ENDPOINT": "http://127.0.0.1:9/sql",
        "OPENREGISTRY_SKYNET_PORTAL": "http://127.0.0.1:9",
        "OPENREGISTRY_OPEN": "false",
    }
    proc, url, log = start_bare_component(work_dir, settings)
    try:
        for method, path in [("GET", "/v2/"), ("POST", "/v2/a/blobs/uploads/"), ("GET", "/v2/a/tags/list")]:
            r = requests.request(method, url + path, timeout=30)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            check_error_document(method, url + path, r.status_code, r.content)
            assert error_codes(r) == ["UNAVAILABLE"]
            message = r.json()["errors"][0]["message"]
            # Named as an operator sets it on Spin.
            assert "openregistry_auth=true" in message and "openregistry_open=true" in message
    finally:
        stop(proc, log)


# Akamai Functions: request bodies up to 10 MiB, handlers up to 30 s (enforced by the test host).
AKAMAI_LIMITS = "--max-body-bytes 10485760 --handler-timeout-secs 30"


def test_under_akamai_functions_limits_pushes_fit_in_the_advertised_chunks(registry_factory):
    server = registry_factory("chunks", env={"OPENREGISTRY_CHUNK_MIN_LENGTH": "1048576",
                                             "OPENREGISTRY_CHUNK_MAX_LENGTH": "10485760",
                                             "E2E_SPIN_HOST_ARGS": AKAMAI_LIMITS})
    client = OciClient(server.base_url)
    r = client.post("/v2/cfg/limits/blobs/uploads/", data=b"")
    assert r.status_code == 202
    assert r.headers.get("OCI-Chunk-Min-Length") == "1048576"
    assert r.headers.get("OCI-Chunk-Max-Length") == "10485760"
    # A push in 10 MiB chunks (the Akamai body limit) goes through and verifies.
    data = os.urandom(25 * MIB + 3)
    digest = client.push_blob_chunked("cfg/limits", data, [10 * MIB, 10 * MIB, 5 * MIB + 3])
    # (The test host caps request bodies only; on Akamai a blob over 10 MiB is pulled through
    # openregistry_blob_redirect, see README.)
    assert client.blob_sha256_streamed("cfg/limits", digest) == (digest, len(data))
    # A body over the platform's limit never reaches the component: the platform answers 413.
    location = client.start_upload("cfg/limits")
    r = client.request("PATCH", location, data=os.urandom(10 * MIB + 1),
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 413, r.status_code
    client.close()


def test_a_self_hosted_spin_advertises_no_maximum_by_default(client):
    r = client.post("/v2/cfg/default/blobs/uploads/", data=b"")
    assert r.status_code == 202
    assert r.headers.get("OCI-Chunk-Max-Length") is None


def test_a_backend_outside_the_allow_list_is_refused_by_the_host(registry_factory):
    # The database origin in spin.toml's allowed_outbound_hosts no longer matches the gateway.
    server = registry_factory("denied", env={"OPENREGISTRY_DATABASE_ORIGIN": "http://127.0.0.1:9"})
    client = OciClient(server.base_url)
    r = client.request("GET", "/v2/cfg/denied/tags/list", allow_5xx=True)
    assert r.status_code == 503, r.text
    assert error_codes(r) == ["UNAVAILABLE"]
    assert "HttpRequestDenied" in r.json()["errors"][0]["message"]
    client.close()


def process_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_host_memory_stays_flat_while_400_mib_stream_through_the_component(registry_factory):
    server = registry_factory("memory")
    pid = server.proc.pid
    client = OciClient(server.base_url)
    client.push_blob("mem/warm", os.urandom(2 * MIB))
    idle = process_rss_kib(pid)

    peaks: dict[int, int] = {}
    for size_mib in (100, 400):
        hasher = hashlib.sha256()
        block = os.urandom(MIB)

        def body():
            for i in range(size_mib):
                piece = i.to_bytes(4, "big") + block[4:]
                hasher.update(piece)
                yield piece

        samples: list[int] = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append(process_rss_kib(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            location = client.start_upload("mem/stream")
            r = client.patch(location, data=body(), headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.content[:300]
            digest = "sha256:" + hasher.hexdigest()
            r = client.finish_upload(client.location(r), digest)
            assert r.status_code == 201, r.content[:300]
            assert client.blob_sha256_streamed("mem/stream", digest) == (digest, size_mib * MIB)
        finally:
            done.set()
            sampler.join()
        peaks[size_mib] = max(samples)
    client.close()
    numbers = {"idle_mib": idle // 1024, "peak_100_mib": peaks[100] // 1024, "peak_400_mib": peaks[400] // 1024}
    print("\nspin test host memory:", numbers)
    # Four times the bytes may not cost more memory: one 40 MiB Skynet piece in flight, at most.
    assert peaks[400] <= peaks[100] + 48 * 1024, numbers
    assert peaks[400] - idle <= 192 * 1024, numbers
