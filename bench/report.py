"""The outputs of a benchmark run: a table on stdout, a JSON file, a markdown page and a chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from results import DIST, LABELS, OR, WORKER, Metric, Results, evaluate_targets

SECTIONS = [
    ("push", "Blob push"),
    ("pull", "Blob pull"),
    ("requests", "Manifests and tags/list under load"),
    ("tags", "Many tags on one repository"),
    ("memory", "Memory"),
    ("skopeo", "Whole image with skopeo"),
]

# The chart: one panel per figure, with the limit (dashed) and the target (dotted) when there is one.
CHART = [
    ("push_monolithic", "push {layer_mib} MiB, monolithic", None),
    ("push_chunked_8m", "push, 8 MiB chunks", None),
    ("push_chunked_32m", "push, 32 MiB chunks", None),
    ("concurrent_push", "{concurrent_clients} × same {concurrent_mib} MiB blob", None),
    ("pull", "pull (sha256 verified)", None),
    ("manifest_get_c64_rps", "manifest GET, 64 conn.", None),
    ("manifest_head_c64_rps", "manifest HEAD, 64 conn.", None),
    ("tags_list_c64_rps", "tags/list, 64 conn.", None),
    ("manifest_get_c64_p99", "manifest GET p99, 64 conn.", 10.0),
    ("manifest_head_c64_p99", "manifest HEAD p99, 64 conn.", 10.0),
    ("tags_push", "push {tags:,} tags", None),
    ("tags_page_p50", "one n={page} page of {tags:,} tags", 5.0),
    ("tags_full", "full tag list", None),
    ("rss_peak", "peak RSS, {rss_push_mib} MiB push", 64.0),
    ("skopeo_push", "skopeo push", None),
    ("skopeo_pull", "skopeo pull", None),
]


def num(v: Optional[float]) -> str:
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(m: Metric, target: str) -> str:
    med = m.median(target)
    if med is None:
        return "–"
    lo, hi = m.span(target)
    if len(m.samples[target]) == 1:
        return num(med)
    return f"{num(med)} [{num(lo)}–{num(hi)}]"


def ratio(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return f"{v:.2g}×" if v < 0.1 else f"{v:.2f}×"


WORKER_TITLE = "Cloudflare Worker in workerd, through local stand-ins of its backends"
WORKER_HEADER = ["workload", "unit", LABELS[WORKER], "OpenRegistry native", "Worker vs native"]


def worker_rows(r: Results) -> list[list[str]]:
    return [[m.label, m.unit, cell(m, WORKER), cell(m, OR), ratio(r.worker_vs_native(m))]
            for m in r.metrics.values() if m.section == "worker" and m.samples]


def rows(r: Results) -> list[tuple[str, list[list[str]]]]:
    out = []
    for sid, title in SECTIONS:
        body = []
        for m in r.metrics.values():
            if m.section != sid or not m.samples:
                continue
            limit = r.limit_median(m)
            body.append([
                m.label, m.unit, cell(m, OR), cell(m, DIST), ratio(r.vs_distribution(m)),
                num(limit), ratio(r.vs_limit(m, OR)), ratio(r.vs_limit(m, DIST)),
            ])
        if body:
            out.append((title, body))
    return out


HEADER = ["workload", "unit", "OpenRegistry", "Distribution", "OR vs Dist", "limit", "OR vs limit",
          "Dist vs limit"]


def print_table(r: Results, meta: dict, file=sys.stdout) -> None:
    sections = rows(r)
    all_rows = [HEADER] + [row for _, body in sections for row in body]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(HEADER))]
    widths[0] = min(widths[0], 72)

    def line(row: list[str]) -> str:
        parts = []
        for i, text in enumerate(row):
            text = text if len(text) <= widths[i] else text[: widths[i] - 1] + "…"
            parts.append(text.ljust(widths[i]) if i < 2 else text.rjust(widths[i]))
        return "  ".join(parts)

    print(file=file)
    print(f"OpenRegistry vs CNCF Distribution — {meta['date_utc']}, {meta['mode']} run, "
          f"{meta['plan']['rounds']} round(s); medians [min–max]", file=file)
    print("'vs': how many times better (>1 = better, whichever direction is better for the unit)", file=file)
    print(line(HEADER), file=file)
    for title, body in sections:
        print(f"-- {title}", file=file)
        for row in body:
            print(line(row), file=file)
    worker = worker_rows(r)
    if worker:
        wwidths = [max(len(row[i]) for row in [WORKER_HEADER] + worker) for i in range(len(WORKER_HEADER))]
        wwidths[0] = min(wwidths[0], 72)
        print(f"-- {WORKER_TITLE}", file=file)
        for row in [WORKER_HEADER] + worker:
            print("  ".join((t if len(t) <= wwidths[i] else t[: wwidths[i] - 1] + "…").ljust(wwidths[i]) if i < 2
                            else t.rjust(wwidths[i]) for i, t in enumerate(row)), file=file)
    print("-- machine limits", file=file)
    for m in r.limits.values():
        if m.samples:
            print(f"{m.label:<72}  {m.unit:>8}  {cell(m, 'machine')}", file=file)
    print(file=file)
    print("Targets (reported, not asserted):", file=file)
    for t in evaluate_targets(r):
        state = "not measured" if t.met is None else ("MET" if t.met else "MISSED")
        print(f"  [{state:^12}] {t.text}: {t.measured}; ratio {ratio(t.ratio)} (needed {t.need})", file=file)
    for check in [c for cs in r.checks.values() for c in cs]:
        print(f"  check: {check}", file=file)
    for note in r.notes.values():
        print(f"  note: {note}", file=file)
    for err in r.errors:
        print(f"  ERROR: {err}", file=file)
    print(f"\nwall time {meta.get('wall_seconds', 0):.0f} s; load average at start {meta['load_average_at_start']}, "
          f"at end {meta.get('load_average_at_end', '?')}", file=file)


# -- chart ----------------------------------------------------------------------------

def draw_chart(r: Results, path: Path, plan: dict) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no chart: matplotlib is missing ({exc})"
    panels = [(mid, title.format(**plan), target) for mid, title, target in CHART
              if mid in r.metrics and r.metrics[mid].samples]
    if not panels:
        return "no chart: nothing measured"
    cols = 4
    rows_n = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(cols * 3.4, rows_n * 2.7), squeeze=False)
    colors = {OR: "#2b7bba", DIST: "#e08a2c"}
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (mid, title, target) in zip(axes.flat, panels):
        m = r.metrics[mid]
        xs, meds, los, his, cs = [], [], [], [], []
        for k, t in enumerate((OR, DIST)):
            med = m.median(t)
            if med is None:
                continue
            lo, hi = m.span(t)
            xs.append(k)
            meds.append(med)
            los.append(med - lo)
            his.append(hi - med)
            cs.append(colors[t])
        ax.bar(xs, meds, color=cs, width=0.6, yerr=[los, his], capsize=4, ecolor="#333333")
        for x, v in zip(xs, meds):
            ax.annotate(num(v), (x, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                        textcoords="offset points")
        limit = r.limit_median(m)
        if limit:
            ax.axhline(limit, color="#555555", linestyle="--", linewidth=1)
            ax.annotate(f"limit {num(limit)}", (1.45, limit), ha="right", va="bottom", fontsize=7, color="#555555")
        if target:
            ax.axhline(target, color="#c0392b", linestyle=":", linewidth=1.2)
            ax.annotate(f"target {num(target)}", (-0.45, target), ha="left", va="bottom", fontsize=7,
                        color="#c0392b")
        top = max([v + h for v, h in zip(meds, his)] + [limit or 0, target or 0])
        bottom = min([v for v in meds] + [x for x in (limit, target) if x])
        if bottom > 0 and top / bottom > 30:  # a tall bar would flatten the rest: log scale
            ax.set_yscale("log")
            ax.set_ylim(bottom / 3, top * 3)
        else:
            ax.set_ylim(0, top * 1.18 if top else 1)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["OpenRegistry", "Distribution"], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        better = "higher is better" if m.better == "higher" else "lower is better"
        ax.set_title(f"{title}\n{m.unit}, {better}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("OpenRegistry vs CNCF Distribution (medians, bars: min–max; dashed: machine limit; "
                 "dotted: target)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# -- markdown --------------------------------------------------------------------------

def md_table(header: list[str], body: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " if i < 2 else " ---: " for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(out)


METHOD = """\
## Method

