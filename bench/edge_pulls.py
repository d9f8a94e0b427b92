"""scripts/bench edge: pulls at the edge with the database two continents away.

The Worker (workerd through the Miniflare harness) and the Spin component (the Spin-compatible
test host), each with authentication on, metadata in PostgreSQL behind the Neon gateway stand-in
(tests/neon-gateway) made to add a fixed delay to every round trip (150 ms by default, like a
database in another region), and blobs on the Skynet portal stand-in. Each host runs twice: with
its read path cache off (`OPENREGISTRY_EDGE_CACHE=false`: every request asks the database) and on
(the default). For each it reports:

* the anonymous pull of a public five-layer image by `skopeo copy`, cold (first after start) and
  warm (the second), in seconds, and the database round trips each made (the gateway counts them);
* manifest HEAD and GET by tag with a pull token at 1, 16 and 64 connections: requests/s, p50 and
  p99 (bench/loadgen.c: closed loop, keep-alive, exact percentiles).

Not a test: nothing fails on a number. Writes docs/benchmarks-edge.json and the "Pulls at the
edge" section of docs/benchmarks.md (between its markers; the rest of the file is untouched), or,
with --out DIR, DIR/benchmarks-edge.{json,md}.

    scripts/bench edge [--delay-ms 150] [--seconds 3] [--hosts worker,spin] [--out DIR] [--set NAME=VALUE]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge  # noqa: E402
import servers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
BEGIN, END = "<!-- edge-pulls:begin -->", "<!-- edge-pulls:end -->"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
LAYER_BYTES = (400_000, 300_000, 200_000, 100_000, 50_000)
CONNECTIONS = (1, 16, 64)
# serverless-registry's figure on this machine class (issue "Global low-latency pulls").
PEER_HEAD_RPS = 366


def log(msg: str) -> None:
    print(f"bench edge: {msg}", file=sys.stderr, flush=True)


def token_key() -> str:
    r = subprocess.run(["node", str(REPO / "scripts" / "token-key")], capture_output=True, text=True, check=True)
    return r.stdout.strip()


class EdgeRegistry(servers.Server):
    """A host of the registry with auth on: ready once `/token` answers."""

    ready_path = "/token?service=openregistry"

    @property
    def load_base(self) -> str:
        return f"http://{self.host}"

    def __init__(self, workdir: Path, name: str, env: dict[str, str]):
        super().__init__(workdir, name)
        self.settings = env

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREGISTRY_")}
        env.update(self.settings)
        return env


class Worker(EdgeRegistry):
    """Through the harness's TCP front (skopeo's TLS probe is refused at once there); the loads go
    to workerd's own port (`load_base`), as `--direct` would."""

    kind, label = "worker", "Cloudflare Worker"

    def command(self) -> list[str]:
        return [edge.node(), str(edge.HARNESS), "--listen", self.host, "--persist", str(self.data_dir)]

    @property
    def load_base(self) -> str:
        for _ in range(100):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("workerd http://"):
                    return line[len("workerd "):].strip()
            time.sleep(0.05)
        raise RuntimeError("the harness did not name workerd's port")


class TrivialWorker(Worker):
    """bench/trivial-worker.mjs in the same harness: the runtime's own limit here."""

    kind, label = "trivial-worker", "trivial Worker"
    ready_path = "/"

    def command(self) -> list[str]:
        return super().command() + ["--script", str(REPO / "bench" / "trivial-worker.mjs")]


def runtime_limit(args, workdir: Path) -> dict:
    server = TrivialWorker(workdir, "trivial-worker", {}).start(timeout=120)
    try:
        out = {}
        for conns in CONNECTIONS:
            d = load(args.loadgen, f"{server.load_base}/", "HEAD", conns, args.seconds, "none")
            out[f"HEAD c{conns}"] = d
            log(f"trivial Worker: HEAD c={conns}: {d['rps']:.0f} req/s, p50 {d['p50_ms']:.1f} ms, "
                f"p99 {d['p99_ms']:.1f} ms")
        return out
    finally:
        server.stop()


