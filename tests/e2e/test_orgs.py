"""Organizations ("Org mode"), end to end: `openregistry serve --auth`, or an edge host with
`OPENREGISTRY_AUTH=true`.

The policy under test:

* an organization owns `<org>` and `<org>/…`; its members have a role (reader, developer,
  maintainer, admin, owner) on every repository of the org; grants give a user, a team, a robot
  (`<org>+<name>`), `anonymous` or `signed-in` actions on `<org>/<glob>[:<tag glob>]`;
* the actions are finer than Docker's: `push` (new tags) is not `overwrite-tag` (moving a tag),
  and a tag pattern narrows what names a tag; a token's `access` entry carries `rules` when its
  rights are finer than `pull`/`push`/`delete`, and the registry enforces them (403 `DENIED`);
* rights are evaluated when a token is issued, and a personal access token's scopes only narrow
  them; robots sign in at /token with their secret (`orr_…`) and never at /api;
* a grant is never wider than what its granter holds; the org's members, teams, robots, roles,
  grants and audit log are managed with manage-org (`/api/orgs/…`, or the CLI as operator).

One registry for the module; users, the org `acme`, its members, a robot and its grant come from
the `openregistry org|team|robot|grant` CLI on the registry's own metadata (under an edge host, the
PostgreSQL behind it), the rest through the JSON API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import pytest
import requests

import authkit
import cloudflare_host
import neon_gateway
from authkit import (
    Accounts, AuthRegistryServer, SigningKey, basic, bearer, challenge, claims_of, client_with,
    get_token, granted, remember,
)
from ocihttp import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, assert_error, sha256_digest
from ocilayout import Layout, random_tar_layer
from registry_server import KIND

pytestmark = [
    pytest.mark.skipif(KIND == "distribution",
                       reason="the reference registry has no organizations (nor OpenRegistry's auth)"),
]

SKOPEO = os.environ.get("SKOPEO") or shutil.which("skopeo") or "/usr/bin/skopeo"
ORG = "acme"
ROBOT_SECRET = re.compile(r"orr_[0-9a-f]{16}_[0-9a-f]{64}")


# ---------------------------------------------------------------------------
# the registry, the CLI and the people
# ---------------------------------------------------------------------------

def _auth_env() -> dict[str, str]:
    env = {"OPENREGISTRY_AUTH": "true", "RUST_LOG": "debug"}  # debug: more lines a secret could leak into
    if cloudflare_host.EDGE:
        key = SigningKey.generate()  # an edge host has no data directory to generate its key in
        remember(key.paserk_secret, key.paserk_secret[len("k4.secret."):])
        env["OPENREGISTRY_TOKEN_KEY"] = key.paserk_secret
    return env


def remember_robot(name: str, secret: str) -> None:
    """A robot's secret, for the log scan: the whole text, its secret half, its Basic credentials."""
    remember(secret, secret.split("_")[-1], basic(name, secret)[len("Basic "):])


class OrgAccounts(Accounts):
    """`openregistry user|token|org|team|robot|grant …` on the registry's metadata."""

    def create_org(self, org: str, owner: str) -> None:
        self.run("org", "create", org, "--owner", owner)

    def add_member(self, org: str, user: str, role: str) -> None:
        self.run("org", "add-member", org, user, "--role", role)

    def create_team(self, org: str, team: str) -> None:
        self.run("team", "create", org, team)

    def add_to_team(self, org: str, team: str, user: str) -> None:
        self.run("team", "add", org, team, user)

    def create_robot(self, org: str, name: str, *extra: str) -> str:
        out = self.run("robot", "create", org, name, *extra).stdout
        secret = out.strip()
        remember_robot(f"{org}+{name}", secret)
        assert ROBOT_SECRET.fullmatch(secret) and out in (secret, secret + "\n"), (
            f"`robot create` must print the secret alone on stdout; got {out!r}")
        return secret

    def add_grant(self, org: str, principal: str, resource: str, *, actions: Iterable[str] = (),
                  role: Optional[str] = None) -> str:
        args = ["grant", "add", org, "--principal", principal, "--resource", resource]
        args += ["--role", role] if role else ["--actions", ",".join(actions)]
        out = self.run(*args).stdout
        grant_id = out.strip()
        assert grant_id and not re.search(r"\s", grant_id), f"`grant add` must print the grant id; got {out!r}"
        return grant_id

    def list_grants(self, org: str) -> list[list[str]]:
        out = self.run("grant", "list", org).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def remove_grant(self, org: str, grant_id: str) -> None:
        self.run("grant", "remove", org, grant_id)


