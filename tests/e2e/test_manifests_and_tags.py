"""Manifests by tag and digest, deletion, tag listing and the catalog."""

from __future__ import annotations

import json
import random

import pytest

from ocihttp import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, assert_error, next_link, sha256_digest


def oddly_formatted_manifest(client, repo, layer: bytes = b"layer-bytes") -> bytes:
    """A valid manifest in an unusual serialisation: the registry must keep the exact bytes."""
    layer_digest = client.push_blob(repo, layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = client.push_blob(repo, config)
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        "annotations": {"org.example.unicode": "h\u00e9llo \u2603"},
    }
    return (json.dumps(doc, indent=7, separators=(",", " :  "), ensure_ascii=False) + "\n\n").encode()


def assert_manifest_response(r, body: bytes, media_type: str, head: bool = False):
    assert r.status_code == 200, r.content[:300]
    assert r.headers.get("Docker-Content-Digest") == sha256_digest(body)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == media_type
    assert int(r.headers["Content-Length"]) == len(body)
    assert r.content == (b"" if head else body)


def test_manifest_by_tag_and_by_digest(client, repo):
    body = oddly_formatted_manifest(client, repo)
    digest = sha256_digest(body)

    r = client.put_manifest(repo, "v1", body)
    assert r.status_code == 201, r.content[:300]
    assert r.headers.get("Docker-Content-Digest") == digest
    assert r.headers.get("Location"), "201 must carry the manifest's Location"
    assert client.get(client.location(r), headers={"Accept": OCI_MANIFEST}).content == body

    for ref in ("v1", digest):
        assert_manifest_response(client.get_manifest(repo, ref), body, OCI_MANIFEST)
        assert_manifest_response(client.get_manifest(repo, ref, method="HEAD"), body, OCI_MANIFEST, head=True)


def test_manifest_pushed_by_digest_has_no_tag(client, repo):
    client.push_image(repo, "tagged")
    body = oddly_formatted_manifest(client, repo, b"another layer")
    digest = sha256_digest(body)
    r = client.put_manifest(repo, digest, body)
    assert r.status_code == 201
    assert r.headers.get("Docker-Content-Digest") == digest
    assert_manifest_response(client.get_manifest(repo, digest), body, OCI_MANIFEST)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["tagged"]


def test_index_manifest_round_trip(client, repo):
    m1, d1 = client.push_image(repo, None, layers=[b"amd64 layer"])
    m2, d2 = client.push_image(repo, None, layers=[b"arm64 layer"])
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(m1), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": len(m2), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }, indent=1).encode()
    r = client.put_manifest(repo, "multi", index, media_type=OCI_INDEX)
    assert r.status_code == 201, r.content[:300]
    assert_manifest_response(client.get_manifest(repo, "multi"), index, OCI_INDEX)


def test_unknown_manifest_is_404_manifest_unknown(client, repo):
    client.push_image(repo, "exists")
    for ref in ("nope", sha256_digest(b"no such manifest")):
        assert_error(client.get_manifest(repo, ref), 404, "MANIFEST_UNKNOWN")
        assert client.get_manifest(repo, ref, method="HEAD").status_code == 404


def test_unknown_repository_is_404(client):
    r = client.get("/v2/e2e/this-repository-does-not-exist/tags/list")
    assert_error(r, 404, "NAME_UNKNOWN")
    r = client.get_manifest("e2e/this-repository-does-not-exist", "latest")
    assert_error(r, 404, ("NAME_UNKNOWN", "MANIFEST_UNKNOWN"))


def test_retagging_moves_the_tag(client, repo):
    first, d1 = client.push_image(repo, "stable", layers=[b"one"])
    second, d2 = client.push_image(repo, "latest", layers=[b"two"])
    assert client.put_manifest(repo, "stable", second).status_code == 201
    assert client.get_manifest(repo, "stable").headers["Docker-Content-Digest"] == d2
    # the old manifest is still there by digest
    assert_manifest_response(client.get_manifest(repo, d1), first, OCI_MANIFEST)


