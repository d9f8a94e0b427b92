"""Blobs in the Worker's R2 binding (E2E_HOST=cloudflare: Miniflare's R2, no storage server):
OCI chunks of any size become R2 multipart parts of 8 MiB, read back byte-exact, ranges across
part boundaries included, and cancelled or refused uploads leave no blob behind.
"""

from __future__ import annotations

import hashlib
import time
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import cloudflare_host
from ocihttp import MIB, OciClient, assert_error, sha256_digest
from ocihttp import patterned_blob as blob

pytestmark = pytest.mark.skipif(not cloudflare_host.CLOUDFLARE, reason="the R2 binding is the Worker's")

PART = 8 * MIB


@pytest.mark.parametrize("size,chunk", [(40, 1), (2 * PART + 3 * MIB + 5, 4 * MIB),
                                        (2 * PART + 11, 5 * MIB + 1), (20 * MIB + 3, 3 * MIB)],
                         ids=["1B", "4MiB", "5MiB+1", "unaligned"])
def test_chunks_of_any_size_round_trip_byte_exact(client, repo, size, chunk):
    data = blob(size, chunk % 97)
    digest = client.push_blob_in_chunks(repo, data, chunk)
    assert client.get_blob(repo, digest) == data


def test_ranges_across_part_boundaries_are_byte_exact(client, repo):
    data = blob(2 * PART + 3 * MIB, 7)
    digest = client.push_blob_in_chunks(repo, data, 3 * MIB)
    for start, end in [(0, 0), (PART - 5, PART + 5), (2 * PART - 1, len(data) - 1)]:
        r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"})
        assert r.status_code == 206, r.text
        assert r.content == data[start:end + 1], (start, end)


def test_a_cancelled_multipart_upload_leaves_no_blob(client, repo):
    data = blob(2 * PART + MIB, 9)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    location = client.location(r)
    r = client.delete(location)
    assert r.status_code == 204, r.text
    assert not client.blob_exists(repo, sha256_digest(data))
    assert_error(client.upload_status(location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_a_bad_digest_keeps_nothing_and_a_sha512_upload_is_verified(client, repo):
    data = blob(PART + 5, 10)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    r = client.finish_upload(client.location(r), sha256_digest(b"something else"))
    assert_error(r, 400, "DIGEST_INVALID")
    assert not client.blob_exists(repo, sha256_digest(data))
    sha512 = "sha512:" + hashlib.sha512(data).hexdigest()
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    r = client.finish_upload(client.location(r), sha512)
    assert r.status_code == 201, r.text
    assert client.get_blob(repo, sha512) == data


def r2_object_keys(server) -> list[str]:
    """The keys in Miniflare's R2 simulation of the bucket (its SQLite index under --persist)."""
    import sqlite3
    keys: list[str] = []
    for db in sorted((server.data_dir / "r2").rglob("*.sqlite")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "_mf_objects" in tables:
                keys += [row[0] for row in con.execute("SELECT key FROM _mf_objects")]
        finally:
            con.close()
    return sorted(keys)


def test_concurrent_pushes_of_one_blob_leave_one_object(registry_factory, repo):
    # R2 keeps each multi-part upload's object (a blob's bytes are only whole at the end); the
    # pushes that lose the race to commit delete their copy.
    server = registry_factory("r2-once")
    data = blob(2 * PART + 3, 12)
    digest = sha256_digest(data)
    pushers = 4
    all_sent = threading.Barrier(pushers)

    def push(i: int) -> int:
        client = OciClient(server.base_url)
        location = client.start_upload(f"{repo}-{i}")
        r = client.patch_chunk(location, data, 0)
        assert r.status_code == 202, r.text
        all_sent.wait(timeout=60)  # every upload holds the whole blob; now all finish at once
        return client.finish_upload(client.location(r), digest).status_code

    with ThreadPoolExecutor(pushers) as pool:
        assert list(pool.map(push, range(pushers))) == [201] * pushers
    keys = [k for k in r2_object_keys(server) if k.startswith(("uploads/", "blobs/"))]
    assert len(keys) == 1, keys
    for i in range(pushers):
        assert OciClient(server.base_url).get_blob(f"{repo}-{i}", digest) == data


def test_the_cron_trigger_aborts_the_multipart_uploads_of_expired_sessions(registry_factory, shared_storage, repo):
    # The Worker on S3 over fetch() (E2E_R2=off): uploads nobody comes back to are swept by the
    # scheduled handler. 60 s is the shortest lifetime Workers KV allows.
    storage = shared_storage.registry_env()
    bucket = storage["OPENREGISTRY_S3_BUCKET"]
    server = registry_factory("cron-sweep", env={"E2E_R2": "off", "OPENREGISTRY_UPLOAD_TTL_SECONDS": "60", **storage})
    client = OciClient(server.base_url)
    r = client.patch_chunk(client.start_upload(repo), blob(PART + 1, 19), 0)
    assert r.status_code == 202, r.text
    started = time.monotonic()

    def fire() -> None:
        answer = client.get("/cdn-cgi/handler/scheduled")
        assert answer.status_code == 200, answer.text

    assert len(shared_storage.multipart_uploads(bucket)) == 1
    fire()  # a young upload stays
    assert len(shared_storage.multipart_uploads(bucket)) == 1
    time.sleep(max(0.0, 62 - (time.monotonic() - started)))
    fire()
    assert shared_storage.multipart_uploads(bucket) == []
    assert "aborted expired multipart uploads: 1" in server.log_tail()