@dataclass
class Acme:
    """The org `acme` (owner olivia), set up once.

    members: dan (developer), mia (maintainer), lee (developer, removed by a test), amy (reader,
    and maintainer of acme/app alone through a grant); not members: otto, ursula, stew (a test
    gives stew a custom role); root: an admin.
    The robot acme+ci may pull and push tags `ci-*` of acme/app. Team `builders` exists, empty.
    Repositories (private, pushed by olivia): acme/app:v1, acme/other:v1, acme/pub:v1.
    """
    reg: AuthRegistryServer
    cli: OrgAccounts
    layout: Layout
    image: dict  # the layout's manifest descriptor, tagged v1
    orp: dict[str, str] = field(default_factory=dict)
    robot: str = ""  # acme+ci's secret
    robot_grant: str = ""  # the id of its grant

    def token(self, who: Optional[str], *scopes: str, password: Optional[str] = None) -> str:
        if who is None:
            return bearer(self.reg, scopes)
        return bearer(self.reg, scopes, who, password or self.orp[who])

    def rights(self, who: Optional[str], scope: str, password: Optional[str] = None) -> set[str]:
        """The actions a fresh token of `who` carries on the scope's repository."""
        name = scope.split(":")[1]
        return granted(self.token(who, scope, password=password)).get(("repository", name), set())

    def api(self, method: str, path: str, who: Optional[str] = None, password: Optional[str] = None,
            **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if who is not None:
            headers["Authorization"] = basic(who, password or self.orp[who])
        r = requests.request(method, f"{self.reg.base_url}/api/{path}", headers=headers, timeout=30, **kw)
        assert r.status_code < 500, f"{method} /api/{path} -> {r.status_code}: {r.text[:300]}"
        if r.headers.get("Content-Type", "").startswith("application/json"):
            doc = r.json()
            if isinstance(doc, dict) and isinstance(doc.get("secret"), str) and isinstance(doc.get("name"), str):
                remember_robot(doc["name"], doc["secret"])
        return r

    def ok(self, method: str, path: str, who: str, status: int = 200, **kw) -> dict:
        r = self.api(method, path, who, **kw)
        assert r.status_code == status, f"{method} /api/{path} as {who} -> {r.status_code}: {r.text[:300]}"
        return r.json()

    def client(self, token: Optional[str]) -> OciClient:
        return client_with(self.reg, token)

    def push(self, who: str, repo: str, tag: str, payload: Optional[bytes] = None) -> str:
        client = self.client(self.token(who, f"repository:{repo}:pull,push"))
        try:
            return client.push_image(repo, tag, layers=[payload or os.urandom(1024)])[1]
        finally:
            client.close()

    def digest_of(self, repo: str, tag: str) -> Optional[str]:
        """What `repo:tag` points to, read with an admin's token (None: no such tag)."""
        client = self.client(self.token("root", f"repository:{repo}:pull"))
        try:
            r = client.get_manifest(repo, tag)
        finally:
            client.close()
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return sha256_digest(r.content)


@pytest.fixture(scope="module")
def reg(module_registry_factory):
    return module_registry_factory("orgs", env=_auth_env(), server_class=AuthRegistryServer)


@pytest.fixture(scope="module")
def acme(reg, module_registry_factory) -> Acme:
    root = module_registry_factory.root
    layout = Layout(root / "layout").init()
    image = layout.add_image([(random_tar_layer(20_000, "a.bin"), OCI_LAYER),
                              (random_tar_layer(5_000, "b.bin"), OCI_LAYER)])
    layout.tag(image, "v1")
    w = Acme(reg, OrgAccounts(reg, root / f"cli-{reg.name}.log"), layout, image)
    for name in ("olivia", "dan", "mia", "lee", "amy", "otto", "ursula", "stew"):
        w.cli.create_user(name)
        w.orp[name] = w.cli.create_token(name, name="main")
    w.cli.create_user("root", admin=True)
    w.orp["root"] = w.cli.create_token("root", name="main")

    w.cli.create_org(ORG, owner="olivia")
    for user, role in (("dan", "developer"), ("mia", "maintainer"), ("lee", "developer"), ("amy", "reader")):
        w.cli.add_member(ORG, user, role)
    w.cli.add_grant(ORG, "user:amy", "acme/app", role="maintainer")
    w.cli.create_team(ORG, "builders")
    w.robot = w.cli.create_robot(ORG, "ci")
    w.robot_grant = w.cli.add_grant(ORG, "robot:acme+ci", "acme/app:ci-*", actions=["pull", "push"])
    for repo in ("acme/app", "acme/other", "acme/pub"):
        w.push("olivia", repo, "v1")
    return w


def access_entry(token: str, name: str) -> Optional[dict]:
    """The token's `access` entry for repository `name`, as sent (with its `rules`, if any)."""
    found = [e for e in claims_of(token).get("access", []) if (e["type"], e["name"]) == ("repository", name)]
    assert len(found) <= 1, found
    return found[0] if found else None


def rules_of(entry: dict) -> list[tuple[Optional[str], set[str]]]:
    return [(rule["tags"], set(rule["actions"])) for rule in entry.get("rules", [])]


def upload_image(client: OciClient, repo: str, payload: bytes) -> bytes:
    """The blobs of a one-layer image, uploaded to `repo`; its manifest, not yet put."""
    layer = {"mediaType": OCI_LAYER, "digest": client.push_blob(repo, payload), "size": len(payload)}
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode()
    cfg = {"mediaType": OCI_CONFIG, "digest": client.push_blob(repo, config), "size": len(config)}
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]}).encode()


