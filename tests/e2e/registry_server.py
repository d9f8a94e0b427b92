"""Start, stop and crash the registry under test.

``E2E_REGISTRY=openregistry`` (default) runs ``$OPENREGISTRY_BIN``
(default ``<repo>/target/release/openregistry``) as
``openregistry serve --listen 127.0.0.1:<port> --data-dir <dir>``.

``E2E_REGISTRY=distribution`` runs Debian's reference registry
(``/usr/bin/docker-registry``, CNCF Distribution 2.8) with a generated
config, so the suite itself can be validated before the Rust binary exists.

``E2E_HOST=cloudflare`` (with the default ``openregistry``) runs the Cloudflare Worker instead:
``node tests/cloudflare/mf-serve.mjs --listen 127.0.0.1:<port> --persist <data dir>`` (workerd
through Miniflare; see cloudflare_host.py). Its process group (node + workerd) is signalled as one.

``E2E_HOST=spin`` runs the Spin component in the Spin-compatible test host:
``spin-test-host --manifest spin.toml --wasm <component> --listen 127.0.0.1:<port>`` with the
registry's settings as ``SPIN_VARIABLE_*`` (see spin_host.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import requests

import cloudflare_host
import spin_host
from logfile import ChildProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND = os.environ.get("E2E_REGISTRY", "openregistry").strip().lower() or "openregistry"
KINDS = ("openregistry", "distribution")

# Every server ever created in this session (the failure-report hook reads their logs).
ALL_SERVERS: list["RegistryServer"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openregistry_bin() -> Path:
    return Path(os.environ.get("OPENREGISTRY_BIN", REPO_ROOT / "target" / "release" / "openregistry"))


def distribution_bin() -> Path:
    return Path(os.environ.get("DISTRIBUTION_BIN", "/usr/bin/docker-registry"))


class RegistryStartError(RuntimeError):
    pass


class RegistryServer(ChildProcess):
    """One registry process bound to 127.0.0.1 with its own data directory."""

    def __init__(self, workdir: Path, kind: str = KIND, name: str = "registry",
                 env: Optional[dict[str, str]] = None):
        if kind not in KINDS:
            raise ValueError(f"E2E_REGISTRY must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        self.name = name
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self.starts = 0
        # Extra environment for every start, restarts included (E2E_METADATA=neon puts the
        # database URL and SQL endpoint here).
        self.env = dict(env or {})
        ALL_SERVERS.append(self)

    # -- addresses -----------------------------------------------------------

    @property
    def host(self) -> str:
        """host:port, as used in image references (docker://HOST/repo:tag)."""
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    # -- lifecycle -----------------------------------------------------------

    @property
    def is_worker(self) -> bool:
        """The Cloudflare Worker in workerd (E2E_HOST=cloudflare), not the native binary."""
        return self.kind == "openregistry" and cloudflare_host.CLOUDFLARE

    @property
    def is_spin(self) -> bool:
        """The Spin component in the test host (E2E_HOST=spin), not the native binary."""
        return self.kind == "openregistry" and cloudflare_host.SPIN

    def _signal_group(self, sig: int) -> None:
        """The harness's whole process group: node and the workerd it spawned."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _command(self) -> list[str]:
        if self.is_worker:
            try:
                return cloudflare_host.worker_command(self.host, self.data_dir)
            except cloudflare_host.CloudflareError as exc:
                raise RegistryStartError(str(exc)) from exc
        if self.is_spin:
            try:
                return spin_host.command(self.host, self.data_dir, self.env.get("E2E_SPIN_HOST_ARGS", ""))
            except spin_host.SpinError as exc:
                raise RegistryStartError(str(exc)) from exc
        if self.kind == "openregistry":
            binary = openregistry_bin()
            if not binary.exists():
                raise RegistryStartError(
                    f"openregistry binary not found at {binary}; build it (cargo build --release) "
                    f"or set OPENREGISTRY_BIN, or run the suite with E2E_REGISTRY=distribution"
                )
            return [str(binary), "serve", "--listen", self.host, "--data-dir", str(self.data_dir)]
        binary = distribution_bin()
        if not binary.exists():
            raise RegistryStartError(
                f"{binary} not found; install Debian's docker-registry (scripts/e2e-deps does it "
                f"when E2E_REGISTRY=distribution)"
            )
        config = self.workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n"
            "  level: info\n"
            "  accesslog:\n"
            "    disabled: false\n"
            "storage:\n"
            "  filesystem:\n"
            f"    rootdirectory: {self.data_dir}\n"
            "  delete:\n"
            "    enabled: true\n"
            "  maintenance:\n"
            "    uploadpurging:\n"
            "      enabled: false\n"
            "http:\n"
            f"  addr: {self.host}\n"
        )
        return [str(binary), "serve", str(config)]

    def start(self, timeout: float = 30.0) -> "RegistryServer":
        """Start on a fresh free port; retry if the port was snatched meanwhile."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        last_error = None
        for _ in range(3):
            self.port = free_port()
            try:
                self._spawn_and_wait(timeout)
                return self
            except RegistryStartError as exc:
                last_error = exc
                if "address already in use" not in self.log_tail(4000).lower():
                    raise
        raise last_error  # type: ignore[misc]

    def _process_env(self) -> dict[str, str]:
        """The process environment: ours, then the registry's settings (as Spin variables on Spin)."""
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        # "{port}" in a setting is this start's port (OPENREGISTRY_PUBLIC_URL names it).
        env.update({k: v.replace("{port}", str(self.port)) for k, v in self.env.items()})
        return spin_host.variables(env) if self.is_spin else env

    def _ready(self, r: requests.Response) -> bool:
        """Whether this answer to ``GET /v2/`` means the registry is serving; raises if it is wrong."""
        if r.status_code != 200:
            return False
        api = r.headers.get("Docker-Distribution-API-Version")
        if api != "registry/2.0":
            raise RegistryStartError(
                f"GET /v2/ lacks 'Docker-Distribution-API-Version: registry/2.0' (got {api!r})"
            )
        return True

    def _spawn_and_wait(self, timeout: float) -> None:
        cmd = self._command()
        self._log = open(self.log_path, "ab")
        self.starts += 1
        self._log.write(f"\n===== e2e: start #{self.starts}: {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            cwd=self.workdir, env=self._process_env(), start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RegistryStartError(
                    f"{self.kind} exited with {self.proc.returncode} during startup:\n{self.log_tail()}"
                )
            try:
                r = requests.get(f"{self.base_url}/v2/", timeout=2)
            except requests.RequestException:
                time.sleep(0.05)
                continue
            try:
                if self._ready(r):
                    return
            except RegistryStartError as exc:
                self.kill()
                raise RegistryStartError(f"{exc}:\n{self.log_tail()}") from None
            time.sleep(0.05)
        self.kill()
        raise RegistryStartError(f"{self.kind} not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """Graceful stop: SIGTERM, wait; SIGKILL only if it does not exit in time."""
        if self.proc is None:
            return None
        if self._terminate(timeout):
            self._note(f"did not exit within {timeout}s of SIGTERM; killed")
        if self.is_worker:
            self._signal_group(signal.SIGKILL)  # a workerd left behind by its harness
        rc = self.proc.returncode
        self._close_log()
        return rc

    def kill(self) -> None:
        """Crash it: SIGKILL, no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            if self.is_worker:
                self._signal_group(signal.SIGKILL)  # workerd too, not only its node harness
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._note("killed with SIGKILL")
        self._close_log()

    def restart(self, timeout: float = 30.0) -> "RegistryServer":
        """Start again on the same data dir (on a new port)."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start(timeout)

    # -- logs ----------------------------------------------------------------

    def _note(self, msg: str) -> None:
        try:
            with open(self.log_path, "ab") as f:
                f.write(f"===== e2e: {msg}\n".encode())
        except OSError:
            pass

