"""The Worker's memory stays flat whatever the layer size (E2E_HOST=cloudflare only).

Workers get 128 MB per isolate and local runs do not enforce it, so this test watches workerd's
resident set itself (/proc) while skopeo pushes a multi-layer image with a 200 MiB layer (streamed
in one PATCH with no length) and pulls it back. It checks that memory does not grow with the bytes
moved (the second half of the upload peaks no higher than the first, within a margin) and stays under
a bound, and writes the numbers to $E2E_MEASURE_OUT (JSON) when set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time

import pytest

from cloudflare_host import CLOUDFLARE, workerd_rss_kib
from ocihttp import MIB, OCI_LAYER, OciClient
from ocilayout import Layout, random_tar_layer, write_big_tar_layer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CLOUDFLARE, reason="measures workerd (E2E_HOST=cloudflare)"),
]

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"
# Growth allowed from the second half of the push over the first: allocator noise, not a leak.
HALF_MARGIN_MIB = 48
# workerd's RSS over its idle RSS: one 40 MiB Skynet piece in WASM, its copies on the way out in
# 1 MiB slices, the 1 MiB read buffers, and WASM memory that never shrinks.
GROWTH_BOUND_MIB = 256


class Sampler:
    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = workerd_rss_kib(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            time.sleep(self.interval)

    def __enter__(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.ended = time.monotonic()

    def peak_kib(self, start: float = 0.0, end: float = 1.0, after_kib: int = 0) -> int:
        """The peak within a fraction of the sampled time; with `after_kib`, of the time from the
        first sample above that (the upload proper: skopeo reads its source for a while first)."""
        begin = next((t for t, rss in self.samples if rss > after_kib), self.started) if after_kib else self.started
        span = self.ended - begin
        lo, hi = begin + start * span, begin + end * span
        return max((rss for t, rss in self.samples if lo <= t <= hi), default=0)


def skopeo(*args: str) -> None:
    cmd = [SKOPEO, "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def test_workerd_memory_stays_flat_during_a_200_mib_push_and_pull(registry_factory, work_dir):
    server = registry_factory("memory")
    pid = server.proc.pid
    client = OciClient(server.base_url)
    # Warm up: instantiate the WASM module and the code paths of a push and a pull.
    client.push_image("mem/warm", "v1", layers=[os.urandom(MIB), b"small"])
    idle = workerd_rss_kib(pid)
    assert idle, "no workerd process under the harness"

    src = Layout(work_dir / "src").init()
    big_file = work_dir / "big.tar"
    digest, size = write_big_tar_layer(big_file, 200 * MIB)
    big = src.add_blob_file(big_file, OCI_LAYER, digest, size)
    mid = src.add_blob(random_tar_layer(5 * MIB + 7, "mid.bin"), OCI_LAYER)
    small = src.add_blob(random_tar_layer(1000), OCI_LAYER)
    manifest = src.add_image([big, mid, small])
    src.tag(manifest, "big")
    ref = f"docker://{server.host}/mem/big:big"

    t0 = time.monotonic()
    with Sampler(pid) as push:
        skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{src.root}:big", ref)
    push_s = time.monotonic() - t0
    shutil.rmtree(src.root)

    dst = Layout(work_dir / "dst")
    t0 = time.monotonic()
    with Sampler(pid) as pull:
        skopeo("copy", "--preserve-digests", "--src-tls-verify=false", ref, f"oci:{dst.root}:big")
    pull_s = time.monotonic() - t0
    got = dst.resolve("big")
    assert got["digest"] == manifest["digest"]
    assert dst.closure(got)[digest] == size
    client.close()

    active = idle + 8 * 1024  # workerd is receiving layer bytes
    first, second = push.peak_kib(0, 0.5, active), push.peak_kib(0.5, 1, active)
    numbers = {
        "layer_bytes": size,
        "workerd_rss_idle_mib": round(idle / 1024, 1),
        "workerd_rss_peak_push_mib": round(push.peak_kib() / 1024, 1),
        "workerd_rss_peak_upload_first_half_mib": round(first / 1024, 1),
        "workerd_rss_peak_upload_second_half_mib": round(second / 1024, 1),
        "workerd_rss_peak_pull_mib": round(pull.peak_kib() / 1024, 1),
        "workerd_rss_after_mib": round((workerd_rss_kib(pid) or 0) / 1024, 1),
        "push_seconds": round(push_s, 1),
        "pull_seconds": round(pull_s, 1),
        "samples_push": len(push.samples),
        # The Worker logs its WASM linear memory's high-water mark whenever it grows.
        "wasm_memory_mib": max((int(m) for m in re.findall(r"WASM memory grew to (\d+) MiB", server.log_tail(200_000))),
                               default=None),
    }
    print("\nworkerd memory:", json.dumps(numbers))
    out = os.environ.get("E2E_MEASURE_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"numbers": numbers, "push_series_kib": push.samples, "pull_series_kib": pull.samples}, f)

    assert second <= first + HALF_MARGIN_MIB * 1024, numbers
    assert push.peak_kib() - idle <= GROWTH_BOUND_MIB * 1024, numbers
    assert pull.peak_kib() - idle <= GROWTH_BOUND_MIB * 1024, numbers
