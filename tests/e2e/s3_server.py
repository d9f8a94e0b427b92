"""Start and inspect the S3 server the suite stores blobs in under ``E2E_STORAGE=s3``.

The server is moto's (``moto[s3]`` from PyPI, run as ``python -m moto.server``): of the S3
implementations installable from a package registry here it is the most faithful to AWS's own
behaviour where this store depends on it — multipart uploads with S3's 5 MiB minimum part size
(``EntityTooSmall``), ``ListMultipartUploads`` (what the tests list to prove that cancelled
uploads leave nothing behind), ``CopyObject`` and ``UploadPartCopy``, ranges and presigned URLs
— because it is the emulator the AWS SDK ecosystem tests itself against. (``s3s-fs`` from crates.io
verifies signatures but has no ``ListMultipartUploads`` and no part-size rule; MinIO is not
packaged.) moto does not verify query-string signatures, so the suite checks the registry's
presigned URLs against botocore's own SigV4 signer instead (test_s3_storage.py).

One server per session, in memory; every registry gets a fresh bucket of its own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import requests

from logfile import ChildProcess

ACCESS_KEY_ID = "e2e-access-key"
SECRET_ACCESS_KEY = "e2e-secret-access-key"
REGION = "us-east-1"

# Every server created in this session (the failure-report hook reads their logs).
ALL_SERVERS: list["S3Server"] = []


class S3StartError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server(ChildProcess):
    kind = "s3-server"

    def __init__(self, log_path: Path, name: str = "s3-server"):
        self.name = name
        self.log_path = Path(log_path)
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self.buckets: list[str] = []
        ALL_SERVERS.append(self)

    @property
    def url(self) -> str:
        assert self.port is not None, "the S3 server was never started"
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        """A boto3 client for the server (the official AWS SDK), to look at what the registry stored."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def registry_env(self) -> dict[str, str]:
        """What a registry process gets to keep its blobs in a bucket of its own (created here)."""
        bucket = f"e2e-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return {
            "OPENREGISTRY_S3_ENDPOINT": self.url,
            "OPENREGISTRY_S3_BUCKET": bucket,
            "OPENREGISTRY_S3_REGION": REGION,
            "OPENREGISTRY_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "OPENREGISTRY_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "OPENREGISTRY_S3_PATH_STYLE": "true",
        }

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float = 90.0) -> "S3Server":
        if self.running():
            return self
        self.port = self.port or _free_port()
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._log.write(f"\n===== e2e: {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise S3StartError(f"the S3 server exited:\n{self.log_tail()}")
            try:
                # moto imports its S3 backend on the first request: on a busy
                # machine that first answer can take seconds, so a slow answer
                # is waited for like a refused connection.
                requests.get(self.url, timeout=10)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise S3StartError(f"the S3 server did not answer within {timeout}s:\n{self.log_tail()}")

    # -- what the registry left in a bucket ------------------------------------

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object: key → size."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["Size"]
        return found

    def multipart_uploads(self, bucket: str) -> list[str]:
        """The keys of multipart uploads started and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]

    def wait_for_no_multipart_uploads(self, bucket: str, timeout: float, interval: float = 0.25) -> list[str]:
        """Polls until no multipart upload is left or `timeout` passes; returns what is left."""
        deadline = time.monotonic() + timeout
        left = self.multipart_uploads(bucket)
        while left and time.monotonic() < deadline:
            time.sleep(interval)
            left = self.multipart_uploads(bucket)
        return left
