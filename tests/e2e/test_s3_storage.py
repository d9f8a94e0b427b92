"""Blobs on S3 (E2E_STORAGE=s3, and the Spin host): OCI chunks of any size become S3 multipart
parts of 8 MiB, one object per digest, nothing left behind by finished or cancelled uploads, and
presigned redirects that skopeo follows and that AWS's own signer agrees with.

The bucket is looked into with boto3 (the official AWS SDK) on the session's S3 server (moto's;
s3_server.py says why that one).
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import os
import socketserver
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
import requests

import cloudflare_host
import s3_server
from stored import locator_of
from ocihttp import MIB, patterned_blob as blob, OCI_LAYER, OciClient, assert_error, sha256_digest, uploaded_size
from ocilayout import Layout, random_tar_layer
from test_skopeo_roundtrip import pull, push

pytestmark = pytest.mark.openregistry_only

PART = 8 * MIB  # the store's part size (S3's minimum is 5 MiB)


@pytest.fixture
def s3(s3_server):
    if s3_server is None:
        pytest.skip("blobs are not on S3 (set E2E_STORAGE=s3)")
    return s3_server


def bucket_of(server) -> str:
    return server.env["OPENREGISTRY_S3_BUCKET"]


def test_chunks_of_any_size_become_one_object_per_blob_and_nothing_else(s3, registry, neon_backend, client, repo):
    bucket = bucket_of(registry)
    before = set(s3.objects(bucket))
    cases = {"1B": (40, 1), "4MiB": (2 * PART + 3 * MIB + 5, 4 * MIB),
             "5MiB+1": (3 * PART + 11, 5 * MIB + 1), "unaligned": (PART * 2 + 12345, 3 * MIB + 4097)}
    keys = set()
    for seed, (size, chunk) in enumerate(cases.values()):
        data = blob(size, 100 + seed)
        digest = client.push_blob_in_chunks(repo, data, chunk)
        assert client.get_blob(repo, digest) == data
        key = locator_of(registry, neon_backend, digest)
        # Small blobs are one PutObject, larger ones stay where their multipart upload completed:
        # each key unique to its upload (what garbage collection relies on).
        expected_prefix = "uploads/" if size > PART else f"blobs/sha256/{digest.split(':')[1]}."
        assert key.startswith(expected_prefix), key
        assert s3.objects(bucket).get(key) == size
        keys.add(key)
    assert set(s3.objects(bucket)) - before == keys
    assert s3.multipart_uploads(bucket) == []


def test_ranges_across_part_boundaries_are_byte_exact(s3, client, repo):
    data = blob(2 * PART + 3 * MIB, 7)
    digest = client.push_blob_in_chunks(repo, data, 3 * MIB)
    for start, end in [(0, 0), (PART - 5, PART + 5), (PART * 2 - 1, len(data) - 1), (123, 2 * PART + 7)]:
        r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={start}-{end}"})
        assert r.status_code == 206, r.text
        assert r.content == data[start:end + 1], (start, end)


def test_a_blob_smaller_than_a_part_is_one_put_and_no_multipart(s3, registry, neon_backend, client, repo):
    bucket = bucket_of(registry)
    data = blob(3 * MIB, 8)
    digest = client.push_blob_in_chunks(repo, data, MIB)
    assert s3.objects(bucket)[locator_of(registry, neon_backend, digest)] == len(data)
    assert s3.multipart_uploads(bucket) == []


def test_a_200_mib_layer_streamed_without_length_is_stored_and_read_back(s3, registry, neon_backend, client, repo):
    size = 200 * MIB + 17
    block = os.urandom(MIB)
    sha = hashlib.sha256()

    def body():
        sent = 0
        while sent < size:
            piece = block[: min(MIB, size - sent)]
            sha.update(piece)
            sent += len(piece)
            yield piece

    location = client.start_upload(repo)
    r = client.patch(location, data=body(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert uploaded_size(r.headers["Range"]) == size
    digest = f"sha256:{sha.hexdigest()}"
    r = client.finish_upload(client.location(r), digest)
    assert r.status_code == 201, r.text
    assert client.blob_sha256_streamed(repo, digest) == (digest, size)
    assert s3.objects(bucket_of(registry))[locator_of(registry, neon_backend, digest)] == size


def test_a_cancelled_upload_leaves_no_multipart_upload_and_no_object(s3, registry, client, repo):
    bucket = bucket_of(registry)
    before = s3.objects(bucket)
    data = blob(2 * PART + MIB, 9)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    assert len(s3.multipart_uploads(bucket)) == 1  # two whole parts went to S3
    r = client.delete(client.location(r))
    assert r.status_code == 204, r.text
    assert s3.multipart_uploads(bucket) == []
    assert s3.objects(bucket) == before
    assert not client.blob_exists(repo, sha256_digest(data))


def test_a_bad_digest_leaves_nothing_behind(s3, registry, client, repo):
    bucket = bucket_of(registry)
    before = s3.objects(bucket)
    data = blob(PART + 5, 10)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    r = client.finish_upload(client.location(r), sha256_digest(b"something else"))
    assert_error(r, 400, "DIGEST_INVALID")
    assert s3.multipart_uploads(bucket) == []
    assert s3.objects(bucket) == before


def test_a_blob_already_stored_is_not_uploaded_again(s3, registry, neon_backend, client, repo):
    bucket = bucket_of(registry)
    data = blob(PART + MIB, 11)
    digest = client.push_blob_in_chunks(repo, data, 4 * MIB)
    key = locator_of(registry, neon_backend, digest)
    objects = set(s3.objects(bucket))
    stored = s3.client().head_object(Bucket=bucket, Key=key)
    # A monolithic push of the same bytes to another repository is verified and linked, not stored.
    r = client.post(f"/v2/{repo}/other/blobs/uploads/?digest={digest}", data=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    again = s3.client().head_object(Bucket=bucket, Key=key)
    assert again["LastModified"] == stored["LastModified"] and again["ETag"] == stored["ETag"]
    assert set(s3.objects(bucket)) == objects
    assert s3.multipart_uploads(bucket) == []


def test_concurrent_pushes_of_one_layer_all_succeed_and_store_it_once(s3, registry, neon_backend, repo):
    bucket = bucket_of(registry)
    before = set(s3.objects(bucket))
    data = blob(3 * PART + 5 * MIB, 12)
    digest = sha256_digest(data)
    barrier = threading.Barrier(4)

    def push_one(i: int) -> str:
        client = OciClient(registry.base_url)
        barrier.wait()
        location = client.start_upload(f"{repo}/c{i}")
        for start in range(0, len(data), 6 * MIB):
            r = client.patch_chunk(location, data[start:start + 6 * MIB], start)
            assert r.status_code == 202, r.text
            location = client.location(r)
        r = client.request("PUT", f"{location}?digest={digest}", allow_5xx=True,
                           headers={"Content-Length": "0"})
        if r.status_code == 503:
            # Should moto's server fail a write under this load, the registry answers 503 +
            # Retry-After and the session stays, so the client's retry completes, as real
            # clients retry.
            assert r.headers.get("Retry-After"), r.text
            r = client.finish_upload(location, digest)
        assert r.status_code == 201, r.text
        return digest

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(push_one, range(4))) == [digest] * 4
    client = OciClient(registry.base_url)
    for i in range(4):
        assert client.blob_sha256_streamed(f"{repo}/c{i}", digest) == (digest, len(data))
    # The pushes that lost the race to commit deleted their copies: one object is left.
    key = locator_of(registry, neon_backend, digest)
    assert set(s3.objects(bucket)) - before == {key}
    assert s3.objects(bucket)[key] == len(data)
    assert s3.multipart_uploads(bucket) == []


def test_a_sha512_chunked_upload_is_verified_before_it_is_kept(s3, registry, neon_backend, client, repo):
    data = blob(PART + 3 * MIB, 13)
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    r = client.finish_upload(client.location(r), digest)
    assert r.status_code == 201, r.text
    assert client.get_blob(repo, digest) == data
    assert s3.objects(bucket_of(registry))[locator_of(registry, neon_backend, digest)] == len(data)


# ---------------------------------------------------------------------------------------------
# presigned redirects


@pytest.fixture
def redirecting(s3, registry_factory):
    server = registry_factory("s3-redirect", env={"OPENREGISTRY_BLOB_REDIRECT": "true",
                                                  "OPENREGISTRY_S3_PRESIGN_SECONDS": "120"})
    return server


def test_a_redirect_is_a_presigned_url_that_aws_signs_the_same_way(redirecting, repo):
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    client = OciClient(redirecting.base_url)
    data = blob(PART + 1, 14)
    digest = client.push_blob_in_chunks(repo, data, PART + 1)
    r = client.get(f"/v2/{repo}/blobs/{digest}", allow_redirects=False)
    assert r.status_code == 307, r.text
    location = r.headers["Location"]
    parts = urllib.parse.urlsplit(location)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert query["X-Amz-Expires"] == "120"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].startswith(f"{s3_server.ACCESS_KEY_ID}/")
    # botocore presigns the same GET at the same instant; the signatures must be equal.
    unsigned = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    request = AWSRequest(method="GET", url=unsigned)
    signer = S3SigV4QueryAuth(Credentials(s3_server.ACCESS_KEY_ID, s3_server.SECRET_ACCESS_KEY),
                              "s3", s3_server.REGION, expires=120)
    signed_at = datetime.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        signer.add_auth(request)
    expected = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
    assert expected["X-Amz-Signature"] == query["X-Amz-Signature"]
    # And the URL serves the blob, ranges included.
    assert requests.get(location, timeout=60).content == data
    assert requests.get(location, headers={"Range": "bytes=5-9"}, timeout=60).content == data[5:10]


def test_skopeo_pulls_through_presigned_redirects(redirecting, repo, work_dir):
    host = redirecting.host
    src = Layout(work_dir / "src").init()
    layer = random_tar_layer(PART + 3 * MIB, "big.bin")
    manifest = src.add_image([(layer, OCI_LAYER)], diff_ids=[sha256_digest(layer)])
    src.tag(manifest, "v1")
    push(f"oci:{src.root}:v1", f"docker://{host}/{repo}:v1")
    dst = Layout(work_dir / "dst")
    pull(f"docker://{host}/{repo}:v1", f"oci:{dst.root}:v1")
    assert dst.closure(dst.resolve("v1")) == src.closure(manifest)


# ---------------------------------------------------------------------------------------------
# store failures: a proxy in front of the S3 server that refuses chosen requests


class FaultyProxy:
    """Forwards HTTP to the S3 server; answers 503 SlowDown to requests `refuse` picks."""

    def __init__(self, target: str):
        self.target = urllib.parse.urlsplit(target)
        self.refuse = lambda method, path, headers: False
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.refuse(self.command, self.path, self.headers):
                    proxy.refused += 1
                    error = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                answer = requests.request(self.command, f"http://{proxy.target.netloc}{self.path}",
                                          data=body, headers=headers, stream=True, timeout=120)
                self.send_response(answer.status_code)
                content = answer.raw.read()
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                # A HEAD's Content-Length is the object's size, not its (empty) body's.
                length = answer.headers.get("Content-Length", "0") if self.command == "HEAD" else len(content)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def faulty(s3, registry_factory):
    proxy = FaultyProxy(s3.url)
    server = registry_factory("s3-faults", env={"OPENREGISTRY_S3_ENDPOINT": proxy.url})
    yield proxy, server
    proxy.close()


def test_a_refused_completion_gives_a_retryable_503_and_the_retried_put_completes(faulty, s3, neon_backend, repo):
    proxy, server = faulty
    client = OciClient(server.base_url)
    data = blob(PART * 2 + 5, 15)
    digest = sha256_digest(data)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, data, 0)
    assert r.status_code == 202, r.text
    location = client.location(r)
    # Completing the multipart upload (POST ?uploadId=) is refused.
    proxy.refuse = lambda method, path, headers: method == "POST" and "uploadId=" in path
    r = client.request("PUT", f"{location}?digest={digest}", allow_5xx=True, headers={"Content-Length": "0"})
    assert_error(r, 503, "UNAVAILABLE")
    assert r.headers.get("Retry-After")
    assert proxy.refused == 1
    assert not client.blob_exists(repo, digest)
    proxy.refuse = lambda method, path, headers: False
    r = client.finish_upload(location, digest)
    assert r.status_code == 201, r.text
    assert client.get_blob(repo, digest) == data
    bucket = bucket_of(server)
    assert s3.objects(bucket)[locator_of(server, neon_backend, digest)] == len(data)
    assert s3.multipart_uploads(bucket) == []


def test_a_refused_part_is_retried_by_the_registry(faulty, repo):
    proxy, server = faulty
    client = OciClient(server.base_url)
    data = blob(PART + 3, 16)
    refusals = iter([True])
    proxy.refuse = lambda method, path, headers: "partNumber=" in path and next(refusals, False)
    digest = client.push_blob_in_chunks(repo, data, len(data))
    assert proxy.refused == 1
    assert client.get_blob(repo, digest) == data


def test_a_missing_bucket_is_a_500_that_names_no_secret(s3, registry_factory, repo):
    server = registry_factory("s3-bad-key", env={"OPENREGISTRY_S3_BUCKET": "no-such-bucket-here"})
    client = OciClient(server.base_url)
    data = b"x" * 100
    r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256_digest(data)}", data=data,
                       allow_5xx=True, headers={"Content-Type": "application/octet-stream"})
    assert_error(r, 500, "INTERNAL_ERROR")  # not worth retrying: the operator's to fix
    assert s3_server.SECRET_ACCESS_KEY not in r.text
    assert s3_server.SECRET_ACCESS_KEY not in server.log_tail()


@pytest.mark.skipif(cloudflare_host.CLOUDFLARE, reason="Workers KV keeps keys at least 60 s")
def test_an_upload_past_its_lifetime_is_unknown_and_its_multipart_upload_is_aborted(
        s3, registry_factory, repo):
    # On every host: the lifetime counts from the upload's start, and the request that finds it
    # over discards the partial data (Spin KV has no expiry; natively a sweep does it too).
    server = registry_factory("s3-lifetime", env={"OPENREGISTRY_UPLOAD_TTL_SECONDS": "2"})
    bucket = bucket_of(server)
    client = OciClient(server.base_url)
    r = client.patch_chunk(client.start_upload(repo), blob(PART + 1, 18), 0)
    assert r.status_code == 202, r.text
    location = client.location(r)
    time.sleep(3.5)
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        answer = client.request(method, location + ("?digest=" + sha256_digest(b"x") if method == "PUT" else ""),
                                allow_5xx=True, data=b"" if method in ("PATCH", "PUT") else None)
        assert_error(answer, 404, "BLOB_UPLOAD_UNKNOWN")
    # Where the session's keys outlived it (Spin), those requests discarded the data; where they
    # expired with it (natively), the next sweep does, within one lifetime.
    assert s3.wait_for_no_multipart_uploads(bucket, timeout=10) == []


@pytest.mark.native_only(reason="the native host sweeps on its own clock (the Worker: its Cron Trigger, in test_r2_storage.py; Spin: at the next request)")
def test_an_expired_upload_leaves_no_multipart_upload_behind(s3, registry_factory, repo):
    server = registry_factory("s3-expiry", env={"OPENREGISTRY_UPLOAD_TTL_SECONDS": "2"})
    bucket = bucket_of(server)
    client = OciClient(server.base_url)
    location = client.start_upload(repo)
    r = client.patch_chunk(location, blob(2 * PART + 5, 17), 0)
    assert r.status_code == 202, r.text
    assert len(s3.multipart_uploads(bucket)) == 1
    # The client walks away; within a few sweeps (one per upload lifetime) the upload is aborted.
    assert s3.wait_for_no_multipart_uploads(bucket, timeout=20, interval=0.5) == []
    assert "aborted expired multipart uploads" in server.log_tail()
    # The session is gone too: its Location says when its state was saved, so a state missing
    # after its lifetime is an unknown upload, not a store that has not caught up. (Within the
    # second or two the lifetime may still run, the answer is a retryable 503.)
    deadline = time.monotonic() + 10
    while True:
        status = client.request("GET", client.location(r), allow_5xx=True)
        if status.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert_error(status, 404, "BLOB_UPLOAD_UNKNOWN")