def skopeo(*args: str, auth_file: Path) -> subprocess.CompletedProcess:
    if not os.path.exists(SKOPEO):
        pytest.fail(f"skopeo not found ({SKOPEO}); run scripts/e2e-deps", pytrace=False)
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(auth_file))  # never the machine's credentials
    return subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def skopeo_push(w: Acme, target: str, creds: str, work_dir: Path) -> subprocess.CompletedProcess:
    auth_file = work_dir / "auth.json"
    auth_file.write_text("{}")
    return skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds,
                  f"oci:{w.layout.root}:v1", f"docker://{w.reg.host}/{target}", auth_file=auth_file)


# ---------------------------------------------------------------------------
# robots
# ---------------------------------------------------------------------------

def test_a_robot_pushes_with_skopeo_to_the_tags_its_grant_names(acme, work_dir):
    proc = skopeo_push(acme, "acme/app:ci-1", f"acme+ci:{acme.robot}", work_dir)
    assert proc.returncode == 0, f"skopeo copy as acme+ci failed:\n{proc.stderr}"
    assert acme.digest_of("acme/app", "ci-1") == acme.image["digest"]


def test_a_robot_is_refused_on_tags_outside_its_grant(acme, work_dir):
    proc = skopeo_push(acme, "acme/app:release-1", f"acme+ci:{acme.robot}", work_dir)
    assert proc.returncode != 0, "acme+ci pushed acme/app:release-1"
    assert "denied" in proc.stderr.lower(), proc.stderr
    assert acme.digest_of("acme/app", "release-1") is None

    token = acme.token("acme+ci", "repository:acme/app:pull,push", password=acme.robot)
    client = acme.client(token)
    try:
        manifest = upload_image(client, "acme/app", os.urandom(512))  # blobs: the whole repository
        assert_error(client.put_manifest("acme/app", "release-1", manifest), 403, "DENIED")
        assert client.put_manifest("acme/app", "ci-2", manifest).status_code == 201
    finally:
        client.close()
    assert acme.digest_of("acme/app", "release-1") is None


def test_a_robot_has_nothing_on_repositories_outside_its_grant(acme, work_dir):
    proc = skopeo_push(acme, "acme/other:ci-1", f"acme+ci:{acme.robot}", work_dir)
    assert proc.returncode != 0, "acme+ci pushed to acme/other"
    assert acme.digest_of("acme/other", "ci-1") is None

    token = acme.token("acme+ci", "repository:acme/other:pull,push", password=acme.robot)
    assert granted(token) == {}
    client = acme.client(token)
    try:
        r = client.put_manifest("acme/other", "ci-1", acme.layout.read_blob(acme.image["digest"]))
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["WWW-Authenticate"] == challenge(acme.reg, "repository:acme/other:push", "insufficient_scope")
    finally:
        client.close()


def test_a_tag_narrowed_grant_puts_rules_in_the_token(acme):
    grants = {str(g["id"]): g for g in acme.ok("GET", f"orgs/{ORG}/grants", "olivia")["grants"]}
    made = grants[acme.robot_grant]  # by the CLI
    assert (made["principal"], made["resource"], made["role"]) == ("robot:acme+ci", "acme/app:ci-*", None)
    assert set(made["actions"]) == {"pull", "push"}
    entry = access_entry(acme.token("acme+ci", "repository:acme/app:pull,push", password=acme.robot), "acme/app")
    assert entry is not None and set(entry["actions"]) == {"pull", "push"}
    assert ("ci-*", {"pull", "push"}) in rules_of(entry), entry
    assert not any(tags is None and "push" in actions for tags, actions in rules_of(entry)), entry


def test_robot_credentials_cannot_call_the_api(acme):
    calls = [("GET", "orgs", None), ("GET", f"orgs/{ORG}", None), ("GET", f"orgs/{ORG}/robots", None),
             ("POST", f"orgs/{ORG}/robots", {"name": "spawn"}),
             ("PUT", "repositories/acme/app/visibility", {"visibility": "public"}),
             ("GET", "tokens", None), ("POST", "tokens", {"name": "escape"})]
    answers = {f"{method} /api/{path}": acme.api(method, path, "acme+ci", acme.robot, json=body)
               for method, path, body in calls}
    wrong = {call: (r.status_code, r.text[:120]) for call, r in answers.items()
             if r.status_code != 403 or r.json().get("error", {}).get("code") != "forbidden"}
    assert not wrong, f"robot credentials must get 403 forbidden at /api: {wrong}"