`scripts/bench` installs what it needs (Debian's `docker-registry`, `wrk`, `nginx-light`,
`openssl`, `skopeo`; a venv with matplotlib under `~/.cache/openregistry/bench-venv`), builds the
release binary and `bench/loadgen.c`, and runs `bench/bench.py`, which for the Worker runs
`scripts/neon-gateway-deps`, `scripts/skynet-portal-deps`, `scripts/cloudflare-deps` and
`scripts/build-worker` (tools cached under `~/.cache/openregistry`; if any of them fails, the
Worker is reported as not measured and the rest of the run goes on). Every server is started by
the script on a free port of 127.0.0.1 and stopped by its PID. Scratch data lives in a new
directory under `$TMPDIR`, on the same filesystem as the registries' data.

**The two registries.** OpenRegistry is `openregistry serve --listen 127.0.0.1:PORT --data-dir DIR`
with nothing else: blobs as files, metadata and upload sessions in SQLite (WAL,
`synchronous=FULL`; queries run on read-only connections on the async workers, writes on one
writer connection on the blocking pool), one log line per request on stderr (to a file; buffered
and written in batches by a thread of its own). Distribution is Debian's
`docker-registry` (CNCF Distribution 2.8) with `storage.filesystem.rootdirectory` in a scratch
directory, `delete.enabled: true`, `cache.blobdescriptor: inmemory` (as in Debian's packaged
config), upload purging off, `http.addr: 127.0.0.1:PORT`, access log and info log on (to a file).
Its low request rates are its own: a Go CPU profile (`http.debug.addr`, `/debug/pprof/profile`)
of manifest GETs shows about half of its CPU in `App.context` → `v2.NewURLBuilderFromRequest`,
which builds the whole URL router, compiling its regular expressions, for every request.

