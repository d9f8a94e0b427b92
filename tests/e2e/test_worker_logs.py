"""The Worker's metrics and its scheduled garbage collection, as its logs show them: one JSON line
per request (route kind, method, status, milliseconds, body bytes; never a repository name), and
the Cron Trigger's collection run with its report.
"""

from __future__ import annotations

import json
import os

import pytest

import cloudflare_host
from ocihttp import OciClient

pytestmark = pytest.mark.skipif(not cloudflare_host.CLOUDFLARE, reason="the Cloudflare Worker (E2E_HOST=cloudflare)")


def json_lines(server, kind: str) -> list[dict]:
    found = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("openregistry") == kind:
                found.append(entry)
    return found


def test_every_request_is_one_json_log_line_without_the_repository(registry_factory, repo):
    server = registry_factory("request-log")
    client = OciClient(server.base_url)
    digest = client.push_blob(repo, os.urandom(2048))
    assert client.get(f"/v2/{repo}/blobs/{digest}").status_code == 200
    assert client.get(f"/v2/{repo}/manifests/missing").status_code == 404
    lines = json_lines(server, "request")
    by_route = {(e["route"], e["method"], e["status"]) for e in lines}
    assert ("blob", "GET", 200) in by_route, lines
    assert ("manifest", "GET", 404) in by_route, lines
    assert ("upload", "PUT", 201) in by_route, lines
    blob_get = next(e for e in lines if e["route"] == "blob" and e["method"] == "GET")
    assert blob_get["response_bytes"] == 2048 and blob_get["ms"] >= 0
    assert not any(repo in json.dumps(e) for e in lines)

    quiet = registry_factory("no-request-log", env={"OPENREGISTRY_REQUEST_LOG": "false"})
    assert OciClient(quiet.base_url).get("/v2/").status_code == 200
    assert json_lines(quiet, "request") == []


def test_the_cron_trigger_collects_garbage_and_logs_the_report(registry_factory, repo):
    server = registry_factory("cron-gc", env={"OPENREGISTRY_GC_GRACE_SECONDS": "0"})
    client = OciClient(server.base_url)
    digest = client.push_blob(repo, os.urandom(3333))
    answer = client.get("/cdn-cgi/handler/scheduled")
    assert answer.status_code == 200, answer.text
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    reports = [e["report"] for e in json_lines(server, "gc")]
    assert reports and reports[-1]["blobs_deleted"] == 1 and reports[-1]["blob_bytes_freed"] == 3333, reports

    off = registry_factory("cron-no-gc", env={"OPENREGISTRY_GC_GRACE_SECONDS": "0",
                                              "OPENREGISTRY_GC_SCHEDULE": "false"})
    client = OciClient(off.base_url)
    digest = client.push_blob(repo, os.urandom(100))
    assert client.get("/cdn-cgi/handler/scheduled").status_code == 200
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 200
    assert json_lines(off, "gc") == []
