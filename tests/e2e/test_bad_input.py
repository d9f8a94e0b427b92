"""Malformed requests get a precise 4xx with an OCI error body -- never a 5xx.

Every case asserts the HTTP status and errors[0].code; the `client` fixture
checks after each test that the registry process is alive and still answers
GET /v2/, and any 5xx seen on the way fails the test at once.
Requests whose path must reach the server byte for byte (dot segments,
double slashes) are sent with http.client, which does not normalise paths.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from cloudflare_host import CLOUDFLARE
from ocihttp import (
    DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, SPEC_ERROR_CODES, assert_error,
    check_error_document, error_codes, parse_range, raw_request, sha256_digest, with_query,
)

GOOD_DIGEST = "sha256:" + "a" * 64
LONG_NAME_500 = "Distribution 2.8 answers 500 UNKNOWN for a name longer than 255 characters"
ROUTE_404 = ("Distribution's router cannot match this path and answers a plain-text 404 "
             "(or a 301 to a cleaned path); the spec leaves the status open")


def raw(client, method, target, headers=None, body=b""):
    r = raw_request(client.host, client.port, method, target, headers=headers, body=body)
    assert r.status < 500, f"{method} {target} -> {r.status}: {r.body[:300]!r}"
    check_error_document(method, target, r.status, r.body)
    return r


# ---------------------------------------------------------------------------
# repository names
# ---------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("Uppercase/repo", False, id="uppercase",
                 marks=pytest.mark.openregistry_only(
                     reason="Distribution 2.8 takes an uppercase first component for a registry host name "
                            "and accepts the name (GET -> NAME_UNKNOWN, POST upload -> 202)")),
    pytest.param("repo/Upper", False, id="uppercase-last-component",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("a/../b", True, id="dot-dot-component",
                 marks=[pytest.mark.openregistry_only(reason=ROUTE_404),
                        pytest.mark.skipif(CLOUDFLARE, reason="the Workers runtime parses request URLs as "
                                           "WHATWG URLs, resolving dot segments before the Worker sees "
                                           "the path (/v2/a/../b/... arrives as /v2/b/...), as Cloudflare's "
                                           "edge normalizes URLs")]),
    pytest.param("repo/", True, id="trailing-slash",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("a//b", True, id="empty-component",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("x" * 300, False, id="300-char-component",
                 marks=pytest.mark.openregistry_only(reason=LONG_NAME_500)),
    pytest.param("ok/" + "/".join(["abcdefghij"] * 24), False, id="over-255-chars-in-total",
                 marks=pytest.mark.openregistry_only(reason=LONG_NAME_500)),
    pytest.param("/".join(["a"] * 200), False, id="200-components",
                 marks=pytest.mark.openregistry_only(reason=LONG_NAME_500)),
    pytest.param("-leading-dash", False, id="leading-separator",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("a..b", False, id="double-period",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("a___b", False, id="triple-underscore",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param(".hidden", False, id="leading-period",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("with%20space", False, id="space",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("%C3%BCmlaut", False, id="non-ascii",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
]


@pytest.mark.parametrize("name,route_may_not_match", BAD_NAMES)
def test_malformed_repository_name_is_name_invalid(client, name, route_may_not_match):
    """400 NAME_INVALID; where the path itself has an odd shape (dot segment,
    empty component) a router may instead fail to match it: 404, still with
    an OCI error body."""
    for method, suffix in [
        ("GET", "tags/list"),
        ("GET", "manifests/latest"),
        ("PUT", "manifests/latest"),
        ("GET", f"blobs/{GOOD_DIGEST}"),
        ("POST", "blobs/uploads/"),
        ("GET", f"referrers/{GOOD_DIGEST}"),
    ]:
        headers = {"Content-Type": OCI_MANIFEST} if method == "PUT" else {}
        body = b"{}" if method == "PUT" else b""
        target = f"/v2/{name}/{suffix}"
        r = raw(client, method, target, headers=headers, body=body)
        if r.status == 404 and route_may_not_match:
            assert error_codes(r)[0] in SPEC_ERROR_CODES, f"{method} {target}: {r.body[:200]!r}"
            continue
        assert r.status == 400, f"{method} {target} -> {r.status}: {r.body[:200]!r}"
        assert error_codes(r)[0] == "NAME_INVALID", f"{method} {target}: {r.body[:200]!r}"


def test_longest_valid_name_is_accepted(client):
    """255 characters in total is still a valid name (the limit is 'less than 256')."""
    name = "e2e/" + "/".join(["a" * 49] * 5) + "/" + "b" * (255 - 4 - 5 * 50)
    assert len(name) == 255
    client.push_image(name, "t")
    assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["t"]


# ---------------------------------------------------------------------------
# digests
# ---------------------------------------------------------------------------

BAD_DIGESTS = [
    pytest.param("sha256:xyz", id="non-hex"),
    pytest.param("md5:d41d8cd98f00b204e9800998ecf8427e", id="unsupported-algorithm"),
    pytest.param("sha256:abcd", id="short-hex"),
    pytest.param("sha256:" + "a" * 65, id="long-hex"),
    pytest.param("sha256:" + "A" * 64, id="uppercase-hex"),
    pytest.param("sha512:" + "a" * 64, id="sha512-with-sha256-length"),
    pytest.param("sha256", id="no-colon",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
    pytest.param("sha256:", id="empty-hex",
                 marks=pytest.mark.openregistry_only(reason=ROUTE_404)),
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
def test_malformed_digest_on_blob_endpoints_is_digest_invalid(client, repo, digest):
    client.push_blob(repo, b"so the repository exists")
    assert_error(raw(client, "GET", f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")
    assert raw(client, "HEAD", f"/v2/{repo}/blobs/{digest}").status == 400
    assert_error(raw(client, "DELETE", f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("digest", [p for p in BAD_DIGESTS if p.id not in ("no-colon", "empty-hex")] + [
    pytest.param("sha256", id="no-colon"), pytest.param("", id="empty")])
def test_malformed_digest_on_closing_put_is_digest_invalid(client, repo, digest):
    loc = client.start_upload(repo)
    r = client.put(with_query(loc, digest=digest), data=b"payload",
                   headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "DIGEST_INVALID")


def test_closing_put_without_digest_is_rejected(client, repo):
    loc = client.start_upload(repo)
    r = client.put(loc, data=b"payload", headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.openregistry_only(reason="Distribution 2.8 ignores ?digest= on POST (no single-POST upload)")
@pytest.mark.parametrize("digest", ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:abcd"])
def test_malformed_digest_on_single_post_is_digest_invalid(client, repo, digest):
    r = client.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", data=b"payload",
                    headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.openregistry_only(reason="Distribution 2.8 answers 500 UNKNOWN to GET/HEAD/PUT of manifests/sha256:xyz")
@pytest.mark.parametrize("reference", ["sha256:xyz", "sha256:abcd", "md5:d41d8cd98f00b204e9800998ecf8427e",
                                       ".INVALID_MANIFEST_NAME", "-bad"])
def test_a_manifest_reference_that_cannot_exist_is_unknown_when_read_and_invalid_when_pushed(
        client, repo, parts, reference):
    # A reference that is neither a valid tag nor a valid digest names nothing: GET, HEAD and
    # DELETE answer 404 MANIFEST_UNKNOWN (conformance v1.1.1 asks for .INVALID_MANIFEST_NAME);
    # a PUT is told what is wrong with it.
    assert_error(raw(client, "GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST}),
                 404, "MANIFEST_UNKNOWN")
    assert raw(client, "HEAD", f"/v2/{repo}/manifests/{reference}").status == 404
    assert_error(raw(client, "DELETE", f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    body = json.dumps(manifest(parts)).encode()
    assert_error(raw(client, "PUT", f"/v2/{repo}/manifests/{reference}", headers={"Content-Type": OCI_MANIFEST},
                     body=body), 400, "DIGEST_INVALID" if ":" in reference else "TAG_INVALID")


# ---------------------------------------------------------------------------
# upload sessions
# ---------------------------------------------------------------------------

@pytest.mark.openregistry_only(
    reason="Distribution 2.8 answers 404 BLOB_UPLOAD_INVALID (not BLOB_UPLOAD_UNKNOWN) for a "
           "session id it never issued")
def test_unknown_upload_session_is_blob_upload_unknown(client, repo):
    client.push_blob(repo, b"so the repository exists")
    loc = f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}"
    assert_error(client.get(loc), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.patch_chunk(loc, b"data", 0), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.finish_upload(loc, sha256_digest(b"data"), b"data"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(loc), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.openregistry_only(
    reason="Distribution 2.8 signs upload state into the Location and answers BLOB_UPLOAD_INVALID")
def test_upload_session_of_another_repository_is_unknown(client, repo):
    loc = client.start_upload(f"{repo}/one")
    client.push_blob(f"{repo}/two", b"x")
    other = loc.replace(f"/v2/{repo}/one/", f"/v2/{repo}/two/")
    assert_error(client.get(other), 404, "BLOB_UPLOAD_UNKNOWN")


# (RFC 9110 syntax such as "bytes 10-19/20" is not listed: a registry may
# leniently accept it, as long as the offsets are right.)
BAD_RANGES = [
    pytest.param("15-24", id="gap"),
    pytest.param("5-14", id="overlap"),
    pytest.param("0-9", id="restart"),
    pytest.param("abc", id="not-a-range"),
    pytest.param("19-10", id="end-before-start"),
    pytest.param("-10", id="missing-start"),
]


@pytest.mark.openregistry_only(reason="Distribution 2.8 ignores Content-Range on PATCH")
@pytest.mark.parametrize("content_range", BAD_RANGES)
def test_bad_content_range_on_patch_is_416(client, repo, content_range):
    loc = client.start_upload(repo)
    r = client.patch_chunk(loc, os.urandom(10), 0)
    assert r.status_code == 202
    loc = client.location(r)

    r = client.patch(loc, data=os.urandom(10), headers={
        "Content-Type": "application/octet-stream", "Content-Range": content_range, "Content-Length": "10"})
    assert r.status_code == 416, f"Content-Range {content_range!r} -> {r.status_code}: {r.content[:200]!r}"
    assert parse_range(r.headers.get("Range")) == (0, 9)

    status = client.upload_status(loc)
    assert status.status_code == 204
    assert parse_range(status.headers.get("Range")) == (0, 9)


# ---------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------

@pytest.fixture
def parts(client, repo):
    """A config and a layer already in `repo`, for building manifests."""
    layer = b"layer for bad-input tests"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}).encode()
    return {
        "config": {"mediaType": OCI_CONFIG, "digest": client.push_blob(repo, config), "size": len(config)},
        "layer": {"mediaType": OCI_LAYER, "digest": client.push_blob(repo, layer), "size": len(layer)},
    }


def manifest(parts, **overrides) -> dict:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": parts["config"], "layers": [parts["layer"]]}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize("body", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"[]", id="json-array"),
    pytest.param(b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}',
                 id="no-config-no-layers",
                 marks=pytest.mark.openregistry_only(
                     reason="Distribution 2.8 reads the missing config as an empty descriptor and answers "
                            "DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN instead of MANIFEST_INVALID")),
    pytest.param(b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", '
                 b'"config": "nope", "layers": []}', id="config-not-an-object"),
])
def test_invalid_manifest_is_manifest_invalid(client, repo, body):
    client.push_blob(repo, b"so the repository exists")
    r = client.put_manifest(repo, "bad", body)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert client.get_manifest(repo, "bad").status_code == 404


@pytest.mark.openregistry_only(reason="Distribution 2.8 answers 500 UNKNOWN to schemaVersion 3")
def test_manifest_with_wrong_schema_version_is_manifest_invalid(client, repo, parts):
    r = client.put_manifest(repo, "bad", json.dumps(manifest(parts, schemaVersion=3)).encode())
    assert_error(r, 400, "MANIFEST_INVALID")


def test_manifest_referencing_a_missing_layer_is_manifest_blob_unknown(client, repo, parts):
    missing = {"mediaType": OCI_LAYER, "digest": sha256_digest(b"not uploaded"), "size": 12}
    r = client.put_manifest(repo, "bad", json.dumps(manifest(parts, layers=[parts["layer"], missing])).encode())
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert all(c == "MANIFEST_BLOB_UNKNOWN" for c in error_codes(r))


def test_manifest_referencing_a_missing_config_is_manifest_blob_unknown(client, repo, parts):
    missing = {"mediaType": OCI_CONFIG, "digest": sha256_digest(b"no config"), "size": 9}
    r = client.put_manifest(repo, "bad", json.dumps(manifest(parts, config=missing)).encode())
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_manifest_referencing_a_blob_of_another_repository_is_manifest_blob_unknown(client, repo, parts):
    foreign = os.urandom(64)
    foreign_desc = {"mediaType": OCI_LAYER, "digest": client.push_blob(f"{repo}/elsewhere", foreign), "size": 64}
    r = client.put_manifest(repo, "bad", json.dumps(manifest(parts, layers=[foreign_desc])).encode())
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("content_type,body_type", [
    pytest.param(OCI_MANIFEST, DOCKER_MANIFEST, id="docker-body-oci-header"),
    pytest.param(DOCKER_MANIFEST, OCI_MANIFEST, id="oci-body-docker-header"),
    pytest.param(OCI_MANIFEST, OCI_INDEX, id="index-body-manifest-header"),
])
def test_media_type_field_differing_from_content_type_is_manifest_invalid(client, repo, parts,
                                                                          content_type, body_type):
    body = json.dumps(manifest(parts, mediaType=body_type)).encode()
    r = client.put_manifest(repo, "bad", body, media_type=content_type)
    assert_error(r, 400, "MANIFEST_INVALID")


def big_manifest(parts, total: int) -> bytes:
    doc = manifest(parts, annotations={"org.example.padding": ""})
    base = len(json.dumps(doc).encode())
    doc["annotations"]["org.example.padding"] = "x" * (total - base)
    body = json.dumps(doc).encode()
    assert len(body) == total
    return body


@pytest.mark.openregistry_only(
    reason="Distribution 2.8 refuses an oversized manifest with 400 MANIFEST_INVALID, not 413")
def test_manifest_over_4_mib_is_413(client, repo, parts):
    body = big_manifest(parts, 4 * 1024 * 1024 + 1024)
    r = client.put_manifest(repo, "huge", body)
    # The spec asks for 413 Payload Too Large and fixes no error code; the
    # body must still be an OCI error document with a code from the spec.
    assert r.status_code == 413, r.content[:300]
    assert error_codes(r)[0] in SPEC_ERROR_CODES
    assert client.get_manifest(repo, "huge").status_code == 404


def test_manifest_of_almost_4_mb_is_accepted(client, repo, parts):
    """Spec: registries SHOULD expect to support manifest pushes of at least 4 megabytes."""
    body = big_manifest(parts, 4_000_000)
    r = client.put_manifest(repo, "large", body)
    assert r.status_code == 201, r.content[:300]
    assert client.get_manifest(repo, "large").content == body


def test_manifest_put_by_digest_that_does_not_match_is_digest_invalid(client, repo, parts):
    body = json.dumps(manifest(parts)).encode()
    wrong = sha256_digest(body + b" ")
    r = client.put_manifest(repo, wrong, body)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.get_manifest(repo, wrong, method="HEAD").status_code == 404
    assert client.get_manifest(repo, sha256_digest(body), method="HEAD").status_code == 404


@pytest.mark.parametrize("tag", [
    pytest.param("bad!tag", id="bang"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param(".leading-period", id="leading-period"),
    pytest.param("t" * 129, id="129-chars"),
    pytest.param("sp%20ace", id="space"),
    pytest.param("%C3%A9t%C3%A9", id="non-ascii"),
])
@pytest.mark.openregistry_only(reason=ROUTE_404)
def test_tag_with_invalid_characters_is_rejected(client, repo, parts, tag):
    """The spec's tag grammar is [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. It names no
    error code for a bad tag: MANIFEST_INVALID, or the legacy TAG_INVALID the
    spec says clients may still meet."""
    body = json.dumps(manifest(parts)).encode()
    r = raw(client, "PUT", f"/v2/{repo}/manifests/{tag}", headers={"Content-Type": OCI_MANIFEST}, body=body)
    assert_error(r, 400, ("TAG_INVALID", "MANIFEST_INVALID"))


def test_longest_valid_tag_is_accepted(client, repo, parts):
    tag = "_" + "Aa0._-" * 21 + "z"
    assert len(tag) == 128
    body = json.dumps(manifest(parts)).encode()
    assert client.put_manifest(repo, tag, body).status_code == 201
    assert client.get_manifest(repo, tag).content == body


def test_registry_survives_a_burst_of_garbage(client, repo):
    """A mixed volley of nonsense (bounded: ~40 requests) leaves the registry healthy."""
    targets = [
        ("GET", "/v2/_catalog?n=-1"), ("GET", "/v2/_catalog?n=abc"), ("GET", "/v2/_catalog?n=99999999999999999999"),
        ("GET", f"/v2/{repo}/tags/list?n=-5"), ("GET", f"/v2/{repo}/tags/list?n=x"),
        ("PATCH", f"/v2/{repo}/blobs/uploads/"), ("DELETE", f"/v2/{repo}/blobs/uploads/"),
        ("PUT", f"/v2/{repo}/blobs/uploads/"), ("GET", "/v2/%00/tags/list"),
        ("POST", f"/v2/{repo}/blobs/uploads/?mount=sha256:xyz&from=Bad..Name"),
        ("POST", f"/v2/{repo}/blobs/uploads/?mount={GOOD_DIGEST}"),
        ("GET", f"/v2/{repo}/manifests/"), ("GET", f"/v2/{repo}/blobs/"), ("OPTIONS", "/v2/"),
    ]
    for method, target in targets:
        raw(client, method, target)
    for body in (b"\x00" * 100, b"{" * 10000, json.dumps({"schemaVersion": 2, "layers": [{}] * 1000}).encode()):
        raw(client, "PUT", f"/v2/{repo}/manifests/junk", headers={"Content-Type": OCI_MANIFEST}, body=body)
    raw(client, "PUT", f"/v2/{repo}/manifests/junk", headers={"Content-Type": "text/plain"}, body=b"hello")
    raw(client, "GET", f"/v2/{repo}/manifests/latest", headers={"Accept": "\x7f" * 50})
    assert client.alive(fresh_connection=True)[0]


# ---------------------------------------------------------------------------
# hostile paths on every route
# ---------------------------------------------------------------------------

HOSTILE_PATHS = [
    "/api/repositories/visibility", "/api/repositories//visibility", "/api/repositories/",
    "/api/repositories/%2e%2e/visibility", "/api/repositories/a/../b/visibility", "/api", "/api/",
    "/api/tokens/", "/api/tokens//x", "/api/tokens/%00", "/api/tokens/%C3%A9", "/token/", "/token/x",
    "/v2//", "/v2/_catalog/x", "/v2//manifests/x", "/v2/manifests/", "/v2/a/manifests/",
    "/v2/a//manifests/x", "/v2/a/../b/manifests/x", "/v2/%2e%2e/a/tags/list", "/v2/a/tags/list/",
    "/v2/a/blobs/", "/v2/a/blobs/sha256:", "/v2/a//blobs/uploads/", "/v2/a/blobs/uploads//",
    "/v2/a/blobs/uploads/../../x", "/v2/a/blobs/uploads/zz.99999999999999999999999.1",
    "/v2/a/referrers/", "/v2/a/referrers/sha256:zz", "/v2/%C3%A9/manifests/%C3%BC",
    "/v2/a/manifests/%FF%FE", "/v2/" + "a/" * 300 + "manifests/x", "/v2/a/manifests/" + "x" * 4000,
    "/api/repositories/" + "a/" * 300 + "visibility",
]


@pytest.mark.openregistry_only(reason=ROUTE_404)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"])
def test_hostile_paths_get_a_clean_error_on_a_connection_that_stays_usable(client, method):
    """Empty segments, dot segments, missing parts, percent-encoding and very long parts, on every
    route: each gets a complete answer (no 5xx, a JSON error document of the right kind: OCI on the
    registry's routes, the account API's own under /api/), and the same connection serves the next
    request (a panic would drop it; the Worker's isolate could be poisoned for later requests)."""
    import http.client
    conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
    try:
        for target in HOSTILE_PATHS:
            body = b'{"visibility":"public"}' if method in ("PUT", "POST", "PATCH") else b""
            conn.putrequest(method, target, skip_accept_encoding=True)
            conn.putheader("Content-Type", "application/json")
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status < 500, f"{method} {target[:80]} -> {resp.status}: {data[:300]!r}"
            check_error_document(method, target, resp.status, data)
        # And the registry still serves ordinary requests on the same connection.
        conn.request("GET", "/v2/")
        resp = conn.getresponse()
        resp.read()
        assert resp.status in (200, 401)
    finally:
        conn.close()