**Durability is not the same.** Traced with `strace -f -e trace=fsync,fdatasync,rename`:
OpenRegistry `fdatasync`s every appended upload (and, during an append, starts an `fdatasync` in
the background every 32 MiB, so the final one is short), `fsync`s the finished file, renames it into
`blobs/` and `fsync`s that directory, then commits SQLite (one WAL `fsync` per commit); a manifest
or tag `PUT` is one SQLite commit. Distribution `fsync`s the content of every file it writes (upload
data, hash states, `link` files; each twice, on commit and on close) but never a directory: the
rename of an upload into `blobs/` and every new `link` file become durable only when the
filesystem commits its journal (ext4: within 5 s). So a crash can lose a blob or a tag that
Distribution has acknowledged, and cannot with OpenRegistry. The comparison is between the two as
shipped; Distribution does somewhat less work per write.

**Rounds.** Each workload runs in rounds; each round measures the machine limit it is compared
with, then OpenRegistry, then Distribution (A B A B ...). Tables give the median and [min–max].
Push, concurrent-push, tags, memory and skopeo rounds start each registry fresh on an empty data
directory (no deduplication across rounds), and `sync` runs before each timed transfer. "vs
Distribution" and "vs limit" are how many times better the first is (for times, latencies and
memory, lower is better, so the ratio is inverted): 1.00× is parity, above is better. Because the
machine is shared and absolute numbers drift, the ratios are the figures to compare between runs.

**Clients.** Blob pushes and pulls use `bench/httpc.py`, a keep-alive HTTP/1.1 client that sends
bodies with `sendfile(2)` and receives into a 4 MiB buffer hashed on the fly by OpenSSL
(`hashlib`), so a pull is verified as it arrives and the client costs less CPU than the server.
Request rates use `wrk` (one thread, a Lua script reporting p50/p99 from its latency histogram)
for GET, and `bench/loadgen.c` for HEAD: wrk's response parser is never told a request was HEAD,
so it waits for a body that never comes (0 requests/s). loadgen is a one-thread epoll closed-loop
client like `wrk -t1` that keeps every latency for exact percentiles; the run checks it against
wrk on the same nginx GET at 64 connections ("loadgen/wrk" in the limits). skopeo is Debian's.

**Workloads.**
- *push*: one blob of random bytes; monolithic is `POST` then `PUT ?digest=` with the whole body;
  chunked is `POST`, one `PATCH` per chunk with `Content-Range`, then an empty `PUT ?digest=`.
  MB/s = 10^6 bytes/s, from the `POST` to the `201`.
- *concurrent*: 8 clients released together push the same blob (`POST` + `PUT`); all must get
  `201`, and the blob must read back with the right sha256. Total MB/s = 8 × size / wall time.
- *pull*: `GET` of the pushed blob, sha256 verified while streaming; the limit is nginx (sendfile,
  no access log, a worker per core) serving the same file to the same client. Caches are warm.
- *requests*: an OCI image manifest (`Accept` set) by tag, `GET` and `HEAD`, and `tags/list` of a
  repository with 10 tags, at 1, 16 and 64 connections; the limit is nginx serving the manifest's
  bytes as a static file (GET with wrk, HEAD with loadgen). Errors (non-2xx, timeouts) abort a
  measurement.