def test_a_rotated_robot_secret_is_refused_and_the_new_one_works(acme):
    made = acme.ok("POST", f"orgs/{ORG}/robots", "olivia", 201, json={"name": "rot"})
    assert made["name"] == "acme+rot" and ROBOT_SECRET.fullmatch(made["secret"])
    old = made["secret"]
    assert get_token(acme.reg, ["repository:acme/app:pull"], "acme+rot", old).status_code == 200
    listed = acme.api("GET", f"orgs/{ORG}/robots", "olivia")
    assert listed.status_code == 200 and old not in listed.text and old.split("_")[-1] not in listed.text

    rotated = acme.ok("POST", f"orgs/{ORG}/robots/rot/secret", "olivia", json={})
    new = rotated["secret"]
    assert ROBOT_SECRET.fullmatch(new) and new != old
    assert_error(get_token(acme.reg, ["repository:acme/app:pull"], "acme+rot", old), 401, "UNAUTHORIZED")
    assert get_token(acme.reg, ["repository:acme/app:pull"], "acme+rot", new).status_code == 200
    robots = {r["name"]: r for r in acme.ok("GET", f"orgs/{ORG}/robots", "olivia")["robots"]}
    entry = robots.get("acme+rot") or robots.get("rot")
    assert entry is not None and entry["rotated_at_ms"] is not None, robots


def test_an_expired_robot_is_refused(acme):
    proc = acme.cli.run("robot", "create", ORG, "old", "--expires-in-days", "0", check=False)
    if proc.returncode != 0:
        pytest.skip(f"`robot create --expires-in-days 0` is refused: {proc.stderr.strip()[:200]}")
    secret = proc.stdout.strip()
    assert ROBOT_SECRET.fullmatch(secret), proc.stdout
    remember_robot("acme+old", secret)
    assert_error(get_token(acme.reg, ["repository:acme/app:pull"], "acme+old", secret), 401, "UNAUTHORIZED")


# ---------------------------------------------------------------------------
# roles, tags and tokens
# ---------------------------------------------------------------------------

def test_a_developer_pushes_new_tags_but_cannot_move_existing_ones(acme):
    client = acme.client(acme.token("dan", "repository:acme/app:pull,push"))
    try:
        first = upload_image(client, "acme/app", os.urandom(600))
        second = upload_image(client, "acme/app", os.urandom(700))
        assert client.put_manifest("acme/app", "dev-1", first).status_code == 201
        assert_error(client.put_manifest("acme/app", "dev-1", second), 403, "DENIED")
        assert client.put_manifest("acme/app", "dev-1", first).status_code == 201, "the same digest again is fine"
        assert_error(client.put_manifest("acme/app", "v1", second), 403, "DENIED")
    finally:
        client.close()
    assert acme.digest_of("acme/app", "dev-1") == sha256_digest(first)

    maintainer = acme.client(acme.token("mia", "repository:acme/app:pull,push"))
    try:
        assert maintainer.put_manifest("acme/app", "dev-1", second).status_code == 201
    finally:
        maintainer.close()
    assert acme.digest_of("acme/app", "dev-1") == sha256_digest(second)


def test_push_without_overwrite_tag_puts_rules_in_the_token_and_full_rights_do_not(acme):
    developer = access_entry(acme.token("dan", "repository:acme/app:pull,push"), "acme/app")
    assert developer is not None and set(developer["actions"]) == {"pull", "push"}
    assert rules_of(developer) == [(None, {"pull", "push"})], developer
    maintainer = access_entry(acme.token("mia", "repository:acme/app:pull,push"), "acme/app")
    assert maintainer is not None and set(maintainer["actions"]) == {"pull", "push"}
    assert "rules" not in maintainer, maintainer


def test_roles_apply_to_every_repository_of_the_org_and_nothing_outside(acme):
    assert acme.rights("dan", "repository:acme/new/deep:pull,push,delete") == {"pull", "push"}
    assert acme.rights("dan", "repository:acme:pull") == {"pull"}
    assert acme.rights("mia", "repository:acme/other:pull,push,delete") == {"pull", "push", "delete"}
    assert acme.rights("amy", "repository:acme/other:pull,push") == {"pull"}
    assert acme.rights("amy", "repository:acme/app:pull,push,delete") == {"pull", "push", "delete"}
    assert acme.rights("dan", "repository:acmex/app:pull") == set()
    assert acme.rights("otto", "repository:acme/app:pull") == set()


