"""Upload sessions on an eventually consistent store: a session state that is not visible yet is
answered with 416 and the visible state's Range and Location, and a client that resumes from there
completes a correct push: no byte lost, none counted twice.

Workers KV shows a write at once where it was made and elsewhere within ~60 s; locally it is
always fresh, so the Worker's KV adapter has a test switch, ``OPENREGISTRY_TEST_KV_LAG=1``, that
reports each upload state written after an upload's first as missing on its first read (once per
key), the way a lagging location would. Only the Worker has that switch (E2E_HOST=cloudflare).
"""

from __future__ import annotations

import os

import pytest

from cloudflare_host import CLOUDFLARE
from ocihttp import MIB, OciClient, sha256_digest, uploaded_size

pytestmark = pytest.mark.skipif(
    not CLOUDFLARE, reason="the stale-read switch is in the Cloudflare Worker's KV adapter (E2E_HOST=cloudflare)"
)


@pytest.fixture
def lagging(registry_factory):
    server = registry_factory("kv-lag", env={"OPENREGISTRY_TEST_KV_LAG": "1"})
    client = OciClient(server.base_url)
    yield client
    client.close()


def resumed_offset(r) -> int:
    """Where a 416 answer says the upload stands (the error detail is exact where Range `0-0` is not)."""
    assert r.status_code == 416, r.content[:300]
    detail = r.json()["errors"][0].get("detail") or {}
    offset = detail.get("offset")
    if offset is None:
        offset = uploaded_size(r.headers.get("Range"))
    assert r.headers.get("Location"), "a 416 for a stale session must say where to resume"
    return int(offset)


def send_resuming(client: OciClient, loc: str, data: bytes, offset: int, sizes: list[int]) -> tuple[str, int]:
    """PATCHes data[offset:] in chunks of `sizes` (the rest in one), with Content-Range, following
    416s to where the registry says the upload stands; returns (Location, rewinds)."""
    rewinds, sizes = 0, list(sizes)
    while offset < len(data):
        n = sizes[0] if sizes else len(data) - offset
        chunk = data[offset:offset + n]
        r = client.patch_chunk(loc, chunk, offset)
        if r.status_code == 416:
            offset = resumed_offset(r)
            loc = client.location(r)
            rewinds += 1
            assert rewinds < 100, "no progress"
            continue
        assert r.status_code == 202, f"PATCH -> {r.status_code}: {r.content[:300]!r}"
        if sizes:
            sizes.pop(0)
        offset += len(chunk)
        assert uploaded_size(r.headers.get("Range")) == offset
        loc = client.location(r)
    return loc, rewinds


def finish_resuming(client: OciClient, loc: str, data: bytes, digest: str) -> int:
    """The closing PUT; if the upload's last state is not visible yet, resend what the visible
    one lacks (with Content-Range) and close again. Returns the number of rewinds."""
    rewinds = 0
    while True:
        r = client.finish_upload(loc, digest)
        if r.status_code != 416:
            break
        rewinds += 1
        assert rewinds < 100, "no progress"
        loc, more = send_resuming(client, client.location(r), data, resumed_offset(r), [])
        rewinds += more
    assert r.status_code == 201, f"closing PUT -> {r.status_code}: {r.content[:500]!r}"
    return rewinds


def push_resuming(client: OciClient, repo: str, data: bytes, sizes: list[int]) -> tuple[str, int]:
    """A chunked push that follows the spec's 416 recovery; returns (digest, rewinds)."""
    digest = sha256_digest(data)
    loc, rewinds = send_resuming(client, client.start_upload(repo), data, 0, sizes)
    rewinds += finish_resuming(client, loc, data, digest)
    return digest, rewinds


@pytest.mark.parametrize(
    "sizes",
    [[1, 1, 1], [4 * MIB, 4 * MIB, 4 * MIB], [1_000_003, 3 * MIB + 7, 5]],
    ids=["1B", "4MiB", "unaligned"],
)
def test_a_chunked_push_completes_through_stale_session_reads(lagging, repo, sizes):
    data = os.urandom(sum(sizes))
    digest, rewinds = push_resuming(lagging, repo, data, sizes)
    assert rewinds >= 1, "the stale-read simulation did not trigger"
    assert lagging.get_blob(repo, digest) == data


def test_a_streamed_push_completes_when_its_last_state_is_stale(lagging, repo):
    data = os.urandom(2 * MIB + 11)
    digest = sha256_digest(data)
    loc = lagging.start_upload(repo)
    r = lagging.patch(loc, data=iter([data[:MIB], data[MIB:]]), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202
    r = lagging.finish_upload(lagging.location(r), digest)
    # The state the PATCH wrote is "not visible yet": back to the one before, nothing counted twice.
    offset = resumed_offset(r)
    assert offset == 0
    # Resume as the spec says, from that Range and Location; by now the newer state is visible, so
    # the registry answers 416 again with the real offset instead of taking the bytes twice.
    loc, rewinds = send_resuming(lagging, lagging.location(r), data, offset, [])
    assert rewinds == 1
    finish_resuming(lagging, loc, data, digest)
    assert lagging.get_blob(repo, digest) == data


def test_status_of_a_stale_location_reports_the_visible_state(lagging, repo):
    loc = lagging.start_upload(repo)
    r = lagging.patch_chunk(loc, b"abc", 0)
    assert r.status_code == 202
    newer = lagging.location(r)
    r = lagging.get(newer)
    assert r.status_code == 204
    assert r.headers.get("Range") == "0-0"  # the state before the PATCH: nothing yet
    r = lagging.get(newer)
    assert r.status_code == 204 and uploaded_size(r.headers.get("Range")) == 3
