"""Authentication and authorization, end to end: `openregistry serve --auth`, or the Cloudflare
Worker with `OPENREGISTRY_AUTH=true` under E2E_HOST=cloudflare.

Who may do what (the policy under test):

* an admin may do anything; a user may pull, push and delete in their namespace (`<user>` and
  `<user>/…`); anyone, signed in or not, may pull a public repository; repositories are private
  until their owner makes them public (`PUT /api/repositories/<name>/visibility`);
* every registry route needs a bearer token (Docker's token flow): without one, or with one that
  lacks the action, the answer is 401 `UNAUTHORIZED` with a `WWW-Authenticate: Bearer` challenge
  naming the scope (`error="invalid_token"` for a token that is not valid, `"insufficient_scope"`
  for one that does not grant the action);
* `/token` grants the intersection of what was asked for and what the caller may do, never an
  error for asking too much; personal access tokens (`orp_<id>_<secret>`, the password of Basic
  credentials) can only narrow a user's rights, through their scope patterns;
* tokens are PASETO v4.public signed with the registry's key, for its service (audience), for a
  short time; an upload belongs to whoever opened it and may be finished up to an hour after the
  token that opened it expired; responses warn (`Warning: 299`) when the token is about to expire;
* signing keys rotate: tokens of an earlier key are accepted while its public key is listed in
  `OPENREGISTRY_TOKEN_PUBLIC_KEYS`, and only then;
* access tokens are managed (`/api/tokens`) with an unscoped access token only;
* no secret ever reaches a log.

The module starts its own registries: the main one (key generated into its data directory), one
for another service with the same key, and one whose tokens live 3 seconds. Users and tokens come
from the `openregistry user|token` CLI on the registry's own metadata (SQLite, or PostgreSQL over
HTTP under E2E_METADATA=neon). Tokens are also forged here, with a pure-Python PASETO signer
(authkit.py), to check what the server refuses.

Under E2E_HOST=cloudflare the registries are Workers, which have no data directory: each is given
a key generated here (`OPENREGISTRY_TOKEN_KEY`), and the native CLI manages users and tokens in
the PostgreSQL behind the Worker's gateway. Tests of the native host itself are `native_only`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import oras.auth.utils
import oras.provider
import pytest
import requests

import authkit
import cloudflare_host
import neon_gateway
from authkit import (
    SERVICE, Accounts, AuthRegistryServer, DockerAuthClient, SigningKey, basic, bearer, challenge,
    claims, claims_of, client_with, footer_of, get_token, granted, parse_challenge, post_token,
    remember, repo_access, sign_token, split_token, token_id, token_secret, b64u, verify_token,
)
from ocihttp import (
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, assert_error, raw_request, sha256_digest, with_query,
)
from ocilayout import Layout, random_tar_layer
import registry_server
from registry_server import KIND, REPO_ROOT, RegistryStartError

pytestmark = [
    pytest.mark.skipif(KIND == "distribution",
                       reason="the reference registry runs without OpenRegistry's auth (tokens, users, CLI)"),
]

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"
SHORT_TTL = 3  # seconds, OPENREGISTRY_TOKEN_TTL_SECONDS of the short-lived registry


# ---------------------------------------------------------------------------
# the registries and the people using them
# ---------------------------------------------------------------------------

def _auth_env(**extra: str) -> dict[str, str]:
    # debug logging: more lines that a leaked secret could hide in (see the last test)
    env = {"OPENREGISTRY_AUTH": "true", "RUST_LOG": "debug"}
    if cloudflare_host.HOST != "native" and "OPENREGISTRY_TOKEN_KEY" not in extra:
        # An edge host has no data directory to generate its key in: it is configured, as deployed.
        env["OPENREGISTRY_TOKEN_KEY"] = remember_key(SigningKey.generate())
    env.update(extra)
    return env


def remember_key(key: SigningKey) -> str:
    """A signing key, remembered as a secret for the log scan; its PASERK k4.secret."""
    remember(key.paserk_secret, key.paserk_secret[len("k4.secret."):])
    return key.paserk_secret


@pytest.fixture(scope="module")
def reg(module_registry_factory):
    """The main registry: auth on, no configured key (it generates one into its data dir; a
    Worker is given one)."""
    return module_registry_factory("auth", env=_auth_env(), server_class=AuthRegistryServer)


@pytest.fixture(scope="module")
def signing_key(reg) -> SigningKey:
    key = SigningKey.from_paserk(reg.token_key())
    remember(key.paserk_secret, key.paserk_secret[len("k4.secret."):])
    return key


@pytest.fixture(scope="module")
def other(module_registry_factory, signing_key):
    """Another service (`OPENREGISTRY_SERVICE=other`) signing with the very same key."""
    return module_registry_factory(
        "other-service",
        env=_auth_env(OPENREGISTRY_SERVICE="other", OPENREGISTRY_TOKEN_KEY=signing_key.paserk_secret),
        server_class=AuthRegistryServer)


@pytest.fixture(scope="module")
def short(module_registry_factory):
    """Tokens live SHORT_TTL seconds here (its own generated key)."""
    server = module_registry_factory("short-ttl", env=_auth_env(OPENREGISTRY_TOKEN_TTL_SECONDS=str(SHORT_TTL)),
                                     server_class=AuthRegistryServer)
    key = server.token_key()
    remember(key, key[len("k4.secret."):])
    return server


def accounts_for(factory, server) -> Accounts:
    return Accounts(server, factory.root / f"cli-{server.name}.log")


@pytest.fixture(scope="module")
def short_accounts(short, module_registry_factory) -> Accounts:
    return accounts_for(module_registry_factory, short)


@dataclass
class Image:
    manifest: bytes
    digest: str
    layers: list[bytes]

    @property
    def layer_digests(self) -> list[str]:
        return [sha256_digest(layer) for layer in self.layers]


@dataclass
class World:
    """Users, their access tokens and repositories on the main registry, set up once.

    alice: owns alice/app (private) and alice/public (public); bob: owns bob/app (private);
    root: an admin; carol: has an unscoped token and one limited to `carol/ci/*:pull,push`.
    """
    reg: AuthRegistryServer
    other: AuthRegistryServer
    short: AuthRegistryServer
    key: SigningKey
    accounts: Accounts
    orp: dict[str, str] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    public: set[str] = field(default_factory=set)
    other_alice: str = ""  # alice's access token on the other service

    def bearer(self, who: Optional[str], *scopes: str) -> str:
        if who is None:
            return bearer(self.reg, scopes)
        return bearer(self.reg, scopes, who, self.orp[who])

    def client(self, who: Optional[str], *scopes: str) -> OciClient:
        return client_with(self.reg, self.bearer(who, *scopes))

    def send(self, method: str, path: str, token: Optional[str] = None,
             authorization: Optional[str] = None, **kw) -> requests.Response:
        """One request (fails the test on a 5xx), with `Authorization: Bearer <token>` if given."""
        client = client_with(self.reg, token, authorization)
        try:
            return client.request(method, path, **kw)
        finally:
            client.close()

    def raw(self, method: str, target: str, token: Optional[str] = None, headers=None, body=b""):
        """The request-target exactly as given (no dot-segment removal, no re-quoting)."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        r = raw_request("127.0.0.1", self.reg.port, method, target, hdrs, body)
        assert r.status < 500, f"{method} {target} -> {r.status}: {r.body[:300]!r}"
        return r

    def api(self, method: str, path: str, who: Optional[str] = None, password: Optional[str] = None,
            **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if who is not None:
            headers["Authorization"] = basic(who, password or self.orp[who])
        r = requests.request(method, f"{self.reg.base_url}/api/{path}", headers=headers, timeout=30, **kw)
        assert r.status_code < 500, f"{method} /api/{path} -> {r.status_code}: {r.text[:300]}"
        return r

    def make_public(self, who: str, repo: str) -> None:
        r = self.api("PUT", f"repositories/{repo}/visibility", who, json={"visibility": "public"})
        assert r.status_code == 200, r.text
        assert r.json() == {"name": repo, "visibility": "public"}
        self.public.add(repo)

    def push(self, who: str, repo: str, tag: str = "v1", layers: int = 2) -> Image:
        client = self.client(who, f"repository:{repo}:pull,push")
        try:
            data = [os.urandom(2048 + 512 * i) for i in range(layers)]
            body, digest = client.push_image(repo, tag, layers=data)
        finally:
            client.close()
        image = Image(body, digest, data)
        self.images[repo] = image
        return image


@pytest.fixture(scope="module")
def world(reg, other, short, signing_key, module_registry_factory) -> World:
    w = World(reg, other, short, signing_key, accounts_for(module_registry_factory, reg))
    for name, admin in (("alice", False), ("bob", False), ("carol", False), ("root", True)):
        w.accounts.create_user(name, admin=admin)
        w.orp[name] = w.accounts.create_token(name, name="main")
    w.orp["carol-ci"] = w.accounts.create_token("carol", name="ci", scopes=["repository:carol/ci/*:pull,push"])
    w.push("alice", "alice/app")
    w.push("alice", "alice/public")
    w.make_public("alice", "alice/public")
    w.push("bob", "bob/app")
    other_accounts = accounts_for(module_registry_factory, other)
    other_accounts.create_user("alice")
    w.other_alice = other_accounts.create_token("alice", name="other")
    return w


def carol_ci(w: World, *scopes: str) -> str:
    return bearer(w.reg, scopes, "carol", w.orp["carol-ci"])


# ---------------------------------------------------------------------------
# the signing key and the tokens /token answers
# ---------------------------------------------------------------------------

@pytest.mark.native_only("the edge hosts have no data directory: their key is a configured secret")
def test_the_signing_key_is_generated_into_the_data_dir_readable_by_its_owner_only(reg, signing_key):
    path = reg.data_dir / "token-key.paserk"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("k4.secret.")
    token = bearer(reg, ["repository:x/y:pull"])
    assert footer_of(token) == {"kid": signing_key.kid}
    assert verify_token(token, signing_key.public), "the token does not verify with the key's public half"


def token_key_public(secret: str) -> str:
    """``scripts/token-key public``: the PASERK k4.public of the k4.secret on its stdin."""
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "token-key"), "public"], input=secret,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.native_only("`openregistry token-key` is the native CLI, reading the native data directory")
def test_the_cli_prints_the_signing_keys_public_half(reg, signing_key, module_registry_factory, work_dir):
    accounts = accounts_for(module_registry_factory, reg)
    assert accounts.run("token-key", "public").stdout.strip() == signing_key.paserk_public
    configured = SigningKey.generate()
    proc = accounts.run("token-key", "public", env={"OPENREGISTRY_TOKEN_KEY": remember_key(configured)})
    assert proc.stdout.strip() == configured.paserk_public
    proc = subprocess.run([str(registry_server.openregistry_bin()), "token-key", "public",
                           "--data-dir", str(work_dir / "no-key-here")],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "OPENREGISTRY_TOKEN_KEY"})
    assert proc.returncode != 0 and "no signing key" in proc.stderr, proc.stderr
    assert not (work_dir / "no-key-here" / "token-key.paserk").exists(), "printing a key generated one"


