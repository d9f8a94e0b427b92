"""Write and read OCI image layouts (image-spec image-layout.md) by hand.

Used to hand skopeo images whose every digest we know in advance, and to
inspect what skopeo wrote back after a round trip through the registry.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterable, Optional

from ocihttp import (
    DOCKER_CONFIG, DOCKER_LIST, DOCKER_MANIFEST, MIB, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST, sha256_digest,
)

REF_NAME = "org.opencontainers.image.ref.name"
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_LIST}


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    d = {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}
    d.update(extra)
    return d


def tar_layer(files: dict[str, bytes]) -> bytes:
    """A small, valid, uncompressed tar (deterministic: fixed mtimes/owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def random_tar_layer(size: int, name: str = "random.bin") -> bytes:
    """A tar holding one file of `size` random bytes (random content, real tar framing)."""
    return tar_layer({name: os.urandom(size)})


def write_big_tar_layer(path: Path, payload_size: int, name: str = "big.bin") -> tuple[str, int]:
    """Stream a tar with one `payload_size`-byte random file to `path`, 1 MiB at a time.

    Never holds the payload in memory. Returns (sha256 digest, size).
    """
    info = tarfile.TarInfo(name)
    info.size = payload_size
    info.mtime = 1700000000
    info.mode = 0o644
    h = hashlib.sha256()
    size = 0
    with open(path, "wb") as f:
        def out(b: bytes):
            nonlocal size
            f.write(b)
            h.update(b)
            size += len(b)

        out(info.tobuf(format=tarfile.GNU_FORMAT))
        left = payload_size
        while left > 0:
            piece = os.urandom(min(MIB, left))
            out(piece)
            left -= len(piece)
        pad = (-payload_size) % 512
        out(b"\0" * pad + b"\0" * 1024)  # end-of-archive: two zero blocks
    return "sha256:" + h.hexdigest(), size


def image_config(diff_ids: Iterable[str], arch: str = "amd64", os_: str = "linux",
                 variant: Optional[str] = None) -> bytes:
    cfg = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": os_,
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "openregistry e2e"}],
    }
    if variant:
        cfg["variant"] = variant
    return json.dumps(cfg, indent=1, sort_keys=True).encode()


class Layout:
    """An OCI image layout directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- writing ---------------------------------------------------------------

    def init(self) -> "Layout":
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        if not (self.root / "index.json").exists():
            self._write_index([])
        return self

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = digest.split(":", 1)
        return self.root / "blobs" / alg / hexpart

    def add_blob(self, data: bytes, media_type: str, **extra) -> dict:
        desc = descriptor(media_type, data, **extra)
        p = self.blob_path(desc["digest"])
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return desc

    def add_blob_file(self, src: Path, media_type: str, digest: str, size: int) -> dict:
        """Move an already-written file into blobs/ (for layers too big for memory)."""
        p = self.blob_path(digest)
        p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, p)
        return {"mediaType": media_type, "digest": digest, "size": size}

    def add_image(self, layers: list[tuple[bytes, str]] | list[dict], *, arch: str = "amd64",
                  os_: str = "linux", docker: bool = False, annotations: Optional[dict] = None,
                  diff_ids: Optional[list[str]] = None, platform: bool = False) -> dict:
        """Add config + manifest for already-added or in-memory layers; return the manifest descriptor.

        `layers` is either [(bytes, mediaType)] or a list of layer descriptors
        already in the layout. diff_ids default to the layer digests (right for
        uncompressed layers).
        """
        descs = []
        for layer in layers:
            if isinstance(layer, dict):
                descs.append(layer)
            else:
                data, mt = layer
                descs.append(self.add_blob(data, mt))
        config = image_config(diff_ids or [d["digest"] for d in descs], arch=arch, os_=os_)
        cfg_desc = self.add_blob(config, DOCKER_CONFIG if docker else OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": cfg_desc,
            "layers": descs,
        }
        if annotations:
            manifest["annotations"] = annotations
        body = json.dumps(manifest, indent=3).encode()
        extra = {"platform": {"architecture": arch, "os": os_}} if platform else {}
        return self.add_blob(body, manifest["mediaType"], **extra)

    def add_index(self, manifests: list[dict], annotations: Optional[dict] = None) -> dict:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        if annotations:
            index["annotations"] = annotations
        body = json.dumps(index, indent=2).encode()
        return self.add_blob(body, OCI_INDEX)

    def tag(self, desc: dict, tag: str) -> None:
        entries = [m for m in self.index()["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
        entry = {k: desc[k] for k in ("mediaType", "digest", "size")}
        if "platform" in desc:
            entry["platform"] = desc["platform"]
        entry["annotations"] = {REF_NAME: tag}
        entries.append(entry)
        self._write_index(entries)

    def _write_index(self, manifests: list[dict]) -> None:
        (self.root / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2)
        )

    # -- reading ---------------------------------------------------------------

    def index(self) -> dict:
        return json.loads((self.root / "index.json").read_text())

    def resolve(self, tag: str) -> dict:
        found = [m for m in self.index()["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == tag]
        assert len(found) == 1, f"tag {tag!r} resolves to {len(found)} entries in {self.root}/index.json"
        return found[0]

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def verify_blob(self, digest: str, size: Optional[int] = None) -> None:
        """The file named by `digest` really has that digest (and size)."""
        from ocihttp import file_digest
        p = self.blob_path(digest)
        assert p.exists(), f"blob {digest} missing from {self.root}"
        alg = digest.split(":", 1)[0]
        assert file_digest(p, alg) == digest, f"blob file {p} does not hash to its name"
        if size is not None:
            assert p.stat().st_size == size, f"blob {digest}: size {p.stat().st_size} != descriptor size {size}"

    def closure(self, desc: dict) -> dict[str, int]:
        """All digests reachable from a manifest/index descriptor -> size (verifying each blob)."""
        out: dict[str, int] = {}

        def walk(d: dict):
            self.verify_blob(d["digest"], d["size"])
            out[d["digest"]] = d["size"]
            mt = d["mediaType"]
            if mt in MANIFEST_TYPES or mt in INDEX_TYPES:
                doc = json.loads(self.read_blob(d["digest"]))
                if mt in INDEX_TYPES:
                    for m in doc["manifests"]:
                        walk(m)
                else:
                    walk(doc["config"])
                    for layer in doc["layers"]:
                        walk(layer)

        walk(desc)
        return out
