"""Metadata in PostgreSQL over Neon's SQL-over-HTTP protocol (run with E2E_METADATA=neon).

What the embedded-SQLite runs cannot show: how many HTTP round trips each registry operation
costs, that concurrent pushes end consistent with no leaked constraint errors, that hostile text
is stored verbatim, and that a slow or absent database gives a prompt 503 and loses nothing.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ocihttp import OCI_MANIFEST, OciClient, assert_error, sha256_digest

pytestmark = pytest.mark.openregistry_only


@pytest.fixture
def gateway(neon_gateway):
    if neon_gateway is None:
        pytest.skip("metadata is in the embedded SQLite (set E2E_METADATA=neon)")
    return neon_gateway


def database_of(server) -> str:
    return server.env["OPENREGISTRY_DATABASE_URL"].rsplit("/", 1)[1]


def round_trips(gateway, operation) -> int:
    """How many POST /sql the gateway handled while `operation` ran."""
    gateway.reset_stats()
    operation()
    return gateway.stats()["requests"]


def test_each_read_is_one_round_trip_and_a_manifest_push_is_a_check_plus_one_batch(gateway, client, repo):
    body, digest = client.push_image(repo, "v1", layers=[b"layer-a", b"layer-b"])
    layer = sha256_digest(b"layer-a")

    assert round_trips(gateway, lambda: client.get_manifest(repo, "v1")) == 1
    assert round_trips(gateway, lambda: client.get_manifest(repo, digest, method="HEAD")) == 1
    assert round_trips(gateway, lambda: client.head(f"/v2/{repo}/blobs/{layer}")) == 1
    assert round_trips(gateway, lambda: client.get(f"/v2/{repo}/tags/list?n=10")) == 1
    assert round_trips(gateway, lambda: client.get("/v2/_catalog?n=10")) == 1
    assert round_trips(gateway, lambda: client.get(f"/v2/{repo}/referrers/{digest}")) == 1

    def push_manifest_with_two_tags():
        r = client.put_manifest(repo, f"{digest}?tag=v2&tag=v3", body)
        assert r.status_code == 201, r.text

    # One read verifies the referenced blobs; one batch writes manifest, tags and referrer data.
    assert round_trips(gateway, push_manifest_with_two_tags) == 2


def test_two_clients_pushing_the_same_tag_end_in_one_consistent_state(gateway, registry, repo):
    clients = [OciClient(registry.base_url) for _ in range(2)]
    pushed: dict[int, str] = {}
    for i, c in enumerate(clients):
        pushed[i] = c.push_image(repo, None, layers=[f"layer-{i}".encode()])[1]
    bodies = {}
    for i, c in enumerate(clients):
        bodies[i] = c.get_manifest(repo, pushed[i]).content

    barrier = threading.Barrier(2)

    def push(i: int):
        barrier.wait()
        statuses = []
        for _ in range(10):
            statuses.append(clients[i].put_manifest(repo, "contended", bodies[i]).status_code)
        return statuses

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(push, range(2)))
    assert all(s == 201 for statuses in results for s in statuses), results
    final = clients[0].get_manifest(repo, "contended")
    assert final.status_code == 200
    assert final.headers["Docker-Content-Digest"] in pushed.values()
    rows = gateway.query(database_of(registry), "SELECT count(*) FROM tags WHERE repository = $1 AND name = $2",
                         [repo, "contended"])
    assert rows == [["1"]]


def test_concurrent_commits_of_one_blob_leave_one_record(gateway, registry, repo):
    data = b"the same bytes, pushed by four clients at once"
    digest = sha256_digest(data)
    clients = [OciClient(registry.base_url) for _ in range(4)]
    barrier = threading.Barrier(4)

    def push(i: int) -> int:
        target = f"{repo}/copy{i % 2}"
        location = clients[i].start_upload(target)
        barrier.wait()
        return clients[i].finish_upload(location, digest, data).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(push, range(4))) == [201] * 4
    rows = gateway.query(database_of(registry), "SELECT count(*) FROM blobs WHERE digest = $1", [digest])
    assert rows == [["1"]]
    links = gateway.query(database_of(registry),
                          "SELECT repository FROM repository_blobs WHERE digest = $1 ORDER BY repository", [digest])
    assert links == [[f"{repo}/copy0"], [f"{repo}/copy1"]]


def test_hostile_text_in_annotations_is_stored_and_returned_verbatim(gateway, registry, client, repo):
    _, subject = client.push_image(repo, "base")
    hostile = {
        "quote": "'; DROP TABLE manifests; --",
        "dollar": "$1 $$ $body$ \\x00ff",
        "unicode": "ünïcødé \u2028 \"quoted\" \\ backslash",
    }
    config = b"{}"
    config_digest = client.push_blob(repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.hostile",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(client.get_manifest(repo, "base").content)},
        "annotations": hostile,
    }
    body = json.dumps(manifest).encode()
    r = client.put_manifest(repo, sha256_digest(body), body)
    assert r.status_code == 201, r.text
    referrers = client.get(f"/v2/{repo}/referrers/{subject}").json()["manifests"]
    assert [m["annotations"] for m in referrers] == [hostile]
    assert client.get_manifest(repo, sha256_digest(body)).content == body
    rows = gateway.query(database_of(registry),
                         "SELECT annotations FROM manifests WHERE repository = $1 AND digest = $2",
                         [repo, sha256_digest(body)])
    assert json.loads(rows[0][0]) == hostile


def test_a_database_that_is_down_gives_a_prompt_503_and_loses_nothing(gateway, registry_factory, repo):
    server = registry_factory("db-down", env={"OPENREGISTRY_DATABASE_TIMEOUT_MS": "2000"})
    client = OciClient(server.base_url)
    body, digest = client.push_image(repo, "kept")
    gateway.stop()
    try:
        started = time.monotonic()
        r = client.request("GET", f"/v2/{repo}/manifests/kept", allow_5xx=True)
        elapsed = time.monotonic() - started
        assert_error(r, 503, "UNAVAILABLE")
        assert r.headers.get("Retry-After")
        assert elapsed < 5, f"503 took {elapsed:.1f}s"
        r = client.request("PUT", f"/v2/{repo}/manifests/other", data=body,
                           headers={"Content-Type": OCI_MANIFEST}, allow_5xx=True)
        assert_error(r, 503, "UNAVAILABLE")
    finally:
        gateway.start()
    r = client.get_manifest(repo, "kept")
    assert r.status_code == 200 and r.content == body
    assert r.headers["Docker-Content-Digest"] == digest


def test_a_slow_database_gives_a_503_within_the_timeout_not_a_hang(gateway, registry_factory, repo):
    server = registry_factory("db-slow", env={"OPENREGISTRY_DATABASE_TIMEOUT_MS": "1000"})
    client = OciClient(server.base_url)
    body, _ = client.push_image(repo, "kept")
    gateway.set_delay(4000)
    try:
        started = time.monotonic()
        r = client.request("GET", f"/v2/{repo}/manifests/kept", allow_5xx=True)
        elapsed = time.monotonic() - started
        assert_error(r, 503, "UNAVAILABLE")
        # One attempt and one retry of a read, each cut off at the timeout.
        assert elapsed < 3.5, f"503 took {elapsed:.1f}s"
    finally:
        gateway.set_delay(0)
    assert client.get_manifest(repo, "kept").content == body
