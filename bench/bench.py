"""scripts/bench: OpenRegistry (native, embedded defaults) side by side with CNCF Distribution,
against the machine's own limits measured in the same run; and the Cloudflare Worker in workerd
(through local stand-ins of its backends, bench/edge.py) next to the native server.

Run through scripts/bench, which installs the tools and builds the binaries first. Benchmarks are
not tests: nothing here fails on a number. Each workload runs in rounds, alternating the two
registries (A B A B ...), next to a measurement of the limit it is compared with; medians with
min-max are reported as a table on stdout, a JSON file, docs/benchmarks.md and a chart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge  # noqa: E402
import oci  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
from httpc import Connection, FileSlice  # noqa: E402
from results import DIST, LABELS, OR, WORKER, Results  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 1024 * 1024
MB = 1_000_000


@dataclass
class Plan:
    rounds: int = 3
    layer_mib: int = 512
    chunk_mibs: tuple[int, ...] = (8, 32)
    load_seconds: float = 2.0
    connections: tuple[int, ...] = (1, 16, 64)
    manifest_tags: int = 10
    tags: int = 10_000
    tag_clients: int = 16
    tag_rounds: int = 3
    page: int = 100
    concurrent_clients: int = 8
    concurrent_mib: int = 64
    rss_push_mib: int = 2048
    rss_rounds: int = 1
    skopeo_layer_mibs: tuple[int, ...] = (100, 80, 60, 40, 20)
    worker_push_mib: int = 200
    worker_connections: int = 16
    quick: bool = False


QUICK = Plan(rounds=1, layer_mib=32, load_seconds=1.0, tags=500, tag_rounds=1,
             concurrent_mib=8, rss_push_mib=256, skopeo_layer_mibs=(10, 8, 6, 4, 2),
             worker_push_mib=32, quick=True)

WORKLOADS = ("limits", "push", "concurrent", "pull", "s3", "requests", "tags", "rss", "skopeo", "worker")


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


class Bench:
    def __init__(self, plan: Plan, workdir: Path, or_bin: Path, dist_bin: Path, tools: dict[str, str]):
        self.plan = plan
        self.workdir = workdir
        self.or_bin = or_bin
        self.dist_bin = dist_bin
        self.tools = tools
        self.r = Results()
        self.data = workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self._digests: dict[str, str] = {}
        self._server_seq = 0

    # -- servers -----------------------------------------------------------------

    def server(self, target: str, purpose: str) -> servers.Server:
        """A freshly started server with an empty data directory."""
        self._server_seq += 1
        name = f"{self._server_seq:03d}-{target}-{purpose}"
        if target == OR:
            s: servers.Server = servers.OpenRegistry(self.workdir / "servers", name, self.or_bin)
        else:
            s = servers.Distribution(self.workdir / "servers", name, self.dist_bin)
        return s.start()

    def nginx(self, root: Path) -> servers.Server:
        self._server_seq += 1
        return servers.Nginx(self.workdir / "servers", f"{self._server_seq:03d}-nginx", root,
                             self.tools["nginx"]).start()

    # -- data ----------------------------------------------------------------------

    def random_file(self, name: str, size: int) -> tuple[Path, str]:
        """A file of random bytes (synced, so its writeback does not disturb what follows)."""
        path = self.data / name
        h = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            while left:
                piece = os.urandom(min(4 * MIB, left))
                h.update(piece)
                f.write(piece)
                left -= len(piece)
            f.flush()
            os.fsync(f.fileno())
        digest = "sha256:" + h.hexdigest()
        self._digests[str(path)] = digest
        return path, digest

    def layer(self) -> tuple[Path, str, int]:
        path = self.data / "layer.bin"
        size = self.plan.layer_mib * MIB
        if str(path) not in self._digests:
            log(f"writing a {self.plan.layer_mib} MiB random layer")
            self.random_file("layer.bin", size)
        return path, self._digests[str(path)], size

    # -- helpers -------------------------------------------------------------------

    def alternate(self, label: str, rounds: int, each: Callable[[int, str], None],
                  limit: Optional[Callable[[int], None]] = None) -> None:
        """round 1: limit, A, B; round 2: limit, A, B; ... (A = OpenRegistry, B = Distribution)."""
        for i in range(rounds):
            if limit is not None:
                self.guard(f"{label} limit round {i + 1}", lambda: limit(i))
            for target in (OR, DIST):
                self.guard(f"{label} {LABELS[target]} round {i + 1}", lambda: each(i, target))

    def guard(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed workload is reported, the run goes on
            msg = f"{what}: {type(exc).__name__}: {exc}"
            self.r.errors.append(msg)
            log("ERROR " + msg)
            traceback.print_exc(file=sys.stderr)

    # -- machine limits -------------------------------------------------------------

    def limit_sha256(self) -> None:
        r = self.r.limit("sha256", "sha256 (OpenSSL, 1 MiB blocks, one core)", "MB/s")
        out = subprocess.run(
            [self.tools["openssl"], "speed", "-seconds", "1", "-bytes", str(MIB), "-evp", "sha256"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        line = [l for l in out.splitlines() if l.startswith("sha256")][-1]
        value = float(line.split()[-1].rstrip("k")) * 1000 / MB
        r.add("machine", value)
        log(f"limit sha256: {value:.0f} MB/s")

    def limit_disk(self, _round: int = 0) -> None:
        """Durable write of the layer's size: dd from the (cached) layer file, fsync at the end, in
        4 MiB and in 256 KiB blocks; the limit is the faster. The block size matters on VMs whose
        memory the host takes back: the page cache gets large folios for large writes, and those
        can be several times slower to fill (docs/benchmarks.md, Method: Limits)."""
        mib = self.plan.layer_mib
        r = self.r.limit("disk_write", f"durable disk write of {mib} MiB (dd, fsync; the faster block size)", "MB/s")
        src, _, size = self.layer()
        dst = self.workdir / "dd.bin"
        speeds = []
        for bs in ("4M", "256K"):
            lim = self.r.limit(f"disk_write_{bs.lower()}", f"durable disk write of {mib} MiB, dd bs={bs} conv=fsync",
                               "MB/s")
            os.sync()
            t = time.perf_counter()
            subprocess.run(["dd", f"if={src}", f"of={dst}", f"bs={bs}", "conv=fsync"],
                           capture_output=True, timeout=600, check=True)
            secs = time.perf_counter() - t
            dst.unlink()
            lim.add("machine", size / secs / MB)
            speeds.append(size / secs / MB)
        r.add("machine", max(speeds))
        log(f"limit disk write: {speeds[0]:.1f} MB/s (bs=4M), {speeds[1]:.1f} MB/s (bs=256K)")

    def limit_fsync(self, _round: int = 0) -> None:
        """Durable small writes: 4 KiB pwrite + fdatasync into a preallocated file, for one second."""
        r = self.r.limit("fsync_rate", "durable 4 KiB writes (pwrite + fdatasync, one writer)", "writes/s")
        path = self.workdir / "fsync.bin"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * MIB)
            os.fsync(fd)
            block = os.urandom(4096)
            n = 0
            t = time.perf_counter()
            while n < 100_000 and time.perf_counter() - t < 1.0:
                os.pwrite(fd, block, (n % 256) * 4096)
                os.fdatasync(fd)
                n += 1
            secs = time.perf_counter() - t
        finally:
            os.close(fd)
            path.unlink()
        r.add("machine", n / secs)
        log(f"limit fsync: {n / secs:.0f} writes/s")

    # -- workloads --------------------------------------------------------------

    def run_push(self) -> None:
        path, digest, size = self.layer()
        p = self.plan
        modes = [("push_monolithic", "push, monolithic (POST + PUT)", None)] + [
            (f"push_chunked_{c}m", f"push, chunked ({c} MiB PATCHes)", c * MIB) for c in p.chunk_mibs]
        for mid, label, _ in modes:
            self.r.metric(mid, f"{label}, {p.layer_mib} MiB layer", "MB/s", "higher", "push", "disk_write")

        def limits(i: int) -> None:
            self.limit_disk(i)
            self.limit_sha256()

        for mid, label, chunk in modes:
            def each(i: int, target: str, mid=mid, chunk=chunk) -> None:
                s = self.server(target, mid)
                try:
                    with Connection(s.port) as c:
                        c.request("GET", "/v2/")
                        os.sync()
                        t = time.perf_counter()
                        if chunk is None:
                            oci.push_monolithic(c, "bench/push", str(path), size, digest)
                        else:
                            oci.push_chunked(c, "bench/push", str(path), size, digest, chunk)
                        secs = time.perf_counter() - t
                        oci.expect(c.request("HEAD", f"/v2/bench/push/blobs/{digest}"), 200, what="HEAD pushed blob")
                    self.r.add(mid, target, size / secs / MB)
                    log(f"{mid} round {i + 1} {LABELS[target]}: {size / secs / MB:.1f} MB/s")
                finally:
                    s.wipe()
            self.alternate(mid, p.rounds, each, limits if mid == "push_monolithic" else None)

    def run_concurrent(self) -> None:
        p = self.plan
        path, digest = self.random_file("concurrent.bin", p.concurrent_mib * MIB)
        size = p.concurrent_mib * MIB
        mid = "concurrent_push"
        self.r.metric(mid, f"{p.concurrent_clients} clients pushing the same {p.concurrent_mib} MiB blob, total",
                      "MB/s", "higher", "push", "disk_write")
        checks = self.r.checks.setdefault(mid, [])

        def each(i: int, target: str) -> None:
            s = self.server(target, "concurrent")
            try:
                barrier = threading.Barrier(p.concurrent_clients + 1)
                outcomes: list[str] = [""] * p.concurrent_clients
                conns = [Connection(s.port) for _ in range(p.concurrent_clients)]

                def client(k: int) -> None:
                    try:
                        barrier.wait(timeout=30)
                        r = oci.push_monolithic(conns[k], "bench/concurrent", str(path), size, digest)
                        got = r.header("docker-content-digest")
                        outcomes[k] = "201" if got in (None, digest) else f"201 with digest {got}"
                    except Exception as exc:  # noqa: BLE001
                        outcomes[k] = f"{type(exc).__name__}: {exc}"[:300]

                threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(p.concurrent_clients)]
                for th in threads:
                    th.start()
                os.sync()
                barrier.wait(timeout=30)
                t = time.perf_counter()
                for th in threads:
                    th.join(timeout=600)
                secs = time.perf_counter() - t
                for c in conns:
                    c.close()
                with Connection(s.port) as c:
                    oci.pull_verified(c, "bench/concurrent", digest, size)
                ok = sum(o == "201" for o in outcomes)
                verdict = (f"round {i + 1} {LABELS[target]}: {ok}/{p.concurrent_clients} pushes answered 201, "
                           f"blob reads back with the right sha256")
                if ok != p.concurrent_clients:
                    verdict += "; failures: " + "; ".join(sorted({o for o in outcomes if o != "201"}))
                checks.append(verdict)
                self.r.add(mid, target, p.concurrent_clients * size / secs / MB)
                log(f"{mid} round {i + 1} {LABELS[target]}: {p.concurrent_clients * size / secs / MB:.1f} MB/s, {ok} ok")
            finally:
                s.wipe()

        self.alternate(mid, p.rounds, each)

    def run_pull(self) -> None:
        path, digest, size = self.layer()
        p = self.plan
        self.r.metric("pull", f"pull of the {p.layer_mib} MiB layer, sha256 verified", "MB/s", "higher",
                      "pull", "nginx_get")
        lim = self.r.limit("nginx_get", f"nginx GET of the same {p.layer_mib} MiB file, sha256 verified", "MB/s")
        www = self.workdir / "www-pull"
        www.mkdir(exist_ok=True)
        os.link(path, www / "layer.bin")
        regs = {t: self.server(t, "pull") for t in (OR, DIST)}
        ng = self.nginx(www)
        try:
            for t, s in regs.items():
                with Connection(s.port) as c:
                    oci.push_monolithic(c, "bench/pull", str(path), size, digest)
                    oci.pull_verified(c, "bench/pull", digest, size)  # warm
            with Connection(ng.port) as c:
                oci.get_verified(c, "/layer.bin", digest, size)  # warm

            def limit(i: int) -> None:
                with Connection(ng.port) as c:
                    t = time.perf_counter()
                    oci.get_verified(c, "/layer.bin", digest, size)
                    lim.add("machine", size / (time.perf_counter() - t) / MB)
                log(f"limit nginx GET round {i + 1}: {lim.samples['machine'][-1]:.0f} MB/s")

            def each(i: int, target: str) -> None:
                with Connection(regs[target].port) as c:
                    t = time.perf_counter()
                    oci.pull_verified(c, "bench/pull", digest, size)
                    secs = time.perf_counter() - t
                self.r.add("pull", target, size / secs / MB)
                log(f"pull round {i + 1} {LABELS[target]}: {size / secs / MB:.0f} MB/s")

            self.alternate("pull", p.rounds, each, limit)
        finally:
            ng.stop()
            for s in regs.values():
                s.wipe()

    # -- S3 storage ----------------------------------------------------------------

    def run_s3(self) -> None:
        """Both registries on one S3 server (moto's): the layer pushed in 8 MiB chunks and pulled
        back, a fresh bucket per registry. Beside the filesystem figures of push/pull."""
        import urllib.request

        path, digest, size = self.layer()
        p = self.plan
        self.r.metric("s3_push", f"push to S3 (moto), 8 MiB chunks, {p.layer_mib} MiB layer", "MB/s",
                      "higher", "push", None, "both registries store in the same local S3 server")
        self.r.metric("s3_pull", f"pull from S3 (moto), {p.layer_mib} MiB layer, sha256 verified", "MB/s",
                      "higher", "pull", None, "streamed through the registry (no redirect)")
        self._server_seq += 1
        moto = servers.MotoS3(self.workdir / "servers", f"{self._server_seq:03d}-moto",
                                 os.environ.get("MOTO_PYTHON", sys.executable)).start()
        keys = {"access_key": "bench", "secret_key": "bench-secret", "region": "us-east-1", "endpoint": f"http://{moto.host}"}
        try:
            def each(i: int, target: str) -> None:
                bucket = f"bench-{target}-{i}"
                urllib.request.urlopen(urllib.request.Request(f"http://{moto.host}/{bucket}", method="PUT"), timeout=30)
                self._server_seq += 1
                name = f"{self._server_seq:03d}-{target}-s3"
                if target == OR:
                    s: servers.Server = servers.OpenRegistry(self.workdir / "servers", name, self.or_bin, settings={
                        "OPENREGISTRY_S3_ENDPOINT": keys["endpoint"], "OPENREGISTRY_S3_BUCKET": bucket,
                        "OPENREGISTRY_S3_ACCESS_KEY_ID": keys["access_key"],
                        "OPENREGISTRY_S3_SECRET_ACCESS_KEY": keys["secret_key"],
                        "OPENREGISTRY_S3_PATH_STYLE": "true"})
                else:
                    s = servers.Distribution(self.workdir / "servers", name, self.dist_bin, s3={**keys, "bucket": bucket})
                s.start()
                try:
                    with Connection(s.port) as c:
                        c.request("GET", "/v2/")
                        t = time.perf_counter()
                        oci.push_chunked(c, "bench/s3", str(path), size, digest, 8 * MIB)
                        push = size / (time.perf_counter() - t) / MB
                        t = time.perf_counter()
                        oci.pull_verified(c, "bench/s3", digest, size)
                        pull = size / (time.perf_counter() - t) / MB
                    self.r.add("s3_push", target, push)
                    self.r.add("s3_pull", target, pull)
                    log(f"s3 round {i + 1} {LABELS[target]}: push {push:.1f} MB/s, pull {pull:.1f} MB/s")
                finally:
                    s.wipe()

            self.alternate("s3", p.rounds, each)
        finally:
            moto.stop()

    # -- request rates -------------------------------------------------------------

    def load(self, tool: str, url: str, method: str, conns: int, seconds: float, accept: str = "") -> dict:
        """One run of wrk (GET) or loadgen (HEAD: wrk cannot parse HEAD answers). One thread each."""
        if tool == "wrk":
            cmd = [self.tools["wrk"], "-t", "1", "-c", str(conns), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
                   "-s", str(HERE / "wrk-report.lua"), url, "--", method, accept]
            marker = "WRK-JSON "
        else:
            cmd = [self.tools["loadgen"], "-c", str(conns), "-d", str(seconds), "-T", "10", "-m", method]
            if accept:
                cmd += ["-H", f"Accept: {accept}"]
            cmd.append(url)
            marker = "LOADGEN-JSON "
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        lines = [l for l in out.stdout.splitlines() if l.startswith(marker)]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {(out.stderr or out.stdout)[-300:].strip()}")
        d = json.loads(lines[-1][len(marker):])
        d["rps"] = d["requests"] / (d["duration_us"] / 1e6) if d["duration_us"] else 0.0
        bad = {k: v for k, v in d["errors"].items() if v}
        if bad:
            raise RuntimeError(f"{tool} {method} {url} c={conns}: errors {bad} in {d['requests']} requests")
        if d["requests"] == 0:
            raise RuntimeError(f"{tool} {method} {url} c={conns}: no request completed")
        return d

    def run_requests(self) -> None:
        p = self.plan
        www = self.workdir / "www-requests"
        www.mkdir(exist_ok=True)
        regs = {t: self.server(t, "requests") for t in (OR, DIST)}
        repo = "bench/manifest"
        try:
            manifest = b""
            for t, s in regs.items():
                with Connection(s.port) as c:
                    manifest = oci.small_image(c, repo, "latest")
                    for k in range(1, p.manifest_tags):
                        oci.put_manifest(c, repo, f"v{k}", manifest)
            (www / "manifest.json").write_bytes(manifest)
            ng = self.nginx(www)
            try:
                self._requests(regs, ng, repo, len(manifest))
            finally:
                ng.stop()
        finally:
            for s in regs.values():
                s.wipe()

    def _requests(self, regs: dict[str, servers.Server], ng: servers.Server, repo: str, msize: int) -> None:
        p = self.plan
        accept = oci.OCI_MANIFEST
        kinds = [
            ("manifest_get", "manifest GET by tag", "wrk", "GET", f"/v2/{repo}/manifests/latest", accept, "nginx_rps"),
            ("manifest_head", "manifest HEAD by tag", "loadgen", "HEAD", f"/v2/{repo}/manifests/latest", accept, "nginx_head_rps"),
            ("tags_list", f"tags/list ({p.manifest_tags} tags)", "wrk", "GET", f"/v2/{repo}/tags/list", "", "nginx_rps"),
        ]
        for conns in p.connections:
            self.r.limit(f"nginx_rps_c{conns}", f"nginx GET of a {msize}-byte file (wrk), {conns} connections", "req/s")
            self.r.limit(f"nginx_rps_c{conns}_p50", f"nginx GET p50, {conns} connections", "ms", "lower")
            self.r.limit(f"nginx_rps_c{conns}_p99", f"nginx GET p99, {conns} connections", "ms", "lower")
            self.r.limit(f"nginx_head_rps_c{conns}", f"nginx HEAD of the same file (loadgen), {conns} connections", "req/s")
            self.r.limit(f"nginx_head_rps_c{conns}_p50", f"nginx HEAD p50, {conns} connections", "ms", "lower")
            self.r.limit(f"nginx_head_rps_c{conns}_p99", f"nginx HEAD p99, {conns} connections", "ms", "lower")
            for kid, label, _tool, _m, _path, _a, lim in kinds:
                base = f"{kid}_c{conns}"
                self.r.metric(f"{base}_rps", f"{label}, {conns} conn.: requests/s", "req/s", "higher", "requests",
                              f"{lim}_c{conns}")
                self.r.metric(f"{base}_p50", f"{label}, {conns} conn.: p50 latency", "ms", "lower", "requests",
                              f"{lim}_c{conns}_p50")
                self.r.metric(f"{base}_p99", f"{label}, {conns} conn.: p99 latency", "ms", "lower", "requests",
                              f"{lim}_c{conns}_p99")
        xcheck = self.r.limit("loadgen_vs_wrk", "loadgen/wrk requests/s, same GET on nginx at 64 connections", "×")

        # Warm-up: connections, caches, the Go runtime's and tokio's thread pools.
        for s in regs.values():
            for kid, _l, tool, method, path, a, _lim in kinds:
                self.load(tool, f"http://{s.host}{path}", method, 16, 1, a)
        self.load("wrk", f"http://{ng.host}/manifest.json", "GET", 16, 1)

        def record(mid: str, target: str, d: dict) -> None:
            self.r.add(f"{mid}_rps", target, d["rps"])
            self.r.add(f"{mid}_p50", target, d["latency_us"]["p50"] / 1000)
            self.r.add(f"{mid}_p99", target, d["latency_us"]["p99"] / 1000)

        for i in range(p.rounds):
            for conns in p.connections:
                def limit(conns: int = conns) -> None:
                    d = self.load("wrk", f"http://{ng.host}/manifest.json", "GET", conns, p.load_seconds)
                    self.r.add_limit(f"nginx_rps_c{conns}", d["rps"])
                    self.r.add_limit(f"nginx_rps_c{conns}_p50", d["latency_us"]["p50"] / 1000)
                    self.r.add_limit(f"nginx_rps_c{conns}_p99", d["latency_us"]["p99"] / 1000)
                    h = self.load("loadgen", f"http://{ng.host}/manifest.json", "HEAD", conns, p.load_seconds)
                    self.r.add_limit(f"nginx_head_rps_c{conns}", h["rps"])
                    self.r.add_limit(f"nginx_head_rps_c{conns}_p50", h["latency_us"]["p50"] / 1000)
                    self.r.add_limit(f"nginx_head_rps_c{conns}_p99", h["latency_us"]["p99"] / 1000)
                    log(f"limit nginx c={conns} round {i + 1}: GET {d['rps']:.0f} req/s, HEAD {h['rps']:.0f} req/s")
                    if conns == max(p.connections):
                        g = self.load("loadgen", f"http://{ng.host}/manifest.json", "GET", conns, p.load_seconds)
                        xcheck.add("machine", g["rps"] / d["rps"])

                self.guard(f"nginx c={conns} round {i + 1}", limit)
                for kid, _label, tool, method, path, a, _lim in kinds:
                    for target in (OR, DIST):
                        def one(kid=kid, tool=tool, method=method, path=path, a=a, target=target, conns=conns) -> None:
                            d = self.load(tool, f"http://{regs[target].host}{path}", method, conns, p.load_seconds, a)
                            record(f"{kid}_c{conns}", target, d)
                            log(f"{kid} c={conns} round {i + 1} {LABELS[target]}: {d['rps']:.0f} req/s, "
                                f"p50 {d['latency_us']['p50'] / 1000:.2f} ms, p99 {d['latency_us']['p99'] / 1000:.2f} ms")
                        self.guard(f"{kid} c={conns} {LABELS[target]} round {i + 1}", one)

    # -- many tags ---------------------------------------------------------------------

    def run_tags(self) -> None:
        p = self.plan
        n = p.tags
        self.r.metric("tags_push", f"push {n:,} tags ({p.tag_clients} clients, one manifest PUT each)", "s",
                      "lower", "tags", None)
        self.r.metric("tags_push_rate", f"push {n:,} tags: tags/s", "tags/s", "higher", "tags", "fsync_rate")
        self.r.metric("tags_walk", f"paginated walk of {n:,} tags with n={p.page}", "ms", "lower", "tags")
        self.r.metric("tags_page_p50", f"one n={p.page} page of {n:,} tags: median", "ms", "lower", "tags")
        self.r.metric("tags_page_max", f"one n={p.page} page of {n:,} tags: slowest", "ms", "lower", "tags")
        self.r.metric("tags_full", f"full list of {n:,} tags (no n, following Link)", "ms", "lower", "tags")
        checks = self.r.checks.setdefault("tags", [])

        def each(i: int, target: str) -> None:
            s = self.server(target, "tags")
            repo = "bench/tags"
            try:
                with Connection(s.port) as c:
                    manifest = oci.small_image(c, repo, "base")
                names = [f"t{k:05d}" for k in range(n)]
                nxt = [0]
                lock = threading.Lock()
                failures: list[str] = []

                def client() -> None:
                    with Connection(s.port) as c:
                        while not failures:
                            with lock:
                                k = nxt[0]
                                nxt[0] += 1
                            if k >= n:
                                return
                            try:
                                oci.put_manifest(c, repo, names[k], manifest)
                            except Exception as exc:  # noqa: BLE001
                                failures.append(f"{names[k]}: {exc}")
                                return

                os.sync()
                threads = [threading.Thread(target=client, daemon=True) for _ in range(p.tag_clients)]
                t = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join(timeout=1200)
                secs = time.perf_counter() - t
                if failures:
                    raise RuntimeError(f"tag push failed: {failures[0]}")
                self.r.add("tags_push", target, secs)
                self.r.add("tags_push_rate", target, n / secs)
                log(f"tags push round {i + 1} {LABELS[target]}: {n} tags in {secs:.1f} s ({n / secs:.0f}/s)")
                want = set(names) | {"base"}
                with Connection(s.port) as c:
                    oci.list_tags_walk(c, repo, p.page)  # warm
                    t = time.perf_counter()
                    tags, times = oci.list_tags_walk(c, repo, p.page)
                    walk = time.perf_counter() - t
                    pages = sorted(times)
                    self.r.add("tags_walk", target, walk * 1000)
                    self.r.add("tags_page_p50", target, pages[len(pages) // 2] * 1000)
                    self.r.add("tags_page_max", target, pages[-1] * 1000)
                    walked_ok = set(tags) == want and len(tags) == len(want)
                    t = time.perf_counter()
                    full, ftimes = oci.list_tags_walk(c, repo, None)
                    self.r.add("tags_full", target, (time.perf_counter() - t) * 1000)
                    full_ok = set(full) == want and len(full) == len(want)
                checks.append(
                    f"round {i + 1} {LABELS[target]}: n={p.page} walk took {len(times)} request(s) and returned "
                    f"{len(tags)} tags ({'all' if walked_ok else 'NOT all'} {len(want)}, no duplicates); the full "
                    f"list took {len(ftimes)} request(s) ({'complete' if full_ok else 'INCOMPLETE'})")
                log(f"tags walk round {i + 1} {LABELS[target]}: {len(times)} pages in {walk * 1000:.1f} ms, "
                    f"median page {pages[len(pages) // 2] * 1000:.2f} ms; full list {len(ftimes)} request(s)")
            finally:
                s.wipe()

        self.alternate("tags", p.tag_rounds, each, self.limit_fsync)

    # -- memory ------------------------------------------------------------------------

    def run_rss(self) -> None:
        p = self.plan
        path, _, size = self.layer()
        reps = max(1, (p.rss_push_mib * MIB) // size)
        total = reps * size
        self.r.metric("rss_idle", "RSS at idle (after start and one request)", "MiB", "lower", "memory")
        self.r.metric("rss_peak", f"peak RSS (VmHWM) over a {total // MIB} MiB streamed push", "MiB", "lower", "memory")
        self.r.metric("rss_push", f"{total // MIB} MiB streamed push (one PATCH, chunked encoding)", "MB/s",
                      "higher", "memory", "disk_write")
        key = f"rss-digest-{reps}"
        if key not in self._digests:
            log(f"hashing the {total // MIB} MiB stream")
            h = hashlib.sha256()
            for _ in range(reps):  # the stream is `reps` copies of the layer file
                with open(path, "rb") as f:
                    while b := f.read(16 * MIB):
                        h.update(b)
            self._digests[key] = "sha256:" + h.hexdigest()
        digest = self._digests[key]
        pieces = [FileSlice(str(path), off, min(8 * MIB, size - off))
                  for _ in range(reps) for off in range(0, size, 8 * MIB)]

        def each(i: int, target: str) -> None:
            s = self.server(target, "rss")
            try:
                with Connection(s.port) as c:
                    c.request("GET", "/v2/")
                    time.sleep(0.5)
                    idle = s.rss_kib()["VmRSS"] / 1024
                    os.sync()
                    t = time.perf_counter()
                    oci.push_streamed(c, "bench/rss", pieces, digest)
                    secs = time.perf_counter() - t
                peak = s.rss_kib()["VmHWM"] / 1024
                self.r.add("rss_idle", target, idle)
                self.r.add("rss_peak", target, peak)
                self.r.add("rss_push", target, total / secs / MB)
                log(f"rss round {i + 1} {LABELS[target]}: idle {idle:.1f} MiB, peak {peak:.1f} MiB, "
                    f"{total / secs / MB:.0f} MB/s")
            finally:
                s.wipe()

        self.alternate("rss", p.rss_rounds, each)

    # -- skopeo --------------------------------------------------------------------------

    def skopeo_image(self) -> tuple[Path, int]:
        """An OCI layout with gzip layers of random bytes (stored, not compressed: skopeo copies
        them as they are), a config and a manifest. Returns (layout dir, total bytes)."""
        import gzip
        import tarfile

        layout = self.data / "skopeo-image"
        if layout.exists():
            shutil.rmtree(layout)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layers = []
        total = 0
        for k, mib in enumerate(self.plan.skopeo_layer_mibs):
            tmp = layout / f"layer{k}.tmp"
            with open(tmp, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as gz:
                    with tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tf:
                        info = tarfile.TarInfo(f"layer{k}.bin")
                        info.size = mib * MIB
                        info.mtime = 1700000000

                        class Rand:
                            def __init__(self, n: int):
                                self.left = n

                            def read(self, want: int = -1) -> bytes:
                                take = self.left if want < 0 else min(want, self.left)
                                self.left -= take
                                return os.urandom(take)

                        tf.addfile(info, Rand(info.size))
            h = hashlib.sha256()
            with open(tmp, "rb") as f:
                while b := f.read(16 * MIB):
                    h.update(b)
            size = tmp.stat().st_size
            tmp.rename(blobs / h.hexdigest())
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": "sha256:" + h.hexdigest(), "size": size})
            total += size
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cd = hashlib.sha256(config).hexdigest()
        (blobs / cd).write_bytes(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                               "config": {"mediaType": oci.OCI_CONFIG, "digest": "sha256:" + cd, "size": len(config)},
                               "layers": layers}).encode()
        md = hashlib.sha256(manifest).hexdigest()
        (blobs / md).write_bytes(manifest)
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + md, "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
        subprocess.run(["sync"], check=False)
        return layout, total + len(config) + len(manifest)

    def run_skopeo(self) -> None:
        p = self.plan
        log(f"writing a {len(p.skopeo_layer_mibs)}-layer image of {sum(p.skopeo_layer_mibs)} MiB for skopeo")
        layout, total = self.skopeo_image()
        mib = total / MIB
        self.r.metric("skopeo_push", f"skopeo copy of a {len(p.skopeo_layer_mibs)}-layer, {mib:.0f} MiB image into the registry",
                      "MB/s", "higher", "skopeo", "disk_write")
        self.r.metric("skopeo_pull", f"skopeo copy of the same image out of the registry (to an OCI layout)",
                      "MB/s", "higher", "skopeo", "nginx_get")
        skopeo = self.tools["skopeo"]
        common = [skopeo, "--insecure-policy", "copy", "--quiet", "--retry-times", "0"]

        def each(i: int, target: str) -> None:
            s = self.server(target, "skopeo")
            out = self.workdir / "skopeo-pulled"
            shutil.rmtree(out, ignore_errors=True)
            try:
                ref = f"docker://{s.host}/bench/skopeo:latest"
                os.sync()
                t = time.perf_counter()
                subprocess.run(common + ["--dest-tls-verify=false", f"oci:{layout}:latest", ref],
                               check=True, capture_output=True, timeout=600)
                push = time.perf_counter() - t
                t = time.perf_counter()
                subprocess.run(common + ["--src-tls-verify=false", ref, f"oci:{out}:latest"],
                               check=True, capture_output=True, timeout=600)
                pull = time.perf_counter() - t
                self.r.add("skopeo_push", target, total / push / MB)
                self.r.add("skopeo_pull", target, total / pull / MB)
                log(f"skopeo round {i + 1} {LABELS[target]}: push {push:.2f} s ({total / push / MB:.0f} MB/s), "
                    f"pull {pull:.2f} s ({total / pull / MB:.0f} MB/s)")
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"skopeo failed: {exc.stderr.decode(errors='replace')[-800:]}") from exc
            finally:
                shutil.rmtree(out, ignore_errors=True)
                s.wipe()

        self.alternate("skopeo", p.rounds, each)

    # -- the Cloudflare Worker ----------------------------------------------------------

    def run_worker(self) -> None:
        """The Worker in workerd with the local stand-ins of its backends (bench/edge.py), next to
        the native server on its embedded defaults, in alternating rounds: a streamed push of one
        layer with the RSS sampled during it, and manifest HEADs at `worker_connections`; then
        the bundle size (scripts/worker-size). A fresh portal, database and Worker per round."""
        p = self.plan
        conns = p.worker_connections
        size = p.worker_push_mib * MIB
        self.r.metric("worker_push", f"push of a {p.worker_push_mib} MiB layer streamed in one PATCH "
                      "(chunked encoding)", "MB/s", "higher", "worker")
        self.r.metric("worker_rss_idle", "RSS after start and a small image push (Worker: workerd)", "MiB",
                      "lower", "worker")
        self.r.metric("worker_rss_peak", f"peak RSS during the {p.worker_push_mib} MiB push (sampled every "
                      "50 ms; Worker: workerd)", "MiB", "lower", "worker")
        self.r.metric(f"worker_head_c{conns}_rps", f"manifest HEAD by tag, {conns} conn.: requests/s", "req/s",
                      "higher", "worker")
        self.r.metric(f"worker_head_c{conns}_p50", f"manifest HEAD by tag, {conns} conn.: p50 latency", "ms",
                      "lower", "worker")
        self.r.metric(f"worker_head_c{conns}_p99", f"manifest HEAD by tag, {conns} conn.: p99 latency", "ms",
                      "lower", "worker")
        checks = self.r.checks.setdefault("worker", [])
        try:
            edge.setup(log)
            stack = edge.EdgeStack(self.workdir, self.or_bin)
        except edge.EdgeUnavailable as exc:
            self.r.notes["worker"] = f"Cloudflare Worker: not measured: {exc}"
            log(self.r.notes["worker"])
            return
        path, digest = self.random_file("worker-layer.bin", size)
        pieces = [FileSlice(str(path), off, min(8 * MIB, size - off)) for off in range(0, size, 8 * MIB)]

        def each(i: int, target: str) -> None:
            portal: Optional[servers.Server] = None
            if target == WORKER:
                s, portal = stack.worker()
                rss = s.workerd_rss_kib  # type: ignore[attr-defined]
            else:
                s = self.server(OR, "worker-compare")

                def rss() -> Optional[int]:
                    return s.rss_kib().get("VmRSS")
            try:
                with Connection(s.port) as c:
                    oci.small_image(c, "bench/worker", "latest")
                idle = rss()
                h = self.load("loadgen", f"http://{s.host}/v2/bench/worker/manifests/latest", "HEAD", conns,
                              p.load_seconds, oci.OCI_MANIFEST)
                peak = [idle or 0]
                done = threading.Event()

                def sample() -> None:
                    while not done.is_set():
                        peak[0] = max(peak[0], rss() or 0)
                        done.wait(0.05)

                sampler = threading.Thread(target=sample, daemon=True)
                with Connection(s.port) as c:
                    os.sync()
                    sampler.start()
                    try:
                        t = time.perf_counter()
                        oci.push_streamed(c, "bench/worker", pieces, digest)
                        secs = time.perf_counter() - t
                    finally:
                        done.set()
                        sampler.join()
                    got = oci.expect(c.request("HEAD", f"/v2/bench/worker/blobs/{digest}"), 200,
                                     what="HEAD pushed blob")
                    length = got.header("content-length")
                if length != str(size):
                    raise RuntimeError(f"HEAD of the pushed blob says Content-Length {length}, not {size}")
                checks.append(f"round {i + 1} {LABELS[target]}: the {p.worker_push_mib} MiB streamed push answered "
                              f"201 and the blob is there with its size")
                self.r.add("worker_push", target, size / secs / MB)
                self.r.add(f"worker_head_c{conns}_rps", target, h["rps"])
                self.r.add(f"worker_head_c{conns}_p50", target, h["latency_us"]["p50"] / 1000)
                self.r.add(f"worker_head_c{conns}_p99", target, h["latency_us"]["p99"] / 1000)
                if idle:
                    self.r.add("worker_rss_idle", target, idle / 1024)
                    self.r.add("worker_rss_peak", target, peak[0] / 1024)
                log(f"worker round {i + 1} {LABELS[target]}: push {size / secs / MB:.0f} MB/s, HEAD c={conns} "
                    f"{h['rps']:.0f} req/s p99 {h['latency_us']['p99'] / 1000:.2f} ms, RSS idle "
                    f"{(idle or 0) / 1024:.0f} MiB peak {peak[0] / 1024:.0f} MiB")
            finally:
                s.wipe()
                if portal is not None:
                    portal.wipe()

        try:
            for i in range(p.rounds):
                for target in (WORKER, OR):
                    self.guard(f"worker {LABELS[target]} round {i + 1}", lambda: each(i, target))
        finally:
            stack.close()

        def bundle() -> None:
            b = edge.bundle_size()
            self.r.metric("worker_bundle_gzip", "bundle uploaded (JS + WASM module), gzip -9", "KiB", "lower",
                          "worker").add(WORKER, b["gzip_total"] / 1024)
            self.r.metric("worker_bundle_raw", "bundle uploaded (JS + WASM module), raw", "KiB", "lower",
                          "worker").add(WORKER, (b["js_raw"] + b["wasm_raw"]) / 1024)
            log(f"worker bundle: {b['gzip_total'] / 1024:.0f} KiB gzip, {(b['js_raw'] + b['wasm_raw']) / 1024:.0f} KiB raw")

        self.guard("worker bundle size", bundle)


# -- machine description ---------------------------------------------------------------

def sh(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(workdir: Path, tools: dict[str, str], or_bin: Path, dist_bin: Path) -> dict:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    osname = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    fs, dev, best = "?", "?", ""
    with open("/proc/mounts") as f:  # the mount holding the scratch directory: longest prefix
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and str(workdir.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
                best, dev, fs = parts[1], parts[0], parts[2]
    commit = sh(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    dirty = sh(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": osname,
        "kernel": platform.release(),
        "filesystem": f"{fs} on {dev}",
        "load_average_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "openregistry": f"{sh([str(or_bin), '--version'])} (commit {commit}{', with local changes' if dirty else ''})",
        "distribution": sh([str(dist_bin), "--version"]).replace(str(dist_bin), "").strip(),
        "nginx": sh([tools["nginx"], "-v"]).replace("nginx version: ", ""),
        "wrk": sh([tools["wrk"], "-v"]).split(" Copyright")[0],
        "openssl": sh([tools["openssl"], "version"]),
        "skopeo": sh([tools["skopeo"], "--version"]),
        "python": platform.python_version(),
    }


# -- main -----------------------------------------------------------------------------------

class Deadline(Exception):
    pass


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, one round (results in target/bench/, as for --only/--skip: docs/ "
                    "is only written by complete full runs)")
    ap.add_argument("--rounds", type=int, help="rounds per workload (default 3; 1 with --quick)")
    ap.add_argument("--connections", help="comma-separated connection counts of the requests workload "
                    "(default 1,16,64), e.g. --only requests --connections 64 for a focused run")
    ap.add_argument("--only", help=f"comma-separated workloads to run, of: {','.join(WORKLOADS)}")
    ap.add_argument("--skip", help="comma-separated workloads to skip")
    ap.add_argument("--out", type=Path, help="where the JSON, markdown and chart go "
                    "(default: docs/ for a full run, target/bench/ with --quick)")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a new one under $TMPDIR)")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory and server logs")
    ap.add_argument("--no-worker", action="store_true",
                    help="skip the Cloudflare Worker (same as --skip worker; by default it is measured when its "
                    "toolchain can be installed, and reported as not measured otherwise)")
    ap.add_argument("--deadline-minutes", type=float, default=30.0, help="abort the whole run after this long")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="measure nothing: redraw the table, markdown and chart from a run's JSON "
                         "(into its directory, or --out)")
    args = ap.parse_args()

    if args.render:
        saved = json.loads(args.render.read_text())
        report.write_all(Results.from_json(saved), saved["meta"], args.out or args.render.parent)
        return 0

    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan.rounds = args.rounds
        plan.tag_rounds = min(plan.tag_rounds, args.rounds) if not args.quick else args.rounds
    if args.connections:
        try:
            plan.connections = tuple(int(c) for c in args.connections.split(","))
        except ValueError:
            ap.error(f"--connections: not a list of numbers: {args.connections!r}")
    only = set(WORKLOADS) if not args.only else set(args.only.split(","))
    only -= set(args.skip.split(",")) if args.skip else set()
    if args.no_worker:
        only.discard("worker")
    unknown = only - set(WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}")

    tools = {
        "wrk": os.environ.get("WRK", "wrk"),
        "loadgen": os.environ["LOADGEN_BIN"],
        "nginx": os.environ.get("NGINX", "/usr/sbin/nginx"),
        "openssl": os.environ.get("OPENSSL", "openssl"),
        "skopeo": os.environ.get("SKOPEO", "skopeo"),
    }
    or_bin = Path(os.environ["OPENREGISTRY_BIN"])
    dist_bin = Path(os.environ.get("DISTRIBUTION_BIN", "/usr/bin/docker-registry"))
    # docs/ only gets complete runs (with or without the Worker); quick and partial runs go to
    # target/bench/.
    partial = plan.quick or only - {"worker"} != set(WORKLOADS) - {"worker"} or bool(args.connections)
    out_dir = args.out or (REPO / "target" / "bench" if partial else REPO / "docs")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="openregistry-bench-", dir=base))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def on_alarm(_signum, _frame):
        raise Deadline(f"the run took longer than --deadline-minutes {args.deadline_minutes}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.deadline_minutes * 60))

    bench = Bench(plan, workdir, or_bin, dist_bin, tools)
    meta = machine(workdir, tools, or_bin, dist_bin)
    meta["mode"] = "quick" if plan.quick else "full"
    meta["plan"] = {k: v for k, v in plan.__dict__.items()}
    log(f"scratch directory {workdir}; {meta['mode']} run, {plan.rounds} round(s); load average "
        f"{meta['load_average_at_start']}")
    status = 0
    started = time.monotonic()
    try:
        steps = [
            ("limits", bench.limit_sha256),
            ("push", bench.run_push),
            ("concurrent", bench.run_concurrent),
            ("pull", bench.run_pull),
            ("s3", bench.run_s3),
            ("requests", bench.run_requests),
            ("tags", bench.run_tags),
            ("rss", bench.run_rss),
            ("skopeo", bench.run_skopeo),
            ("worker", bench.run_worker),
        ]
        for name, fn in steps:
            if name in only:
                log(f"== {name}")
                bench.guard(name, fn)
        if "worker" not in only:
            bench.r.notes["worker"] = "Cloudflare Worker: not measured (--no-worker or --skip worker)"
    except (KeyboardInterrupt, Deadline) as exc:
        bench.r.errors.append(f"run interrupted: {exc}")
        log(f"interrupted: {exc}")
        status = 130 if isinstance(exc, KeyboardInterrupt) else 3
    finally:
        signal.alarm(0)
        servers.stop_all()
        if args.keep_workdir:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["wall_seconds"] = round(time.monotonic() - started, 1)
    meta["load_average_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report.write_all(bench.r, meta, out_dir)
    if bench.r.errors and status == 0:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
