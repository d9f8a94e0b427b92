"""Images pushed with skopeo come back bit for bit.

Each test writes an OCI image layout by hand (so every digest is known up
front), copies it into the registry with skopeo, reads the raw manifest back
with `skopeo inspect --raw`, copies the image out again into a fresh layout,
and compares every digest: the manifest's (or index's) and every blob's.

`--preserve-digests` makes skopeo refuse any change to the content (it would
otherwise e.g. gzip uncompressed layers on the way to a registry), so a
difference can only come from the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ocihttp import (
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, MIB, OCI_INDEX, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST,
    sha256_digest,
)
from ocilayout import Layout, gzip_bytes, image_config, random_tar_layer, tar_layer, write_big_tar_layer

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"


def skopeo(*args: str, timeout: float = 300) -> bytes:
    cmd = [SKOPEO, "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"skopeo failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"stdout:\n{proc.stdout.decode(errors='replace')}\nstderr:\n{proc.stderr.decode(errors='replace')}",
            pytrace=False,
        )
    return proc.stdout


def push(src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", *extra, src, dest)


def pull(src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", *extra, src, dest)


def inspect_raw(ref: str) -> bytes:
    return skopeo("inspect", "--raw", "--tls-verify=false", ref)


@pytest.fixture(autouse=True)
def _need_skopeo():
    if not os.path.exists(SKOPEO):
        pytest.fail(f"skopeo not found ({SKOPEO}); run scripts/e2e-deps", pytrace=False)


def assert_served_exactly(client, repo: str, closure: dict[str, int], top_digest: str, top_type: str):
    """Raw HTTP agrees too: the manifest by digest and every blob, with sizes."""
    r = client.get_manifest(repo, top_digest)
    assert r.status_code == 200
    assert r.headers.get("Docker-Content-Digest") == top_digest
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == top_type
    assert sha256_digest(r.content) == top_digest
    for digest, size in closure.items():
        if digest == top_digest:
            continue
        h = client.head(f"/v2/{repo}/blobs/{digest}")
        if h.status_code == 404:  # child manifests of an index live under /manifests/
            h = client.get_manifest(repo, digest, method="HEAD")
        assert h.status_code == 200, f"{digest} not served by {repo}"
        assert int(h.headers["Content-Length"]) == size, f"{digest}: Content-Length {h.headers['Content-Length']} != {size}"


def test_single_image_round_trip_in_deeply_nested_repository(registry, client, repo, work_dir):
    name = f"{repo}/a/b/c/d/e/f/g/h"
    src = Layout(work_dir / "src").init()
    plain = random_tar_layer(300_000, "plain.bin")
    small_tar = tar_layer({"etc/motd": b"hello from the e2e suite\n", "bin/x": os.urandom(4096)})
    empty_tar = tar_layer({})
    manifest = src.add_image(
        [(plain, OCI_LAYER), (gzip_bytes(small_tar), OCI_LAYER_GZIP), (empty_tar, OCI_LAYER)],
        diff_ids=[sha256_digest(plain), sha256_digest(small_tar), sha256_digest(empty_tar)],
        annotations={"org.opencontainers.image.title": "single"},
    )
    src.tag(manifest, "v1")
    expected = src.closure(manifest)

    push(f"oci:{src.root}:v1", f"docker://{registry.host}/{name}:v1")

    raw = inspect_raw(f"docker://{registry.host}/{name}:v1")
    assert sha256_digest(raw) == manifest["digest"], "registry changed the manifest bytes"
    assert raw == src.read_blob(manifest["digest"])
    raw_by_digest = inspect_raw(f"docker://{registry.host}/{name}@{manifest['digest']}")
    assert raw_by_digest == raw

    dst = Layout(work_dir / "dst")
    pull(f"docker://{registry.host}/{name}:v1", f"oci:{dst.root}:v1")
    got = dst.resolve("v1")
    assert got["digest"] == manifest["digest"]
    assert got["mediaType"] == OCI_MANIFEST
    assert dst.closure(got) == expected

    assert_served_exactly(client, name, expected, manifest["digest"], OCI_MANIFEST)


def test_multi_arch_index_round_trip_with_copy_all(registry, client, repo, work_dir):
    src = Layout(work_dir / "src").init()
    shared = random_tar_layer(50_000, "shared.bin")  # a layer both platforms use
    children = []
    for arch in ("amd64", "arm64"):
        own = random_tar_layer(120_000, f"{arch}.bin")
        children.append(src.add_image([(shared, OCI_LAYER), (own, OCI_LAYER)], arch=arch, platform=True))
    index = src.add_index(children, annotations={"org.example.kind": "multi-arch"})
    src.tag(index, "multi")
    expected = src.closure(index)
    assert len(expected) == 8  # index + 2 manifests + 2 configs + 3 distinct layers

    push(f"oci:{src.root}:multi", f"docker://{registry.host}/{repo}:multi", "--all")

    raw = inspect_raw(f"docker://{registry.host}/{repo}:multi")
    assert sha256_digest(raw) == index["digest"], "registry changed the index bytes"
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    for child in children:
        child_raw = inspect_raw(f"docker://{registry.host}/{repo}@{child['digest']}")
        assert sha256_digest(child_raw) == child["digest"]

    dst = Layout(work_dir / "dst")
    pull(f"docker://{registry.host}/{repo}:multi", f"oci:{dst.root}:multi", "--all")
    got = dst.resolve("multi")
    assert got["digest"] == index["digest"]
    assert dst.closure(got) == expected

    assert_served_exactly(client, repo, expected, index["digest"], OCI_INDEX)


def write_dir_image(root, manifest: bytes, blobs: list[bytes]) -> None:
    """skopeo's `dir:` transport: manifest.json, blobs named by hex digest, a version file."""
    root.mkdir(parents=True)
    (root / "version").write_text("Directory Transport Version: 1.1\n")
    (root / "manifest.json").write_bytes(manifest)
    for blob in blobs:
        (root / sha256_digest(blob).split(":", 1)[1]).write_bytes(blob)