def test_a_scoped_access_token_only_narrows_a_members_rights(acme):
    narrow = acme.cli.create_token("mia", name="pull-only", scopes=["repository:acme/app:pull"])
    assert acme.rights("mia", "repository:acme/app:pull,push,delete", password=narrow) == {"pull"}
    assert acme.rights("mia", "repository:acme/other:pull", password=narrow) == set()
    assert acme.rights("mia", "repository:acme/app:pull,push,delete") == {"pull", "push", "delete"}
    client = acme.client(acme.token("mia", "repository:acme/app:pull,push", password=narrow))
    try:
        r = client.put_manifest("acme/app", "narrow-1", acme.layout.read_blob(acme.image["digest"]))
        assert_error(r, 401, "UNAUTHORIZED")
        assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    finally:
        client.close()


def test_a_removed_members_next_token_grants_nothing(acme):
    assert acme.rights("lee", "repository:acme/app:pull,push") == {"pull", "push"}
    assert acme.ok("DELETE", f"orgs/{ORG}/members/lee", "olivia") == {}
    assert acme.rights("lee", "repository:acme/app:pull,push") == set()
    assert_error(acme.api("DELETE", f"orgs/{ORG}/members/lee", "olivia"), 404, "not_found")


def test_a_team_grant_reaches_its_members_and_only_org_members_may_join(acme):
    grant = acme.ok("POST", f"orgs/{ORG}/grants", "olivia", 201,
                    json={"principal": "team:builders", "resource": "acme/tools-*", "actions": ["pull", "push"]})
    assert (grant["principal"], grant["resource"]) == ("team:builders", "acme/tools-*")
    assert acme.rights("amy", "repository:acme/tools-x:pull,push") == {"pull"}
    assert acme.ok("PUT", f"orgs/{ORG}/teams/builders/members/amy", "olivia") == {"team": "builders", "user": "amy"}
    assert acme.rights("amy", "repository:acme/tools-x:pull,push") == {"pull", "push"}
    assert acme.rights("amy", "repository:acme/toolbox:pull,push") == {"pull"}
    teams = {t["name"]: t["members"] for t in acme.ok("GET", f"orgs/{ORG}/teams", "olivia")["teams"]}
    assert teams["builders"] == ["amy"]
    assert_error(acme.api("PUT", f"orgs/{ORG}/teams/builders/members/otto", "olivia"), 400, "bad_request")
    assert acme.ok("DELETE", f"orgs/{ORG}/teams/builders/members/amy", "olivia") == {}
    assert acme.rights("amy", "repository:acme/tools-x:pull,push") == {"pull"}


def test_anonymous_pulls_a_public_org_repository_and_nothing_private(acme):
    def anonymous_pull(repo: str) -> requests.Response:
        client = acme.client(acme.token(None, f"repository:{repo}:pull"))
        try:
            return client.get_manifest(repo, "v1")
        finally:
            client.close()

    assert_error(anonymous_pull("acme/pub"), 401, "UNAUTHORIZED")
    r = acme.api("PUT", "repositories/acme/pub/visibility", "dan", json={"visibility": "public"})
    assert_error(r, 403, "forbidden")  # a developer has no manage-repo
    assert_error(anonymous_pull("acme/pub"), 401, "UNAUTHORIZED")

    assert acme.ok("PUT", "repositories/acme/pub/visibility", "mia", json={"visibility": "public"}) == {
        "name": "acme/pub", "visibility": "public"}
    r = anonymous_pull("acme/pub")
    assert r.status_code == 200, r.text
    assert acme.rights(None, "repository:acme/pub:pull,push") == {"pull"}

    r = anonymous_pull("acme/app")
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["WWW-Authenticate"] == challenge(acme.reg, "repository:acme/app:pull", "insufficient_scope")
    assert acme.rights(None, "repository:acme/app:pull") == set()


# ---------------------------------------------------------------------------
# grants, and what may not be done
# ---------------------------------------------------------------------------

BAD_GRANTS = [
    ("a repository of another org", {"resource": "other/app", "actions": ["pull"]}, 400, "bad_request"),
    ("dot segments", {"resource": "acme/../x", "actions": ["pull"]}, 400, "bad_request"),
    ("a space in the tag pattern", {"resource": "acme/app:bad tag", "actions": ["pull"]}, 400, "bad_request"),
    ("an empty resource", {"resource": "", "actions": ["pull"]}, 400, "bad_request"),
    ("an unknown action", {"resource": "acme/app", "actions": ["pull", "fly"]}, 400, "bad_request"),
    ("an unknown team", {"principal": "team:ghosts", "resource": "acme/app", "actions": ["pull"]}, 404, "not_found"),
    ("an unknown user", {"principal": "user:nobody", "resource": "acme/app", "actions": ["pull"]}, 404, "not_found"),
    ("an unknown robot", {"principal": "robot:acme+ghost", "resource": "acme/app", "actions": ["pull"]},
     404, "not_found"),
]


