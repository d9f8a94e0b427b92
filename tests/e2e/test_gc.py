"""Garbage collection end to end, on every host and store (`POST /api/gc`, natively also the
`openregistry gc` command): it frees exactly what no manifest references (counted in its report,
and seen in the store itself: files, S3 objects, R2 keys), never anything a tagged image needs,
and never a blob a concurrent push is referencing: rounds of concurrent skopeo pushes run while
the collector runs in a loop, each round re-pushing layers the previous round's deletes left
unreferenced, and every image must push and read back byte-exact.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time

import pytest

import cloudflare_host
from ocihttp import MIB, OciClient
from ocilayout import Layout, random_tar_layer
from stored import rows_of
from test_r2_storage import r2_object_keys
from test_skopeo_roundtrip import pull, push

pytestmark = pytest.mark.openregistry_only

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
STORAGE = os.environ.get("E2E_STORAGE", "").strip().lower()

# The race rounds' grace window: longer than one small push takes between its HEAD and its
# manifest PUT on a loaded machine, short enough for rounds to wait it out.
RACE_GRACE_SECONDS = 6
RACE_ROUNDS = int(os.environ.get("E2E_GC_RACE_ROUNDS", "3"))


def collector(registry_factory, name: str, grace: int = 0):
    return registry_factory(name, env={"OPENREGISTRY_GC_GRACE_SECONDS": str(grace),
                                       "OPENREGISTRY_GC_SCHEDULE": "false"})


def stored_objects(server, s3_server) -> "dict[str, int] | None":
    """What the blob store holds (name → size; R2: size unknown, -1), or None for Skynet (whose
    portals cannot delete: the collector forgets skylinks, and the portal unpins nothing)."""
    if cloudflare_host.CLOUDFLARE:
        return {key: -1 for key in r2_object_keys(server) if key.startswith(("blobs/", "uploads/"))}
    if s3_server is not None:
        return s3_server.objects(server.env["OPENREGISTRY_S3_BUCKET"])
    if STORAGE == "skynet":
        return None
    root = server.data_dir / "blobs"
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def gc(client: OciClient, dry_run: bool = False) -> dict:
    r = client.post("/api/gc" + ("?dry_run=true" if dry_run else ""))
    assert r.status_code == 200, r.text
    return r.json()


def two_images(root, rng) -> tuple[Layout, dict, dict, dict]:
    layout = Layout(root).init()
    shared = layout.add_blob(random_tar_layer(MIB, "shared.bin"), OCI_LAYER)
    own_a = layout.add_blob(random_tar_layer(300_000 + rng.randrange(1000), "a.bin"), OCI_LAYER)
    own_b = layout.add_blob(random_tar_layer(200_000 + rng.randrange(1000), "b.bin"), OCI_LAYER)
    a = layout.add_image([shared, own_a])
    b = layout.add_image([shared, own_b])
    layout.tag(a, "a")
    layout.tag(b, "b")
    return layout, a, b, own_a


def test_gc_frees_exactly_what_nothing_references_and_the_store_shrinks(
        registry_factory, s3_server, neon_backend, work_dir, repo):
    server = collector(registry_factory, "gc")
    client = OciClient(server.base_url)
    layout, a, b, own_a = two_images(work_dir / "layout", random.Random(3))
    for tag in ("a", "b"):
        push(f"oci:{layout.root}:{tag}", f"docker://{server.host}/{repo}:{tag}")
    before = stored_objects(server, s3_server)

    r = client.delete(f"/v2/{repo}/manifests/{a['digest']}")
    assert r.status_code == 202, r.text
    closure_a = layout.closure(a)
    config_a = [d for d in closure_a if d not in (a["digest"], own_a["digest"])
                and d not in layout.closure(b)]
    freed = {own_a["digest"]: own_a["size"], **{d: closure_a[d] for d in config_a}}
    assert len(freed) == 2, closure_a  # a's own layer and its config; the shared layer stays

    planned = gc(client, dry_run=True)
    assert planned["dry_run"] is True
    assert planned["blobs_deleted"] == 2 and planned["blob_bytes_freed"] == sum(freed.values()), planned
    assert stored_objects(server, s3_server) == before

    report = gc(client)
    assert report["blob_links_deleted"] == 2, report
    assert report["blobs_deleted"] == 2, report
    assert report["blob_bytes_freed"] == sum(freed.values()), report
    assert report["storage_errors"] == 0 and report["skipped_in_use"] == 0, report
    after = stored_objects(server, s3_server)
    if after is not None:
        gone = set(before) - set(after)
        assert len(gone) == 2 and set(after) <= set(before), (before, after)
        if -1 not in before.values():
            assert sum(before[k] for k in gone) == sum(freed.values())
    for digest in freed:
        assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert rows_of(server, neon_backend, "SELECT locator FROM blob_deletions", []) == []

    # What is left is whole: b pulls byte-exact with skopeo.
    out = work_dir / "pulled"
    pull(f"docker://{server.host}/{repo}:b", f"oci:{out}:b")
    pulled = Layout(out)
    for digest, size in layout.closure(b).items():
        pulled.verify_blob(digest, size)

    again = gc(client)
    assert again["blobs_deleted"] == again["blob_links_deleted"] == 0, again


@pytest.mark.native_only
def test_the_gc_command_reports_as_json_and_a_dry_run_changes_nothing(registry_factory, s3_server, work_dir, repo):
    server = collector(registry_factory, "gc-cli")
    client = OciClient(server.base_url)
    digest = client.push_blob(repo, os.urandom(4321))
    before = stored_objects(server, s3_server)
    env = {**os.environ, **server.env, "OPENREGISTRY_DATA_DIR": str(server.data_dir),
           "OPENREGISTRY_GC_GRACE_SECONDS": "0", "RUST_LOG": "warn"}
    binary = os.environ["OPENREGISTRY_BIN"]

    def run(*args: str) -> dict:
        proc = subprocess.run([binary, "gc", *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return json.loads(proc.stdout)

    planned = run("--dry-run")
    assert planned["dry_run"] is True and planned["blobs_deleted"] == 1, planned
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200
    assert stored_objects(server, s3_server) == before
    done = run()  # while the server runs: collection is online
    assert done["blobs_deleted"] == 1 and done["blob_bytes_freed"] == 4321, done
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def race_layout(root, rng) -> tuple[Layout, list[str]]:
    """Six images over two shared base layers and one shared middle layer, each with its own."""
    layout = Layout(root).init()
    base = [layout.add_blob(random_tar_layer(MIB, "base.bin"), OCI_LAYER),
            layout.add_blob(random_tar_layer(512 * 1024, "lib.bin"), OCI_LAYER)]
    middle = layout.add_blob(random_tar_layer(256 * 1024, "mid.bin"), OCI_LAYER)
    tags = []
    for i in range(6):
        own = layout.add_blob(random_tar_layer(rng.randrange(1000, 50_000), f"app{i}.bin"), OCI_LAYER)
        layout.tag(layout.add_image([*base, middle, own]), f"img{i}")
        tags.append(f"img{i}")
    return layout, tags


def reads_back(client: OciClient, repo: str, tag: str, layout: Layout) -> str:
    """'' when the image reads back exactly, else what differs."""
    manifest = layout.resolve(tag)
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": manifest["mediaType"]})
    if r.status_code != 200:
        return f"manifest {repo}:{tag}: HTTP {r.status_code}"
    for digest, size in layout.closure(manifest).items():
        if digest == manifest["digest"]:
            continue
        r = client.get(f"/v2/{repo}/blobs/{digest}")
        if r.status_code != 200 or len(r.content) != size:
            return f"blob {digest[:19]} of {repo}:{tag}: HTTP {r.status_code}, {len(r.content)} of {size} bytes"
    return ""


@pytest.mark.skipif(STORAGE == "skynet", reason="the collector's races are the database's: run on every host, "
                                                 "once per database, not again for Skynet's storage")
def test_gc_running_through_concurrent_pushes_never_breaks_one(registry_factory, work_dir, repo):
    server = collector(registry_factory, "gc-race", grace=RACE_GRACE_SECONDS)
    client = OciClient(server.base_url)
    rng = random.Random(29)
    layout, tags = race_layout(work_dir / "layout", rng)
    stop = threading.Event()
    runs: list[dict] = []
    errors: list[str] = []

    def collect_in_a_loop() -> None:
        gc_client = OciClient(server.base_url)
        while not stop.is_set():
            r = gc_client.post("/api/gc")
            if r.status_code == 200:
                runs.append(r.json())
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.2)

    collector_thread = threading.Thread(target=collect_in_a_loop, daemon=True)
    collector_thread.start()
    problems: list[str] = []
    started = time.monotonic()
    try:
        for n in range(RACE_ROUNDS):
            chosen = rng.sample(tags, rng.randint(4, 6))
            outcomes: dict[str, str] = {}
            gate = threading.Barrier(len(chosen))

            def push_one(tag: str) -> None:
                gate.wait()
                try:
                    push(f"oci:{layout.root}:{tag}", f"docker://{server.host}/{repo}:{tag}")
                    outcomes[tag] = ""
                except BaseException as exc:  # noqa: BLE001 - pytest.fail included; reported below
                    outcomes[tag] = str(exc)[-400:]

            threads = [threading.Thread(target=push_one, args=(tag,)) for tag in chosen]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for tag in chosen:
                wrong = outcomes.get(tag, "not run") or reads_back(client, repo, tag, layout)
                if wrong:
                    problems.append(f"round {n}: {wrong}")
            # Unreference everything: the next round re-pushes the same layers, whose links are
            # then past the grace window and candidates of the running collector.
            for tag in chosen:
                r = client.delete(f"/v2/{repo}/manifests/{layout.resolve(tag)['digest']}")
                assert r.status_code == 202, r.text
            time.sleep(RACE_GRACE_SECONDS + 0.5)
    finally:
        stop.set()
        collector_thread.join(timeout=120)
    freed = sum(run["blobs_deleted"] for run in runs)
    print(f"gc race: {RACE_ROUNDS} rounds in {time.monotonic() - started:.0f} s, {len(runs)} collector runs, "
          f"{freed} blobs freed, {sum(run['skipped_in_use'] for run in runs)} skipped in use")
    assert problems == [], problems
    assert errors == [], errors
    assert freed > 0, "the collector never freed anything: the race was not run"


@pytest.mark.native_only
def test_kill_9_in_the_middle_of_a_gc_run_loses_nothing_and_the_next_run_finishes(
        registry_factory, s3_server, neon_backend, repo):
    server = collector(registry_factory, "gc-kill")
    client = OciClient(server.base_url)
    layers = [os.urandom(5000), os.urandom(7000)]
    client.push_image(repo, "keep", layers=layers)
    kept = {d: s for d, s in rows_of(server, neon_backend, "SELECT digest, size FROM blobs", [])}
    env = {**os.environ, **server.env, "OPENREGISTRY_DATA_DIR": str(server.data_dir), "RUST_LOG": "warn"}
    binary = os.environ["OPENREGISTRY_BIN"]
    junk = 300

    def push_junk(attempt: int) -> None:
        for i in range(junk):
            client.push_blob(f"{repo}/junk", os.urandom(64) + bytes([attempt, i % 256]))

    # How long a whole run of the command takes here (start-up included), to kill later ones
    # at points spread over it.
    push_junk(0)
    started = time.monotonic()
    subprocess.run([binary, "gc"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    whole = time.monotonic() - started
    landed_mid_run = 0
    fractions = (0.5, 0.7, 0.85, 0.6, 0.95, 0.4, 0.8, 0.9)
    for attempt, fraction in enumerate(fractions, start=1):
        if landed_mid_run >= 2:
            break
        push_junk(attempt)
        proc = subprocess.Popen([binary, "gc"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * fraction)
        proc.kill()
        proc.wait()
        # Whatever it had done: every blob the database names reads back whole ...
        named = rows_of(server, neon_backend, "SELECT rb.repository, rb.digest, b.size FROM repository_blobs rb "
                                              "JOIN blobs b ON b.digest = rb.digest", [])
        for name, digest, size in named:
            r = client.get(f"/v2/{name}/blobs/{digest}")
            assert r.status_code == 200 and len(r.content) == int(size), (attempt, digest, r.status_code)
        left = len([n for n in named if n[0] == f"{repo}/junk"])
        queued = len(rows_of(server, neon_backend, "SELECT locator FROM blob_deletions", []))
        if 0 < left < junk or queued:
            landed_mid_run += 1
        # ... and the next run finishes the work: only the tagged image's blobs are left.
        report = gc(client)
        assert rows_of(server, neon_backend, "SELECT locator FROM blob_deletions", []) == [], report
        remaining = {d: s for d, s in rows_of(server, neon_backend, "SELECT digest, size FROM blobs", [])}
        assert remaining == kept, report
        objects = stored_objects(server, s3_server)
        if objects is not None:
            assert len(objects) == len(kept), (attempt, sorted(objects))
    client.get(f"/v2/{repo}/manifests/keep").raise_for_status()
    print(f"gc kill -9: {landed_mid_run} of {attempt} kills landed mid-run (a whole run: {whole:.2f} s)")
    assert landed_mid_run >= 1, "no kill landed during a run: nothing was tested"