def test_docker_v2s2_image_round_trip(registry, client, repo, work_dir):
    """A Docker schema 2 image (Docker media types throughout) keeps its digests.

    skopeo's OCI-layout transport only resolves OCI media types in index.json,
    so the Docker image is written in skopeo's `dir:` format instead and read
    back the same way.
    """
    blobs = []
    layers = []
    diff_ids = []
    for n in (2, 1):
        tar = random_tar_layer(40_000 * n, f"l{n}.bin")
        diff_ids.append(sha256_digest(tar))
        gz = gzip_bytes(tar)
        blobs.append(gz)
        layers.append({"mediaType": DOCKER_LAYER_GZIP, "size": len(gz), "digest": sha256_digest(gz)})
    config = image_config(diff_ids)
    blobs.append(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": layers,
    }, indent=3).encode()
    digest = sha256_digest(manifest)
    expected = {sha256_digest(b): len(b) for b in blobs} | {digest: len(manifest)}
    src = work_dir / "src"
    write_dir_image(src, manifest, blobs)

    push(f"dir:{src}", f"docker://{registry.host}/{repo}:v2s2")

    raw = inspect_raw(f"docker://{registry.host}/{repo}:v2s2")
    assert raw == manifest, "registry changed the manifest bytes"
    assert json.loads(raw)["mediaType"] == DOCKER_MANIFEST

    dst = work_dir / "dst"
    pull(f"docker://{registry.host}/{repo}:v2s2", f"dir:{dst}")
    pulled_manifest = (dst / "manifest.json").read_bytes()
    assert sha256_digest(pulled_manifest) == digest
    doc = json.loads(pulled_manifest)
    got = {digest: len(pulled_manifest)}
    for d in [doc["config"], *doc["layers"]]:
        blob = (dst / d["digest"].split(":", 1)[1]).read_bytes()
        assert sha256_digest(blob) == d["digest"] and len(blob) == d["size"]
        got[d["digest"]] = d["size"]
    assert got == expected

    assert_served_exactly(client, repo, expected, digest, DOCKER_MANIFEST)


def test_oci_image_converted_to_v2s2_by_skopeo(registry, client, repo, work_dir):
    """`skopeo copy --format v2s2` converts on the way in; the registry stores
    and serves what skopeo produced (pulled back byte-identical)."""
    src = Layout(work_dir / "src").init()
    tar = random_tar_layer(64_000)
    layer = src.add_blob(gzip_bytes(tar), OCI_LAYER_GZIP)
    manifest = src.add_image([layer], diff_ids=[sha256_digest(tar)])
    src.tag(manifest, "oci")

    skopeo("copy", "--format", "v2s2", "--dest-tls-verify=false",
           f"oci:{src.root}:oci", f"docker://{registry.host}/{repo}:converted")

    raw = inspect_raw(f"docker://{registry.host}/{repo}:converted")
    doc = json.loads(raw)
    assert doc["mediaType"] == DOCKER_MANIFEST
    assert doc["layers"][0]["digest"] == layer["digest"], "the gzip layer itself must not change"
    r = client.get_manifest(repo, "converted")
    assert r.headers.get("Docker-Content-Digest") == sha256_digest(raw)
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == DOCKER_MANIFEST

    dst = work_dir / "dst"
    pull(f"docker://{registry.host}/{repo}:converted", f"dir:{dst}")
    assert (dst / "manifest.json").read_bytes() == raw


@pytest.mark.slow
def test_200_mib_layer_round_trip(registry, client, repo, work_dir):
    src = Layout(work_dir / "src").init()
    big_file = work_dir / "big.tar"
    digest, size = write_big_tar_layer(big_file, 200 * MIB)
    big = src.add_blob_file(big_file, OCI_LAYER, digest, size)
    small = src.add_blob(random_tar_layer(1000), OCI_LAYER)
    manifest = src.add_image([big, small])
    src.tag(manifest, "big")
    expected = src.closure(manifest)

    push(f"oci:{src.root}:big", f"docker://{registry.host}/{repo}:big")
    raw = inspect_raw(f"docker://{registry.host}/{repo}:big")
    assert sha256_digest(raw) == manifest["digest"]

    # Free the source copy before pulling a second 200 MiB copy.
    expected_big_size = big["size"]
    shutil.rmtree(src.root)

    dst = Layout(work_dir / "dst")
    pull(f"docker://{registry.host}/{repo}:big", f"oci:{dst.root}:big")
    got = dst.resolve("big")
    assert got["digest"] == manifest["digest"]
    assert dst.closure(got) == expected
    assert expected[digest] == expected_big_size

    h = client.head(f"/v2/{repo}/blobs/{digest}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == size
