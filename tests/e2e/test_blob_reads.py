"""Reading and deleting blobs: HEAD, GET, range requests, DELETE."""

from __future__ import annotations

import os
import re

import pytest

from ocihttp import assert_error, sha256_digest


def test_head_and_get_of_a_blob(client, repo):
    data = os.urandom(4321)
    digest = client.push_blob(repo, data)

    h = client.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers.get("Docker-Content-Digest") == digest
    assert h.content == b""

    g = client.get(f"/v2/{repo}/blobs/{digest}")
    assert g.status_code == 200
    assert g.content == data
    assert g.headers.get("Docker-Content-Digest") == digest


def test_unknown_blob_is_404_blob_unknown(client, repo):
    client.push_blob(repo, b"something so that the repository exists")
    missing = sha256_digest(b"never uploaded")
    assert client.head(f"/v2/{repo}/blobs/{missing}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")


def test_blob_is_only_visible_in_the_repository_it_was_pushed_to(client, repo):
    digest = client.push_blob(f"{repo}/one", os.urandom(100))
    client.push_blob(f"{repo}/two", b"other")
    assert client.head(f"/v2/{repo}/two/blobs/{digest}").status_code == 404


def test_get_with_range_returns_206_partial_content(client, repo):
    data = os.urandom(1000)
    digest = client.push_blob(repo, data)

    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206
    assert r.headers.get("Content-Range") == f"bytes 0-9/{len(data)}"
    assert int(r.headers["Content-Length"]) == 10
    assert r.content == data[:10]

    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=990-"})
    assert r.status_code == 206
    assert r.headers.get("Content-Range") == f"bytes 990-999/{len(data)}"
    assert r.content == data[990:]

    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206
    assert r.content == data[-5:]

    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=500-5000"})
    assert r.status_code == 206, "a range running past the end is clipped, not refused"
    assert r.headers.get("Content-Range") == f"bytes 500-999/{len(data)}"
    assert r.content == data[500:]


def test_head_with_range(client, repo):
    """RFC 9110 defines Range for GET only, so a HEAD may ignore it (200, full
    length) or mirror the GET (206 with Content-Range); either way the headers
    must be consistent and there is no body."""
    data = os.urandom(1000)
    digest = client.push_blob(repo, data)
    r = client.head(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-9"})
    assert r.status_code in (200, 206)
    assert r.content == b""
    if r.status_code == 206:
        assert r.headers.get("Content-Range") == f"bytes 0-9/{len(data)}"
        assert int(r.headers["Content-Length"]) == 10
    else:
        assert int(r.headers["Content-Length"]) == len(data)


def test_unsatisfiable_range_is_416(client, repo):
    data = os.urandom(100)
    digest = client.push_blob(repo, data)
    # Only the status line and headers are read here; the body is checked below.
    with client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=100-200"}, stream=True) as r:
        assert r.status_code == 416
        content_range = r.headers.get("Content-Range")
        if content_range is not None:  # RFC 9110: SHOULD be "bytes */<length>"
            assert re.fullmatch(r"bytes \*/100", content_range), content_range


@pytest.mark.openregistry_only(
    reason="Distribution 2.8 answers this 416 with the blob's Content-Length (100) but a 33-byte "
           "body, so the HTTP message is malformed")
def test_416_for_a_blob_range_is_a_well_formed_http_response(client, repo):
    digest = client.push_blob(repo, os.urandom(100))
    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=100-200"})
    assert r.status_code == 416
    if "Content-Length" in r.headers:
        assert int(r.headers["Content-Length"]) == len(r.content)
    # the connection is still usable afterwards
    assert client.get_blob(repo, digest)


def test_delete_blob(client, repo):
    data = os.urandom(256)
    digest = client.push_blob(repo, data)

    r = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202, r.content[:300]

    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")

    # it can be uploaded again
    client.push_blob(repo, data)
    assert client.get_blob(repo, digest) == data