def test_rotating_the_signing_key_keeps_tokens_of_listed_public_keys_valid(module_registry_factory):
    """Key A signs; restarted with key B and A's public key in OPENREGISTRY_TOKEN_PUBLIC_KEYS, the
    registry still accepts A's access and refresh tokens and signs new ones with B only; restarted
    without A's public key, A's tokens get 401. A malformed list is refused at start, naming the
    entry and not the key."""
    old, new = SigningKey.generate(), SigningKey.generate()
    old_public = token_key_public(remember_key(old))
    assert old_public == old.paserk_public
    server = module_registry_factory("rotation", env=_auth_env(OPENREGISTRY_TOKEN_KEY=old.paserk_secret),
                                     server_class=AuthRegistryServer)
    accounts = accounts_for(module_registry_factory, server)
    accounts.create_user("rita")
    orp = accounts.create_token("rita", name="r")
    scope = "repository:rita/app:pull,push"
    answer = get_token(server, [scope], "rita", orp, offline=True).json()
    old_token, old_refresh = answer["token"], answer["refresh_token"]
    assert footer_of(old_token) == {"kid": old.kid}
    client = client_with(server, old_token)
    try:
        _, digest = client.push_image("rita/app", "v1")
    finally:
        client.close()

    def pull(token: str) -> requests.Response:
        return requests.get(f"{server.base_url}/v2/rita/app/manifests/v1", timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST})

    def refresh() -> requests.Response:
        return post_token(server, {"grant_type": "refresh_token", "refresh_token": old_refresh,
                                   "service": SERVICE, "scope": scope})

    def restart(**settings: str) -> None:
        server.stop()
        server.env.pop("OPENREGISTRY_TOKEN_PUBLIC_KEYS", None)
        server.env.update(settings)
        server.start()

    restart(OPENREGISTRY_TOKEN_KEY=remember_key(new), OPENREGISTRY_TOKEN_PUBLIC_KEYS=old_public)
    r = pull(old_token)
    assert r.status_code == 200 and sha256_digest(r.content) == digest, r.text
    new_token = bearer(server, [scope], "rita", orp)
    assert footer_of(new_token) == {"kid": new.kid} and verify_token(new_token, new.public)
    assert pull(new_token).status_code == 200
    r = refresh()
    assert r.status_code == 200, r.text
    assert footer_of(r.json()["access_token"]) == {"kid": new.kid}

    restart()  # key B alone
    r = pull(old_token)
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == challenge(server, "repository:rita/app:pull", "invalid_token")
    assert "unknown key" in r.json()["errors"][0]["message"]
    assert_error(refresh(), 401, "UNAUTHORIZED")
    assert pull(new_token).status_code == 200

    server.stop()
    server.env["OPENREGISTRY_TOKEN_PUBLIC_KEYS"] = f"{old_public},{new.paserk_secret}"
    with pytest.raises(RegistryStartError) as refused:
        server.start()
    message = str(refused.value)
    assert "OPENREGISTRY_TOKEN_PUBLIC_KEYS: entry 2 is a secret key (k4.secret.…)" in message, message
    assert new.paserk_secret[len("k4.secret."):] not in message


