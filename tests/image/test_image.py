"""The container image (scripts/package-image): reproducible, static, configured as documented, and
working: unpacked with umoci, its binary runs the e2e smoke tests, it runs under crun where this
machine allows namespaces, and it survives a push to a running OpenRegistry and a pull back.

Run by `scripts/test image` (which builds the layout first and passes it in), or alone with the e2e
venv after scripts/image-deps and scripts/e2e-deps:

    ~/.cache/openregistry/venv/bin/python -m pytest tests/image -q -p no:cacheprovider

Environment:
  IMAGE_LAYOUT   an OCI layout scripts/package-image wrote from this checkout (default: package
                 one into a temporary directory first)
  IMAGE_DIGEST   the index digest it printed (read from the layout when unset)
  IMAGE_KEEP_TMP=1  keep the temporary directory
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "scripts" / "package-image"
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import registry_server  # noqa: E402  (the e2e suite's process helper)

UID = GID = 65532
PORT = 8080


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("text", True)
    kw.setdefault("capture_output", True)
    try:
        return subprocess.run([str(c) for c in cmd], **kw)
    except subprocess.CalledProcessError as exc:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({exc.returncode}):\n"
                             f"{exc.stdout}\n{exc.stderr}") from None


def package(out: Path, *extra: str) -> str:
    """scripts/package-image; its stdout's last line is the index digest."""
    result = run([PACKAGE, "--out", out, *extra])
    sys.stderr.write(result.stderr)
    digest = result.stdout.strip().splitlines()[-1]
    assert digest.startswith("sha256:") and len(digest) == 71, result.stdout
    return digest


def blob(layout: Path, digest: str) -> bytes:
    data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def read_layout(layout: Path) -> dict:
    """index.json -> image index -> manifest -> config and layer, as parsed JSON and bytes."""
    top = json.loads((layout / "index.json").read_text())
    [ref] = top["manifests"]
    index = json.loads(blob(layout, ref["digest"]))
    [entry] = index["manifests"]
    manifest = json.loads(blob(layout, entry["digest"]))
    config = json.loads(blob(layout, manifest["config"]["digest"]))
    [layer] = manifest["layers"]
    return {"top": top, "ref": ref, "index": index, "entry": entry, "manifest": manifest,
            "config": config, "layer": layer, "layer_bytes": blob(layout, layer["digest"])}


