"""kill -9 never leaves a half-written blob behind, and never loses an acknowledged one.

Each test runs its own registry (own data directory) because it crashes it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse

import pytest
import requests

from ocihttp import MIB, OciClient, assert_error, is_valid_repo_name, iter_file, parse_range, sha256_digest

BIG = 300 * MIB


def write_random_file(path, size) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(MIB, left))
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return "sha256:" + h.hexdigest()


def same_path_on(client: OciClient, old_url: str) -> str:
    """The same request-target on the restarted server (which listens on a new port)."""
    parts = urllib.parse.urlsplit(old_url)
    return client.url(parts.path + (f"?{parts.query}" if parts.query else ""))


@pytest.mark.slow
def test_kill_9_during_a_large_push_leaves_no_partial_blob(registry_factory, work_dir):
    server = registry_factory("crash")
    client = OciClient(server.base_url)
    repo = "crash/big/layer"
    path = work_dir / "big.bin"
    digest = write_random_file(path, BIG)

    # 1. Stream a 300 MiB PATCH and kill -9 the registry when half of it is sent.
    loc = client.start_upload(repo)
    sent = 0

    def body():
        nonlocal sent
        for piece in iter_file(path):
            if sent >= BIG // 2 and server.running():
                server.kill()
            yield piece
            sent += len(piece)

    with pytest.raises(requests.exceptions.ConnectionError):
        client.patch(loc, data=body(), headers={"Content-Type": "application/octet-stream"})
    assert not server.running()
    assert BIG // 2 <= sent < BIG
    client.close()

    # 2. Restart on the same data directory.
    server.restart()
    client = OciClient(server.base_url)

    # 3. Nothing of the interrupted blob is visible.
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")

    r = client.get("/v2/_catalog")
    assert r.status_code == 200
    for name in r.json()["repositories"]:
        assert is_valid_repo_name(name), f"catalog exposes a non-repository: {name!r}"

    r = client.get(f"/v2/{repo}/tags/list")
    if r.status_code == 200:
        assert not r.json().get("tags"), "an interrupted blob push created tags"
    else:
        assert_error(r, 404, "NAME_UNKNOWN")

    # The old session is either gone or (if sessions survive restarts) holds at
    # most what was sent -- never a finished blob.
    r = client.get(same_path_on(client, loc))
    if r.status_code == 204:
        _, end = parse_range(r.headers.get("Range"))
        assert end < sent
    else:
        assert_error(r, 404, ("BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"))

    # 4. The whole push, retried in a new session, succeeds.
    loc = client.start_upload(repo)
    r = client.patch(loc, data=iter_file(path), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.content[:300]
    # On a new connection: after this 300 MiB chunked PATCH the Workers runtime (workerd through
    # mf-serve's front) may close the kept-alive one just as the next request goes out, which
    # HTTP clients retry (Go's does for a PUT without a body); requests does not. Seen with the
    # code before this session's changes too; it is not what this test is about.
    client.session.close()
    r = client.finish_upload(client.location(r), digest)
    assert r.status_code == 201, r.content[:300]
    os.unlink(path)

    h = client.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == BIG
    assert read_back(client, repo, digest) == (digest, BIG)
    client.close()


def read_back(client: OciClient, repo: str, digest: str) -> tuple[str, int]:
    """The stored blob, read whole. Once, on a fresh connection, the read is tried again: in CI the
    Workers runtime's R2 simulation (Miniflare) once sent no byte of this 300 MiB read for two
    minutes right after the push (seen once in many runs, never natively; not what this test is
    about: the blob is complete either way)."""
    try:
        return client.blob_sha256_streamed(repo, digest)
    except requests.exceptions.ConnectionError:
        client.session.close()
        return client.blob_sha256_streamed(repo, digest)


def test_acknowledged_pushes_survive_kill_9(registry_factory):
    server = registry_factory("durable")
    client = OciClient(server.base_url)
    repo = "crash/durable"
    layer = os.urandom(2 * MIB + 3)
    body, manifest_digest = client.push_image(repo, "v1", layers=[layer, b"small"])
    chunked = os.urandom(1_000_001)
    chunked_digest = client.push_blob_chunked(repo, chunked, [500_000, 500_000])
    server.kill()
    client.close()

    server.restart()
    client = OciClient(server.base_url)
    r = client.get_manifest(repo, "v1")
    assert r.status_code == 200 and r.content == body
    assert r.headers["Docker-Content-Digest"] == manifest_digest
    assert client.get_blob(repo, sha256_digest(layer)) == layer
    assert client.get_blob(repo, chunked_digest) == chunked
    client.close()