- *tags*: 16 clients `PUT` the same manifest under 10,000 tags (one request per tag); then the
  walk `GET tags/list?n=100` following `Link` headers (the time of each page is taken on a warm
  keep-alive connection), and the full list (`GET tags/list` without `n`, following `Link`).
  Distribution 2.8 ignores `n` and returns every tag in one response, so its "page" is the
  whole list. The slowest of OpenRegistry's 101 pages is a different page in every walk: it
  measures scheduling on a shared 2-core machine more than the query. The limit for the tag push
  rate is one writer's durable 4 KiB writes per second.
- *memory*: a fresh server, idle RSS after one request, then a 2 GiB push in one `PATCH` with a
  chunked transfer encoding (no length); peak is the kernel's high-water mark (`VmHWM`).
- *skopeo*: `skopeo copy` of an OCI layout with 5 gzip layers (random bytes in stored deflate
  blocks, so skopeo does not recompress) into a fresh registry, then back out into an OCI layout.
- *worker*: the Cloudflare Worker and the native server in alternating rounds, each fresh (the
  Worker with a fresh portal and a fresh, migrated database): a small image, manifest `HEAD`s by
  tag at 16 connections (loadgen), then a 200 MiB layer pushed in one `PATCH` with a chunked
  transfer encoding while the RSS is sampled; the Worker's bundle size from
  `scripts/worker-size`. See the Worker's table above for what the stand-ins mean for the numbers.

**Limits.** sha256: `openssl speed -evp sha256` on 1 MiB blocks (one core); a push cannot be
faster than the slower of this and the disk. Durable disk write: `dd conv=fsync` of the layer
file (cached) to a new file, with `bs=4M` and with `bs=256K`; the limit is the faster. On this VM
the block size alone changes the figure about fivefold: Linux gives the page cache large folios
for large writes, and memory the host has taken back (virtio balloon free-page reporting) must
be faulted in again on the host, which makes large folios slow to fill (`write(2)` of 1 MiB
pieces into the page cache ran at about 0.3 GB/s, of 256 KiB pieces at about 2.5 GB/s). Earlier
versions of this benchmark used `bs=4M` alone (223 MB/s in the last such run), which understated
the disk; OpenRegistry writes uploads in 256 KiB pieces for the same reason. Durable small writes: 4 KiB `pwrite` +
`fdatasync` in a loop. Static-file GET: nginx, as above.

