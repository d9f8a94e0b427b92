"""Raw-HTTP helpers for the OCI Distribution Spec v1.1 API.

Everything here talks to the registry directly (``requests`` for ordinary
calls, ``http.client`` / raw sockets where a client library would "fix" the
request for us: dot segments in paths, truncated bodies).

Conventions used throughout the suite:

* Upload ``Location`` headers may be relative or absolute and may carry query
  parameters; :meth:`OciClient.location` always resolves the *latest* one and
  :func:`with_query` appends parameters with ``&`` when a ``?`` is present.
* Every response that goes through :class:`OciClient` is checked: a 5xx answer
  fails the test immediately (the registry must never answer 500 to anything
  this suite sends), and a JSON error body must use the spec's error codes.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])

EMPTY_JSON = b"{}"

# The spec's "Error Codes" table (the `code` of an error MUST be one of these;
# the spec also mentions the legacy TAG_INVALID and MANIFEST_UNVERIFIED).
SPEC_ERROR_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED",
    "TOOMANYREQUESTS",
}

LEGACY_ERROR_CODES = {"TAG_INVALID", "MANIFEST_UNVERIFIED"}

MIB = 1024 * 1024


# --------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------

def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def patterned_blob(size: int, seed: int) -> bytes:
    """Deterministic bytes of `size` that differ in every MiB (built fast: whole blocks of a
    seeded SHA-256, the first byte of each MiB its index)."""
    block = hashlib.sha256(seed.to_bytes(8, "little")).digest() * (MIB // 32)
    whole, rest = divmod(size, MIB)
    out = bytearray()
    for i in range(whole):
        out += bytes([i % 251]) + block[1:]
    out += block[:rest]
    return bytes(out)


def sha512_digest(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def file_digest(path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(MIB), b""):
            h.update(piece)
    return f"{algorithm}:{h.hexdigest()}"


def iter_file(path, chunk: int = MIB, start: int = 0, length: Optional[int] = None) -> Iterator[bytes]:
    """Yield a file (or a slice of it) in pieces; used as a streamed request body."""
    remaining = length
    with open(path, "rb") as f:
        f.seek(start)
        while remaining is None or remaining > 0:
            n = chunk if remaining is None else min(chunk, remaining)
            piece = f.read(n)
            if not piece:
                break
            if remaining is not None:
                remaining -= len(piece)
            yield piece


# --------------------------------------------------------------------------
# URL / header helpers
# --------------------------------------------------------------------------

def with_query(url: str, **params: str) -> str:
    """Append query parameters to an (opaque) URL without touching what is there.

    The existing query (e.g. Distribution's signed ``_state`` token) is kept
    byte for byte; new parameters are joined with ``&`` if a ``?`` already
    exists, ``?`` otherwise.
    """
    extra = "&".join(
        f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(str(v), safe=':')}"
        for k, v in params.items()
    )
    if not extra:
        return url
    base, sep, frag = url.partition("#")
    joiner = "&" if "?" in base else "?"
    if base.endswith("?") or base.endswith("&"):
        joiner = ""
    return base + joiner + extra + (sep + frag if sep else "")


def parse_range(value: Optional[str]) -> tuple[int, int]:
    """Parse an upload-progress ``Range`` header (``0-N``, tolerating ``bytes=0-N``)."""
    assert value is not None, "response has no Range header"
    m = re.fullmatch(r"\s*(?:bytes=)?(\d+)-(\d+)\s*", value)
    assert m, f"malformed Range header: {value!r}"
    return int(m.group(1)), int(m.group(2))


def uploaded_size(value: Optional[str]) -> int:
    """Number of bytes an upload session holds according to its ``Range`` header."""
    start, end = parse_range(value)
    assert start == 0, f"upload Range must start at 0: {value!r}"
    return end + 1


def next_link(resp: requests.Response) -> Optional[str]:
    """The RFC 5988 ``rel="next"`` target of a ``Link`` header, or None."""
    value = resp.headers.get("Link")
    if not value:
        return None
    for part in value.split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if not m:
            continue
        params = m.group(2)
        if re.search(r'rel\s*=\s*"?next"?', params):
            return m.group(1)
    return None


def error_codes(resp) -> list[str]:
    """The OCI ``errors[].code`` list, or, for the account API (``/api/``), its one
    ``error.code`` (``{"error": {"code", "message"}}``)."""
    body = resp.content if hasattr(resp, "content") else resp.body
    try:
        doc = json.loads(body)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"error body is not JSON ({exc}): {body[:500]!r}")
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), (
            f"malformed API error {doc!r}")
        return [err["code"]]
    assert isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"], (
        f"error body lacks a non-empty 'errors' list: {doc!r}"
    )
    for err in doc["errors"]:
        assert isinstance(err, dict) and isinstance(err.get("code"), str), f"malformed error entry {err!r}"
    return [e["code"] for e in doc["errors"]]


def check_error_document(method: str, url: str, status: int, body: bytes) -> None:
    """Spec: a 4xx body MAY be in any format, but if it is JSON it MUST be
    {"errors": [{"code": ...}]} with every code taken from the spec's table
    (the legacy TAG_INVALID / MANIFEST_UNVERIFIED are tolerated)."""
    # The spec's rule is about 4XX answers; a 503 (database or storage down) is outside it.
    if not 400 <= status < 500 or not body.strip().startswith(b"{"):
        return
    # The account API is not the distribution API: it answers {"error": {"code", "message"}}.
    path = urllib.parse.urlsplit(url).path
    if path == "/api" or path.startswith("/api/"):
        error_codes_of_api(url, status, body)
        return
    try:
        doc = json.loads(body)
    except ValueError:
        return
    errors = doc.get("errors") if isinstance(doc, dict) else None
    assert isinstance(errors, list) and errors, (
        f"{method} {url} -> {status}: JSON error body without a non-empty 'errors' list: {body[:300]!r}"
    )
    for err in errors:
        code = err.get("code") if isinstance(err, dict) else None
        assert code in SPEC_ERROR_CODES or code in LEGACY_ERROR_CODES, (
            f"{method} {url} -> {status}: error code {code!r} is not one of the spec's codes: {body[:300]!r}"
        )


API_ERROR_CODES = {"bad_request", "unauthorized", "forbidden", "not_found", "conflict",
                   "method_not_allowed", "payload_too_large"}


def error_codes_of_api(url: str, status: int, body: bytes) -> None:
    doc = json.loads(body)
    err = doc.get("error") if isinstance(doc, dict) else None
    assert isinstance(err, dict) and err.get("code") in API_ERROR_CODES and isinstance(err.get("message"), str), (
        f"{url} -> {status}: not an account API error: {body[:300]!r}")


def status_of(resp) -> int:
    return resp.status_code if hasattr(resp, "status_code") else resp.status


def assert_error(resp, status: int, code) -> str:
    """Assert an OCI error answer: HTTP status and errors[0].code.

    ``code`` may be a string or a collection of acceptable codes.
    Returns errors[0].code.
    """
    body = resp.content if hasattr(resp, "content") else resp.body
    got = status_of(resp)
    assert got == status, f"expected HTTP {status}, got {got}: {body[:500]!r}"
    codes = error_codes(resp)
    allowed = {code} if isinstance(code, str) else set(code)
    assert codes[0] in allowed, f"expected errors[0].code in {sorted(allowed)}, got {codes}"
    return codes[0]


# --------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------

class ServerError(AssertionError):
    pass


class OciClient:
    """A thin requests-based OCI client that fails loudly on any 5xx."""

    def __init__(self, base_url: str, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        parsed = urllib.parse.urlsplit(self.base_url)
        self.host = parsed.hostname
        self.port = parsed.port
        self.session = requests.Session()
        self.timeout = timeout

    def close(self):
        self.session.close()

    # -- plumbing ----------------------------------------------------------

    def url(self, path_or_url: str) -> str:
        """Resolve a path, a relative Location or an absolute URL against the registry."""
        return urllib.parse.urljoin(self.base_url + "/", path_or_url)

    def request(self, method: str, path_or_url: str, *, allow_5xx: bool = False, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("allow_redirects", False)
        url = self.url(path_or_url)
        resp = self.session.request(method, url, **kw)
        if resp.status_code >= 500 and not allow_5xx:
            raise ServerError(
                f"registry answered {resp.status_code} to {method} {url}: {resp.content[:1000]!r}"
            )
        if not kw.get("stream"):
            check_error_document(method, url, resp.status_code, resp.content)
        return resp

    def get(self, p, **kw):
        return self.request("GET", p, **kw)

    def head(self, p, **kw):
        return self.request("HEAD", p, **kw)

    def put(self, p, **kw):
        return self.request("PUT", p, **kw)

    def post(self, p, **kw):
        return self.request("POST", p, **kw)

    def patch(self, p, **kw):
        return self.request("PATCH", p, **kw)

    def delete(self, p, **kw):
        return self.request("DELETE", p, **kw)

    def location(self, resp: requests.Response) -> str:
        loc = resp.headers.get("Location")
        assert loc, f"{resp.request.method} {resp.url} -> {resp.status_code} without Location header"
        return self.url(loc)

    def alive(self, fresh_connection: bool = False) -> tuple[bool, str]:
        """Does the registry answer GET /v2/ with 200?

        By default the request goes through the client's session, i.e. on a
        kept-alive connection of the previous requests when there is one.
        """
        get = requests.get if fresh_connection else self.session.get
        try:
            r = get(self.url("/v2/"), timeout=10)
        except requests.RequestException as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return r.status_code == 200, f"HTTP {r.status_code}"

    # -- uploads -----------------------------------------------------------

    def start_upload(self, repo: str) -> str:
        """POST /v2/<repo>/blobs/uploads/ (Content-Length: 0) and return the upload URL."""
        r = self.post(f"/v2/{repo}/blobs/uploads/", data=b"")
        assert r.status_code == 202, f"POST upload -> {r.status_code}: {r.content[:500]!r}"
        return self.location(r)

    def patch_chunk(self, location: str, data: bytes, start: int) -> requests.Response:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
            "Content-Length": str(len(data)),
        }
        return self.patch(location, data=data, headers=headers)

    def upload_status(self, location: str) -> requests.Response:
        return self.get(location)

    def finish_upload(self, location: str, digest: str, data: bytes = b"", **kw) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        headers.update(kw.pop("headers", {}))
        return self.put(with_query(location, digest=digest), data=data, headers=headers, **kw)

    def push_blob(self, repo: str, data: bytes, digest: Optional[str] = None) -> str:
        """Monolithic POST-then-PUT upload. Returns the digest."""
        digest = digest or sha256_digest(data)
        loc = self.start_upload(repo)
        r = self.finish_upload(loc, digest, data)
        assert r.status_code == 201, f"PUT upload -> {r.status_code}: {r.content[:500]!r}"
        return digest

    def push_blob_chunked(self, repo: str, data: bytes, sizes: Iterable[int]) -> str:
        """Chunked upload with the given chunk sizes (the rest goes in a last PATCH)."""
        digest = sha256_digest(data)
        loc = self.start_upload(repo)
        offset = 0
        sizes = list(sizes)
        while offset < len(data):
            n = sizes.pop(0) if sizes else len(data) - offset
            chunk = data[offset:offset + n]
            r = self.patch_chunk(loc, chunk, offset)
            assert r.status_code == 202, f"PATCH {offset}-{offset + len(chunk) - 1} -> {r.status_code}: {r.content[:300]!r}"
            offset += len(chunk)
            assert uploaded_size(r.headers.get("Range")) == offset
            loc = self.location(r)
        r = self.finish_upload(loc, digest)
        assert r.status_code == 201, f"closing PUT -> {r.status_code}: {r.content[:500]!r}"
        return digest

    def push_blob_in_chunks(self, repo: str, data: bytes, chunk: int) -> str:
        """Chunked upload in PATCHes of `chunk` bytes (the last may be shorter)."""
        return self.push_blob_chunked(repo, data, [chunk] * -(-len(data) // chunk))

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self.head(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code in (200, 404), f"HEAD blob -> {r.status_code}"
        return r.status_code == 200

    def get_blob(self, repo: str, digest: str) -> bytes:
        r = self.get(f"/v2/{repo}/blobs/{digest}", allow_redirects=True)
        assert r.status_code == 200, f"GET blob {digest} -> {r.status_code}: {r.content[:300]!r}"
        return r.content

    def blob_sha256_streamed(self, repo: str, digest: str) -> tuple[str, int]:
        """GET a (large) blob streaming; return (sha256 digest of body, size)."""
        h = hashlib.sha256()
        size = 0
        with self.get(f"/v2/{repo}/blobs/{digest}", stream=True, allow_redirects=True) as r:
            assert r.status_code == 200, f"GET blob -> {r.status_code}"
            for piece in r.iter_content(MIB):
                h.update(piece)
                size += len(piece)
        return "sha256:" + h.hexdigest(), size

    # -- manifests ---------------------------------------------------------

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str = OCI_MANIFEST,
                     **kw) -> requests.Response:
        headers = {"Content-Type": media_type}
        headers.update(kw.pop("headers", {}))
        return self.put(f"/v2/{repo}/manifests/{reference}", data=body, headers=headers, **kw)

    def get_manifest(self, repo: str, reference: str, method: str = "GET") -> requests.Response:
        return self.request(method, f"/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})

    def push_image(self, repo: str, tag: Optional[str], layers: Iterable[bytes] = (b"layer",),
                   annotations: Optional[dict] = None, extra: Optional[dict] = None) -> tuple[bytes, str]:
        """Push a minimal OCI image (config + layers + manifest). Returns (manifest bytes, digest)."""
        layer_descs = []
        for data in layers:
            layer_descs.append({"mediaType": OCI_LAYER, "digest": self.push_blob(repo, data), "size": len(data)})
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]},
        }).encode()
        cfg = {"mediaType": OCI_CONFIG, "digest": self.push_blob(repo, config), "size": len(config)}
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layer_descs}
        if annotations:
            manifest["annotations"] = annotations
        if extra:
            manifest.update(extra)
        body = json.dumps(manifest, indent=2).encode()
        digest = sha256_digest(body)
        r = self.put_manifest(repo, tag or digest, body)
        assert r.status_code == 201, f"PUT manifest -> {r.status_code}: {r.content[:500]!r}"
        return body, digest


# --------------------------------------------------------------------------
# below-the-library HTTP: exact paths, truncated bodies
# --------------------------------------------------------------------------

@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def content(self) -> bytes:
        return self.body


def raw_request(host: str, port: int, method: str, target: str, headers: Optional[dict] = None,
                body: bytes = b"", timeout: float = 30.0) -> RawResponse:
    """Send a request with the request-target exactly as given (no dot-segment
    normalisation, no re-quoting), using http.client."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        hdrs = dict(headers or {})
        if body or method in ("PUT", "POST", "PATCH"):
            hdrs.setdefault("Content-Length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body if body else None)
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, resp.headers, data)
    finally:
        conn.close()


def send_truncated_request(url: str, method: str, headers: dict, body_prefix: bytes,
                           settle: float = 0.2) -> None:
    """Open a TCP connection, send a request whose declared Content-Length is
    larger than what we send, then drop the connection (simulated network
    failure mid-request)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(head)
        s.sendall(body_prefix)
        time.sleep(settle)  # let the server consume what we sent
        # RST instead of a graceful FIN: this is a dropped connection.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def is_valid_repo_name(name: str) -> bool:
    return re.fullmatch(
        r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*", name
    ) is not None
