"""The registry checks every digest it is given against the bytes it received."""

from __future__ import annotations

import os

import pytest

from ocihttp import assert_error, sha256_digest, sha512_digest, with_query


def assert_absent(client, repo, *digests):
    for digest in digests:
        r = client.head(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 404, f"{digest} is present after a failed upload"


def test_monolithic_put_with_wrong_digest_is_digest_invalid(client, repo):
    data = os.urandom(1000)
    wrong = sha256_digest(b"something else")
    loc = client.start_upload(repo)
    r = client.finish_upload(loc, wrong, data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert_absent(client, repo, wrong, sha256_digest(data))


def test_chunked_upload_closed_with_wrong_digest_is_digest_invalid(client, repo):
    data = os.urandom(3000)
    loc = client.start_upload(repo)
    for start in (0, 1000, 2000):
        r = client.patch_chunk(loc, data[start:start + 1000], start)
        assert r.status_code == 202
        loc = client.location(r)
    wrong = sha256_digest(data[:-1])
    assert_error(client.finish_upload(loc, wrong), 400, "DIGEST_INVALID")
    assert_absent(client, repo, wrong, sha256_digest(data))


def test_digest_of_a_truncated_upload_does_not_match(client, repo):
    """Claiming the digest of the full blob after sending only part of it fails."""
    data = os.urandom(5000)
    loc = client.start_upload(repo)
    r = client.patch_chunk(loc, data[:4000], 0)
    assert r.status_code == 202
    assert_error(client.finish_upload(client.location(r), sha256_digest(data)), 400, "DIGEST_INVALID")
    assert_absent(client, repo, sha256_digest(data), sha256_digest(data[:4000]))


@pytest.mark.openregistry_only(reason="Distribution 2.8 does not implement single-POST uploads")
def test_single_post_with_wrong_digest_is_digest_invalid(client, repo):
    data = os.urandom(777)
    wrong = sha256_digest(b"not this")
    r = client.post(with_query(f"/v2/{repo}/blobs/uploads/", digest=wrong), data=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "DIGEST_INVALID")
    assert_absent(client, repo, wrong, sha256_digest(data))


def test_sha512_monolithic_and_chunked_uploads(client, repo):
    """(Distribution 2.8 verifies sha512 blob digests too, so this runs against both.)"""
    data = os.urandom(100_000)
    digest = sha512_digest(data)
    assert len(digest) == len("sha512:") + 128

    loc = client.start_upload(repo)
    r = client.finish_upload(loc, digest, data)
    assert r.status_code == 201, r.content[:300]
    h = client.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    assert client.get_blob(repo, digest) == data

    other = os.urandom(70_001)
    loc = client.start_upload(repo)
    for start in range(0, len(other), 30_000):
        r = client.patch_chunk(loc, other[start:start + 30_000], start)
        assert r.status_code == 202
        loc = client.location(r)
    r = client.finish_upload(loc, sha512_digest(other))
    assert r.status_code == 201, r.content[:300]
    assert client.get_blob(repo, sha512_digest(other)) == other


def test_sha512_upload_with_wrong_digest_is_digest_invalid(client, repo):
    data = os.urandom(4096)
    wrong = sha512_digest(data + b"!")
    loc = client.start_upload(repo)
    assert_error(client.finish_upload(loc, wrong, data), 400, "DIGEST_INVALID")
    assert_absent(client, repo, wrong, sha512_digest(data), sha256_digest(data))
