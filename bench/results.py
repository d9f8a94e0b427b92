"""What a benchmark run measured: metrics with their samples per target, the machine's limits, the
targets of the issue, and the derived medians and ratios."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

OR = "openregistry"
DIST = "distribution"
WORKER = "worker"  # the Cloudflare Worker in workerd (section "worker" only)
TARGETS = (OR, DIST, WORKER)
LABELS = {OR: "OpenRegistry", DIST: "Distribution", WORKER: "Worker (workerd)"}


@dataclass
class Metric:
    id: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    section: str
    limit: Optional[str] = None  # id of the limit metric this one is compared with
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, target: str, value: float) -> None:
        self.samples.setdefault(target, []).append(float(value))

    def median(self, target: str) -> Optional[float]:
        values = self.samples.get(target) or []
        return statistics.median(values) if values else None

    def span(self, target: str) -> Optional[tuple[float, float]]:
        values = self.samples.get(target) or []
        return (min(values), max(values)) if values else None


def advantage(a: Optional[float], b: Optional[float], better: str) -> Optional[float]:
    """How much better `a` is than `b` (>1: better), whichever direction is better."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if better == "higher" else b / a


class Results:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self.limits: dict[str, Metric] = {}
        self.errors: list[str] = []
        self.notes: dict[str, str] = {}
        self.checks: dict[str, list[str]] = {}  # correctness observations per workload

    def metric(self, id: str, label: str, unit: str, better: str, section: str,
               limit: Optional[str] = None, note: str = "") -> Metric:
        if id not in self.metrics:
            self.metrics[id] = Metric(id, label, unit, better, section, limit, note)
        return self.metrics[id]

    def limit(self, id: str, label: str, unit: str, better: str = "higher", note: str = "") -> Metric:
        if id not in self.limits:
            self.limits[id] = Metric(id, label, unit, better, "limits", None, note)
        return self.limits[id]

    def add(self, id: str, target: str, value: float) -> None:
        self.metrics[id].add(target, value)

    def add_limit(self, id: str, value: float) -> None:
        self.limits[id].add("machine", value)

    def limit_median(self, metric: Metric) -> Optional[float]:
        if not metric.limit or metric.limit not in self.limits:
            return None
        return self.limits[metric.limit].median("machine")

    def vs_limit(self, metric: Metric, target: str) -> Optional[float]:
        return advantage(metric.median(target), self.limit_median(metric), metric.better)

    def vs_distribution(self, metric: Metric) -> Optional[float]:
        return advantage(metric.median(OR), metric.median(DIST), metric.better)

    def worker_vs_native(self, metric: Metric) -> Optional[float]:
        return advantage(metric.median(WORKER), metric.median(OR), metric.better)

    @classmethod
    def from_json(cls, d: dict) -> "Results":
        """The Results a run wrote with to_json (scripts/bench --render re-draws its outputs)."""
        r = cls()
        for mid, m in d.get("metrics", {}).items():
            metric = r.metric(mid, m["label"], m["unit"], m["better"], m["section"], m.get("limit"),
                              m.get("note", ""))
            for target in TARGETS:
                if target in m:
                    metric.samples[target] = list(m[target]["samples"])
        for lid, m in d.get("limits", {}).items():
            limit = r.limit(lid, m["label"], m["unit"], m["better"], m.get("note", ""))
            if "machine" in m:
                limit.samples["machine"] = list(m["machine"]["samples"])
        r.checks = dict(d.get("checks", {}))
        r.notes = dict(d.get("notes", {}))
        r.errors = list(d.get("errors", []))
        return r

    def to_json(self) -> dict:
        def m(metric: Metric, is_limit: bool = False) -> dict:
            out = {
                "label": metric.label, "unit": metric.unit, "better": metric.better,
                "section": metric.section,
            }
            if metric.note:
                out["note"] = metric.note
            for target, values in metric.samples.items():
                lo, hi = metric.span(target)
                out[target] = {"samples": values, "median": metric.median(target), "min": lo, "max": hi}
            if not is_limit:
                out["limit"] = metric.limit
                out["limit_median"] = self.limit_median(metric)
                out["openregistry_vs_distribution"] = self.vs_distribution(metric)
                if WORKER in metric.samples:
                    out["worker_vs_native"] = self.worker_vs_native(metric)
                out["openregistry_vs_limit"] = self.vs_limit(metric, OR)
                out["distribution_vs_limit"] = self.vs_limit(metric, DIST)
            return out

        return {
            "metrics": {k: m(v) for k, v in self.metrics.items()},
            "limits": {k: m(v, True) for k, v in self.limits.items()},
            "checks": self.checks,
            "notes": self.notes,
            "errors": self.errors,
        }


