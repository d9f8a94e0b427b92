"""Helpers for the authentication end-to-end tests (test_auth.py).

* :class:`AuthRegistryServer`: a registry started with ``OPENREGISTRY_AUTH=true``. With auth on,
  ``GET /v2/`` answers 401 with a Bearer challenge (the Docker ping), so readiness is that answer
  instead of the 200 :class:`registry_server.RegistryServer` waits for.
* :class:`Accounts`: ``openregistry user …`` / ``openregistry token …`` on a registry's data
  directory, with the registry's environment (so ``E2E_METADATA=neon`` reaches the same database,
  and under ``E2E_HOST=cloudflare`` the native CLI manages the Worker's users in the PostgreSQL
  behind its gateway).
* the Docker token flow (``GET``/``POST /token``) and :class:`DockerAuthClient`, a raw-HTTP client
  that answers 401 challenges the way Docker does (fetch a token for the challenged scope, retry).
* PASETO v4.public and PASERK k4 in pure Python (Ed25519 after RFC 8032's reference code; no
  third-party crypto is installed in the suite's venv): the tests sign tokens with the registry's
  own key (configured, or read from its data directory) or with a stranger's, to check what the
  server accepts; the Worker, which has no data directory, is given keys generated here.
* :data:`ISSUED`: every secret the tests were given (access tokens, their secrets, Basic
  credentials, bearer and refresh tokens, signing keys), for the check that none reaches a log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Optional

import requests

import registry_server
from ocihttp import OciClient
from registry_server import RegistryServer, RegistryStartError

SERVICE = "openregistry"

# Every secret handed to the tests, for the log scan (see test_auth.py's last test).
ISSUED: set[str] = set()


def remember(*secrets: Optional[str]) -> None:
    for secret in secrets:
        if secret:
            ISSUED.add(secret)


# ---------------------------------------------------------------------------
# the registry process
# ---------------------------------------------------------------------------

class AuthRegistryServer(RegistryServer):
    """A registry with authentication on: ready when ``GET /v2/`` asks for a Bearer token."""

    def _ready(self, r) -> bool:
        if r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer "):
            return True
        raise RegistryStartError(
            f"with OPENREGISTRY_AUTH=true, GET /v2/ must answer 401 with a Bearer challenge; "
            f"got {r.status_code} {dict(r.headers)!r} {r.text[:1000]}"
        )

    def token_key(self) -> str:
        """The signing key (PASERK k4.secret): the configured ``OPENREGISTRY_TOKEN_KEY``, else the
        one the native registry generated into its data directory."""
        configured = self.env.get("OPENREGISTRY_TOKEN_KEY")
        if configured:
            return configured
        return (self.data_dir / "token-key.paserk").read_text().strip()


# ---------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------

class CliError(AssertionError):
    pass


class Accounts:
    """``openregistry user|token …`` against one registry's metadata (SQLite or Neon)."""

    def __init__(self, server: RegistryServer, log_path: Path):
        self.server = server
        self.log_path = log_path  # the CLI's stderr, scanned for secrets like the server logs

    def run(self, *args: str, check: bool = True,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        """The CLI with the registry's environment (and ``env`` over it)."""
        cmd = [str(registry_server.openregistry_bin()), *args, "--data-dir", str(self.server.data_dir)]
        extra = env
        env = dict(os.environ)
        env.update(self.server.env)
        env.update(extra or {})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120,
                              stdin=subprocess.DEVNULL)
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(args)}  (exit {proc.returncode})\n{proc.stderr}")
        if check and proc.returncode != 0:
            raise CliError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def create_user(self, name: str, admin: bool = False) -> None:
        self.run("user", "create", name, *(["--admin"] if admin else []))

    def delete_user(self, name: str) -> None:
        self.run("user", "delete", name)

    def create_token(self, user: str, name: str = "e2e", scopes: Iterable[str] = (),
                     expires_in_days: Optional[int] = None) -> str:
        args = ["token", "create", "--user", user, "--name", name]
        for scope in scopes:
            args += ["--scope", scope]
        if expires_in_days is not None:
            args += ["--expires-in-days", str(expires_in_days)]
        proc = self.run(*args)
        token = proc.stdout.strip()
        assert re.fullmatch(r"orp_[0-9a-f]{16}_[0-9a-f]{64}", token), f"unexpected token text {token!r}"
        remember_credentials(user, token)
        return token

    def list_tokens(self, user: str) -> list[list[str]]:
        out = self.run("token", "list", "--user", user).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def revoke_token(self, token_id: str) -> None:
        self.run("token", "revoke", token_id)


