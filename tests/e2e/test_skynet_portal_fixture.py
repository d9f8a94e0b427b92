"""The E2E_STORAGE=skynet plumbing itself: the portal fixture requires the key, counts, injects
faults, stops and restarts on the same port with its data.

Skipped unless E2E_STORAGE=skynet. Says nothing about the registry; the registry's own use of
the portal is covered by the rest of the suite running in that mode.
"""

from __future__ import annotations

import time

import pytest
import requests

KEY = {"Skynet-Api-Key": "e2e-key"}


@pytest.fixture
def portal(skynet_portal):
    if skynet_portal is None:
        pytest.skip("E2E_STORAGE is not skynet")
    return skynet_portal


def _upload(portal, data: bytes) -> str:
    r = requests.post(f"{portal.url}/skynet/skyfile", params={"filename": "fixture.bin"}, data=data,
                      headers={**KEY, "Content-Type": "application/octet-stream"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["skylink"]


def test_registries_get_the_portal_and_the_key(portal, registry, registry_factory):
    for server in (registry, registry_factory("skynet-env")):
        assert server.env["OPENREGISTRY_SKYNET_PORTAL"] == portal.url
        assert server.env["OPENREGISTRY_SKYNET_API_KEY"] == "e2e-key"


def test_the_key_is_required_and_requests_are_counted(portal):
    portal.reset_stats()
    assert requests.post(f"{portal.url}/skynet/skyfile", params={"filename": "x"}, data=b"x",
                         timeout=10).status_code == 401
    skylink = _upload(portal, b"fixture bytes")
    r = requests.get(f"{portal.url}/{skylink}", headers=KEY, timeout=10)
    assert r.content == b"fixture bytes"
    assert r.headers["Skynet-Skylink"] == skylink
    stats = portal.stats()
    assert (stats["unauthorized"], stats["skyfileUploads"], stats["downloads"], stats["bytesStored"]) == (1, 1, 1, 13)


def test_faults_and_restart_on_the_same_port_keep_the_data(portal):
    skylink = _upload(portal, b"survives a restart")
    assert portal.faults(delay_ms=300) == {"delayMs": 300}
    started = time.monotonic()
    requests.get(f"{portal.url}/{skylink}", headers=KEY, timeout=10)
    assert time.monotonic() - started >= 0.3
    assert portal.faults(fail_patch=1) == {"failPatch": 1}
    assert portal.faults() == {}

    url = portal.url
    portal.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/{skylink}", headers=KEY, timeout=10)
    portal.start()
    assert portal.url == url
    assert requests.get(f"{url}/{skylink}", headers=KEY, timeout=10).content == b"survives a restart"