@dataclass
class Target:
    """One target of the issue: reported, never asserted."""

    text: str
    measured: str
    ratio: Optional[float]
    met: Optional[bool]  # None: not measured
    need: str = ""  # the ratio the target asks for, e.g. "≥ 0.9"


def evaluate_targets(r: Results) -> list[Target]:
    out: list[Target] = []

    def med(mid: str, target: str = OR) -> Optional[float]:
        metric = r.metrics.get(mid)
        return metric.median(target) if metric else None

    def fmt(v: Optional[float], digits: int = 2) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    # 1. Monolithic push vs durable disk write.
    mono, disk = med("push_monolithic"), (r.limits["disk_write"].median("machine") if "disk_write" in r.limits else None)
    ratio = mono / disk if mono and disk else None
    out.append(Target("monolithic push ≥ 0.9 × durable disk write",
                      f"{fmt(mono, 1)} MB/s vs {fmt(disk, 1)} MB/s", ratio,
                      None if ratio is None else ratio >= 0.9, "≥ 0.9"))
    # 2. 8 MiB chunked push vs Distribution.
    a, b = med("push_chunked_8m"), med("push_chunked_8m", DIST)
    ratio = a / b if a and b else None
    out.append(Target("8 MiB chunked push ≥ 1.5 × Distribution",
                      f"{fmt(a, 1)} MB/s vs {fmt(b, 1)} MB/s", ratio,
                      None if ratio is None else ratio >= 1.5, "≥ 1.5"))
    # 3. Pull vs the static-file server.
    pull = med("pull")
    nginx = r.limits["nginx_get"].median("machine") if "nginx_get" in r.limits else None
    ratio = pull / nginx if pull and nginx else None
    out.append(Target("pull ≥ 0.95 × static-file server (nginx)",
                      f"{fmt(pull, 1)} MB/s vs {fmt(nginx, 1)} MB/s", ratio,
                      None if ratio is None else ratio >= 0.95, "≥ 0.95"))
    # 4. Manifest GET/HEAD at 64 connections.
    for verb in ("get", "head"):
        a, b = med(f"manifest_{verb}_c64_rps"), med(f"manifest_{verb}_c64_rps", DIST)
        ratio = a / b if a and b else None
        out.append(Target(f"manifest {verb.upper()} at 64 connections ≥ 10 × Distribution's requests/s",
                          f"{fmt(a, 0)} req/s vs {fmt(b, 0)} req/s", ratio,
                          None if ratio is None else ratio >= 10, "≥ 10"))
        p99 = med(f"manifest_{verb}_c64_p99")
        out.append(Target(f"manifest {verb.upper()} at 64 connections: p99 ≤ 10 ms",
                          f"p99 {fmt(p99, 2)} ms", None if p99 is None else p99 / 10.0,
                          None if p99 is None else p99 <= 10, "≤ 1 (of 10 ms)"))
    # 5. Peak RSS during a 2 GiB push.
    peak = med("rss_peak")
    out.append(Target("peak RSS during a 2 GiB streamed push ≤ 64 MiB",
                      f"{fmt(peak, 1)} MiB", None if peak is None else peak / 64.0,
                      None if peak is None else peak <= 64, "≤ 1 (of 64 MiB)"))
    # 6. One n=100 page of a 10,000-tag repository.
    page, worst = med("tags_page_p50"), med("tags_page_max")
    out.append(Target("one n=100 page of a 10,000-tag repository ≤ 5 ms (median page)",
                      f"median page {fmt(page, 2)} ms (slowest {fmt(worst, 2)} ms)",
                      None if page is None else page / 5.0, None if page is None else page <= 5,
                      "≤ 1 (of 5 ms)"))
    # 7. The Worker bundle (scripts/worker-size's limit).
    gz = med("worker_bundle_gzip", WORKER)
    out.append(Target("Worker bundle (JS + WASM, gzip -9) ≤ 1 MiB (scripts/worker-size)",
                      f"{fmt(gz, 0)} KiB", None if gz is None else gz / 1024,
                      None if gz is None else gz <= 1024, "≤ 1 (of 1 MiB)"))
    return out
