"""The E2E_METADATA=neon plumbing itself: the gateway fixture counts, delays, stops and restarts.

Skipped unless E2E_METADATA=neon. Says nothing about the registry; the registry's own use of the
database is covered by the rest of the suite running in that mode.
"""

from __future__ import annotations

import time

import pytest
import requests


@pytest.fixture
def gateway(neon_gateway):
    if neon_gateway is None:
        pytest.skip("E2E_METADATA is not neon")
    return neon_gateway


def test_the_gateway_answers_sql_and_counts_requests(gateway, registry):
    database = registry.env["OPENREGISTRY_DATABASE_URL"].rsplit("/", 1)[1]
    assert registry.env["OPENREGISTRY_DATABASE_HTTP_ENDPOINT"] == gateway.url
    gateway.reset_stats()
    assert gateway.query(database, "SELECT current_database(), $1::int + 1", ["41"]) == [[database, "42"]]
    assert gateway.stats() == {"requests": 1}


def test_delay_and_restart_on_the_same_port(gateway):
    url = gateway.url
    gateway.set_delay(300)
    started = time.monotonic()
    gateway.query("postgres", "SELECT 1")
    assert time.monotonic() - started >= 0.3
    gateway.set_delay(0)

    gateway.stop()
    with pytest.raises(requests.ConnectionError):
        gateway.query("postgres", "SELECT 1")
    gateway.start()
    assert gateway.url == url
    assert gateway.query("postgres", "SELECT 1") == [["1"]]