def token_id(token: str) -> str:
    return token.split("_")[1]


def token_secret(token: str) -> str:
    return token.split("_")[2]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def remember_credentials(user: str, token: str) -> None:
    remember(token, token_secret(token), basic(user, token)[len("Basic "):])


# ---------------------------------------------------------------------------
# the token flow
# ---------------------------------------------------------------------------

def get_token(server: RegistryServer, scopes: Iterable[str] = (), user: Optional[str] = None,
              password: Optional[str] = None, *, offline: bool = False,
              authorization: Optional[str] = None) -> requests.Response:
    """``GET /token?service=…&scope=…`` (one ``scope`` parameter per scope), Basic when given."""
    params = [("service", SERVICE)] + [("scope", s) for s in scopes]
    if offline:
        params.append(("offline_token", "true"))
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    elif user is not None:
        headers["Authorization"] = basic(user, password or "")
    r = requests.get(f"{server.base_url}/token", params=params, headers=headers, timeout=30)
    assert r.status_code < 500, f"GET /token -> {r.status_code}: {r.text[:500]}"
    _remember_response(r)
    return r


def post_token(server: RegistryServer, form: dict | list) -> requests.Response:
    """``POST /token`` with an ``application/x-www-form-urlencoded`` body."""
    r = requests.post(f"{server.base_url}/token", data=form, timeout=30)
    assert r.status_code < 500, f"POST /token -> {r.status_code}: {r.text[:500]}"
    _remember_response(r)
    return r


def _remember_response(r: requests.Response) -> None:
    if r.status_code == 200 and r.headers.get("Content-Type", "").startswith("application/json"):
        doc = r.json()
        remember(doc.get("token"), doc.get("access_token"), doc.get("refresh_token"))


def bearer(server: RegistryServer, scopes: Iterable[str] = (), user: Optional[str] = None,
           password: Optional[str] = None) -> str:
    """A token from ``GET /token`` (asserting 200)."""
    r = get_token(server, scopes, user, password)
    assert r.status_code == 200, f"GET /token -> {r.status_code}: {r.text[:500]}"
    return r.json()["token"]


def granted(token: str) -> dict[tuple[str, str], set[str]]:
    """The token's ``access`` claim as {(type, name): {actions}} (read without verifying)."""
    out: dict[tuple[str, str], set[str]] = {}
    for entry in claims_of(token).get("access", []):
        out.setdefault((entry["type"], entry["name"]), set()).update(entry["actions"])
    return out


def client_with(server: RegistryServer, token: Optional[str] = None,
                authorization: Optional[str] = None) -> OciClient:
    """An :class:`OciClient` whose every request carries ``Authorization: Bearer <token>``."""
    client = OciClient(server.base_url, timeout=60)
    if token is not None:
        client.session.headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        client.session.headers["Authorization"] = authorization
    return client


def parse_challenge(value: str) -> tuple[str, dict[str, str], list[str]]:
    """``Bearer realm="…",service="…"`` -> (scheme, params, param names in order)."""
    scheme, _, rest = value.partition(" ")
    pairs = re.findall(r'([A-Za-z_]+)="([^"]*)"', rest)
    return scheme, dict(pairs), [k for k, _ in pairs]


def challenge(server: RegistryServer, scope: Optional[str] = None, error: Optional[str] = None) -> str:
    """The exact ``WWW-Authenticate`` the registry sends for a missing or refused token."""
    text = f'Bearer realm="{server.base_url}/token",service="{SERVICE}"'
    if scope is not None:
        text += f',scope="{scope}"'
    if error is not None:
        text += f',error="{error}"'
    return text


