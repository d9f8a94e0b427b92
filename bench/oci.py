"""OCI Distribution operations on top of httpc: blob pushes (monolithic, chunked, streamed),
verified pulls, manifest and tag operations."""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Optional

from httpc import Chunked, Connection, FileSlice, HttpError, Response, location_target, with_query

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCTET = "application/octet-stream"


class OciError(RuntimeError):
    pass


def expect(r: Response, *statuses: int, what: str) -> Response:
    if r.status not in statuses:
        raise OciError(f"{what}: HTTP {r.status} {r.reason}: {r.body[:500]!r}")
    return r


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start_upload(c: Connection, repo: str) -> str:
    r = expect(c.request("POST", f"/v2/{repo}/blobs/uploads/"), 202, what="POST upload")
    return location_target(r.header("location") or "")


def push_monolithic(c: Connection, repo: str, path: str, size: int, digest: str) -> Response:
    """POST, then PUT ?digest= with the whole blob as the body (the spec's monolithic push)."""
    loc = start_upload(c, repo)
    r = c.request("PUT", with_query(loc, digest=digest), {"Content-Type": OCTET},
                  FileSlice(path, 0, size))
    return expect(r, 201, what="PUT monolithic")


def push_chunked(c: Connection, repo: str, path: str, size: int, digest: str, chunk: int) -> Response:
    """POST, one PATCH per chunk with Content-Range, then an empty PUT ?digest=."""
    loc = start_upload(c, repo)
    offset = 0
    while offset < size:
        n = min(chunk, size - offset)
        r = c.request("PATCH", loc, {
            "Content-Type": OCTET,
            "Content-Range": f"{offset}-{offset + n - 1}",
        }, FileSlice(path, offset, n))
        expect(r, 202, what=f"PATCH chunk at {offset}")
        loc = location_target(r.header("location") or "")
        offset += n
    r = c.request("PUT", with_query(loc, digest=digest))
    return expect(r, 201, what="PUT closing a chunked upload")


def push_streamed(c: Connection, repo: str, pieces: Iterable[FileSlice], digest: str) -> Response:
    """POST, one PATCH with a chunked transfer encoding (no length), then an empty PUT."""
    loc = start_upload(c, repo)
    r = c.request("PATCH", loc, {"Content-Type": OCTET}, Chunked(pieces))
    expect(r, 202, what="streamed PATCH")
    loc = location_target(r.header("location") or "")
    return expect(c.request("PUT", with_query(loc, digest=digest)), 201, what="PUT after stream")


def push_bytes(c: Connection, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    loc = start_upload(c, repo)
    expect(c.request("PUT", with_query(loc, digest=digest), {"Content-Type": OCTET}, data),
           201, what="PUT small blob")
    return digest


def pull_verified(c: Connection, repo: str, digest: str, size: int) -> int:
    """GETs a blob, hashing it on the fly; raises unless size and sha256 match."""
    h = hashlib.sha256()
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}", sink=h.update)
    return check_download(r, h, digest, size, what=f"GET blob {digest[:19]}")


def get_verified(c: Connection, target: str, digest: str, size: int) -> int:
    h = hashlib.sha256()
    r = c.request("GET", target, sink=h.update)
    return check_download(r, h, digest, size, what=f"GET {target}")


def check_download(r: Response, h, digest: str, size: int, what: str) -> int:
    expect(r, 200, what=what)
    if r.body_len != size:
        raise OciError(f"{what}: {r.body_len} bytes, expected {size}")
    got = "sha256:" + h.hexdigest()
    if got != digest:
        raise OciError(f"{what}: content hashes to {got}, expected {digest}")
    return r.body_len


def image_manifest(config: bytes, layers: list[tuple[str, int]]) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
    }, separators=(",", ":")).encode()


def put_manifest(c: Connection, repo: str, reference: str, manifest: bytes,
                 media_type: str = OCI_MANIFEST) -> Response:
    r = c.request("PUT", f"/v2/{repo}/manifests/{reference}", {"Content-Type": media_type}, manifest)
    return expect(r, 201, what=f"PUT manifest {reference}")


def small_image(c: Connection, repo: str, tag: str, seed: str = "bench") -> bytes:
    """Pushes a config and a small layer, then a manifest tagged `tag`; returns the manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "bench": seed,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = hashlib.sha256(seed.encode()).digest() * 64
    push_bytes(c, repo, config)
    layer_digest = push_bytes(c, repo, layer)
    manifest = image_manifest(config, [(layer_digest, len(layer))])
    put_manifest(c, repo, tag, manifest)
    return manifest


def list_tags_walk(c: Connection, repo: str, n: Optional[int], max_pages: int = 100_000):
    """Follows Link headers from /v2/<repo>/tags/list[?n=]. Returns (tags, per-request seconds)."""
    import time

    target = f"/v2/{repo}/tags/list" + (f"?n={n}" if n else "")
    tags: list[str] = []
    times: list[float] = []
    for _ in range(max_pages):
        t0 = time.perf_counter()
        r = c.request("GET", target)
        times.append(time.perf_counter() - t0)
        expect(r, 200, what=f"GET {target}")
        tags.extend(json.loads(r.body).get("tags") or [])
        link = r.header("link")
        if not link:
            return tags, times
        target = location_target(link.split(";")[0].strip().strip("<>"))
    raise HttpError(f"more than {max_pages} pages")