class Spin(EdgeRegistry):
    kind, label = "spin", "Spin component"

    def command(self) -> list[str]:
        return edge.e2e_module("spin_host").command(self.host, self.data_dir)

    def env(self) -> dict[str, str]:
        return edge.e2e_module("spin_host").variables(super().env())


def http(method: str, url: str, headers: Optional[dict] = None, body: Optional[bytes] = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def run_cli(or_bin: Path, env: dict[str, str], workdir: Path, *args: str) -> str:
    r = subprocess.run([str(or_bin), *args, "--data-dir", str(workdir / "cli")], capture_output=True, text=True,
                       env={**os.environ, **env, "NO_COLOR": "1"}, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"openregistry {' '.join(args)}: {r.stderr[-800:]}")
    return r.stdout


def access_token(text: str) -> str:
    for word in text.split():
        if word.startswith("orp_"):
            return word
    raise RuntimeError(f"no access token in: {text[:300]}")


def oci_layout(root: Path) -> None:
    """A five-layer image as an OCI layout, tagged v1 (random bytes in small tar-like layers)."""
    import hashlib
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layers = [dict(put(os.urandom(n)), mediaType="application/vnd.oci.image.layer.v1.tar") for n in LAYER_BYTES]
    config = dict(put(json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()),
                  mediaType="application/vnd.oci.image.config.v1+json")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config,
                           "layers": layers}).encode()
    desc = dict(put(manifest), mediaType=MANIFEST_TYPE, annotations={"org.opencontainers.image.ref.name": "v1"})
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))


def skopeo(*args: str, auth_file: Path) -> float:
    started = time.perf_counter()
    r = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "REGISTRY_AUTH_FILE": str(auth_file)})
    if r.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)}: {r.stderr[-800:]}")
    return time.perf_counter() - started