class DockerAuthClient:
    """Raw HTTP the way Docker's client does auth: requests carry the current bearer token; a 401
    with a Bearer challenge makes it fetch a new token for the challenged scope (with its refresh
    token once it has one, else ``grant_type=password``) and send the request again."""

    def __init__(self, server: RegistryServer, user: str, password: str, repo: str):
        self.server = server
        self.user, self.password, self.repo = user, password, repo
        self.http = OciClient(server.base_url, timeout=60)
        self.token: Optional[str] = None
        self.refresh_token: Optional[str] = None
        self.fetches = 0
        self.challenges: list[str] = []
        self.warnings: list[str] = []

    def _fetch(self, scope: str) -> None:
        scopes = f"{scope} repository:{self.repo}:pull,push"
        if self.refresh_token:
            r = post_token(self.server, {"grant_type": "refresh_token", "refresh_token": self.refresh_token,
                                         "service": SERVICE, "scope": scopes})
        else:
            r = post_token(self.server, {"grant_type": "password", "username": self.user,
                                         "password": self.password, "service": SERVICE, "scope": scopes})
        assert r.status_code == 200, f"POST /token -> {r.status_code}: {r.text[:300]}"
        doc = r.json()
        self.token = doc["access_token"]
        self.refresh_token = doc.get("refresh_token") or self.refresh_token
        self.fetches += 1

    def request(self, method: str, url: str, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        for _ in range(2):
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            r = self.http.request(method, url, headers=headers, **kw)
            if "Warning" in r.headers:
                self.warnings.append(r.headers["Warning"])
            if r.status_code != 401:
                return r
            value = r.headers.get("WWW-Authenticate", "")
            self.challenges.append(value)
            scheme, params, _ = parse_challenge(value)
            assert scheme == "Bearer", f"{method} {url}: 401 without a Bearer challenge: {value!r}"
            self._fetch(params.get("scope", f"repository:{self.repo}:pull"))
        return r

    def close(self) -> None:
        self.http.close()


# ---------------------------------------------------------------------------
# Ed25519 (RFC 8032, section 6 reference implementation)
# ---------------------------------------------------------------------------

_P = 2 ** 255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_Q = 2 ** 252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _inv(x: int) -> int:
    return pow(x, _P - 2, _P)


def _add(P, Q):
    A, B = (P[1] - P[0]) * (Q[1] - Q[0]) % _P, (P[1] + P[0]) * (Q[1] + Q[0]) % _P
    C, D = 2 * P[3] * Q[3] * _D % _P, 2 * P[2] * Q[2] % _P
    E, F, G, H = B - A, D - C, D + C, B + A
    return (E * F, G * H, F * G, E * H)


def _mul(s: int, P):
    Q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            Q = _add(Q, P)
        P = _add(P, P)
        s >>= 1
    return Q


def _equal(P, Q) -> bool:
    return (P[0] * Q[2] - Q[0] * P[2]) % _P == 0 and (P[1] * Q[2] - Q[1] * P[2]) % _P == 0


def _recover_x(y: int, sign: int):
    if y >= _P:
        return None
    x2 = (y * y - 1) * _inv(_D * y * y + 1)
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if (x & 1) != sign:
        x = _P - x
    return x


_GY = 4 * _inv(5) % _P
_GX = _recover_x(_GY, 0)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _compress(P) -> bytes:
    zinv = _inv(P[2])
    x, y = P[0] * zinv % _P, P[1] * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


def _decompress(s: bytes):
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % _P)


