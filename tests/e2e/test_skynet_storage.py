"""Blobs on Skynet (E2E_STORAGE=skynet): the portal stand-in's 40 MiB TUS rule against OCI chunks
of any size, one skylink per blob, concurrent pushes, and faults on the portal's side.

Every push here is verified by pulling the blob back and hashing it: a fault may cost a retry,
never a corrupt or partial blob.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import requests

from ocihttp import MIB, patterned_blob as blob, OciClient, assert_error, sha256_digest, uploaded_size
from skynet_portal import API_KEY
from stored import locator_of

pytestmark = pytest.mark.openregistry_only

PIECE = 40 * MIB  # Skynet's TUS alignment


@pytest.fixture
def portal(skynet_portal):
    if skynet_portal is None:
        pytest.skip("blobs are in the registry's data directory (set E2E_STORAGE=skynet)")
    return skynet_portal


def pulled_digest(client: OciClient, repo: str, digest: str) -> str:
    return client.blob_sha256_streamed(repo, digest)[0]


def test_a_large_blob_is_stored_as_one_skylink(portal, registry, neon_backend, client, repo):
    data = blob(100 * MIB + 123, 1)
    portal.reset_stats()
    digest = client.push_blob_in_chunks(repo, data, 7 * MIB)
    stats = portal.stats()
    assert stats["concatenations"] == 1, stats
    assert stats["tusCreates"] == 3, stats  # two whole pieces and the tail
    link = locator_of(registry, neon_backend, digest)
    assert len(link) == 46, link
    assert pulled_digest(client, repo, digest) == digest


def test_a_blob_smaller_than_a_piece_is_one_skyfile(portal, client, repo):
    portal.reset_stats()
    data = blob(3 * MIB, 2)
    digest = client.push_blob_in_chunks(repo, data, MIB)
    assert portal.stats()["skyfileUploads"] == 1
    assert client.get_blob(repo, digest) == data


@pytest.mark.parametrize("chunk", [1, 4 * MIB, PIECE + 1], ids=["1B", "4MiB", "40MiB+1"])
def test_chunks_of_any_size_are_cut_into_aligned_pieces(portal, client, repo, chunk):
    size = 40 if chunk == 1 else 2 * PIECE + 5 * MIB + 7
    data = blob(size, chunk % 97)
    digest = client.push_blob_in_chunks(repo, data, chunk)
    assert pulled_digest(client, repo, digest) == digest


def test_a_streamed_patch_without_length_is_cut_into_pieces(portal, client, repo):
    data = blob(PIECE * 2 + 3, 5)
    digest = sha256_digest(data)
    location = client.start_upload(repo)

    def body():
        for i in range(0, len(data), MIB):
            yield data[i:i + MIB]

    r = client.patch(location, data=body(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert uploaded_size(r.headers["Range"]) == len(data)
    r = client.finish_upload(client.location(r), digest)
    assert r.status_code == 201, r.text
    assert pulled_digest(client, repo, digest) == digest


def test_concurrent_pushes_of_the_same_layer_all_succeed(portal, registry, repo):
    data = blob(PIECE + 9 * MIB, 6)
    digest = sha256_digest(data)
    barrier = threading.Barrier(3)

    def push(i: int) -> str:
        client = OciClient(registry.base_url)
        barrier.wait()
        return client.push_blob_in_chunks(f"{repo}/c{i}", data, 16 * MIB)

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(push, range(3))) == [digest] * 3
    client = OciClient(registry.base_url)
    for i in range(3):
        assert pulled_digest(client, f"{repo}/c{i}", digest) == digest


def test_a_failed_portal_patch_is_retried_by_the_registry(portal, client, repo):
    data = blob(PIECE + 3 * MIB, 7)
    portal.faults(fail_patch=1)
    digest = client.push_blob_in_chunks(repo, data, PIECE + 3 * MIB)
    assert pulled_digest(client, repo, digest) == digest


def test_a_connection_dropped_mid_piece_is_resumed_by_the_registry(portal, client, repo):
    data = blob(PIECE + 2 * MIB, 8)
    portal.faults(drop_patch=1, after_bytes=10 * MIB)
    digest = client.push_blob_in_chunks(repo, data, len(data))
    assert pulled_digest(client, repo, digest) == digest


def test_a_portal_that_is_down_gives_a_retryable_503_and_the_client_retry_completes(portal, client, repo):
    data = blob(PIECE + 20 * MIB, 9)
    digest = sha256_digest(data)
    location = client.start_upload(repo)
    first = 30 * MIB
    r = client.patch_chunk(location, data[:first], 0)  # stays in the session store: no portal call
    assert r.status_code == 202, r.text
    location = client.location(r)
    portal.stop()
    try:
        r = client.request("PATCH", location, data=data[first:], allow_5xx=True, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{first}-{len(data) - 1}",
        })
        assert_error(r, 503, "UNAVAILABLE")
        assert r.headers.get("Retry-After")
    finally:
        portal.start()
    # The client asks where the upload stands and sends the rest again.
    status = client.upload_status(location)
    assert status.status_code == 204
    assert uploaded_size(status.headers["Range"]) == first
    r = client.patch_chunk(client.location(status), data[first:], first)
    assert r.status_code == 202, r.text
    r = client.finish_upload(client.location(r), digest)
    assert r.status_code == 201, r.text
    assert pulled_digest(client, repo, digest) == digest


def test_a_slow_portal_gives_a_503_and_the_retried_put_completes(portal, registry_factory, repo):
    server = registry_factory("slow-portal", env={"OPENREGISTRY_SKYNET_TIMEOUT_MS": "1000"})
    client = OciClient(server.base_url)
    data = blob(2 * MIB, 10)
    digest = sha256_digest(data)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    location = client.location(r)
    portal.faults(delay_ms=3000)
    try:
        r = client.request("PUT", f"{location}?digest={digest}", allow_5xx=True,
                           headers={"Content-Length": "0"})
        assert_error(r, 503, "UNAVAILABLE")
        assert not client.blob_exists(repo, digest)
    finally:
        portal.faults()
    r = client.finish_upload(location, digest)
    assert r.status_code == 201, r.text
    assert client.get_blob(repo, digest) == data


def test_blob_downloads_can_redirect_to_the_portal(portal, registry_factory, repo):
    server = registry_factory("redirect", env={"OPENREGISTRY_BLOB_REDIRECT": "true"})
    client = OciClient(server.base_url)
    data = blob(MIB, 11)
    digest = client.push_blob(repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 307
    assert r.headers["Location"].startswith(portal.url)
    assert r.headers["Docker-Content-Digest"] == digest
    # The stand-in requires the key even for downloads; portals serving public downloads don't.
    download = requests.get(r.headers["Location"], headers={"Skynet-Api-Key": API_KEY}, timeout=30)
    assert download.status_code == 200 and download.content == data
