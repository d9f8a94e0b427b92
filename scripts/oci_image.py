#!/usr/bin/env python3
"""Write an OCI image layout for the native registry, without a container daemon.

Called by scripts/package-image (which builds the static binary first); Python 3 standard library
only. The result is reproducible: the same binary, epoch and labels give byte-identical blobs, so
the same image index digest, on every run and machine:

  * one layer, a tar with its entries sorted, every mtime SOURCE_DATE_EPOCH, fixed owners and
    modes, no user or group names; gzip-compressed with mtime 0, no file name and level 9
    (zlib's output for a given input and level has been stable for years);
  * JSON written with sorted keys and no insignificant white space;
  * every timestamp (config `created`, history, the created label) is SOURCE_DATE_EPOCH.

Layout written to --out (created or emptied first):

  oci-layout, index.json            -> the image index (one manifest per platform, `ref.name` = --tag)
  blobs/sha256/<image index>        -> the image manifest, linux/amd64
  blobs/sha256/<manifest>           -> config + one layer
  blobs/sha256/<config>, <layer>

Prints the image index digest (what `skopeo inspect --raw` of the pushed tag hashes to).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import time
from pathlib import Path

# The container's unprivileged user by default (distroless' "nonroot"); /data belongs to the
# image's user.
UID = GID = 65532
LISTEN_PORT = 8080

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def rfc3339(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def layer_tar(binary: bytes, epoch: int, uid: int = UID, gid: int = GID) -> bytes:
    """The root filesystem: /openregistry, /data (the volume), /etc/{passwd,group}, /tmp."""
    entries = [
        # (path, type, mode, uid, gid, content)
        ("data/", tarfile.DIRTYPE, 0o755, uid, gid, None),
        ("etc/", tarfile.DIRTYPE, 0o755, 0, 0, None),
        ("etc/group", tarfile.REGTYPE, 0o644, 0, 0, GROUP.encode()),
        ("etc/passwd", tarfile.REGTYPE, 0o644, 0, 0, PASSWD.encode()),
        ("openregistry", tarfile.REGTYPE, 0o755, 0, 0, binary),
        ("tmp/", tarfile.DIRTYPE, 0o1777, 0, 0, None),
    ]
    entries.sort(key=lambda e: e[0])
    out = io.BytesIO()
    # USTAR: no PAX headers (which could carry atime/ctime), fixed 512-byte records.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, kind, mode, uid, gid, content in entries:
            info = tarfile.TarInfo(path)
            info.type = kind
            info.mode = mode
            info.uid, info.gid = uid, gid
            info.uname = info.gname = ""
            info.mtime = epoch
            info.size = len(content) if content is not None else 0
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def elf_interpreter(data: bytes) -> str | None:
    """The PT_INTERP of a 64-bit little-endian ELF file; None for a static one."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("oci_image.py: the binary is not a 64-bit little-endian ELF file")
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode(errors="replace")
    return None


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def image_config(args, diff_id: str) -> dict:
    created = rfc3339(args.source_date_epoch)
    labels = {
        "org.opencontainers.image.title": "openregistry",
        "org.opencontainers.image.description": args.description,
        "org.opencontainers.image.source": args.source,
        "org.opencontainers.image.url": args.source,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.licenses": args.licenses,
    }
    return {
        "architecture": args.arch,
        "os": "linux",
        "created": created,
        "config": {
            "User": args.user,
            "Env": [
                "OPENREGISTRY_DATA_DIR=/data",
                f"OPENREGISTRY_LISTEN=0.0.0.0:{LISTEN_PORT}",
            ],
            "ExposedPorts": {f"{LISTEN_PORT}/tcp": {}},
            "Volumes": {"/data": {}},
            "WorkingDir": "/data",
            "Entrypoint": ["/openregistry"],
            "Cmd": ["serve"],
            "StopSignal": "SIGTERM",
            "Labels": labels,
            # Docker's extension (podman and Docker read it; the OCI spec has no health check).
            # Durations in nanoseconds. `openregistry health` GETs /v2/ on the listen address.
            "Healthcheck": {
                "Test": ["CMD", "/openregistry", "health"],
                "Interval": 30_000_000_000,
                "Timeout": 10_000_000_000,
                "StartPeriod": 10_000_000_000,
                "Retries": 3,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {
                "created": created,
                "created_by": f"scripts/package-image: /openregistry ({args.target}, {args.revision})",
            }
        ],
    }


class Layout:
    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs" / "sha256"

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.blobs.mkdir(parents=True)
        (self.root / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))

    def put(self, data: bytes, media_type: str, **extra) -> dict:
        digest = sha256(data)
        (self.blobs / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", required=True, type=Path, help="the static openregistry binary")
    p.add_argument("--out", required=True, type=Path, help="OCI layout directory (replaced)")
    p.add_argument("--tag", required=True, help="ref.name of the image in the layout")
    p.add_argument("--arch", default="amd64")
    p.add_argument("--target", default="x86_64-unknown-linux-musl", help="the Rust target (for history)")
    p.add_argument("--source-date-epoch", type=int,
                   default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    p.add_argument("--revision", required=True, help="the git commit")
    p.add_argument("--version", required=True)
    p.add_argument("--source", required=True, help="the repository URL")
    p.add_argument("--licenses", required=True, help="SPDX expression")
    p.add_argument("--description", required=True)
    p.add_argument("--user", default=f"{UID}:{GID}", help="UID:GID the container runs as (owns /data)")
    p.add_argument("--summary", type=Path, help="also write digests and sizes here, as JSON")
    args = p.parse_args(argv)
    try:
        uid, gid = (int(n) for n in args.user.split(":"))
    except ValueError:
        p.error(f"--user must be numeric UID:GID, not {args.user!r}")

    binary = args.binary.read_bytes()
    interpreter = elf_interpreter(binary)
    if interpreter is not None:
        p.error(f"{args.binary} is dynamically linked (interpreter {interpreter!r}); a scratch image needs a static binary")
    tar = layer_tar(binary, args.source_date_epoch, uid, gid)
    layer_gz = gzip_bytes(tar)

    layout = Layout(args.out)
    layout.create()
    layer = layout.put(layer_gz, MEDIA_LAYER_GZIP)
    config = layout.put(canonical_json(image_config(args, sha256(tar))), MEDIA_CONFIG)
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": {
            "org.opencontainers.image.created": rfc3339(args.source_date_epoch),
            "org.opencontainers.image.revision": args.revision,
            "org.opencontainers.image.source": args.source,
            "org.opencontainers.image.version": args.version,
        },
    }
    manifest = layout.put(canonical_json(manifest_doc), MEDIA_MANIFEST,
                          platform={"architecture": args.arch, "os": "linux"})
    index_doc = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [manifest]}
    index = layout.put(canonical_json(index_doc), MEDIA_INDEX)
    index["annotations"] = {"org.opencontainers.image.ref.name": args.tag}
    top = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [index]}
    (args.out / "index.json").write_bytes(canonical_json(top))

    if args.summary:
        args.summary.write_text(json.dumps({
            "index": index["digest"],
            "manifest": manifest["digest"],
            "config": config["digest"],
            "layer": layer["digest"],
            "layer_size": layer["size"],
            "layer_uncompressed_size": len(tar),
            "binary_size": len(binary),
            "image_size": layer["size"] + config["size"] + manifest["size"] + index["size"],
        }, indent=2) + "\n")
    print(index["digest"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