def _expand(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def _hmodq(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little") % _Q


def ed25519_public(seed: bytes) -> bytes:
    return _compress(_mul(_expand(seed)[0], _G))


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    a, prefix = _expand(seed)
    A = _compress(_mul(a, _G))
    r = _hmodq(prefix + message)
    R = _compress(_mul(r, _G))
    s = (r + _hmodq(R + A + message) * a) % _Q
    return R + int.to_bytes(s, 32, "little")


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    A, R = _decompress(public), _decompress(signature[:32])
    if A is None or R is None or len(signature) != 64:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _Q:
        return False
    h = _hmodq(signature[:32] + public + message)
    return _equal(_mul(s, _G), _add(R, _mul(h, A)))


# ---------------------------------------------------------------------------
# PASERK k4 and PASETO v4.public
# ---------------------------------------------------------------------------

def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SigningKey:
    """An Ed25519 key as PASERK: ``k4.secret.`` (seed‖public), ``k4.public.``, ``k4.pid.``."""

    def __init__(self, seed: bytes):
        assert len(seed) == 32
        self.seed = seed
        self.public = ed25519_public(seed)

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(os.urandom(32))

    @classmethod
    def from_paserk(cls, text: str) -> "SigningKey":
        assert text.startswith("k4.secret."), "not a PASERK k4.secret key"
        raw = unb64u(text[len("k4.secret."):])
        key = cls(raw[:32])
        assert key.public == raw[32:], "the PASERK's public half does not match its seed"
        return key

    @property
    def paserk_secret(self) -> str:
        return "k4.secret." + b64u(self.seed + self.public)

    @property
    def paserk_public(self) -> str:
        return "k4.public." + b64u(self.public)

    @property
    def kid(self) -> str:
        """PASERK ``k4.pid``: BLAKE2b-264 of ``"k4.pid." ‖ <k4.public PASERK>``."""
        header = "k4.pid."
        digest = hashlib.blake2b((header + self.paserk_public).encode(), digest_size=33).digest()
        return header + b64u(digest)


def pae(*pieces: bytes) -> bytes:
    """PASETO's pre-authentication encoding."""
    out = len(pieces).to_bytes(8, "little")
    for piece in pieces:
        out += len(piece).to_bytes(8, "little") + piece
    return out


def sign_token(key: SigningKey, claims: dict, footer: Optional[dict] = None) -> str:
    """A v4.public token over ``claims`` (footer default: this key's kid)."""
    header = b"v4.public."
    message = json.dumps(claims, separators=(",", ":")).encode()
    footer_bytes = json.dumps(footer if footer is not None else {"kid": key.kid},
                              separators=(",", ":")).encode()
    signature = ed25519_sign(key.seed, pae(header, message, footer_bytes, b""))
    return header.decode() + b64u(message + signature) + "." + b64u(footer_bytes)


def split_token(token: str) -> tuple[bytes, bytes, bytes]:
    """(message, signature, footer) of a v4.public token, unverified."""
    assert token.startswith("v4.public."), token[:20]
    parts = token[len("v4.public."):].split(".")
    body = unb64u(parts[0])
    footer = unb64u(parts[1]) if len(parts) > 1 else b""
    return body[:-64], body[-64:], footer


def verify_token(token: str, public: bytes) -> bool:
    message, signature, footer = split_token(token)
    return ed25519_verify(public, pae(b"v4.public.", message, footer, b""), signature)


def claims_of(token: str) -> dict:
    return json.loads(split_token(token)[0])


def footer_of(token: str) -> dict:
    return json.loads(split_token(token)[2])


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def claims(sub: str, access: list[dict], *, aud: str = SERVICE, issued_ago: float = 0,
           lifetime: float = 300, **extra) -> dict:
    """Claims shaped like the registry's own (times RFC 3339, whole seconds)."""
    now = datetime.now(timezone.utc)
    issued = now - timedelta(seconds=issued_ago)
    doc = {
        "iss": SERVICE, "sub": sub, "aud": aud,
        "exp": rfc3339(issued + timedelta(seconds=lifetime)),
        "nbf": rfc3339(issued), "iat": rfc3339(issued),
        "jti": os.urandom(16).hex(), "access": access,
    }
    doc.update(extra)
    return doc


def repo_access(name: str, *actions: str) -> dict:
    return {"type": "repository", "name": name, "actions": list(actions)}