def load(loadgen: str, url: str, method: str, conns: int, seconds: float, token: str) -> dict:
    cmd = [loadgen, "-c", str(conns), "-d", str(seconds), "-T", "30", "-m", method,
           "-H", f"Accept: {MANIFEST_TYPE}", "-H", f"Authorization: Bearer {token}", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    lines = [l for l in r.stdout.splitlines() if l.startswith("LOADGEN-JSON ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen failed: {(r.stderr or r.stdout)[-300:]}")
    d = json.loads(lines[-1][len("LOADGEN-JSON "):])
    bad = {k: v for k, v in d["errors"].items() if v}
    if bad or not d["requests"]:
        raise RuntimeError(f"loadgen {method} c={conns}: errors {bad} in {d['requests']} requests")
    return {"rps": d["requests"] / (d["duration_us"] / 1e6), "p50_ms": d["latency_us"]["p50"] / 1000,
            "p99_ms": d["latency_us"]["p99"] / 1000, "requests": d["requests"]}


def measure(host_class, cache: bool, args, stack: "Stack", workdir: Path) -> dict:
    name = f"{host_class.kind}-{'cache' if cache else 'nocache'}"
    portal = edge.SkynetPortal(workdir, f"{name}-portal").start()
    database = stack.postgres.create_database()
    env = {
        "OPENREGISTRY_DATABASE_URL": f"postgresql://postgres:openregistry@ep-bench.localtest.me/{database}",
        "OPENREGISTRY_DATABASE_HTTP_ENDPOINT": stack.gateway.url,
        "OPENREGISTRY_SKYNET_PORTAL": f"http://{portal.host}",
        "OPENREGISTRY_SKYNET_API_KEY": edge.API_KEY,
        "OPENREGISTRY_AUTH": "true",
        "OPENREGISTRY_TOKEN_KEY": token_key(),
        "OPENREGISTRY_EDGE_CACHE": "true" if cache else "false",
    }
    env.update(dict(item.split("=", 1) for item in args.set))
    gateway = stack.gateway_client
    gateway("delay", {"ms": 0})
    run_cli(args.or_bin, env, workdir, "migrate")
    run_cli(args.or_bin, env, workdir, "user", "create", "alice")
    password = access_token(run_cli(args.or_bin, env, workdir, "token", "create", "--user", "alice", "--name", "bench"))
    server = host_class(workdir, name, env).start(timeout=120)
    try:
        base = f"http://{server.host}"
        auth_file = workdir / f"{name}-auth.json"
        auth_file.write_text("{}")
        layout = workdir / "image"
        if not layout.exists():
            oci_layout(layout)
        ref = f"docker://{server.host}/alice/app:v1"
        skopeo("copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{password}", f"oci:{layout}:v1", ref,
               auth_file=auth_file)
        status, _ = http("PUT", f"{base}/api/repositories/alice/app/visibility",
                         {"Authorization": basic("alice", password), "Content-Type": "application/json"},
                         b'{"visibility":"public"}')
        assert status == 200
        gateway("delay", {"ms": args.delay_ms})
        out: dict = {"host": host_class.kind, "cache": cache, "pulls": {}, "load": {}}
        for pull in ("cold", "warm"):
            gateway("reset-stats", {})
            secs = skopeo("copy", "--src-tls-verify=false", "--src-no-creds", ref,
                          f"oci:{workdir / (name + '-' + pull)}:v1", auth_file=auth_file)
            trips = gateway("stats")["requests"]
            out["pulls"][pull] = {"seconds": secs, "round_trips": trips}
            log(f"{name}: {pull} skopeo pull {secs:.2f} s, {trips} database round trips")
        _, body = http("GET", f"{base}/token?service=openregistry&scope=repository:alice/app:pull")
        token = json.loads(body)["token"]
        for method in ("HEAD", "GET"):
            for conns in CONNECTIONS:
                d = load(args.loadgen, f"{server.load_base}/v2/alice/app/manifests/v1", method, conns,
                         args.seconds, token)
                out["load"][f"{method} c{conns}"] = d
                log(f"{name}: {method} by tag c={conns}: {d['rps']:.0f} req/s, p50 {d['p50_ms']:.1f} ms, "
                    f"p99 {d['p99_ms']:.1f} ms")
        return out
    finally:
        gateway("delay", {"ms": 0})
        server.stop()
        portal.stop()


class Stack:
    def __init__(self, workdir: Path):
        self.postgres = edge.Postgres()
        self.gateway = edge.NeonGateway(workdir, "neon-gateway", self.postgres.pg.host, self.postgres.pg.port).start()

    def gateway_client(self, what: str, body: Optional[dict] = None) -> dict:
        base = f"http://{self.gateway.host}/__test/"
        if what == "stats":
            _, data = http("GET", base + "stats")
        else:
            _, data = http("POST", base + what, {"Content-Type": "application/json"}, json.dumps(body).encode())
        return json.loads(data)

    def close(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.postgres.close()


def render(results: list[dict], meta: dict) -> str:
    L = [BEGIN, "", "## Pulls at the edge (`scripts/bench edge`)", ""]
    L.append(f"Run {meta['date']} on {meta['machine']}; every database round trip delayed "
             f"{meta['delay_ms']} ms by the Neon gateway stand-in (a database in another region); "
             f"authentication on; loads of {meta['seconds']} s per point. Cache off is "
             "`OPENREGISTRY_EDGE_CACHE=false` (every request asks the database); on is the default (Worker: "
             "isolate memory in front of the Cache API; Spin: its key-value store).")
    L.append("")
    L.append("| host | cache | skopeo pull cold | warm | round trips cold / warm |")
    L.append("| --- | --- | --- | --- | --- |")
    for r in results:
        c, w = r["pulls"]["cold"], r["pulls"]["warm"]
        L.append(f"| {r['host']} | {'on' if r['cache'] else 'off'} | {c['seconds']:.2f} s | {w['seconds']:.2f} s | "
                 f"{c['round_trips']} / {w['round_trips']} |")
    L.append("")
    L.append("Manifest by tag with a pull token, warm (after the pulls above): requests/s, p50 / p99 ms.")
    L.append("")
    keys = [f"{m} c{c}" for m in ("HEAD", "GET") for c in CONNECTIONS]
    L.append("| host | cache | " + " | ".join(keys) + " |")
    L.append("| --- | --- | " + " | ".join("---" for _ in keys) + " |")
    for r in results:
        cells = []
        for k in keys:
            d = r["load"].get(k)
            cells.append(f"{d['rps']:.0f} ({d['p50_ms']:.1f} / {d['p99_ms']:.1f})" if d else "–")
        L.append(f"| {r['host']} | {'on' if r['cache'] else 'off'} | " + " | ".join(cells) + " |")
    L.append("")
    for r in results:
        head = r["load"].get("HEAD c16")
        if r["cache"] and head:
            L.append(f"- {r['host']}, cache on: HEAD at 16 connections {head['rps']:.0f} req/s = "
                     f"{head['rps'] / PEER_HEAD_RPS:.1f}x serverless-registry's {PEER_HEAD_RPS} req/s "
                     f"(target 10x), p99 {head['p99_ms']:.1f} ms (target 10 ms).")
    limit = meta.get("runtime_limit") or {}
    if limit:
        cells = ", ".join(f"{k}: {v['rps']:.0f} req/s (p99 {v['p99_ms']:.1f} ms)" for k, v in limit.items())
        L.append(f"- The runtime's own limit here, a trivial Worker (bench/trivial-worker.mjs) in the same "
                 f"harness: {cells}.")
        head, trivial = None, limit.get("HEAD c16")
        for r in results:
            if r["host"] == "worker" and r["cache"]:
                head = r["load"].get("HEAD c16")
        if head and trivial:
            L.append(f"- The Worker's warm HEAD at 16 connections is {head['rps'] / trivial['rps']:.0%} of the "
                     "trivial Worker's rate.")
    for note in meta.get("notes", []):
        L.append(f"- {note}")
    L += ["", END]
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay-ms", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--hosts", default="worker,spin")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for every host started (e.g. OPENREGISTRY_TAG_CACHE_SECONDS=60)")
    args = ap.parse_args()
    args.or_bin = Path(os.environ["OPENREGISTRY_BIN"])
    args.loadgen = os.environ["LOADGEN_BIN"]
    hosts = {"worker": Worker, "spin": Spin}
    chosen = [hosts[h] for h in args.hosts.split(",") if h]
    meta = {"date": dt.date.today().isoformat(), "delay_ms": args.delay_ms, "seconds": args.seconds,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, load average at start "
                       f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", "notes": []}
    log("setting up the Worker toolchain and the stand-ins (scripts/*-deps, build-worker)")
    edge.setup(log)
    if Spin in chosen:
        for script in ("spin-host-deps", "build-spin"):
            r = subprocess.run([str(REPO / "scripts" / script)], capture_output=True, text=True, cwd=REPO)
            if r.returncode != 0:
                meta["notes"].append(f"Spin not measured: scripts/{script} failed")
                chosen.remove(Spin)
                break
    workdir = Path(tempfile.mkdtemp(prefix="openregistry-bench-edge-"))
    stack = Stack(workdir)
    results = []
    limit: dict = {}
    try:
        if Worker in chosen:
            try:
                limit = runtime_limit(args, workdir)
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                meta["notes"].append(f"trivial Worker: not measured: {exc}")
        for host in chosen:
            for cache in (False, True):
                try:
                    results.append(measure(host, cache, args, stack, workdir))
                except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                    meta["notes"].append(f"{host.kind} cache {'on' if cache else 'off'}: not measured: {exc}")
                    log(meta["notes"][-1])
    finally:
        stack.close()
        servers.stop_all()
    meta["runtime_limit"] = limit
    section = render(results, meta)
    print(section)
    out_dir = args.out or DOCS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks-edge.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    target = out_dir / "benchmarks.md" if args.out is None else out_dir / "benchmarks-edge.md"
    text = target.read_text() if target.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    target.write_text(text)
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
