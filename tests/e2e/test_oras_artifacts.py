"""OCI artifacts pushed and pulled with oras-py, and the referrers API.

What oras-py 0.2.43 (the pinned version) can and cannot do, and how each
test works around it:

* `Registry.push()` has no way to set the OCI 1.1 manifest `artifactType`
  field. `push_artifact()` below therefore assembles the manifest itself
  (with oras-py's own `NewManifest`/`NewLayer`/`Subject` helpers) and still
  sends every blob with `Registry.upload_blob` and the manifest with
  `Registry.upload_manifest`.
* `push()` can set manifest annotations (`manifest_annotations=`), the config
  media type (`manifest_config="path:type"`) and a `subject` -- the latter
  only as an `oras.oci.Subject` dataclass, although the signature says
  `Optional[str]`; it returns the manifest PUT response, so `OCI-Subject` is
  readable from it.
* There is no referrers API client at all (no `GET /v2/<name>/referrers/`,
  no `artifactType` filter): those requests are raw HTTP.
* `get_manifest()` returns only the parsed JSON, not the digest or headers;
  `upload_manifest()` always sends `Content-Type:
  application/vnd.oci.image.manifest.v1+json` (it cannot push an index).
* `oras.oci.Subject.from_manifest()` hashes a re-serialisation of the
  manifest, not the bytes the registry stores; subjects here are built from
  the registry's `Docker-Content-Digest` instead.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import asdict
from pathlib import Path

import oras.defaults
import oras.oci
import oras.provider
import pytest

from ocihttp import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, assert_error, sha256_digest

SBOM_TYPE = "application/vnd.e2e.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.e2e.signature.v1"
SIGNATURE_CONFIG_TYPE = "application/vnd.e2e.signature.config.v1+json"


@pytest.fixture
def oras_client(registry):
    return oras.provider.Registry(hostname=registry.host, insecure=True)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def push_artifact(reg: oras.provider.Registry, target: str, files: list[tuple[Path, str]], *,
                  artifact_type: str, annotations: dict, empty_config: Path,
                  subject: oras.oci.Subject | None = None):
    """`oras push --artifact-type` assembled from oras-py parts (see module docstring).

    The config is the OCI 1.1 empty descriptor, as image-spec recommends for
    artifacts that have no config.
    """
    container = reg.get_container(target)
    manifest = oras.oci.NewManifest()
    for path, media_type in files:
        layer = oras.oci.NewLayer(str(path), media_type=media_type)
        layer["annotations"] = {oras.defaults.annotation_title: path.name}
        reg._check_200_response(reg.upload_blob(str(path), container, layer))
        manifest["layers"].append(layer)
    assert empty_config.read_bytes() == b"{}"
    config = {"mediaType": OCI_EMPTY, "digest": oras.defaults.blank_config_hash, "size": 2}
    reg._check_200_response(reg.upload_blob(str(empty_config), container, config))
    manifest["config"] = config
    manifest["artifactType"] = artifact_type
    manifest["annotations"] = annotations
    if subject is not None:
        manifest["subject"] = asdict(subject)
    return reg.upload_manifest(manifest, container)


def subject_of(client, repo: str, reference: str) -> oras.oci.Subject:
    r = client.get_manifest(repo, reference)
    assert r.status_code == 200
    return oras.oci.Subject(
        mediaType=r.headers["Content-Type"].split(";")[0].strip(),
        digest=r.headers["Docker-Content-Digest"],
        size=len(r.content),
    )


def referrers(client, repo: str, digest: str, artifact_type: str | None = None):
    path = f"/v2/{repo}/referrers/{digest}"
    if artifact_type is not None:
        path += "?artifactType=" + urllib.parse.quote(artifact_type, safe="")
    r = client.get(path)
    assert r.status_code == 200, f"GET {path} -> {r.status_code}: {r.content[:300]!r}"
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2
    assert index.get("mediaType", OCI_INDEX) == OCI_INDEX
    assert isinstance(index["manifests"], list)
    return r, index


# ---------------------------------------------------------------------------
# artifacts
# ---------------------------------------------------------------------------

def test_oras_push_and_pull_with_manifest_annotations(registry, client, oras_client, repo, work_dir):
    sbom = write(work_dir / "sbom.json", json.dumps({"packages": ["a", "b"]}).encode())
    blob = write(work_dir / "data.bin", os.urandom(70_000))
    config = write(work_dir / "config.json", b'{"kind":"e2e"}')
    annotations = {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "com.example.note": "hello"}
    target = f"{registry.host}/{repo}:v1"

    resp = oras_client.push(
        target,
        files=[f"{sbom}:{SBOM_TYPE}", str(blob)],
        manifest_annotations=annotations,
        manifest_config=f"{config}:application/vnd.e2e.config.v1+json",
        disable_path_validation=True,
        quiet=True,
    )
    assert resp.status_code == 201
    digest = resp.headers["Docker-Content-Digest"]

    outdir = work_dir / "pulled"
    pulled = oras_client.pull(target, outdir=str(outdir))
    assert sorted(Path(p).name for p in pulled) == ["data.bin", "sbom.json"]
    assert (outdir / "sbom.json").read_bytes() == sbom.read_bytes()
    assert (outdir / "data.bin").read_bytes() == blob.read_bytes()

    manifest = oras_client.get_manifest(target)
    assert manifest["annotations"] == annotations
    assert manifest["config"]["mediaType"] == "application/vnd.e2e.config.v1+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == [SBOM_TYPE, oras.defaults.default_blob_media_type]

    r = client.get_manifest(repo, "v1")
    assert r.headers["Docker-Content-Digest"] == digest == sha256_digest(r.content)
    assert r.headers["Content-Type"].split(";")[0].strip() == OCI_MANIFEST


def test_artifact_type_and_annotations_round_trip(registry, client, oras_client, repo, work_dir):
    sbom = write(work_dir / "sbom.spdx.json", json.dumps({"spdxVersion": "SPDX-2.3"}).encode())
    empty = write(work_dir / "empty.json", b"{}")
    annotations = {"org.opencontainers.image.created": "2024-02-02T00:00:00Z", "org.example.sbom.format": "spdx"}
    target = f"{registry.host}/{repo}:sbom"

    resp = push_artifact(oras_client, target, [(sbom, SBOM_TYPE)], artifact_type=SBOM_TYPE,
                         annotations=annotations, empty_config=empty)
    assert resp.status_code == 201, resp.content

    manifest = oras_client.get_manifest(target)
    assert manifest["artifactType"] == SBOM_TYPE
    assert manifest["annotations"] == annotations
    assert manifest["config"] == {"mediaType": OCI_EMPTY, "digest": oras.defaults.blank_config_hash, "size": 2}

    outdir = work_dir / "out"
    oras_client.pull(target, outdir=str(outdir))
    assert (outdir / "sbom.spdx.json").read_bytes() == sbom.read_bytes()
    assert client.get_blob(repo, oras.defaults.blank_config_hash) == b"{}"


def test_manifest_whose_subject_does_not_exist_yet_is_accepted(registry, client, oras_client, repo, work_dir):
    """Spec: a registry MUST initially accept a manifest whose subject is absent,
    so referrers and subjects can be pushed in either order."""
    sig = write(work_dir / "sig.txt", b"signature bytes")
    empty = write(work_dir / "empty.json", b"{}")
    missing = "sha256:" + "ab" * 32
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=missing, size=1234)
    resp = push_artifact(oras_client, f"{registry.host}/{repo}:early-signature", [(sig, SIGNATURE_TYPE)],
                         artifact_type=SIGNATURE_TYPE, annotations={"k": "v"}, empty_config=empty, subject=subject)
    assert resp.status_code == 201, resp.content
    assert oras_client.get_manifest(f"{registry.host}/{repo}:early-signature")["subject"]["digest"] == missing


# ---------------------------------------------------------------------------
# referrers (distribution-spec 1.1)
# ---------------------------------------------------------------------------

@pytest.mark.openregistry_only(reason="referrers API and OCI-Subject header (spec 1.1) are not in Distribution 2.8")
def test_attach_referrer_and_list_it_with_artifact_type_filter(registry, client, oras_client, repo, work_dir):
    client.push_image(repo, "app")
    subject = subject_of(client, repo, "app")
    empty = write(work_dir / "empty.json", b"{}")

    # 1. An SBOM with an explicit artifactType.
    sbom = write(work_dir / "sbom.json", b'{"sbom": true}')
    sbom_annotations = {"org.opencontainers.image.created": "2024-03-03T00:00:00Z", "org.example.sbom.format": "json"}
    r_sbom = push_artifact(oras_client, f"{registry.host}/{repo}:sbom", [(sbom, SBOM_TYPE)],
                           artifact_type=SBOM_TYPE, annotations=sbom_annotations, empty_config=empty,
                           subject=subject)
    assert r_sbom.status_code == 201
    assert r_sbom.headers.get("OCI-Subject") == subject.digest
    sbom_digest = r_sbom.headers["Docker-Content-Digest"]

    # 2. A signature pushed with oras-py's own push(): no artifactType field,
    #    so the referrers API must report the config mediaType instead.
    sig = write(work_dir / "sig.bin", os.urandom(256))
    sig_config = write(work_dir / "sig-config.json", b'{"alg":"none"}')
    r_sig = oras_client.push(
        f"{registry.host}/{repo}:sig",
        files=[f"{sig}:{SIGNATURE_TYPE}"],
        manifest_config=f"{sig_config}:{SIGNATURE_CONFIG_TYPE}",
        manifest_annotations={"org.example.signature.fingerprint": "abcd"},
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    assert r_sig.status_code == 201
    assert r_sig.headers.get("OCI-Subject") == subject.digest
    sig_digest = r_sig.headers["Docker-Content-Digest"]

    # 3. A manifest referring to something else must not show up.
    client.push_image(repo, "other", layers=[b"a different image"])
    other = subject_of(client, repo, "other")
    assert other.digest != subject.digest
    r_other = push_artifact(oras_client, f"{registry.host}/{repo}:other-sbom", [(sbom, SBOM_TYPE)],
                            artifact_type=SBOM_TYPE, annotations={}, empty_config=empty, subject=other)
    assert r_other.headers.get("OCI-Subject") == other.digest

    resp, index = referrers(client, repo, subject.digest)
    assert "OCI-Filters-Applied" not in resp.headers
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sbom_digest, sig_digest}

    sbom_desc = by_digest[sbom_digest]
    assert sbom_desc["mediaType"] == OCI_MANIFEST
    assert sbom_desc["artifactType"] == SBOM_TYPE
    assert sbom_desc["annotations"] == sbom_annotations
    assert sbom_desc["size"] == len(client.get_manifest(repo, sbom_digest).content)

    sig_desc = by_digest[sig_digest]
    assert sig_desc["artifactType"] == SIGNATURE_CONFIG_TYPE
    assert sig_desc["annotations"] == {"org.example.signature.fingerprint": "abcd"}

    resp, filtered = referrers(client, repo, subject.digest, artifact_type=SBOM_TYPE)
    assert resp.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in filtered["manifests"]] == [sbom_digest]

    resp, filtered = referrers(client, repo, subject.digest, artifact_type=SIGNATURE_CONFIG_TYPE)
    assert resp.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in filtered["manifests"]] == [sig_digest]

    resp, none = referrers(client, repo, subject.digest, artifact_type="application/vnd.e2e.nothing")
    assert resp.headers.get("OCI-Filters-Applied") == "artifactType"
    assert none["manifests"] == []


@pytest.mark.openregistry_only(reason="OCI-Subject header (spec 1.1) is not sent by Distribution 2.8")
def test_raw_put_of_manifest_with_subject_returns_oci_subject(registry, client, repo):
    _, subject_digest = client.push_image(repo, "base")
    base = client.get_manifest(repo, subject_digest)
    cfg = client.push_blob(repo, b"{}")
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.e2e.note",
        "config": {"mediaType": OCI_EMPTY, "digest": cfg, "size": 2},
        "layers": [{"mediaType": OCI_EMPTY, "digest": cfg, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(base.content)},
    }).encode()
    r = client.put_manifest(repo, sha256_digest(manifest), manifest)
    assert r.status_code == 201
    assert r.headers.get("OCI-Subject") == subject_digest
    assert r.headers.get("Docker-Content-Digest") == sha256_digest(manifest)

    # An index can be a referrer too; its artifactType is reported as is.
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.e2e.bundle",
        "manifests": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(base.content)},
    }).encode()
    r = client.put_manifest(repo, "bundle", index, media_type=OCI_INDEX)
    assert r.status_code == 201
    assert r.headers.get("OCI-Subject") == subject_digest

    # Without a subject there is no OCI-Subject header.
    r = client.put_manifest(repo, "plain", base.content)
    assert r.status_code == 201
    assert "OCI-Subject" not in r.headers

    _, listing = referrers(client, repo, subject_digest)
    types = {m["digest"]: (m["mediaType"], m.get("artifactType")) for m in listing["manifests"]}
    assert types == {
        sha256_digest(manifest): (OCI_MANIFEST, "application/vnd.e2e.note"),
        sha256_digest(index): (OCI_INDEX, "application/vnd.e2e.bundle"),
    }


@pytest.mark.openregistry_only(reason="referrers API (spec 1.1) is not in Distribution 2.8")
def test_referrers_of_unknown_subject_is_an_empty_index_not_404(client, repo):
    client.push_image(repo, "exists")
    _, index = referrers(client, repo, "sha256:" + "0" * 64)
    assert index["manifests"] == []


@pytest.mark.openregistry_only(reason="referrers API (spec 1.1) is not in Distribution 2.8")
def test_referrers_with_malformed_digest_is_400(client, repo):
    client.push_image(repo, "exists")
    r = client.get(f"/v2/{repo}/referrers/sha256:not-hex")
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.openregistry_only(reason="referrers API (spec 1.1) is not in Distribution 2.8")
def test_deleted_referrer_disappears_from_the_list(registry, client, oras_client, repo, work_dir):
    client.push_image(repo, "app")
    subject = subject_of(client, repo, "app")
    note = write(work_dir / "note.txt", b"note")
    empty = write(work_dir / "empty.json", b"{}")
    r = push_artifact(oras_client, f"{registry.host}/{repo}:note", [(note, "text/plain")],
                      artifact_type="application/vnd.e2e.note", annotations={}, empty_config=empty,
                      subject=subject)
    digest = r.headers["Docker-Content-Digest"]
    _, index = referrers(client, repo, subject.digest)
    assert [m["digest"] for m in index["manifests"]] == [digest]

    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    _, index = referrers(client, repo, subject.digest)
    assert index["manifests"] == []
