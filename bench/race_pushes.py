"""Race runs: rounds of 4-8 concurrent skopeo pushes of images that share layers, against
OpenRegistry (native, embedded defaults) and CNCF Distribution side by side, each round into
fresh repositories; after every round each image is read back over HTTP (manifest by tag, every
blob by digest with its size). A round fails when a push fails or anything it pushed does not
read back exactly. Not a test: it counts failures and writes them to a JSON file.

Run through scripts/race-pushes, which installs skopeo and builds the release binary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from httpc import Connection  # noqa: E402
from ocilayout import Layout, random_tar_layer  # noqa: E402
from servers import Distribution, OpenRegistry, stop_all  # noqa: E402

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MIB = 1024 * 1024


def build_layout(root: Path, images: int, rng: random.Random) -> tuple[Layout, list[tuple[str, dict]]]:
    """`images` images over two shared base layers (4 and 2 MiB) and one shared middle layer
    (1 MiB), each with a small layer of its own: the shape that makes pushes race on blobs."""
    layout = Layout(root).init()
    base = [layout.add_blob(random_tar_layer(4 * MIB, "base.bin"), OCI_LAYER),
            layout.add_blob(random_tar_layer(2 * MIB, "lib.bin"), OCI_LAYER)]
    middle = layout.add_blob(random_tar_layer(MIB, "mid.bin"), OCI_LAYER)
    tagged = []
    for i in range(images):
        own = layout.add_blob(random_tar_layer(rng.randrange(1000, 200_000), f"app{i}.bin"), OCI_LAYER)
        manifest = layout.add_image([*base, middle, own])
        tag = f"img{i}"
        layout.tag(manifest, tag)
        tagged.append((tag, manifest))
    return layout, tagged


def skopeo_push(skopeo: str, layout: Layout, tag: str, dest: str) -> tuple[bool, str]:
    cmd = [skopeo, "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
           "--retry-times", "0", f"oci:{layout.root}:{tag}", dest]
    proc = subprocess.run(cmd, capture_output=True, timeout=300)
    return proc.returncode == 0, proc.stderr.decode(errors="replace")[-600:]


def reads_back(port: int, repo: str, tag: str, manifest: dict, layout: Layout) -> str:
    """'' when the image reads back exactly, else what differs."""
    accept = manifest["mediaType"]
    with Connection(port, timeout=60) as c:
        r = c.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
        if r.status != 200:
            return f"manifest {repo}:{tag}: HTTP {r.status}"
        if "sha256:" + hashlib.sha256(r.body).hexdigest() != manifest["digest"]:
            return f"manifest {repo}:{tag}: other bytes"
        for digest, size in layout.closure(manifest).items():
            if digest == manifest["digest"]:
                continue
            r = c.request("GET", f"/v2/{repo}/blobs/{digest}")
            if r.status != 200 or len(r.body) != size:
                return f"blob {digest[:19]} in {repo}: HTTP {r.status}, {len(r.body)} of {size} bytes"
            if "sha256:" + hashlib.sha256(r.body).hexdigest() != digest:
                return f"blob {digest[:19]} in {repo}: other bytes"
    return ""


def run_rounds(server, label: str, layout: Layout, tagged, rounds: int, rng: random.Random,
               skopeo: str) -> dict:
    failures: list[dict] = []
    started = time.monotonic()
    for n in range(rounds):
        pushers = rng.randint(4, 8)
        chosen = [tagged[i % len(tagged)] for i in range(pushers)]
        # Half the rounds push into one repository (tags race too), half into one each.
        shared_repo = n % 2 == 0
        jobs = [(f"race/r{n}" if shared_repo else f"race/r{n}-{i}", tag, manifest)
                for i, (tag, manifest) in enumerate(chosen)]
        gate = threading.Barrier(len(jobs))
        outcomes: list[tuple[bool, str]] = [(False, "not run")] * len(jobs)

        def push(i: int) -> None:
            repo, tag, _ = jobs[i]
            gate.wait()
            outcomes[i] = skopeo_push(skopeo, layout, tag, f"docker://{server.host}/{repo}:{tag}")

        threads = [threading.Thread(target=push, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        problems = [f"push {jobs[i][0]}:{jobs[i][1]}: {err.strip()}" for i, (ok, err) in enumerate(outcomes) if not ok]
        for i, (ok, _) in enumerate(outcomes):
            if ok:
                wrong = reads_back(server.port, *jobs[i], layout)
                if wrong:
                    problems.append(wrong)
        if problems:
            failures.append({"round": n, "pushers": pushers, "shared_repository": shared_repo,
                             "problems": problems})
        print(f"[{label}] round {n + 1}/{rounds}: {pushers} pushers, "
              f"{'FAILED: ' + problems[0][:200] if problems else 'ok'}", flush=True)
    return {"registry": label, "rounds": rounds, "failed_rounds": len(failures),
            "seconds": round(time.monotonic() - started, 1), "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--only", choices=["openregistry", "distribution"], default=None)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", default="target/race/race-pushes.json")
    args = parser.parse_args()
    skopeo = os.environ.get("SKOPEO", "skopeo")
    work = Path(tempfile.mkdtemp(prefix="openregistry-race-"))
    rng = random.Random(args.seed)
    layout, tagged = build_layout(work / "layout", 8, rng)
    results = []
    try:
        servers = []
        if args.only in (None, "openregistry"):
            servers.append((OpenRegistry(work, "openregistry", Path(os.environ["OPENREGISTRY_BIN"])), "OpenRegistry"))
        if args.only in (None, "distribution"):
            servers.append((Distribution(work, "distribution",
                                         Path(os.environ.get("DISTRIBUTION_BIN", "/usr/bin/docker-registry"))),
                            "Distribution"))
        for server, label in servers:
            server.start()
            try:
                results.append(run_rounds(server, label, layout, tagged, args.rounds,
                                          random.Random(args.seed), skopeo))
            finally:
                server.stop()
    finally:
        stop_all()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    for r in results:
        print(f"{r['registry']}: {r['failed_rounds']} of {r['rounds']} rounds failed, {r['seconds']} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
