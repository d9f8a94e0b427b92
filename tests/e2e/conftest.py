"""Shared fixtures for the OpenRegistry end-to-end suite.

Environment:
  E2E_REGISTRY      openregistry (default) | distribution
  OPENREGISTRY_BIN  path of the binary (default <repo>/target/release/openregistry)
  E2E_KEEP_TMP=1    keep the temporary directory (data dirs, logs) after the run
  SKOPEO            path of skopeo (default: skopeo on PATH)
  E2E_NO_SKIP=1     run openregistry_only tests even under distribution (to see how
                    the reference registry fails them; expect failures)
  E2E_METADATA      unset (default: the registry's embedded metadata store) | neon: metadata in
                    PostgreSQL behind the Neon SQL-over-HTTP stand-in (tests/neon-gateway); each
                    registry gets its own fresh database, dropped at the end
  E2E_STORAGE       unset (default: the registry's local blob storage) | skynet: blobs on the Skynet
                    portal stand-in (tests/skynet-portal), one per session, which requires the API
                    key; every registry gets OPENREGISTRY_SKYNET_PORTAL and OPENREGISTRY_SKYNET_API_KEY
                    | s3: blobs on a real S3 server (moto's, s3_server.py), one per session, a bucket
                    per registry (OPENREGISTRY_S3_*). Composes with E2E_METADATA=neon.
  E2E_HOST          unset or native (default: the native binary) | cloudflare: the Cloudflare Worker
                    in workerd (tests/cloudflare/mf-serve.mjs, built by scripts/build-worker; set
                    E2E_BUILD_WORKER=1 to build it first). Implies E2E_METADATA=neon and blobs in
                    the Worker's R2 binding (Miniflare's R2; E2E_STORAGE=r2, no storage server);
                    each database is migrated with `openregistry migrate`; tests marked native_only
                    are skipped.
                    | spin: the Spin component (worker/spin, built by scripts/build-spin) in the
                    Spin-compatible test host (tests/spin-host, scripts/spin-host-deps) from
                    spin.toml; E2E_BUILD_SPIN=1 builds both first. Implies E2E_METADATA=neon and
                    E2E_STORAGE=s3 (the edge over outbound HTTP to S3).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

import cloudflare_host
import spin_host
import postgres_server
import registry_server
from neon_gateway import ALL_GATEWAYS, GatewayStartError, NeonGateway, install_deps
from ocihttp import OciClient
from registry_server import KIND, RegistryServer
from s3_server import ALL_SERVERS as ALL_S3_SERVERS
from s3_server import S3Server, S3StartError
from skynet_portal import ALL_PORTALS, PortalStartError, SkynetPortal
from skynet_portal import install_deps as install_portal_deps

_TMP_ROOT: Path | None = None
METADATA = os.environ.get("E2E_METADATA", "").strip().lower()
if METADATA not in ("", "neon"):
    raise pytest.UsageError(f"E2E_METADATA must be unset or 'neon', not {METADATA!r}")
STORAGE = os.environ.get("E2E_STORAGE", "").strip().lower()
if STORAGE not in ("", "skynet", "s3"):
    raise pytest.UsageError(f"E2E_STORAGE must be unset, 'skynet' or 's3', not {STORAGE!r}")
if cloudflare_host.CLOUDFLARE:
    # Metadata behind the Neon stand-in; blobs in the Worker's own R2 binding.
    METADATA, STORAGE = "neon", "r2"
elif cloudflare_host.SPIN:
    # Spin has no stores of its own: metadata behind the Neon stand-in, blobs on S3.
    METADATA, STORAGE = "neon", "s3"
# The stand-ins' plumbing tests exist only in their mode (the default run stays as it was).
collect_ignore = ([] if METADATA == "neon" else ["test_neon_gateway_fixture.py"]) \
    + ([] if STORAGE == "skynet" else ["test_skynet_portal_fixture.py"])


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "openregistry_only(reason): exercises a spec feature or contract the reference "
        "registry (Distribution 2.8) lacks; skipped when E2E_REGISTRY=distribution",
    )
    config.addinivalue_line("markers", "slow: moves hundreds of MiB through the registry")
    config.addinivalue_line(
        "markers",
        "native_only(reason): needs the native host itself (its CLI, its data directory); "
        "skipped when E2E_HOST=cloudflare or spin",
    )


def pytest_report_header(config):
    target = registry_server.openregistry_bin() if KIND == "openregistry" else registry_server.distribution_bin()
    metadata = "; metadata: Neon SQL over HTTP (tests/neon-gateway)" if METADATA == "neon" else ""
    storage = {"skynet": "; blobs: Skynet portal stand-in (tests/skynet-portal)",
               "s3": "; blobs: S3 (moto server)", "r2": "; blobs: R2 binding (Miniflare)"}.get(STORAGE, "")
    if cloudflare_host.CLOUDFLARE:
        target = f"Cloudflare Worker in workerd via {cloudflare_host.HARNESS.relative_to(cloudflare_host.REPO_ROOT)}"
    if cloudflare_host.SPIN:
        target = f"Spin component in {spin_host.TEST_HOST.name} from {spin_host.MANIFEST.name}"
    return f"registry under test: {KIND} ({target}){metadata}{storage}"


def pytest_collection_modifyitems(config, items):
    if cloudflare_host.EDGE:
        for item in items:
            marker = item.get_closest_marker("native_only")
            if marker is not None:
                reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
                item.add_marker(pytest.mark.skip(reason=f"native host only: {reason}"))
    if KIND != "distribution" or os.environ.get("E2E_NO_SKIP") == "1":
        return
    for item in items:
        marker = item.get_closest_marker("openregistry_only")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        item.add_marker(pytest.mark.skip(reason=f"openregistry only: {reason}" if reason else "openregistry only"))


# ---------------------------------------------------------------------------
# temporary directories (one root per session, removed at the end)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tmp_root():
    global _TMP_ROOT
    root = Path(tempfile.mkdtemp(prefix="openregistry-e2e-"))
    _TMP_ROOT = root
    yield root
    if os.environ.get("E2E_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)


def _slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "t"


@pytest.fixture
def work_dir(tmp_root, request):
    """A scratch directory for this test, deleted afterwards (big layers live here)."""
    d = Path(tempfile.mkdtemp(prefix=_slug(request.node.name, 30) + "-", dir=tmp_root))
    yield d
    if os.environ.get("E2E_KEEP_TMP") != "1":
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# registry processes
# ---------------------------------------------------------------------------

class NeonBackend:
    """E2E_METADATA=neon: one PostgreSQL and one gateway for the session; a database per registry."""

    def __init__(self, root: Path):
        self.postgres = postgres_server.ensure_postgres()
        self.gateway = NeonGateway(self.postgres.host, self.postgres.port,
                                  log_path=root / "neon-gateway.log")
        self.databases: list[str] = []

    def registry_env(self, name: str) -> dict[str, str]:
        """A fresh database for one registry, and the environment that points it there."""
        database = self.postgres.create_database(f"e2e_{_slug(name, 20).replace('-', '_')}")
        self.databases.append(database)
        return {
            "OPENREGISTRY_DATABASE_URL": f"postgresql://postgres:openregistry@ep-e2e.localtest.me/{database}",
            "OPENREGISTRY_DATABASE_HTTP_ENDPOINT": self.gateway.url,
        }

    def close(self) -> None:
        self.gateway.stop()
        try:
            for database in self.databases:
                self.postgres.drop_database(database)
        finally:
            self.postgres.stop()


@pytest.fixture(scope="session")
def neon_backend(tmp_root):
    """None by default; under E2E_METADATA=neon, the session's PostgreSQL + gateway."""
    if METADATA != "neon":
        yield None
        return
    try:
        install_deps()
        backend = NeonBackend(tmp_root)
    except (GatewayStartError, postgres_server.PostgresError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        backend.gateway.start()
    except GatewayStartError as exc:
        backend.close()
        pytest.fail(str(exc), pytrace=False)
    yield backend
    backend.close()


@pytest.fixture
def neon_gateway(neon_backend):
    """The session's gateway (None unless E2E_METADATA=neon): .url, .stats(), .reset_stats(),
    .set_delay(ms), .stop(), .start(), .query(db, sql, params). A test may slow it down or stop it;
    it is started again with no delay afterwards."""
    if neon_backend is None:
        yield None
        return
    gateway = neon_backend.gateway
    yield gateway
    gateway.start()
    gateway.set_delay(0)


def _start_s3(tmp_root) -> S3Server:
    try:
        return S3Server(tmp_root / "s3-server.log").start()
    except S3StartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def storage_backend(tmp_root):
    """The session's blob storage server: None by default (and under E2E_HOST=cloudflare: R2),
    the Skynet portal under E2E_STORAGE=skynet (data in the session tmp dir), the S3 server under
    E2E_STORAGE=s3. Each has .registry_env() (what a registry gets to use it), .running(), .start()."""
    if STORAGE == "s3":
        server = _start_s3(tmp_root)
        yield server
        server.stop()
        return
    if STORAGE != "skynet":
        yield None
        return
    try:
        install_portal_deps()
        portal = SkynetPortal(tmp_root / "skynet-portal-data", log_path=tmp_root / "skynet-portal.log")
        portal.start()
    except PortalStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield portal
    portal.stop()


@pytest.fixture(scope="session")
def shared_storage(tmp_root, storage_backend):
    """Storage two registry processes can share (the session's server; an S3 server started for
    it where the registries would otherwise keep blobs of their own: files, R2)."""
    if storage_backend is not None:
        yield storage_backend
        return
    server = _start_s3(tmp_root)
    yield server
    server.stop()


@pytest.fixture
def s3_server(storage_backend):
    """The session's S3 server (None unless E2E_STORAGE=s3): .client() (boto3), .objects(bucket),
    .multipart_uploads(bucket); a registry's bucket is its env["OPENREGISTRY_S3_BUCKET"]."""
    yield storage_backend if isinstance(storage_backend, S3Server) else None


@pytest.fixture
def skynet_portal(storage_backend):
    """The session's portal (None unless E2E_STORAGE=skynet): .url, .stats(), .reset_stats(),
    .faults(**kw), .stop(), .start(). A test may inject faults or stop it; it is started again
    with no faults afterwards."""
    if not isinstance(storage_backend, SkynetPortal):
        yield None
        return
    yield storage_backend
    storage_backend.start()
    storage_backend.faults()


def _start(workdir: Path, name: str, neon: "NeonBackend | None",
           extra_env: "dict[str, str] | None" = None, skynet: "SkynetPortal | None" = None,
           server_class: type = RegistryServer) -> RegistryServer:
    try:
        if neon is not None and not neon.gateway.running():
            neon.gateway.start()  # a test stopped it and its registry is being (re)started
        if skynet is not None and not skynet.running():
            skynet.start()  # likewise
        env = neon.registry_env(name) if neon is not None else {}
        env.update(skynet.registry_env() if skynet is not None else {})
        env.update(extra_env or {})
        if cloudflare_host.EDGE:
            _prepare_worker()
            cloudflare_host.migrate(env)  # edge hosts do not migrate; a deployment does it once
        server = server_class(workdir, name=name, env=env)
        server.start()
    except (registry_server.RegistryStartError, GatewayStartError, postgres_server.PostgresError,
            PortalStartError, cloudflare_host.CloudflareError, spin_host.SpinError) as exc:
        pytest.fail(str(exc), pytrace=False)
    return server


_worker_prepared = False


def _prepare_worker() -> None:
    """Edge hosts: tools and build once per session (see cloudflare_host.prepare, spin_host.prepare)."""
    global _worker_prepared
    if not _worker_prepared:
        if cloudflare_host.SPIN:
            spin_host.prepare()
        else:
            cloudflare_host.prepare()
        _worker_prepared = True


@pytest.fixture(scope="session")
def registry(tmp_root, neon_backend, storage_backend):
    """The registry shared by most tests (one process for the session)."""
    # On the Worker: a plan whose body limit is 500 MB (Enterprise), so the suite's single-PATCH
    # layers of 200 MiB are within it (Free/Pro's 100 MB default is tested in test_worker_config).
    extra = {"OPENREGISTRY_CHUNK_MAX_LENGTH": "500000000"} if cloudflare_host.CLOUDFLARE else None
    server = _start(tmp_root / "shared-registry", "shared", neon_backend, extra, skynet=storage_backend)
    yield server
    rc = server.stop()
    # A graceful SIGTERM shutdown is part of the contract.
    if server.kind == "openregistry":
        assert rc == 0, f"openregistry exited with {rc} after SIGTERM:\n{server.log_tail()}"


@pytest.fixture
def registry_factory(work_dir, neon_backend, storage_backend):
    """Start dedicated registries (own data dir, and own database under E2E_METADATA=neon) for
    tests that need isolation or crash them. Under E2E_STORAGE=skynet they share the session's
    portal."""
    started: list[RegistryServer] = []

    def make(name: str = "dedicated", env: "dict[str, str] | None" = None,
             server_class: type = RegistryServer) -> RegistryServer:
        server = _start(work_dir / f"{name}-{len(started)}", name, neon_backend, env, storage_backend,
                        server_class)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def _health_check(server: RegistryServer, client: OciClient):
    assert server.running(), f"the registry process died during the test:\n{server.log_tail()}"
    ok, what = client.alive(fresh_connection=True)
    assert ok, f"the registry no longer answers GET /v2/ with 200 ({what}):\n{server.log_tail()}"
    # The connection the test's last request used must still be usable (or
    # have been closed with "Connection: close"): a server that silently drops
    # a kept-alive connection breaks ordinary HTTP clients.
    ok, what = client.alive()
    assert ok, f"GET /v2/ on the test's kept-alive connection failed ({what}):\n{server.log_tail()}"


@pytest.fixture
def client(registry):
    """Raw-HTTP client for the shared registry; checks afterwards that it is still alive."""
    c = OciClient(registry.base_url)
    yield c
    try:
        _health_check(registry, c)
    finally:
        c.close()


@pytest.fixture
def repo(request):
    """A repository name unique to this test (nested, to exercise multi-component names)."""
    return f"e2e/{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# print the registry log when a test fails
# ---------------------------------------------------------------------------

def _logged_processes():
    return [*registry_server.ALL_SERVERS, *ALL_GATEWAYS, *ALL_PORTALS, *ALL_S3_SERVERS]


def pytest_runtest_setup(item):
    item._registry_log_offsets = {id(s): s.log_size() for s in _logged_processes()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    offsets = getattr(item, "_registry_log_offsets", {})
    for server in _logged_processes():
        start = offsets.get(id(server), 0)
        if server.log_size() <= start:
            continue
        text = server.log_since(start)
        kind = getattr(server, "kind", "neon-gateway")
        report.sections.append(
            (f"{kind} log ({server.name}, {server.log_path}) during {report.when}", text)
        )


# ---------------------------------------------------------------------------
# registries that live for a whole test module
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def module_registry_factory(tmp_root, neon_backend, storage_backend, request):
    """Like `registry_factory`, but each registry lives until the module's last test is done (for
    modules that set up users, tokens and repositories once and check many things against them).
    `make(name, env=None, server_class=RegistryServer)`; `server_class` may be a subclass that
    starts differently (an auth-enabled registry answers GET /v2/ with 401, not 200).
    `make.started` lists the registries (their `log_path`s stay readable after the module)."""
    root = Path(tempfile.mkdtemp(prefix=_slug(request.module.__name__, 30) + "-", dir=tmp_root))
    started: list[RegistryServer] = []

    def make(name: str = "dedicated", env: "dict[str, str] | None" = None,
             server_class: type = RegistryServer) -> RegistryServer:
        try:
            if neon_backend is not None and not neon_backend.gateway.running():
                neon_backend.gateway.start()
            if storage_backend is not None and not storage_backend.running():
                storage_backend.start()
            full_env = neon_backend.registry_env(name) if neon_backend is not None else {}
            full_env.update(storage_backend.registry_env() if storage_backend is not None else {})
            full_env.update(env or {})
            if cloudflare_host.EDGE:
                _prepare_worker()
                cloudflare_host.migrate(full_env)
            server = server_class(root / f"{name}-{len(started)}", name=name, env=full_env)
            started.append(server)
            server.start()
        except (registry_server.RegistryStartError, GatewayStartError, postgres_server.PostgresError,
                PortalStartError, cloudflare_host.CloudflareError, spin_host.SpinError) as exc:
            pytest.fail(str(exc), pytrace=False)
        return server

    make.started = started
    make.root = root
    yield make
    for server in started:
        server.stop()
