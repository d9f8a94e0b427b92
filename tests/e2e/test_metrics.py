"""`/metrics` on the native host: Prometheus text, parsed with the official client's parser.

* in open mode it is served to anyone on loopback: request counters by route kind, method and
  status, a duration histogram per route kind, body bytes, and the registry's events;
* garbage collection runs count what they freed;
* with authentication on it is off (404) unless OPENREGISTRY_METRICS_TOKEN is set, and then it
  answers only that bearer token (401 otherwise).
"""

from __future__ import annotations

import os

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import cloudflare_host
from authkit import AuthRegistryServer, remember
from ocihttp import OciClient
from registry_server import KIND

pytestmark = pytest.mark.skipif(
    KIND == "distribution" or cloudflare_host.EDGE,
    reason="/metrics is the native host's (the Worker logs instead)")


def scrape(server, token=None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{server.base_url}/metrics", headers=headers, timeout=30)


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_count_requests_durations_bytes_and_events(registry, client, repo):
    client.push_image(repo, "v1", layers=[os.urandom(4096), b"second layer"])
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 200
    r = scrape(registry)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = families(r.text)
    requests_total = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
                      for s in got["openregistry_requests"].samples}
    assert requests_total.get(("manifest", "GET", "200"), 0) >= 1
    assert requests_total.get(("manifest", "PUT", "201"), 0) >= 1
    assert not any(repo in str(labels) for labels in requests_total), "no repository in a label"
    buckets = [s for s in got["openregistry_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["route"] == "manifest"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf", "cumulative buckets"
    events = {s.labels["kind"]: s.value for s in got["openregistry_events"].samples}
    assert events.get("blob_committed", 0) >= 2 and events.get("tag_moved", 0) >= 1
    assert got["openregistry_blob_bytes_committed"].samples[0].value >= 4096
    assert got["openregistry_response_bytes"].samples[0].value > 0


def test_with_auth_metrics_need_their_own_bearer_token(module_registry_factory):
    off = module_registry_factory("metrics-off", env={"OPENREGISTRY_AUTH": "true"},
                                  server_class=AuthRegistryServer)
    assert scrape(off).status_code == 404
    token = "metrics-" + os.urandom(16).hex()
    remember(token)
    on = module_registry_factory("metrics-on", env={"OPENREGISTRY_AUTH": "true",
                                                    "OPENREGISTRY_METRICS_TOKEN": token},
                                 server_class=AuthRegistryServer)
    for wrong in (None, "nope", token + "x"):
        r = scrape(on, wrong)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), wrong
    r = scrape(on, token)
    assert r.status_code == 200
    assert "openregistry_requests" in families(r.text)


def test_garbage_collection_runs_are_counted(registry_factory):
    server = registry_factory("metrics-gc", env={"OPENREGISTRY_GC_GRACE_SECONDS": "0"})
    client = OciClient(server.base_url)
    client.push_blob("metrics/gc", b"x" * 3000)
    r = client.post("/api/gc")
    assert r.status_code == 200, r.text
    got = families(scrape(server).text)
    assert got["openregistry_gc_blobs_deleted"].samples[0].value == 1
    assert got["openregistry_gc_bytes_freed"].samples[0].value == 3000
    assert got["openregistry_gc_failures"].samples[0].value == 0
    events = {s.labels["kind"]: s.value for s in got["openregistry_events"].samples}
    assert events.get("garbage_collected") == 1