@pytest.mark.parametrize("body,status,code", [c[1:] for c in BAD_GRANTS], ids=[c[0] for c in BAD_GRANTS])
def test_a_malformed_grant_is_refused(acme, body, status, code):
    before = acme.ok("GET", f"orgs/{ORG}/grants", "olivia")["grants"]
    r = acme.api("POST", f"orgs/{ORG}/grants", "olivia", json={"principal": "team:builders", **body})
    assert_error(r, status, code)
    assert acme.ok("GET", f"orgs/{ORG}/grants", "olivia")["grants"] == before


def test_a_grant_is_never_wider_than_what_the_granter_holds(acme):
    def grant(who: str, resource: str, actions: list[str]) -> requests.Response:
        return acme.api("POST", f"orgs/{ORG}/grants", who,
                        json={"principal": "team:builders", "resource": resource, "actions": actions})

    assert_error(grant("dan", "acme/app", ["push"]), 403, "forbidden")  # a developer
    assert_error(grant("amy", "acme/*", ["pull"]), 403, "forbidden")  # a maintainer of acme/app only
    role = acme.ok("PUT", f"orgs/{ORG}/roles/steward", "olivia", json={"actions": ["pull", "manage-repo", "manage-org"]})
    assert role["name"] == "steward" and set(role["actions"]) == {"pull", "manage-repo", "manage-org"}
    assert role["builtin"] is False
    acme.ok("PUT", f"orgs/{ORG}/members/stew", "olivia", json={"role": "steward"})
    made = grant("stew", "acme/app", ["pull"])
    assert made.status_code == 201, made.text
    assert_error(grant("stew", "acme/app", ["pull", "push"]), 403, "forbidden")
    assert_error(acme.api("DELETE", f"orgs/{ORG}/roles/steward", "olivia"), 409, "conflict")  # in use
    assert acme.ok("DELETE", f"orgs/{ORG}/grants/{made.json()['id']}", "olivia") == {}


def test_roles_and_members_refuse_bad_input(acme):
    r = acme.api("PUT", f"orgs/{ORG}/roles/developer", "olivia", json={"actions": ["pull"]})
    assert_error(r, 400, "bad_request")  # a built-in name
    assert_error(acme.api("PUT", f"orgs/{ORG}/roles/odd", "olivia", json={"actions": ["fly"]}), 400, "bad_request")
    assert_error(acme.api("PUT", f"orgs/{ORG}/members/ursula", "olivia", json={"role": "overlord"}), 400,
                 "bad_request")
    assert_error(acme.api("PUT", f"orgs/{ORG}/members/nobody", "olivia", json={"role": "reader"}), 404, "not_found")
    assert_error(acme.api("DELETE", f"orgs/{ORG}/members/olivia", "olivia"), 409, "conflict")  # the last owner
    roles = {r["name"]: r for r in acme.ok("GET", f"orgs/{ORG}/roles", "olivia")["roles"]}
    assert {"reader", "developer", "maintainer", "admin", "owner"} <= set(roles)
    assert set(roles["developer"]["actions"]) == {"pull", "push"} and roles["developer"]["builtin"] is True


def test_orgs_refuse_unknown_names_duplicates_and_strangers(acme):
    assert_error(acme.api("GET", "orgs/nope", "olivia"), 404, "not_found")
    assert_error(acme.api("GET", f"orgs/{ORG}", "otto"), 404, "not_found")  # not a member
    assert_error(acme.api("POST", f"orgs/{ORG}/teams", "olivia", json={"name": "builders"}), 409, "conflict")
    assert_error(acme.api("POST", f"orgs/{ORG}/robots", "olivia", json={"name": "ci"}), 409, "conflict")
    assert_error(acme.api("POST", "orgs", "otto", json={"name": ORG}), 409, "conflict")
    assert_error(acme.api("POST", "orgs", "otto", json={"name": "olivia"}), 409, "conflict")  # a user's name
    assert_error(acme.api("POST", "orgs", "otto", json={"name": "Not_Valid"}), 400, "bad_request")
    assert acme.cli.run("user", "create", ORG, check=False).returncode != 0, "a user took an org's name"
    assert_error(acme.api("POST", f"orgs/{ORG}/robots", "mia", json={"name": "mine"}), 403, "forbidden")