def test_token_response_has_docker_fields_and_is_not_cached(world):
    r = get_token(world.reg, ["repository:alice/app:pull,push"], "alice", world.orp["alice"])
    assert r.status_code == 200
    assert r.headers["Cache-Control"] == "no-store"
    doc = r.json()
    assert set(doc) == {"token", "access_token", "expires_in", "issued_at"}, "no refresh token unless asked"
    assert doc["token"] == doc["access_token"]
    assert doc["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["issued_at"])
    c = claims_of(doc["token"])
    assert (c["iss"], c["sub"], c["aud"], c["iat"]) == (SERVICE, "alice", SERVICE, doc["issued_at"])
    assert "purpose" not in c and "tid" not in c
    assert c["access"] == [repo_access("alice/app", "pull", "push")]


def test_a_token_signed_with_the_registrys_key_is_accepted(world):
    """The tests' own PASETO signer is faithful: what it signs with the right key passes, so the
    forged tokens of the matrix are refused for what is wrong with them, not for its mistakes."""
    token = sign_token(world.key, claims("alice", [repo_access("alice/app", "pull")]))
    r = world.send("GET", "/v2/alice/app/tags/list", token)
    assert r.status_code == 200 and r.json()["tags"] == ["v1"]


# who asks, for which scope, and the actions granted (requested ∩ allowed; never an error)
GRANTS = [
    ("alice", "repository:alice/app:pull,push,delete", {"pull", "push", "delete"}),
    ("alice", "repository:alice/app:*", {"pull", "push", "delete"}),
    ("alice", "repository:alice/new/deeply/nested:push", {"push"}),
    ("alice", "repository:alice:pull,push", {"pull", "push"}),
    ("alice", "repository:bob/app:pull,push,delete", set()),
    ("alice", "repository:alice-x/app:push", set()),
    ("alice", "repository:alicex/app:pull", set()),
    ("bob", "repository:alice/public:*", {"pull"}),
    ("bob", "repository:alice/app:pull", set()),
    ("root", "repository:bob/app:*", {"pull", "push", "delete"}),
    ("root", "repository:someone/else:push", {"push"}),
    (None, "repository:alice/public:pull,push", {"pull"}),
    (None, "repository:alice/app:pull", set()),
    ("carol-ci", "repository:carol/ci/app:pull,push,delete", {"pull", "push"}),
    ("carol-ci", "repository:carol/ci:push", set()),
    ("carol-ci", "repository:carol/other:pull", set()),
    ("carol-ci", "repository:alice/public:pull", {"pull"}),
]


@pytest.mark.parametrize("who,scope,actions", GRANTS,
                         ids=[f"{w or 'anonymous'}:{s.split(':', 1)[1]}" for w, s, _ in GRANTS])
def test_token_grants_requested_intersected_with_allowed(world, who, scope, actions):
    user = "carol" if who == "carol-ci" else who
    r = get_token(world.reg, [scope], user, world.orp.get(who) if who else None)
    assert r.status_code == 200, r.text
    name = scope.split(":")[1]
    got = granted(r.json()["token"])
    assert got == ({("repository", name): actions} if actions else {})


# ---------------------------------------------------------------------------
# real clients
# ---------------------------------------------------------------------------

def skopeo(*args: str, auth_file: Path) -> subprocess.CompletedProcess:
    if not os.path.exists(SKOPEO):
        pytest.fail(f"skopeo not found ({SKOPEO}); run scripts/e2e-deps", pytrace=False)
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(auth_file))  # never the machine's credentials
    return subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def skopeo_ok(*args: str, auth_file: Path) -> str:
    proc = skopeo(*args, auth_file=auth_file)
    assert proc.returncode == 0, f"skopeo {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def test_skopeo_push_pull_then_publish_for_anonymous_pulls(world, work_dir):
    """A new user pushes with `--dest-creds user:token`, pulls back with `--src-creds`; the image
    is private until they publish it, then anyone pulls it; nobody pushes anonymously."""
    reg, user = world.reg, "sam"
    world.accounts.create_user(user)
    token = world.orp[user] = world.accounts.create_token(user, name="laptop")
    auth_file = work_dir / "auth.json"
    auth_file.write_text("{}")
    src = Layout(work_dir / "src").init()
    manifest = src.add_image([(random_tar_layer(200_000, "a.bin"), OCI_LAYER),
                              (random_tar_layer(50_000, "b.bin"), OCI_LAYER)])
    src.tag(manifest, "v1")
    expected = src.closure(manifest)
    ref = f"docker://{reg.host}/{user}/app:v1"

    skopeo_ok("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"{user}:{token}",
              f"oci:{src.root}:v1", ref, auth_file=auth_file)
    raw = skopeo_ok("inspect", "--raw", "--tls-verify=false", "--creds", f"{user}:{token}", ref,
                    auth_file=auth_file)
    assert sha256_digest(raw.encode()) == manifest["digest"]
    dst = Layout(work_dir / "dst")
    skopeo_ok("copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds", f"{user}:{token}",
              ref, f"oci:{dst.root}:v1", auth_file=auth_file)
    assert dst.resolve("v1")["digest"] == manifest["digest"]
    assert dst.closure(dst.resolve("v1")) == expected

    private = skopeo("copy", "--src-tls-verify=false", "--src-no-creds", ref, f"oci:{work_dir / 'anon0'}:v1",
                     auth_file=auth_file)
    assert private.returncode != 0, "an anonymous pull of a private repository succeeded"
    assert "unauthorized" in private.stderr.lower() or "denied" in private.stderr.lower(), private.stderr

    world.make_public(user, f"{user}/app")
    anon = Layout(work_dir / "anon")
    skopeo_ok("copy", "--preserve-digests", "--src-tls-verify=false", "--src-no-creds", ref,
              f"oci:{anon.root}:v1", auth_file=auth_file)
    assert anon.closure(anon.resolve("v1")) == expected

    for target in (f"{user}/app:anonymous", f"{user}/fresh:v1"):
        push = skopeo("copy", "--dest-tls-verify=false", "--dest-no-creds", f"oci:{src.root}:v1",
                      f"docker://{reg.host}/{target}", auth_file=auth_file)
        assert push.returncode != 0, f"an anonymous push to {target} succeeded"
        name, tag = target.split(":")
        r = world.send("GET", f"/v2/{name}/manifests/{tag}", world.bearer("root", f"repository:{name}:pull"))
        assert_error(r, 404, {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"})


def test_oras_pushes_and_pulls_an_artifact_with_an_access_token_as_password(world, work_dir, monkeypatch):
    user = "olga"
    world.accounts.create_user(user)
    token = world.accounts.create_token(user, name="oras")
    target = f"{world.reg.host}/{user}/artifacts:v1"
    files = {"sbom.json": json.dumps({"packages": ["x"]}).encode(), "data.bin": os.urandom(40_000)}
    for name, data in files.items():
        (work_dir / name).write_bytes(data)
    monkeypatch.chdir(work_dir)  # oras-py pushes files from the working directory only

    pusher = oras.provider.Registry(hostname=world.reg.host, insecure=True)
    pusher.auth.set_basic_auth(user, token)
    # oras-py 0.2.43 keeps the first token it gets and asks for another only after a 403, never
    # after a 401 `insufficient_scope`; a push starts with HEAD (challenged for pull), so its own
    # token request is made up front, with the same Basic credentials, for pull and push.
    ping = requests.get(f"{world.reg.base_url}/v2/", timeout=30).headers["WWW-Authenticate"]
    wanted = oras.auth.utils.parse_auth_header(f'{ping},scope="repository:{user}/artifacts:pull,push"')
    pusher.auth.token = pusher.auth.request_token(wanted)
    assert granted(pusher.auth.token) == {("repository", f"{user}/artifacts"): {"pull", "push"}}
    resp = pusher.push(target, files=["sbom.json:application/json", "data.bin"])
    assert resp.status_code == 201
    remember(pusher.auth.token)

    puller = oras.provider.Registry(hostname=world.reg.host, insecure=True)
    puller.auth.set_basic_auth(user, token)
    out = work_dir / "out"
    pulled = puller.pull(target, outdir=str(out))
    remember(puller.auth.token)
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data

    stranger = oras.provider.Registry(hostname=world.reg.host, insecure=True)  # anonymous
    with pytest.raises(Exception):
        stranger.pull(target, outdir=str(work_dir / "stranger"))
    assert not list((work_dir / "stranger").glob("*")), "an anonymous oras pull got files of a private artifact"


def test_a_chunked_push_that_outlives_its_token_completes(world, short_accounts):
    """Tokens live 3 s; a slow chunked upload sleeps past expiry between PATCHes. The client
    fetches a new token when told (401 `invalid_token`, via its refresh token) and goes on: the
    upload belongs to the user, not to the token that opened it."""
    server = world.short
    accounts = short_accounts
    user = "slow"
    accounts.create_user(user)
    token = accounts.create_token(user, name="slow")
    repo = f"{user}/app"
    client = DockerAuthClient(server, user, token, repo)
    try:
        layer = os.urandom(256 * 1024)
        digest = sha256_digest(layer)
        r = client.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"")
        assert r.status_code == 202, r.text
        first_token_at = time.monotonic()
        location = client.http.location(r)
        pieces = [layer[i:i + 64 * 1024] for i in range(0, len(layer), 64 * 1024)]
        offset = 0
        for piece in pieces:
            time.sleep(1.3)
            r = client.request("PATCH", location, data=piece, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                "Content-Length": str(len(piece))})
            assert r.status_code == 202, f"PATCH at {offset} -> {r.status_code}: {r.text}"
            offset += len(piece)
            location = client.http.location(r)
        r = client.request("PUT", with_query(location, digest=digest), data=b"",
                           headers={"Content-Length": "0"})
        assert r.status_code == 201, r.text
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
        r = client.request("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256_digest(config)}", data=config,
                           headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": len(layer)}],
        }).encode()
        r = client.request("PUT", f"/v2/{repo}/manifests/v1", data=manifest,
                           headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        assert time.monotonic() - first_token_at > SHORT_TTL + 1, "the push did not outlive its first token"
        assert client.fetches >= 2, "no new token was fetched although the first one expired"
        assert any('error="invalid_token"' in c for c in client.challenges), client.challenges
        assert client.warnings and all(re.fullmatch(r'299 - "[^"]+"', w) for w in client.warnings), client.warnings
    finally:
        client.close()

    reader = DockerAuthClient(server, user, token, repo)
    try:
        r = reader.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == manifest
        r = reader.request("GET", f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200 and sha256_digest(r.content) == digest
    finally:
        reader.close()


def test_tokens_about_to_expire_are_warned_about_and_expired_ones_refused(world, short_accounts):
    server = world.short
    accounts = short_accounts
    accounts.create_user("tick")
    token = accounts.create_token("tick", name="t")
    client = client_with(server, None)
    try:
        r = get_token(server, ["repository:tick/app:pull,push"], "tick", token)
        assert r.status_code == 200 and r.json()["expires_in"] == SHORT_TTL
        access = r.json()["token"]
        r = client.request("POST", "/v2/tick/app/blobs/uploads/", data=b"",
                           headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 202
        m = re.fullmatch(r'299 - "the access token expires in (\d+) s; request a new one"', r.headers["Warning"])
        assert m and int(m.group(1)) <= SHORT_TTL, r.headers["Warning"]
        time.sleep(SHORT_TTL + 1.2)
        r = client.request("GET", "/v2/tick/app/tags/list", headers={"Authorization": f"Bearer {access}"})
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["WWW-Authenticate"] == challenge(server, "repository:tick/app:pull", "invalid_token")
        r = client.request("POST", "/v2/tick/app/blobs/uploads/", data=b"",
                           headers={"Authorization": f"Bearer {access}"})
        assert_error(r, 401, "UNAUTHORIZED")  # the grace is for finishing uploads, not starting them
    finally:
        client.close()
    r = world.send("GET", "/v2/alice/app/tags/list", world.bearer("alice", "repository:alice/app:pull"))
    assert r.status_code == 200 and "Warning" not in r.headers, "a 300 s token is not about to expire"


def test_an_expired_token_may_still_finish_the_upload_it_opened(world, short_accounts):
    server = world.short
    accounts = short_accounts
    accounts.create_user("grace")
    orp = accounts.create_token("grace", name="g")
    access = bearer(server, ["repository:grace/app:pull,push"], "grace", orp)
    client = client_with(server, access)
    try:
        location = client.start_upload("grace/app")
        time.sleep(SHORT_TTL + 1.2)
        r = client.patch_chunk(location, b"late bytes", 0)
        assert r.status_code == 202, f"PATCH with a just-expired token -> {r.status_code}: {r.text}"
        assert r.headers["Warning"] == '299 - "the access token expires in 0 s; request a new one"'
        r = client.finish_upload(client.location(r), sha256_digest(b"late bytes"))
        assert r.status_code == 201, r.text
    finally:
        client.close()


# ---------------------------------------------------------------------------
# the security matrix: exact status, errors[0].code and challenge
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[World], object]
    status: int
    code: str
    www: Optional[Callable[[World], str]] = None  # the exact WWW-Authenticate expected
    why: Optional[str] = None  # in errors[0].message: refused for this reason, not another


def bearer_challenge(scope: Optional[str], error: Optional[str] = None):
    return lambda w: challenge(w.reg, scope, error)


def basic_challenge():
    return lambda w: f'Basic realm="{w.reg.base_url}/token"'


def tiny_manifest() -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(b"{}"), "size": 2},
                       "layers": []}).encode()