def test_delete_manifest_by_digest(client, repo):
    body, digest = client.push_image(repo, "doomed")
    client.put_manifest(repo, "doomed-too", body)

    r = client.delete(f"/v2/{repo}/manifests/{digest}")
    assert r.status_code == 202, r.content[:300]

    assert_error(client.get_manifest(repo, digest), 404, "MANIFEST_UNKNOWN")
    assert client.get_manifest(repo, digest, method="HEAD").status_code == 404
    # "Once deleted, a GET to /v2/<name>/manifests/<digest> and any tag pointing to that digest will return a 404."
    assert_error(client.get_manifest(repo, "doomed"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get_manifest(repo, "doomed-too"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_tag_is_supported_or_refused_cleanly(client, repo):
    body, digest = client.push_image(repo, "keep")
    client.put_manifest(repo, "drop", body)
    r = client.delete(f"/v2/{repo}/manifests/drop")
    # Spec: 202 on success; 400 or 405 if tag deletion is disabled.
    assert r.status_code in (202, 400, 405), r.content[:300]
    if r.status_code == 202:
        assert_error(client.get_manifest(repo, "drop"), 404, "MANIFEST_UNKNOWN")
        assert_manifest_response(client.get_manifest(repo, "keep"), body, OCI_MANIFEST)
        assert_manifest_response(client.get_manifest(repo, digest), body, OCI_MANIFEST)


# ---------------------------------------------------------------------------
# listings
# ---------------------------------------------------------------------------

TAGS = ["0.1", "1.0", "1.0-rc1", "10", "2", "_private", "alpha", "beta", "latest", "v1.2.3", "z--z"]


def paginate(client, first_url: str, key: str, n: int) -> list[str]:
    """Follow Link rel="next" from `first_url`; every page but the last holds exactly n entries."""
    items: list[str] = []
    url = first_url
    pages = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200, r.content[:300]
        page = r.json()[key]
        nxt = next_link(r)
        if nxt:
            assert len(page) == n, f"a page followed by Link rel=next must be full: {page}"
        assert len(page) <= n
        items += page
        url = nxt
        pages += 1
        assert pages <= 100, "pagination does not end"
    return items


@pytest.mark.openregistry_only(
    reason="Distribution 2.8 lists tags in directory order, not lexical order (spec MUST), "
           "and ignores n and last on tags/list")
def test_tags_list_is_sorted_and_paginated(client, repo):
    body, _ = client.push_image(repo, TAGS[0])
    shuffled = TAGS[1:]
    random.shuffle(shuffled)
    for tag in shuffled:
        assert client.put_manifest(repo, tag, body).status_code == 201

    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": sorted(TAGS)}

    assert paginate(client, f"/v2/{repo}/tags/list?n=3", "tags", 3) == sorted(TAGS)
    assert paginate(client, f"/v2/{repo}/tags/list?n=1", "tags", 1) == sorted(TAGS)

    r = client.get(f"/v2/{repo}/tags/list?n=4")
    assert r.json()["tags"] == sorted(TAGS)[:4]
    link = next_link(r)
    assert link and "n=4" in link and "last=" in link

    r = client.get(f"/v2/{repo}/tags/list?n=2&last=alpha")
    assert r.json()["tags"] == ["beta", "latest"]
    r = client.get(f"/v2/{repo}/tags/list?last=latest")
    assert r.json()["tags"] == ["v1.2.3", "z--z"]

    r = client.get(f"/v2/{repo}/tags/list?n=0")
    assert r.status_code == 200
    assert r.json()["tags"] == []
    assert next_link(r) is None, "n=0 MUST NOT carry a Link header"

    r = client.get(f"/v2/{repo}/tags/list?n={len(TAGS)}")
    assert r.json()["tags"] == sorted(TAGS)


def test_tags_list_names_every_tag(client, repo):
    """Membership only; the order is checked by test_tags_list_is_sorted_and_paginated."""
    body, _ = client.push_image(repo, TAGS[0])
    for tag in reversed(TAGS[1:]):
        assert client.put_manifest(repo, tag, body).status_code == 201
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    doc = r.json()
    assert doc["name"] == repo
    assert sorted(doc["tags"]) == sorted(TAGS)


def test_catalog_is_sorted_and_paginated(registry_factory):
    from ocihttp import OciClient

    server = registry_factory("catalog")
    client = OciClient(server.base_url)
    repos = ["zeta", "alpha/one", "alpha/two", "beta", "a/b/c/d/e/f/g/h", "m-n_o.p"]
    for name in repos:
        client.push_image(name, "t")

    r = client.get("/v2/_catalog")
    assert r.status_code == 200
    assert r.json()["repositories"] == sorted(repos)

    assert paginate(client, "/v2/_catalog?n=2", "repositories", 2) == sorted(repos)
    assert paginate(client, "/v2/_catalog?n=4", "repositories", 4) == sorted(repos)

    r = client.get("/v2/_catalog?n=2")
    link = next_link(r)
    assert link and "n=2" in link
    assert r.json()["repositories"] == sorted(repos)[:2]

    r = client.get("/v2/_catalog?n=3&last=alpha/two")
    assert r.json()["repositories"] == ["beta", "m-n_o.p", "zeta"]
    client.close()


@pytest.mark.openregistry_only(reason="PUT .../manifests/<digest>?tag=... (multi-tag push) is not in Distribution 2.8")
def test_push_by_digest_with_several_tag_parameters(client, repo):
    body = oddly_formatted_manifest(client, repo)
    digest = sha256_digest(body)
    r = client.put(f"/v2/{repo}/manifests/{digest}?tag=a&tag=b&tag=release-1.0", data=body,
                   headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.content[:300]
    assert r.headers.get("Docker-Content-Digest") == digest
    for tag in ("a", "b", "release-1.0"):
        assert_manifest_response(client.get_manifest(repo, tag), body, OCI_MANIFEST)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["a", "b", "release-1.0"]