def test_a_member_without_manage_org_reads_the_org_but_changes_nothing_and_sees_no_secrets(acme):
    assert acme.ok("GET", f"orgs/{ORG}", "dan")["role"] == "developer"
    # Members see who is in the org, its teams, grants and roles (as on GitHub) ...
    for path in ("members", "teams", "grants", "roles"):
        assert acme.api("GET", f"orgs/{ORG}/{path}", "dan").status_code == 200, path
    # ... but robots and the audit log are for managers, and so is every change.
    for path in ("robots", "audit"):
        assert_error(acme.api("GET", f"orgs/{ORG}/{path}", "dan"), 403, "forbidden")
    assert_error(acme.api("POST", f"orgs/{ORG}/teams", "dan", json={"name": "sneaky"}), 403, "forbidden")
    assert_error(acme.api("PUT", f"orgs/{ORG}/members/ursula", "dan", json={"role": "reader"}), 403, "forbidden")
    assert_error(acme.api("PUT", f"orgs/{ORG}/roles/sneaky", "dan", json={"actions": ["pull"]}), 403, "forbidden")


def test_an_org_owning_repositories_is_deleted_only_with_force(acme):
    made = acme.ok("POST", "orgs", "olivia", 201, json={"name": "doomed"})
    assert made["name"] == "doomed" and isinstance(made["created_at_ms"], int)
    acme.ok("PUT", "orgs/doomed/members/dan", "olivia", json={"role": "admin"})
    acme.push("olivia", "doomed/app", "v1")
    assert_error(acme.api("DELETE", "orgs/doomed", "dan"), 403, "forbidden")  # an admin, not an owner
    assert_error(acme.api("DELETE", "orgs/doomed", "olivia"), 409, "conflict")
    assert acme.ok("DELETE", "orgs/doomed?force=true", "olivia") == {"deleted": "doomed", "repositories_deleted": 1}
    assert_error(acme.api("GET", "orgs/doomed", "olivia"), 404, "not_found")
    client = acme.client(acme.token("root", "repository:doomed/app:pull"))
    try:
        assert_error(client.get_manifest("doomed/app", "v1"), 404, {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"})
    finally:
        client.close()


# ---------------------------------------------------------------------------
# the audit log
# ---------------------------------------------------------------------------

def test_the_audit_log_records_who_changed_what_newest_first(acme):
    acme.ok("PUT", f"orgs/{ORG}/members/ursula", "olivia", json={"role": "reader"})
    acme.ok("DELETE", f"orgs/{ORG}/members/ursula", "olivia")
    acme.ok("POST", f"orgs/{ORG}/robots", "olivia", 201, json={"name": "audited"})
    acme.ok("POST", f"orgs/{ORG}/robots/audited/secret", "olivia", json={})
    acme.ok("POST", f"orgs/{ORG}/grants", "olivia", 201,
            json={"principal": "robot:acme+audited", "resource": "acme/app:audit-*", "actions": ["pull"]})
    acme.push("olivia", "acme/audited", "v1")
    acme.ok("PUT", "repositories/acme/audited/visibility", "olivia", json={"visibility": "public"})
    client = acme.client(acme.token("dan", "repository:acme/app:pull,push"))
    try:
        assert client.put_manifest("acme/app", "audit-1", upload_image(client, "acme/app", b"one")).status_code == 201
        assert_error(client.put_manifest("acme/app", "audit-1", upload_image(client, "acme/app", b"two")), 403,
                     "DENIED")
    finally:
        client.close()

    entries = acme.ok("GET", f"orgs/{ORG}/audit", "olivia")["entries"]
    for e in entries:
        assert set(e) == {"at_ms", "actor", "action", "target", "detail", "source"}, e
        assert isinstance(e["at_ms"], int) and isinstance(e["actor"], str) and e["actor"], e
    assert [e["at_ms"] for e in entries] == sorted((e["at_ms"] for e in entries), reverse=True)
    by_action: dict[str, list[dict]] = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e)
    wanted = {"grant.create", "member.set", "member.remove", "robot.create", "robot.rotate",
              "repository.visibility", "push.denied"}
    assert wanted <= set(by_action), f"missing: {wanted - set(by_action)}"

    def by(action: str, needle: str) -> dict:
        found = [e for e in by_action[action] if needle in f"{e['target']} {e['detail']}"]
        assert found, f"no {action} entry about {needle}: {by_action[action]}"
        return found[0]

    for action, needle in (("member.set", "ursula"), ("member.remove", "ursula"), ("robot.create", "audited"),
                           ("robot.rotate", "audited"), ("grant.create", "audit-*"),
                           ("repository.visibility", "acme/audited")):
        assert by(action, needle)["actor"] == "olivia", by(action, needle)
    denied = by_action["push.denied"][0]  # the newest: dan's, just now
    assert denied["actor"] == "dan" and "acme/app" in f"{denied['target']} {denied['detail']}", denied
    assert by("grant.create", "ci-*")["actor"] == "cli"  # the CLI acts as the operator

    assert acme.ok("GET", f"orgs/{ORG}/audit?limit=3", "olivia")["entries"] == entries[:3]
    assert_error(acme.api("GET", f"orgs/{ORG}/audit", "dan"), 403, "forbidden")
    assert_error(acme.api("GET", f"orgs/{ORG}/audit", "mia"), 403, "forbidden")


# ---------------------------------------------------------------------------
# the CLI, seen through the API
# ---------------------------------------------------------------------------

def test_the_cli_manages_orgs_members_teams_robots_and_grants(acme):
    cli = acme.cli
    cli.create_org("clico", owner="olivia")
    cli.add_member("clico", "dan", "developer")
    cli.create_team("clico", "qa")
    cli.add_to_team("clico", "qa", "dan")
    secret = cli.create_robot("clico", "bot")
    grant_id = cli.add_grant("clico", "team:qa", "clico/*", role="reader")
    robot_grant = cli.add_grant("clico", "robot:clico+bot", "clico/app:ci-*", actions=["pull", "push"])

    assert acme.ok("GET", "orgs/clico", "dan")["role"] == "developer"
    assert ("clico", "developer") in {(o["name"], o["role"]) for o in acme.ok("GET", "orgs", "dan")["orgs"]}
    members = {m["user"]: m["role"] for m in acme.ok("GET", "orgs/clico/members", "olivia")["members"]}
    assert members == {"olivia": "owner", "dan": "developer"}
    assert acme.ok("GET", "orgs/clico/teams", "olivia")["teams"] == [{"name": "qa", "members": ["dan"]}]
    robots = [r["name"] for r in acme.ok("GET", "orgs/clico/robots", "olivia")["robots"]]
    assert robots in (["clico+bot"], ["bot"]), robots
    grants = {str(g["id"]): g for g in acme.ok("GET", "orgs/clico/grants", "olivia")["grants"]}
    assert set(grants) == {grant_id, robot_grant}
    assert (grants[grant_id]["principal"], grants[grant_id]["resource"], grants[grant_id]["role"]) == (
        "team:qa", "clico/*", "reader")
    assert grants[robot_grant]["principal"] == "robot:clico+bot"
    assert set(grants[robot_grant]["actions"]) == {"pull", "push"}
    rows = {row[0]: row for row in cli.list_grants("clico")}
    assert set(rows) == {grant_id, robot_grant}
    assert rows[robot_grant][1:3] == ["robot:clico+bot", "clico/app:ci-*"]
    assert set(rows[robot_grant][3].split(",")) == {"pull", "push"}
    assert rows[grant_id][1:3] == ["team:qa", "clico/*"]
    assert acme.rights("clico+bot", "repository:clico/app:pull,push", password=secret) == {"pull", "push"}

    cli.remove_grant("clico", robot_grant)
    assert [str(g["id"]) for g in acme.ok("GET", "orgs/clico/grants", "olivia")["grants"]] == [grant_id]
    assert acme.rights("clico+bot", "repository:clico/app:pull,push", password=secret) == set()
    assert "clico" in cli.run("org", "list").stdout
    assert "grant.create" in cli.run("org", "audit", "clico").stdout
    rotated = cli.run("robot", "rotate", "clico", "bot").stdout.strip()
    remember_robot("clico+bot", rotated)
    assert ROBOT_SECRET.fullmatch(rotated) and rotated != secret
    assert_error(get_token(acme.reg, [], "clico+bot", secret), 401, "UNAUTHORIZED")
    assert cli.run("org", "create", "olivia", "--owner", "dan", check=False).returncode != 0, "an org took a user's name"
    cli.run("org", "delete", "clico")
    assert_error(acme.api("GET", "orgs/clico", "olivia"), 404, "not_found")


# ---------------------------------------------------------------------------
# last: nothing secret in any log
# ---------------------------------------------------------------------------

def test_no_robot_secret_or_token_reaches_any_log(acme, module_registry_factory):
    logs = [s.log_path for s in module_registry_factory.started]
    logs += sorted(module_registry_factory.root.glob("cli-*.log"))
    logs += [g.log_path for g in neon_gateway.ALL_GATEWAYS if getattr(g, "log_path", None)]
    texts = {str(p): Path(p).read_text(errors="replace") for p in logs if Path(p).exists()}
    assert acme.robot in authkit.ISSUED, "the robot's secret was not remembered"
    secrets = set(authkit.ISSUED)
    for secret in list(secrets):
        if secret.startswith("v4.public."):
            secrets.add(secret[len("v4.public."):].split(".")[0][-48:])  # the signature's end alone
    leaks = [(path, s[:24] + "…") for path, text in texts.items() for s in secrets if s in text]
    assert not leaks, f"secrets found in logs: {leaks[:10]}"