def tampered_claims(w: World) -> str:
    """A real pull-only token whose claims were rewritten to grant push (signature kept)."""
    token = w.bearer("alice", "repository:alice/app:pull")
    message, signature, footer = split_token(token)
    doc = json.loads(message)
    doc["access"] = [repo_access("alice/app", "pull", "push", "delete")]
    return "v4.public." + b64u(json.dumps(doc, separators=(",", ":")).encode() + signature) + "." + b64u(footer)


def tampered_footer(w: World) -> str:
    token = w.bearer("alice", "repository:alice/app:pull")
    body, footer = token[len("v4.public."):].split(".")
    return "v4.public." + body + "." + b64u(json.dumps({"kid": SigningKey.generate().kid}).encode())


def flipped_signature(w: World) -> str:
    token = w.bearer("alice", "repository:alice/app:pull")
    message, signature, footer = split_token(token)
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    return "v4.public." + b64u(message + bad) + "." + b64u(footer)


def from_other_service(w: World) -> str:
    """A genuine token of the other service (same key): valid there, for alice/app."""
    token = bearer(w.other, ["repository:alice/app:pull,push"], "alice", w.other_alice)
    assert claims_of(token)["aud"] == "other"
    assert granted(token) == {("repository", "alice/app"): {"pull", "push"}}
    r = requests.get(f"{w.other.base_url}/v2/alice/app/tags/list",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert_error(r, 404, "NAME_UNKNOWN")  # accepted by the service it was made for
    return token


def signed_by_second_registry(w: World) -> str:
    """Claims for alice/app signed with the short-lived registry's key (from its data dir)."""
    key = SigningKey.from_paserk(w.short.token_key())
    return sign_token(key, claims("alice", [repo_access("alice/app", "pull", "push")]))


def signed_by_stranger_with_our_kid(w: World) -> str:
    stranger = SigningKey.generate()
    return sign_token(stranger, claims("alice", [repo_access("alice/app", "pull")]), footer={"kid": w.key.kid})


def refresh_token_of(w: World) -> str:
    r = post_token(w.reg, {"grant_type": "password", "username": "alice", "password": w.orp["alice"],
                           "service": SERVICE, "scope": "repository:alice/app:pull"})
    assert r.status_code == 200
    return r.json()["refresh_token"]


def alice_upload(w: World) -> str:
    """An upload alice opened in alice/app; its path."""
    client = w.client("alice", "repository:alice/app:pull,push")
    try:
        location = client.start_upload("alice/app")
    finally:
        client.close()
    return location[len(w.reg.base_url):]


def wrong_secret(w: World, who: str = "alice") -> str:
    token = w.orp[who]
    secret = token_secret(token)
    other = "".join("0" if ch != "0" else "1" for ch in secret[:1]) + secret[1:]  # same length, 1 char off
    return f"orp_{token_id(token)}_{other}"


def huge_bearer(w: World):
    started = time.monotonic()
    r = w.send("GET", "/v2/alice/app/tags/list", authorization="Bearer " + "A" * (64 * 1024))
    assert time.monotonic() - started < 2, "a 64 KiB Authorization header took long to refuse"
    return r


def huge_basic_at_token(w: World):
    started = time.monotonic()
    r = get_token(w.reg, ["repository:alice/app:pull"], "alice",
                  f"orp_{token_id(w.orp['alice'])}_" + "a" * (64 * 1024))
    assert time.monotonic() - started < 2
    return r


def revoked_token_at_token_endpoint(w: World):
    token = w.accounts.create_token("alice", name="to-revoke")
    assert get_token(w.reg, ["repository:alice/app:pull"], "alice", token).status_code == 200
    w.accounts.revoke_token(token_id(token))
    return get_token(w.reg, ["repository:alice/app:pull"], "alice", token)


def deleted_users_token(w: World):
    w.accounts.create_user("dave")
    token = w.accounts.create_token("dave", name="d")
    assert get_token(w.reg, ["repository:dave/app:push"], "dave", token).status_code == 200
    w.accounts.delete_user("dave")
    return get_token(w.reg, ["repository:dave/app:push"], "dave", token)


def born_expired_token(w: World):
    token = w.accounts.create_token("alice", name="born-expired", expires_in_days=0)
    return get_token(w.reg, ["repository:alice/app:pull"], "alice", token)


def revoke_with_scoped_token(w: World, target: str):
    """carol's scoped token tries to revoke one of her tokens; whatever the answer, both of them
    must still be active afterwards (checked with her unscoped token)."""
    r = w.api("DELETE", f"tokens/{target}", "carol", w.orp["carol-ci"])
    listed = w.api("GET", "tokens", "carol")
    assert listed.status_code == 200, listed.text
    state = {t["id"]: t["revoked_at_ms"] for t in listed.json()["tokens"]}
    for token in (w.orp["carol"], w.orp["carol-ci"]):
        assert state[token_id(token)] is None, f"a scoped token revoked {token_id(token)}"
    return r


def dot_segments(id: str, target: str, token: Callable[[World], str], resolved: str) -> Case:
    """A request-target with dot segments, sent as is. The native host refuses the name (400); the
    Workers runtime, like Cloudflare's edge, resolves dot segments (WHATWG URL parsing) before the
    Worker sees the path, which then names `resolved`, where the token grants nothing (401)."""
    send = lambda w: w.raw("GET", target, token(w))
    if cloudflare_host.CLOUDFLARE:
        return Case(id, send, 401, "UNAUTHORIZED",
                    bearer_challenge(f"repository:{resolved}:pull", "insufficient_scope"))
    return Case(id, send, 400, "NAME_INVALID", None)


IMG = "alice/app"
CASES = [
    # -- no token at all ----------------------------------------------------------------------
    Case("anonymous push is challenged for push",
         lambda w: w.send("POST", f"/v2/{IMG}/blobs/uploads/", data=b""),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push")),
    Case("anonymous manifest PUT is challenged for push",
         lambda w: w.send("PUT", f"/v2/{IMG}/manifests/evil", data=tiny_manifest(),
                          headers={"Content-Type": OCI_MANIFEST}),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push")),
    Case("anonymous pull of a private repository is challenged for pull",
         lambda w: w.send("GET", f"/v2/{IMG}/manifests/v1"),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull")),
    Case("anonymous blob read of a private repository is challenged",
         lambda w: w.send("GET", f"/v2/{IMG}/blobs/{w.images[IMG].layer_digests[0]}"),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull")),
    Case("anonymous tags/list of a private repository is challenged",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list"),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull")),
    Case("anonymous blob DELETE is challenged for delete",
         lambda w: w.send("DELETE", f"/v2/{IMG}/blobs/{w.images[IMG].layer_digests[0]}"),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:delete")),
    Case("even a public repository needs a (possibly anonymous) token",
         lambda w: w.send("GET", "/v2/alice/public/manifests/v1"),
         401, "UNAUTHORIZED", bearer_challenge("repository:alice/public:pull")),
    # -- an anonymous token ---------------------------------------------------------------------
    Case("an anonymous token cannot pull a private repository",
         lambda w: w.send("GET", f"/v2/{IMG}/manifests/v1", w.bearer(None, f"repository:{IMG}:pull")),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "insufficient_scope")),
    Case("an anonymous token cannot push to a public repository",
         lambda w: w.send("POST", "/v2/alice/public/blobs/uploads/",
                          w.bearer(None, "repository:alice/public:pull,push"), data=b""),
         401, "UNAUTHORIZED", bearer_challenge("repository:alice/public:push", "insufficient_scope")),
    # -- the wrong repository or action -------------------------------------------------------
    Case("a token for repository A is refused on repository B of the same user",
         lambda w: w.send("GET", "/v2/alice/public/tags/list", w.bearer("alice", f"repository:{IMG}:pull,push")),
         401, "UNAUTHORIZED", bearer_challenge("repository:alice/public:pull", "insufficient_scope")),
    Case("a token for one's own repository is refused on another user's",
         lambda w: w.send("GET", "/v2/bob/app/manifests/v1", w.bearer("alice", f"repository:{IMG}:pull")),
         401, "UNAUTHORIZED", bearer_challenge("repository:bob/app:pull", "insufficient_scope")),
    Case("asking for another user's private repository grants nothing",
         lambda w: w.send("GET", "/v2/bob/app/manifests/v1", w.bearer("alice", "repository:bob/app:pull,push")),
         401, "UNAUTHORIZED", bearer_challenge("repository:bob/app:pull", "insufficient_scope")),
    Case("a pull-only token cannot start an upload",
         lambda w: w.send("POST", f"/v2/{IMG}/blobs/uploads/", w.bearer("alice", f"repository:{IMG}:pull"), data=b""),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push", "insufficient_scope")),
    Case("a pull-only token cannot put a manifest",
         lambda w: w.send("PUT", f"/v2/{IMG}/manifests/evil", w.bearer("alice", f"repository:{IMG}:pull"),
                          data=tiny_manifest(), headers={"Content-Type": OCI_MANIFEST}),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push", "insufficient_scope")),
    Case("a token without delete cannot delete a manifest",
         lambda w: w.send("DELETE", f"/v2/{IMG}/manifests/{w.images[IMG].digest}",
                          w.bearer("alice", f"repository:{IMG}:pull,push")),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:delete", "insufficient_scope")),
    Case("a token without delete cannot delete a blob",
         lambda w: w.send("DELETE", f"/v2/{IMG}/blobs/{w.images[IMG].layer_digests[0]}",
                          w.bearer("alice", f"repository:{IMG}:pull,push")),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:delete", "insufficient_scope")),
    Case("a non-owner cannot push to a public repository",
         lambda w: w.send("POST", "/v2/alice/public/blobs/uploads/",
                          w.bearer("bob", "repository:alice/public:pull,push"), data=b""),
         401, "UNAUTHORIZED", bearer_challenge("repository:alice/public:push", "insufficient_scope")),
    Case("a name prefix is not a namespace (alice does not own alice-x/…)",
         lambda w: w.send("POST", "/v2/alice-x/app/blobs/uploads/", w.bearer("alice", "repository:alice-x/app:push"),
                          data=b""),
         401, "UNAUTHORIZED", bearer_challenge("repository:alice-x/app:push", "insufficient_scope")),
    Case("a scoped access token cannot push outside its pattern",
         lambda w: w.send("POST", "/v2/carol/other/blobs/uploads/", carol_ci(w, "repository:carol/other:pull,push"),
                          data=b""),
         401, "UNAUTHORIZED", bearer_challenge("repository:carol/other:push", "insufficient_scope")),
    # -- tokens that are not valid ----------------------------------------------------------
    Case("an expired token (signed by the registry's own key) is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list",
                          sign_token(w.key, claims("alice", [repo_access(IMG, "pull")], issued_ago=400))),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="has expired"),
    Case("a token that is not valid yet is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list",
                          sign_token(w.key, claims("alice", [repo_access(IMG, "pull")], issued_ago=-120))),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="not valid yet"),
    Case("an expired token does not open an upload either",
         lambda w: w.send("POST", f"/v2/{IMG}/blobs/uploads/",
                          sign_token(w.key, claims("alice", [repo_access(IMG, "pull", "push")], issued_ago=400)),
                          data=b""),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push", "invalid_token")),
    Case("a token signed by a second registry's key is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", signed_by_second_registry(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="unknown key"),
    Case("a token signed by a stranger claiming the registry's key id is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", signed_by_stranger_with_our_kid(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="signature is invalid"),
    Case("a token whose claims were rewritten (push added) is refused",
         lambda w: w.send("POST", f"/v2/{IMG}/blobs/uploads/", tampered_claims(w), data=b""),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:push", "invalid_token"), why="signature is invalid"),
    Case("a token with a flipped signature bit is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", flipped_signature(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="signature is invalid"),
    Case("a token whose footer names another key is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", tampered_footer(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="unknown key"),
    Case("a token of another service (same key, wrong audience) is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", from_other_service(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="another service"),
    Case("a token with a forged audience claim (registry's key, aud=other) is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list",
                          sign_token(w.key, claims("alice", [repo_access(IMG, "pull")], aud="other"))),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="another service"),
    Case("an alg=none JWT is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", "eyJhbGciOiJub25lIn0.e30."),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"),
         why="not a v4.public PASETO"),
    Case("an alg=none JWT claiming alice's access is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list",
                          b64u(b'{"alg":"none","typ":"JWT"}') + "."
                          + b64u(json.dumps(claims("alice", [repo_access(IMG, "pull")])).encode()) + "."),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token")),
    Case("a v4.local token string is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", "v4.local." + b64u(os.urandom(96))),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"),
         why="not a v4.public PASETO"),
    Case("a v4.public token without a signature is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list",
                          "v4.public." + b64u(json.dumps(claims("alice", [repo_access(IMG, "pull")])).encode())
                          + "." + b64u(json.dumps({"kid": w.key.kid}).encode())),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token")),
    Case("an empty bearer is no token",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", authorization="Bearer "),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull")),
    Case("a garbage bearer is refused",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", "%%%garbage!!!"),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token")),
    Case("an access token (orp_…) is not a bearer token",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", w.orp["alice"]),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token")),
    Case("Basic credentials on a registry route get the Bearer challenge",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", authorization=basic("alice", w.orp["alice"])),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull")),
    Case("a refresh token is not an access token",
         lambda w: w.send("GET", f"/v2/{IMG}/tags/list", refresh_token_of(w)),
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="refresh token"),
    Case("a 64 KiB Authorization header is refused quickly",
         huge_bearer,
         401, "UNAUTHORIZED", bearer_challenge(f"repository:{IMG}:pull", "invalid_token"), why="too large"),
    Case("an invalid bearer on the catalog is refused, not taken as anonymous",
         lambda w: w.send("GET", "/v2/_catalog", "garbage"),
         401, "UNAUTHORIZED", bearer_challenge(None, "invalid_token")),
    # -- path traversal ---------------------------------------------------------------------
    dot_segments("../ in the URL does not reach another repository",
                 "/v2/alice/../bob/app/manifests/v1",
                 lambda w: w.bearer("alice", f"repository:{IMG}:pull", "repository:alice/../bob/app:pull"),
                 resolved="bob/app"),
    dot_segments("%2e%2e in the URL does not reach another repository",
                 "/v2/alice/%2e%2e/bob/app/manifests/v1",
                 lambda w: w.bearer("alice", "repository:alice/%2e%2e/bob/app:pull"),
                 resolved="bob/app"),
    dot_segments("../.. out of one's own repository does not reach another's",
                 "/v2/bob/app/../../alice/app/manifests/v1",
                 lambda w: w.bearer("bob", "repository:bob/app:pull"),
                 resolved=IMG),
    # -- credentials at /token ------------------------------------------------------------------
    Case("/token: a wrong password is refused",
         lambda w: get_token(w.reg, [f"repository:{IMG}:pull"], "alice", "hunter2"),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: a wrong secret of the right length is refused",
         lambda w: get_token(w.reg, [f"repository:{IMG}:pull"], "alice", wrong_secret(w)),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: a secret missing its last character is refused",
         lambda w: get_token(w.reg, [f"repository:{IMG}:pull"], "alice", w.orp["alice"][:-1]),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: another user's access token is refused",
         lambda w: get_token(w.reg, [f"repository:{IMG}:pull"], "alice", w.orp["bob"]),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: a revoked access token is refused",
         revoked_token_at_token_endpoint, 401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: a deleted user's access token is refused",
         deleted_users_token, 401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: an access token past its expiry is refused",
         born_expired_token, 401, "UNAUTHORIZED", basic_challenge()),
    Case("/token: malformed Basic credentials are refused",
         lambda w: get_token(w.reg, [], authorization="Basic !!!not-base64!!!"),
         401, "UNAUTHORIZED", lambda w: 'Basic realm="openregistry"'),
    Case("/token: a 64 KiB secret is refused quickly",
         huge_basic_at_token, 401, "UNAUTHORIZED", basic_challenge()),
    Case("/token POST: a wrong password is refused",
         lambda w: post_token(w.reg, {"grant_type": "password", "username": "alice", "password": wrong_secret(w),
                                      "service": SERVICE, "scope": f"repository:{IMG}:pull"}),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token POST: an access token is not a refresh token",
         lambda w: post_token(w.reg, {"grant_type": "refresh_token", "service": SERVICE,
                                      "refresh_token": w.bearer("alice", f"repository:{IMG}:pull")}),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token POST: a forged refresh token is refused",
         lambda w: post_token(w.reg, {"grant_type": "refresh_token", "service": SERVICE,
                                      "refresh_token": sign_token(SigningKey.generate(), claims(
                                          "root", [], lifetime=3600, purpose="refresh",
                                          tid=token_id(w.orp["root"])))}),
         401, "UNAUTHORIZED", basic_challenge()),
    Case("/token POST: an unknown grant type is unsupported",
         lambda w: post_token(w.reg, {"grant_type": "client_credentials", "client_id": "alice"}),
         400, "UNSUPPORTED"),
    # -- uploads belong to whoever opened them ----------------------------------------------
    Case("an upload opened by alice cannot be continued by an admin",
         lambda w: w.send("PATCH", alice_upload(w), w.bearer("root", f"repository:{IMG}:pull,push"), data=b"x",
                          headers={"Content-Type": "application/octet-stream", "Content-Range": "0-0"}),
         404, "BLOB_UPLOAD_UNKNOWN"),
    Case("an upload opened by alice cannot be continued by bob under his own repository",
         lambda w: w.send("PATCH", alice_upload(w).replace(f"/v2/{IMG}/", "/v2/bob/app/"),
                          w.bearer("bob", "repository:bob/app:pull,push"), data=b"x",
                          headers={"Content-Type": "application/octet-stream", "Content-Range": "0-0"}),
         404, "BLOB_UPLOAD_UNKNOWN"),
    # -- the /api ---------------------------------------------------------------------------
    Case("/api: changing visibility needs credentials",
         lambda w: w.api("PUT", f"repositories/{IMG}/visibility", json={"visibility": "public"}),
         401, "unauthorized", basic_challenge()),
    Case("/api: a user cannot publish another user's repository",
         lambda w: w.api("PUT", f"repositories/{IMG}/visibility", "bob", json={"visibility": "public"}),
         403, "forbidden"),
    Case("/api: a bearer token does not sign in to the API",
         lambda w: w.api("GET", "tokens", headers={"Authorization": f"Bearer {w.bearer('alice')}"}),
         401, "unauthorized", basic_challenge()),
    Case("/api: a scoped access token cannot create tokens",
         lambda w: w.api("POST", "tokens", "carol", w.orp["carol-ci"], json={"name": "wider"}),
         403, "forbidden"),
    Case("/api: a scoped access token cannot list tokens",
         lambda w: w.api("GET", "tokens", "carol", w.orp["carol-ci"]),
         403, "forbidden"),
    Case("/api: a scoped access token cannot revoke the user's other tokens",
         lambda w: revoke_with_scoped_token(w, token_id(w.orp["carol"])),
         403, "forbidden"),
    Case("/api: a scoped access token cannot revoke itself either",
         lambda w: revoke_with_scoped_token(w, token_id(w.orp["carol-ci"])),
         403, "forbidden"),
    Case("/api: a token scoped to every repository is still scoped",
         lambda w: w.api("GET", "tokens", "carol", w.accounts.create_token(
             "carol", name="star-api", scopes=["repository:*:pull,push,delete"])),
         403, "forbidden"),
    Case("/api: an admin's scoped token cannot list tokens",
         lambda w: w.api("GET", "tokens", "root", w.accounts.create_token(
             "root", name="root-ci", scopes=["repository:*:pull"])),
         403, "forbidden"),
    Case("/api: a user cannot revoke another user's token",
         lambda w: w.api("DELETE", f"tokens/{token_id(w.orp['alice'])}", "bob"),
         404, "not_found"),
    Case("/api: publishing a repository that does not exist",
         lambda w: w.api("PUT", "repositories/alice/nothing-here/visibility", "alice", json={"visibility": "public"}),
         404, "not_found"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_security_matrix(world, case):
    r = case.send(world)
    assert_error(r, case.status, case.code)
    if case.why is not None:
        assert case.why in json.loads(r.content)["errors"][0]["message"]
    if case.www is not None:
        assert r.headers.get("WWW-Authenticate") == case.www(world)
    elif case.status != 401:
        assert "WWW-Authenticate" not in r.headers


# ---------------------------------------------------------------------------
# scopes as attack surface
# ---------------------------------------------------------------------------

HOSTILE_SCOPES = [
    "repository:bob/app:pull",
    "repository:alice/app:pull repository:bob/app:push",
    "repository:bob/app:pull,push,delete,*",
    "repository:bob/app:*",
    'repository:"bob/app":pull',
    'repository:bob/app":pull,push',
    'repository:alice/app:pull","repository:bob/app:push',
    'repository:alice/app:pull",scope="repository:bob/app:push',
    "repository:bob/app' OR '1'='1:pull",
    "repository:alice/app:pull'; UPDATE repositories SET visibility='public';--",
    "repository:alice/app:pull\nrepository:bob/app:push",
    "repository:alice/app:pull\x00repository:bob/app:push",
    "repository:alice/../bob/app:pull,push",
    "repository:alice/%2e%2e/bob/app:pull",
    "repository:../bob/app:pull",
    "repository:/bob/app:pull",
    "repository:bob/app/:pull",
    "repository:alice:pull:bob/app:push",
    "repository:alice/app:pull:bob/app:push",
    "repository:BOB/app:pull",
    "repository:bob/app:PULL",
    "repository:*:pull",
    "repository:bob/*:pull",
    "registry:catalog:*",
    "repository:" + "a/" * 2000 + "x:pull",
    "repository:alice/" + "x" * 4000 + ":pull,push",
]


def allowed_for_alice(world: World, kind: str, name: str, actions: set[str]) -> bool:
    if kind != "repository":
        return False
    if name == "alice" or name.startswith("alice/"):
        return actions <= {"pull", "push", "delete"} and ".." not in name and "%" not in name
    return name in world.public and actions == {"pull"}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("scope", HOSTILE_SCOPES, ids=[repr(s)[:60] for s in HOSTILE_SCOPES])
def test_hostile_scope_strings_never_grant_more_than_allowed(world, scope, method):
    if method == "GET":
        r = get_token(world.reg, [scope], "alice", world.orp["alice"])
    else:
        r = post_token(world.reg, {"grant_type": "password", "username": "alice", "password": world.orp["alice"],
                                   "service": SERVICE, "scope": scope})
    assert r.status_code == 200, r.text  # asking for too much is not an error: nothing is granted
    token = r.json()["access_token"]
    assert verify_token(token, world.key.public)
    assert claims_of(token)["sub"] == "alice"
    for (kind, name), actions in granted(token).items():
        assert allowed_for_alice(world, kind, name, actions), f"{scope!r} granted {actions} on {kind}:{name}"
    r = world.send("GET", "/v2/_catalog?n=10000")
    assert "alice/app" not in r.json()["repositories"], "a scope string changed a repository's visibility"


def test_a_very_long_scope_list_in_a_form_grants_nothing_extra(world):
    form = {"grant_type": "password", "username": "alice", "password": world.orp["alice"], "service": SERVICE}
    scope = " ".join(f"repository:bob/app{i}:pull,push" for i in range(1200))  # ~50 KiB encoded
    r = post_token(world.reg, dict(form, scope=scope + " repository:alice/app:pull"))
    assert r.status_code == 200, r.text
    assert granted(r.json()["access_token"]) == {("repository", "alice/app"): {"pull"}}
    # A form over the 64 KiB limit is refused unread, not half-parsed.
    r = post_token(world.reg, dict(form, scope=scope * 2))
    assert_error(r, 400, "SIZE_INVALID")


# ---------------------------------------------------------------------------
# mounts, manifests and uploads across users
# ---------------------------------------------------------------------------

def test_mounting_from_another_users_private_repository_is_a_plain_upload(world):
    secret_layer = world.images[IMG].layer_digests[0]
    bob = world.client("bob", "repository:bob/app:pull,push", f"repository:{IMG}:pull")
    try:
        r = bob.post(f"/v2/bob/app/blobs/uploads/?mount={secret_layer}&from={IMG}", data=b"")
        assert r.status_code == 202, f"mount from a repository bob cannot pull -> {r.status_code} (want 202)"
        assert "/blobs/uploads/" in r.headers["Location"]
        assert "Docker-Content-Digest" not in r.headers
        unknown = sha256_digest(os.urandom(32))
        r2 = bob.post(f"/v2/bob/app/blobs/uploads/?mount={unknown}&from={IMG}", data=b"")
        assert r2.status_code == 202
        assert sorted(r.headers) == sorted(r2.headers), "the answer reveals whether the blob exists there"
        assert bob.head(f"/v2/bob/app/blobs/{secret_layer}").status_code == 404
        assert_error(bob.get(f"/v2/bob/app/blobs/{secret_layer}"), 404, "BLOB_UNKNOWN")
        r = bob.get(f"/v2/{IMG}/blobs/{secret_layer}")
        assert_error(r, 401, "UNAUTHORIZED")
    finally:
        bob.close()
    # Contrast: mounting from a repository one may pull is a real mount (201).
    public_layer = world.images["alice/public"].layer_digests[0]
    bob = world.client("bob", "repository:bob/app:pull,push", "repository:alice/public:pull")
    try:
        r = bob.post(f"/v2/bob/app/blobs/uploads/?mount={public_layer}&from=alice/public", data=b"")
        assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == public_layer
    finally:
        bob.close()


def test_a_manifest_cannot_borrow_another_users_private_blob(world):
    image = world.images[IMG]
    layer = image.layers[0]
    bob = world.client("bob", "repository:bob/borrow:pull,push")
    try:
        config = b'{"architecture":"amd64","os":"linux"}'
        bob.push_blob("bob/borrow", config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                                          "size": len(config)},
                               "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer),
                                           "size": len(layer)}]}).encode()
        assert_error(bob.put_manifest("bob/borrow", "v1", manifest), 400, "MANIFEST_BLOB_UNKNOWN")
        assert_error(bob.get(f"/v2/bob/borrow/blobs/{sha256_digest(layer)}"), 404, "BLOB_UNKNOWN")
    finally:
        bob.close()


def test_an_upload_answers_only_to_whoever_opened_it(world):
    path = alice_upload(world)
    root = client_with(world.reg, world.bearer("root", f"repository:{IMG}:pull,push"))
    try:
        assert_error(root.get(path), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(root.put(with_query(path, digest=sha256_digest(b"")), data=b""), 404, "BLOB_UPLOAD_UNKNOWN")
        assert_error(root.delete(path), 404, "BLOB_UPLOAD_UNKNOWN")
    finally:
        root.close()
    # …while alice, with any token of hers, carries on.
    alice = world.client("alice", f"repository:{IMG}:pull,push")
    try:
        r = alice.patch_chunk(world.reg.base_url + path, b"mine", 0)
        assert r.status_code == 202, r.text
        r = alice.finish_upload(alice.location(r), sha256_digest(b"mine"))
        assert r.status_code == 201, r.text
    finally:
        alice.close()


# ---------------------------------------------------------------------------
# catalog, scoped tokens, the /api, the CLI
# ---------------------------------------------------------------------------

def catalog(world: World, token: Optional[str]) -> list[str]:
    r = world.send("GET", "/v2/_catalog?n=10000", token)
    assert r.status_code == 200, r.text
    return r.json()["repositories"]


def test_catalog_shows_public_repositories_and_the_callers_namespace_or_all_to_an_admin(world):
    owned = lambda user, names: {n for n in names if n == user or n.startswith(user + "/")}
    anonymous = catalog(world, None)
    assert "alice/public" in anonymous and "alice/app" not in anonymous and "bob/app" not in anonymous
    assert all(n in world.public for n in anonymous), set(anonymous) - world.public
    assert catalog(world, world.bearer(None)) == anonymous

    alice = catalog(world, world.bearer("alice"))
    assert {"alice/app", "alice/public"} <= set(alice) and "bob/app" not in alice
    assert all(n in world.public or n in owned("alice", alice) for n in alice)

    bob = catalog(world, world.bearer("bob"))
    assert {"bob/app", "alice/public"} <= set(bob) and "alice/app" not in bob

    alice_asking_for_all = world.bearer("alice", "registry:catalog:*")
    assert granted(alice_asking_for_all) == {}
    assert catalog(world, alice_asking_for_all) == alice

    root = catalog(world, world.bearer("root"))
    assert "alice/app" not in root and "bob/app" not in root, "an admin sees everything only when asking"
    everything = world.bearer("root", "registry:catalog:*")
    assert granted(everything) == {("registry", "catalog"): {"*"}}
    every = catalog(world, everything)
    assert {"alice/app", "alice/public", "bob/app"} <= set(every)
    assert set(alice) | set(bob) <= set(every)


def test_a_scoped_access_token_stays_inside_its_pattern(world):
    ci = carol_ci(world, "repository:carol/ci/app:pull,push,delete", "repository:carol/elsewhere:pull,push",
                  "repository:carol/ci:push")
    assert granted(ci) == {("repository", "carol/ci/app"): {"pull", "push"}}
    client = client_with(world.reg, ci)
    try:
        _, digest = client.push_image("carol/ci/app", "v1")
        r = client.delete(f"/v2/carol/ci/app/manifests/{digest}")
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        assert_error(client.post("/v2/carol/elsewhere/blobs/uploads/", data=b""), 401, "UNAUTHORIZED")
        assert_error(client.post("/v2/carol/ci/blobs/uploads/", data=b""), 401, "UNAUTHORIZED")
    finally:
        client.close()
    everything = world.accounts.create_token("carol", name="star", scopes=["repository:*:pull,push,delete"])
    r = get_token(world.reg, ["repository:bob/app:pull,push", "repository:carol/x:push"], "carol", everything)
    assert granted(r.json()["token"]) == {("repository", "carol/x"): {"push"}}, "a `*` pattern does not widen"


def test_api_lists_tokens_without_secrets_creates_and_revokes(world):
    r = world.api("GET", "tokens", "alice")
    assert r.status_code == 200
    tokens = r.json()["tokens"]
    assert token_id(world.orp["alice"]) in {t["id"] for t in tokens}
    for t in tokens:
        assert set(t) == {"id", "name", "scopes", "created_at_ms", "expires_at_ms", "revoked_at_ms"}
    secret = token_secret(world.orp["alice"])
    assert secret not in r.text and hashlib.sha256(secret.encode()).hexdigest() not in r.text
    assert "orp_" not in r.text

    r = world.api("POST", "tokens", "alice", json={"name": "from-api", "scopes": ["repository:alice/ci/*:pull"]})
    assert r.status_code == 201, r.text
    made = r.json()
    assert set(made) == {"id", "token"} and made["token"].startswith(f"orp_{made['id']}_")
    authkit.remember_credentials("alice", made["token"])
    r = get_token(world.reg, ["repository:alice/ci/x:pull,push", "repository:alice/app:pull"], "alice", made["token"])
    assert granted(r.json()["token"]) == {("repository", "alice/ci/x"): {"pull"}}
    listed = {t["id"]: t for t in world.api("GET", "tokens", "alice").json()["tokens"]}
    assert listed[made["id"]]["scopes"] == [{"repository": "alice/ci/*", "actions": ["pull"]}]
    assert listed[made["id"]]["revoked_at_ms"] is None

    r = world.api("POST", "tokens", "alice", json={"name": "bad", "scopes": ["repository:bob app:pull"]})
    assert_error(r, 400, "bad_request")

    r = world.api("DELETE", f"tokens/{made['id']}", "alice")
    assert r.status_code == 200 and r.json() == {}
    assert_error(get_token(world.reg, ["repository:alice/ci/x:pull"], "alice", made["token"]), 401, "UNAUTHORIZED")
    assert_error(world.api("DELETE", f"tokens/{made['id']}", "alice"), 404, "not_found")
    listed = {t["id"]: t for t in world.api("GET", "tokens", "alice").json()["tokens"]}
    assert listed[made["id"]]["revoked_at_ms"] is not None
    assert get_token(world.reg, [], "alice", world.orp["alice"]).status_code == 200, "only that token was revoked"


def test_cli_lists_tokens_without_secrets_and_revokes(world):
    world.accounts.create_user("cli")
    a = world.accounts.create_token("cli", name="first", scopes=["repository:cli/x/*:pull"])
    b = world.accounts.create_token("cli", name="second")
    proc = world.accounts.run("token", "list", "--user", "cli")
    assert token_secret(a) not in proc.stdout + proc.stderr and token_secret(b) not in proc.stdout + proc.stderr
    rows = {row[0]: row for row in world.accounts.list_tokens("cli")}
    assert rows[token_id(a)][1:] == ["first", "active", "repository:cli/x/*:pull"]
    assert rows[token_id(b)][1:] == ["second", "active", "all"]
    world.accounts.revoke_token(token_id(a))
    assert world.accounts.list_tokens("cli") and {r[0]: r[2] for r in world.accounts.list_tokens("cli")} == {
        token_id(a): "revoked", token_id(b): "active"}
    assert world.accounts.run("token", "revoke", token_id(a), check=False).returncode != 0, "revoked twice"
    assert world.accounts.run("user", "create", "Not_Valid", check=False).returncode != 0
    assert world.accounts.run("token", "create", "--user", "cli", "--name", "x", "--scope", "repository:../x:pull",
                              check=False).returncode != 0


def test_refresh_tokens_stand_for_their_access_token(world):
    world.accounts.create_user("frank")
    orp = world.accounts.create_token("frank", name="f")
    scope = "repository:frank/app:pull,push"
    assert "refresh_token" not in get_token(world.reg, [scope], "frank", orp).json()
    assert "refresh_token" not in get_token(world.reg, ["repository:alice/public:pull"], offline=True).json()
    offline = get_token(world.reg, [scope], "frank", orp, offline=True).json()
    refresh = offline["refresh_token"]
    c = claims_of(refresh)
    assert (c["purpose"], c["tid"], c["access"], c["sub"]) == ("refresh", token_id(orp), [], "frank")

    r = post_token(world.reg, {"grant_type": "password", "username": "frank", "password": orp,
                               "service": SERVICE, "scope": scope})
    assert r.status_code == 200 and "refresh_token" in r.json()
    r = post_token(world.reg, {"grant_type": "refresh_token", "refresh_token": refresh, "service": SERVICE,
                               "scope": "repository:frank/app:pull repository:alice/app:pull"})
    assert r.status_code == 200, r.text
    assert granted(r.json()["access_token"]) == {("repository", "frank/app"): {"pull"}}

    world.accounts.revoke_token(token_id(orp))
    r = post_token(world.reg, {"grant_type": "refresh_token", "refresh_token": refresh, "service": SERVICE})
    assert_error(r, 401, "UNAUTHORIZED")

    orp2 = world.accounts.create_token("frank", name="f2")
    refresh2 = get_token(world.reg, [scope], "frank", orp2, offline=True).json()["refresh_token"]
    world.accounts.delete_user("frank")
    r = post_token(world.reg, {"grant_type": "refresh_token", "refresh_token": refresh2, "service": SERVICE})
    assert_error(r, 401, "UNAUTHORIZED")


def test_access_tokens_are_compared_in_constant_time():
    """Black-box: wrong secrets of equal length are refused (the matrix). White-box: the hash of
    the presented secret is compared with `constant_time_eq`, which has no early exit."""
    store = (REPO_ROOT / "worker/registry/src/auth/store.rs").read_text()
    body = store.split("pub async fn authenticate(", 1)[1].split("\npub ", 1)[0]
    assert "constant_time_eq(hash_secret(secret).as_bytes(), stored.as_bytes())" in body
    assert not re.search(r"stored\s*[!=]=|[!=]=\s*stored|hash_secret\(secret\)\s*[!=]=", body)
    module = (REPO_ROOT / "worker/registry/src/auth/mod.rs").read_text()
    ct = module.split("pub fn constant_time_eq(", 1)[1].split("\n}\n", 1)[0]
    assert ".fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0" in ct
    assert "return" not in ct.split("if a.len() != b.len()", 1)[1].split("}", 1)[1]


def test_a_huge_authorization_header_does_not_hurt_the_server(world):
    for size in (64 * 1024, 1024 * 1024):
        started = time.monotonic()
        try:
            r = requests.get(f"{world.reg.base_url}/v2/{IMG}/tags/list",
                             headers={"Authorization": "Bearer " + "A" * size}, timeout=10)
            assert r.status_code in (401, 431), r.status_code
            if size > 400 * 1024:
                assert r.status_code == 431
        except requests.ConnectionError:
            assert size > 400 * 1024, "the server dropped a 64 KiB header instead of answering 401"
        assert time.monotonic() - started < 3
    r = world.send("GET", f"/v2/{IMG}/tags/list", world.bearer("alice", f"repository:{IMG}:pull"))
    assert r.status_code == 200, "the registry stopped serving after huge headers"
    assert world.reg.running()


# ---------------------------------------------------------------------------
# formerly known bugs, fixed: regression tests
# ---------------------------------------------------------------------------

def test_a_challenge_never_carries_parameters_injected_through_the_path(world):
    # A name that is not a repository name is refused before any challenge is built, so nothing
    # from the path can reach WWW-Authenticate.
    target = '/v2/a",realm="http://attacker.invalid/token/manifests/latest'
    r = world.raw("GET", target)
    assert_error(r, 400, "NAME_INVALID")
    assert "WWW-Authenticate" not in r.headers


def test_a_scoped_access_token_cannot_publish_repositories_outside_its_scope(world):
    world.push("carol", "carol/secret")
    narrow = world.accounts.create_token("carol", name="narrow", scopes=["repository:carol/ci/*:pull"])
    try:
        r = world.api("PUT", "repositories/carol/secret/visibility", "carol", narrow, json={"visibility": "public"})
        assert_error(r, 403, "forbidden")
    finally:
        world.api("PUT", "repositories/carol/secret/visibility", "carol", json={"visibility": "private"})


def test_basic_credentials_without_a_colon_are_refused(world):
    credentials = base64.b64encode(world.orp["alice"].encode()).decode()  # the token alone, no user
    r = get_token(world.reg, [f"repository:{IMG}:pull"], authorization=f"Basic {credentials}")
    assert_error(r, 401, "UNAUTHORIZED")


# ---------------------------------------------------------------------------
# last: nothing secret in any log
# ---------------------------------------------------------------------------

def test_no_secret_reaches_any_log(world, module_registry_factory):
    """Runs last in this module: every access token, its secret, the Basic credentials, every
    bearer and refresh token and the signing keys handed out above are absent from the logs of
    every registry (at debug level; the Worker's are Miniflare's and workerd's, the Spin component's the test host's), the CLI's stderr
    and, under E2E_METADATA=neon, the SQL gateway's log."""
    logs = [s.log_path for s in module_registry_factory.started]
    logs += sorted(module_registry_factory.root.glob("cli-*.log"))
    logs += [g.log_path for g in neon_gateway.ALL_GATEWAYS if getattr(g, "log_path", None)]
    texts = {str(p): Path(p).read_text(errors="replace") for p in logs if Path(p).exists()}
    # The native host's request span, or the edge harness's request line (Miniflare's without the
    # query, the Spin test host's with it).
    token_request = "GET /token" if cloudflare_host.EDGE else 'path="/token"'
    assert any(token_request in t for t in texts.values()), "the registry logs do not show the token requests"
    secrets = set(authkit.ISSUED)
    for secret in list(secrets):
        if secret.startswith("v4.public."):
            secrets.add(secret[len("v4.public."):].split(".")[0][-48:])  # the signature's end alone
    assert len(secrets) > 20, f"only {len(secrets)} secrets were collected; the module did not run?"
    leaks = [(path, s[:24] + "…") for path, text in texts.items() for s in secrets if s in text]
    assert not leaks, f"secrets found in logs: {leaks[:10]}"