**Not measured here** (yet): the native server with Postgres/Neon metadata or Skynet storage;
the Worker is measured only through the local stand-ins of those services.
"""


WORKER_NOTE = """\
Absolute numbers, with their context: the Worker (`worker/cloudflare/build`, as `scripts/build-worker`
builds it) runs in workerd through Miniflare (`tests/cloudflare/mf-serve.mjs`) on this machine, and
its backends are the local stand-ins of the end-to-end suite: metadata in this machine's PostgreSQL
behind the Neon SQL-over-HTTP gateway stand-in (`tests/neon-gateway`, Node.js), blobs on the Skynet
portal stand-in (`tests/skynet-portal`, Node.js, files on the same disk), all on the same two cores
as the client. Every manifest request is SQL over HTTP to the gateway, and every blob byte goes
through the portal: on Cloudflare those are remote services, so these figures predict neither
production latency nor throughput; they track the Worker's own cost from run to run. *OpenRegistry
native* is the native server on its embedded defaults (SQLite, files) doing the same thing in the
same round; *Worker vs native* is how many times better the Worker is (below 1: worse). RSS is
workerd's resident set (its own process, not the harness), sampled every 50 ms during the push;
the native server's is its `VmRSS` sampled the same way. The bundle is what
`scripts/worker-size` reports (`wrangler deploy --dry-run`). The Worker is not in the chart.
"""


def write_markdown(r: Results, meta: dict, path: Path, chart: Optional[str], chart_note: Optional[str]) -> None:
    L: list[str] = []
    L.append("# Benchmarks: OpenRegistry vs CNCF Distribution\n")
    L.append(f"Generated by `scripts/bench` on **{meta['date_utc']}** ({meta['mode']} run, "
             f"{meta['plan']['rounds']} round{'s' if meta['plan']['rounds'] != 1 else ''}, {meta.get('wall_seconds', 0):.0f} s). Do not edit by hand: "
             f"run `scripts/bench` again. Raw numbers: [`benchmarks.json`](benchmarks.json).\n")
    L.append("Benchmarks are not tests: nothing fails on a number. The machine is shared, so absolute "
             "figures drift from run to run; the ratios to the machine's own limits, measured in the same "
             "run, are what to compare.\n")
    L.append("## Machine\n")
    L.append(md_table(["", ""], [
        ["CPU", f"{meta['cpu']}, {meta['cores']} cores"],
        ["memory", meta["memory"]],
        ["OS, kernel", f"{meta['os']}, Linux {meta['kernel']}"],
        ["data filesystem", meta["filesystem"]],
        ["load average (1, 5, 15 min)", f"{meta['load_average_at_start']} at start, "
                                        f"{meta.get('load_average_at_end', '?')} at end"],
        ["OpenRegistry", meta["openregistry"]],
        ["CNCF Distribution", meta["distribution"]],
        ["tools", f"{meta['wrk']}; {meta['nginx']}; {meta['openssl']}; {meta['skopeo']}; "
                  f"Python {meta['python']}"],
    ]))
    L.append("")
    L.append("## Targets\n")
    L.append("From the benchmarking issue; reported, not asserted. For the p99 targets, nginx's own p99 "
             "at 64 connections on the same machine, in the same run, is in the limits table below.\n")
    body = []
    for t in evaluate_targets(r):
        state = "not measured" if t.met is None else ("**met**" if t.met else "**missed**")
        body.append([t.text, t.measured, ratio(t.ratio), t.need, state])
    L.append(md_table(["target", "measured", "ratio", "needed", ""], body))
    L.append("")
    L.append("## Results\n")
    L.append(f"Medians of {meta['plan']['rounds']} rounds [min–max] (tags: {meta['plan']['tag_rounds']}, "
             f"memory: {meta['plan']['rss_rounds']}). *vs*: how many times better, 1.00× = parity "
             f"(inverted for times, latencies and memory, where lower is better). *limit*: the machine's "
             f"limit for that figure, measured in the same run (below).\n")
    for title, body in rows(r):
        L.append(f"### {title}\n")
        L.append(md_table(HEADER, body))
        L.append("")
    worker = worker_rows(r)
    if worker:
        L.append(f"### {WORKER_TITLE}\n")
        L.append(WORKER_NOTE)
        L.append(md_table(WORKER_HEADER, worker))
        L.append("")
    L.append("### Machine limits\n")
    L.append(md_table(["limit", "unit", "median [min–max]"],
                      [[m.label, m.unit, cell(m, "machine")] for m in r.limits.values() if m.samples]))
    L.append("")
    if chart:
        L.append("## Chart\n")
        L.append(f"![OpenRegistry vs Distribution per workload]({chart})\n")
    elif chart_note:
        L.append(f"_{chart_note}_\n")
    checks = [c for cs in r.checks.values() for c in cs]
    if checks or r.notes or r.errors:
        L.append("## Correctness and notes\n")
        L += [f"- {c}" for c in checks]
        L += [f"- {n}" for n in r.notes.values()]
        L += [f"- **error**: {e}" for e in r.errors]
        L.append("")
    L.append(METHOD)
    L.append("## Running it\n")
    L.append("```sh\nscripts/bench            # the full run (9-14 minutes): rewrites docs/benchmarks.{md,json,png}\n"
             "scripts/bench --no-worker                   # without the Cloudflare Worker (same as --skip worker)\n"
             "scripts/bench --quick    # small sizes, one round, about two minutes: results in target/bench/\n"
             "scripts/bench --only push,pull --rounds 5   # some workloads; see --help\n"
             "scripts/bench --only requests --connections 64   # a focused run of the request rates\n"
             "scripts/bench --render docs/benchmarks.json  # redraw the outputs of a run, measuring nothing\n"
             "scripts/bench edge       # pulls at the edge, database 150 ms away (bench/edge_pulls.py): its own section\n```\n")
    text = "\n".join(L)
    # The section `scripts/bench edge` writes (bench/edge_pulls.py) is kept as it was.
    begin, end = "<!-- edge-pulls:begin -->", "<!-- edge-pulls:end -->"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    path.write_text(text)


def write_all(r: Results, meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    targets = [t.__dict__ for t in evaluate_targets(r)]
    (out_dir / "benchmarks.json").write_text(json.dumps({"meta": meta, "targets": targets, **r.to_json()},
                                                        indent=1) + "\n")
    chart_path = out_dir / "benchmarks.png"
    note = draw_chart(r, chart_path, meta["plan"])
    write_markdown(r, meta, out_dir / "benchmarks.md", None if note else chart_path.name, note)
    print_table(r, meta)
    print(f"\nwrote {out_dir / 'benchmarks.md'}, {out_dir / 'benchmarks.json'}"
          + ("" if note else f", {chart_path}"), file=sys.stdout)
    if note:
        print(note, file=sys.stderr)
