"""The servers under test, each started on a free loopback port and stopped by its PID:
OpenRegistry native (embedded defaults), CNCF Distribution (Debian's docker-registry) and nginx
(the static-file limit).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from httpc import Connection

# Every server started and not yet stopped: stopped by PID at exit, whatever happens.
RUNNING: list["Server"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM ... of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Vm"):
                key, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0])
    return out


class StartError(RuntimeError):
    pass


class Server:
    kind = "server"
    label = "server"
    ready_path = "/"

    def __init__(self, workdir: Path, name: str):
        self.workdir = Path(workdir)
        self.name = name
        self.dir = self.workdir / name
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "server.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 30.0) -> "Server":
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            cmd = self.command()
            log = open(self.log_path, "ab")
            log.write(f"\n===== bench: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                env=self.env(), start_new_session=True,
            )
            log.close()
            RUNNING.append(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with Connection(self.port, timeout=2) as c:
                        r = c.request("GET", self.ready_path)
                    if r.status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
            last = self.log_tail()
            self.stop()
            if "address already in use" not in last.lower():
                break
        raise StartError(f"{self.label} did not start:\n{last}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to our PID, SIGKILL to the same PID if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in RUNNING:
            RUNNING.remove(self)
        self.proc = None

    def wipe(self) -> None:
        """Stops the server and removes its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def rss_kib(self) -> dict[str, int]:
        return proc_status(self.pid)


class OpenRegistry(Server):
    kind = "openregistry"
    label = "OpenRegistry"
    ready_path = "/v2/"

    def __init__(self, workdir: Path, name: str, binary: Path, settings: Optional[dict[str, str]] = None):
        super().__init__(workdir, name)
        self.binary = Path(binary)
        self.settings = dict(settings or {})

    def command(self) -> list[str]:
        return [str(self.binary), "serve", "--listen", self.host, "--data-dir", str(self.data_dir)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Embedded defaults (nothing but the data directory and the listen address) unless the
        # benchmark names settings (the S3 store).
        for key in list(env):
            if key.startswith("OPENREGISTRY_"):
                del env[key]
        env.pop("RUST_LOG", None)
        env.update(self.settings)
        return env


DISTRIBUTION_FILESYSTEM = """\
  filesystem:
    rootdirectory: {data}
"""

# Distribution's S3 driver (s3aws) on the benchmark's S3 server, path-style, in its default
# 10 MiB chunks; pulls stream through the registry, as OpenRegistry's do without
# OPENREGISTRY_BLOB_REDIRECT (Distribution redirects to the bucket by default).
DISTRIBUTION_S3 = """\
  redirect:
    disable: true
  s3:
    region: {region}
    regionendpoint: {endpoint}
    bucket: {bucket}
    accesskey: {access_key}
    secretkey: {secret_key}
    secure: false
    v4auth: true
    forcepathstyle: true
"""

DISTRIBUTION_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
{storage}  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {host}
"""


class Distribution(Server):
    kind = "distribution"
    label = "Distribution"
    ready_path = "/v2/"

    def __init__(self, workdir: Path, name: str, binary: Path = Path("/usr/bin/docker-registry"),
                 s3: Optional[dict[str, str]] = None):
        super().__init__(workdir, name)
        self.binary = Path(binary)
        self.s3 = s3

    def command(self) -> list[str]:
        config = self.dir / "config.yml"
        storage = DISTRIBUTION_S3.format(**self.s3) if self.s3 else DISTRIBUTION_FILESYSTEM.format(data=self.data_dir)
        config.write_text(DISTRIBUTION_CONFIG.format(storage=storage, host=self.host))
        return [str(self.binary), "serve", str(config)]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("REGISTRY_"):
                del env[key]
        # aws-sdk-go (the s3aws driver) panics at start when AWS_CA_BUNDLE is set, as it is on
        # some machines ("HTTPClient's transport unsupported type"); the S3 server here is plain
        # HTTP, so no CA bundle is needed.
        env.pop("AWS_CA_BUNDLE", None)
        return env


NGINX_CONFIG = """\
{user}
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen {host};
        root {root};
        location / {{ }}
    }}
}}
"""


class Nginx(Server):
    """nginx serving files from `root` (master + one worker per core, sendfile, no access log)."""

    kind = "nginx"
    label = "nginx"
    ready_path = "/ready"

    def __init__(self, workdir: Path, name: str, root: Path, binary: str = "/usr/sbin/nginx"):
        super().__init__(workdir, name)
        self.root = Path(root)
        self.binary = binary

    def command(self) -> list[str]:
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "ready").write_text("ok\n")
        user = "user root root;" if os.geteuid() == 0 else ""
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONFIG.format(user=user, dir=self.dir, host=self.host, root=self.root))
        return [self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                "-c", str(conf), "-g", "daemon off;"]


class MotoS3(Server):
    """moto's S3 server (PyPI `moto[s3]`, the e2e suite's S3): the storage both registries use in
    the S3 workload. In memory; a bucket per registry."""

    kind = "s3"
    label = "S3 (moto)"
    ready_path = "/"

    def __init__(self, workdir: Path, name: str, python: str):
        super().__init__(workdir, name)
        self.python = python

    def command(self) -> list[str]:
        return [self.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]


def stop_all() -> None:
    for server in list(RUNNING):
        try:
            server.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