def git(*args: str) -> str:
    return run(["git", "-C", ROOT, *args]).stdout.strip()


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tmp_root():
    root = Path(tempfile.mkdtemp(prefix="openregistry-image-"))
    yield root
    if os.environ.get("IMAGE_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def image(tmp_root):
    """(layout dir, tag, index digest) of the image under test."""
    given = os.environ.get("IMAGE_LAYOUT")
    if given:
        layout = Path(given)
        digest = os.environ.get("IMAGE_DIGEST") or read_layout(layout)["ref"]["digest"]
    else:
        layout = tmp_root / "oci"
        digest = package(layout)
    ref = read_layout(layout)["ref"]
    assert ref["digest"] == digest, "the layout's index.json does not point at the printed digest"
    return layout, ref["annotations"]["org.opencontainers.image.ref.name"], digest


@pytest.fixture(scope="session")
def bundle(image, tmp_root):
    """The image unpacked by umoci (rootless: files owned by whoever runs the test)."""
    layout, tag, _ = image
    target = tmp_root / "bundle"
    run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", target])
    return target


@pytest.fixture(scope="session")
def unpacked_bin(bundle):
    """The unpacked rootfs' /openregistry, also what the e2e helpers (registry_server) start."""
    binary = bundle / "rootfs" / "openregistry"
    previous = os.environ.get("OPENREGISTRY_BIN")
    os.environ["OPENREGISTRY_BIN"] = str(binary)
    yield binary
    if previous is None:
        os.environ.pop("OPENREGISTRY_BIN", None)
    else:
        os.environ["OPENREGISTRY_BIN"] = previous


# ---------------------------------------------------------------------------
# the layout
# ---------------------------------------------------------------------------

def test_two_builds_give_the_same_digest(image, tmp_root):
    layout, tag, digest = image
    fresh = tmp_root / "second-build"
    again = package(fresh, "--tag", tag)
    assert again == digest, "a second build of the same commit gave another index digest"
    first = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    second = sorted(p.name for p in (fresh / "blobs" / "sha256").iterdir())
    assert first == second
    assert (layout / "index.json").read_bytes() == (fresh / "index.json").read_bytes()


def test_index_with_one_linux_amd64_manifest(image):
    layout, tag, digest = image
    parts = read_layout(layout)
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert parts["ref"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert parts["index"]["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert parts["entry"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert parts["entry"]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert parts["manifest"]["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert parts["layer"]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_layer_is_deterministic(image):
    """gzip without a timestamp; tar entries sorted, with the commit's time and fixed owners."""
    layout, _, _ = image
    parts = read_layout(layout)
    gz = parts["layer_bytes"]
    assert gz[:3] == b"\x1f\x8b\x08"
    assert struct.unpack("<I", gz[4:8])[0] == 0, "gzip header carries a timestamp"
    assert gz[3] & 0x08 == 0, "gzip header carries a file name"
    tar_bytes = gzip.decompress(gz)
    assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == parts["config"]["rootfs"]["diff_ids"][0]
    epoch = int(git("log", "-1", "--format=%ct", "HEAD"))
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {m.mtime for m in members} == {epoch}
    assert all(m.uname == "" and m.gname == "" for m in members)
    by_name = {m.name: m for m in members}
    assert set(by_name) == {"data", "etc", "etc/group", "etc/passwd", "openregistry", "tmp"}
    assert (by_name["openregistry"].mode, by_name["openregistry"].uid) == (0o755, 0)
    assert by_name["data"].isdir() and (by_name["data"].uid, by_name["data"].gid) == (UID, GID)
    assert by_name["tmp"].mode == 0o1777


def test_config(image):
    layout, _, _ = image
    config = read_layout(layout)["config"]
    c = config["config"]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert c["User"] == f"{UID}:{GID}"
    assert c["Entrypoint"] == ["/openregistry"] and c["Cmd"] == ["serve"]
    assert c["ExposedPorts"] == {f"{PORT}/tcp": {}}
    assert c["Volumes"] == {"/data": {}}
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env == {"OPENREGISTRY_DATA_DIR": "/data", "OPENREGISTRY_LISTEN": f"0.0.0.0:{PORT}"}
    health = c["Healthcheck"]
    assert health["Test"] == ["CMD", "/openregistry", "health"]
    assert health["Interval"] > 0 and health["Timeout"] > 0 and health["Retries"] > 0

    labels = c["Labels"]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(git("log", "-1", "--format=%ct", "HEAD"))))
    assert labels["org.opencontainers.image.revision"] == git("rev-parse", "HEAD")
    assert labels["org.opencontainers.image.created"] == created == config["created"]
    assert labels["org.opencontainers.image.title"] == "openregistry"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")
    assert labels["org.opencontainers.image.description"]
    version = run(["cargo", "pkgid", "-p", "openregistry-native", "--offline"], cwd=ROOT).stdout.strip()
    assert version.endswith("@" + labels["org.opencontainers.image.version"]) \
        or version.endswith("#" + labels["org.opencontainers.image.version"])


# ---------------------------------------------------------------------------
# the unpacked binary
# ---------------------------------------------------------------------------

def elf_interpreter(data: bytes) -> bytes | None:
    """PT_INTERP of a 64-bit little-endian ELF file, or None (static)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    e_machine = struct.unpack_from("<H", data, 18)[0]
    assert e_machine == 62, f"not x86_64 (e_machine {e_machine})"
    phoff = struct.unpack_from("<Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0")
    return None


def test_unpacked_binary_is_static(bundle):
    binary = bundle / "rootfs" / "openregistry"
    assert os.access(binary, os.X_OK)
    data = binary.read_bytes()
    assert elf_interpreter(data) is None, "the binary has an ELF interpreter (dynamically linked)"
    described = run(["file", "-b", binary]).stdout
    assert "statically linked" in described or "static-pie linked" in described, described
    assert b"libc.so" not in data and b"ld-linux" not in data


def test_binary_holds_no_build_paths(bundle):
    """--remap-path-prefix and stripped debug info: the checkout's and toolchain's paths are gone."""
    data = (bundle / "rootfs" / "openregistry").read_bytes()
    home = Path.home()
    for path in {ROOT, home / ".cargo", home / ".rustup", Path(os.environ.get("CARGO_HOME", home / ".cargo"))}:
        assert str(path).encode() not in data, f"{path} appears in the binary"


def test_unpacked_runtime_config(bundle):
    """umoci turned the image config into the runtime spec the image promises."""
    spec = json.loads((bundle / "config.json").read_text())
    process = spec["process"]
    assert process["args"] == ["/openregistry", "serve"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (UID, GID)
    assert "OPENREGISTRY_LISTEN=0.0.0.0:8080" in process["env"]


def test_e2e_smoke_with_the_unpacked_binary(unpacked_bin):
    env = dict(os.environ, OPENREGISTRY_BIN=str(unpacked_bin))
    for key in ("E2E_HOST", "E2E_METADATA", "E2E_STORAGE", "E2E_REGISTRY"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e/test_skopeo_roundtrip.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, text=True, capture_output=True)
    sys.stderr.write(result.stdout[-2000:])
    assert result.returncode == 0, f"e2e smoke tests failed with the unpacked binary:\n{result.stdout}\n{result.stderr}"


def test_health_command(unpacked_bin, tmp_root):
    """`openregistry health`, the image's health check, as the image runs it (the listen address
    from OPENREGISTRY_LISTEN): exit 0 while the registry answers, not 0 once it is gone."""
    server = registry_server.RegistryServer(tmp_root / "health", name="health")
    server.start()
    env = dict(os.environ, OPENREGISTRY_LISTEN=server.host, OPENREGISTRY_DATA_DIR=str(server.data_dir))
    try:
        ok = run([unpacked_bin, "health"], check=False, env=env)
        assert ok.returncode == 0, ok.stderr
        assert f"http://{server.host}/v2/" in ok.stdout
    finally:
        rc = server.stop()
    assert rc == 0, server.log_tail()
    down = run([unpacked_bin, "health"], check=False, env=env)
    assert down.returncode != 0 and down.stderr.strip(), down


# ---------------------------------------------------------------------------
# crun (root, namespaces permitting)
# ---------------------------------------------------------------------------

def test_runs_under_crun(image, tmp_root):
    if os.geteuid() != 0:
        pytest.skip("crun: needs root here (the bundle is unpacked with its owners)")
    if not shutil.which("crun"):
        pytest.skip("crun: not installed (scripts/image-deps installs it)")
    layout, tag, _ = image
    target = tmp_root / "crun-bundle"
    run(["umoci", "unpack", "--image", f"{layout}:{tag}", target])  # as root: /data is 65532's
    spec_path = target / "config.json"
    spec = json.loads(spec_path.read_text())
    port = registry_server.free_port()
    # Share the host's network (a new network namespace would need a veth set-up) and listen on a
    # free loopback port: an open registry may only listen on loopback.
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    spec["process"]["env"] = [e for e in spec["process"]["env"] if not e.startswith("OPENREGISTRY_LISTEN=")]
    spec["process"]["env"].append(f"OPENREGISTRY_LISTEN=127.0.0.1:{port}")
    spec["process"]["terminal"] = False
    spec_path.write_text(json.dumps(spec))
    name = f"openregistry-image-test-{os.getpid()}"
    log = open(tmp_root / "crun.log", "wb")
    proc = subprocess.Popen(["crun", "run", "--bundle", str(target), name],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        answered = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        if answered is None:
            proc.poll()
            output = (tmp_root / "crun.log").read_text(errors="replace").strip()
            if proc.returncode is not None:
                reason = f"crun could not run the bundle here (exit {proc.returncode}): {output[-600:]}"
                print(f"\nSKIP {reason}", file=sys.stderr)
                pytest.skip(reason)
            raise AssertionError(f"the container did not answer on 127.0.0.1:{port} within 15 s:\n{output}")
        assert answered.status_code == 200
        assert answered.headers.get("Docker-Distribution-API-Version") == "registry/2.0"
        health = run(["crun", "exec", name, "/openregistry", "health"], check=False)
        assert health.returncode == 0, f"the health check failed inside the container:\n{health.stderr}"
        # The data directory is the image's /data, written by the unprivileged user.
        data = target / "rootfs" / "data"
        assert (data / "registry.sqlite").exists()
        assert (data / "registry.sqlite").stat().st_uid == UID
        run(["crun", "kill", name, "TERM"], check=False)
        assert proc.wait(timeout=40) == 0, (tmp_root / "crun.log").read_text(errors="replace")
    finally:
        if proc.poll() is None:
            run(["crun", "kill", name, "KILL"], check=False)
            proc.wait(timeout=10)
        run(["crun", "delete", "--force", name], check=False)
        log.close()


# ---------------------------------------------------------------------------
# push to a running OpenRegistry, pull back
# ---------------------------------------------------------------------------

def test_push_to_openregistry_and_pull_back(image, unpacked_bin, tmp_root):
    layout, tag, digest = image
    server = registry_server.RegistryServer(tmp_root / "push", name="push-target")
    server.start()
    try:
        ref = f"{server.host}/openregistry/openregistry:{tag}"
        pushed = package(layout, "--no-build", "--tag", tag, "--push", ref, "--", "--dest-tls-verify=false")
        assert pushed == digest
        raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"]).stdout.encode()
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest, "the registry serves another index"

        pulled = tmp_root / "pulled"
        run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{pulled}:{tag}"])
        mine, theirs = read_layout(layout), read_layout(pulled)
        assert theirs["ref"]["digest"] == digest
        assert theirs["entry"]["digest"] == mine["entry"]["digest"]
        assert theirs["manifest"]["config"]["digest"] == mine["manifest"]["config"]["digest"]
        assert theirs["layer"]["digest"] == mine["layer"]["digest"]
        by_digest = run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                         f"docker://{server.host}/openregistry/openregistry@{mine['entry']['digest']}"]).stdout
        assert json.loads(by_digest)["layers"][0]["digest"] == mine["layer"]["digest"]
    finally:
        rc = server.stop()
    assert rc == 0, server.log_tail()
