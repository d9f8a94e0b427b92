"""deploy.yaml (the Akash SDL) against the SDL schema, plus the Akash parser's cross-reference rules
and this repository's own facts (the settings table, the image's port).

Run with the e2e venv (scripts/e2e-deps installs PyYAML and jsonschema into it):

    ~/.cache/openregistry/venv/bin/python -m pytest tests/akash -q

sdl.schema.json says where its rules come from. The schema checks structure only, as Akash's own
schemas do; `semantic_errors` adds what the Go SDL parser (akash-network/chain-sdk go/sdl) checks
at `tx deployment create`: references between services, profiles and placements, pricing for every
compute profile deployed, volume mounts, IP endpoints.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SDL_PATH = ROOT / "deploy.yaml"
SCHEMA_PATH = Path(__file__).with_name("sdl.schema.json")
SETTINGS_RS = ROOT / "worker" / "host" / "src" / "settings.rs"
OCI_IMAGE_PY = ROOT / "scripts" / "oci_image.py"

# Not OPENREGISTRY_* but read by the native host (README's settings table lists it too).
EXTRA_NATIVE_ENV = {"RUST_LOG"}


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def load_sdl() -> dict:
    return yaml.safe_load(SDL_PATH.read_text())


def schema_errors(sdl: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(load_schema())
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(sdl))


def _truthy(value) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _volumes(profile: dict) -> list[dict]:
    storage = profile["resources"]["storage"]
    return storage if isinstance(storage, list) else [storage]


def semantic_errors(sdl: dict) -> list[str]:
    """The Go parser's rules that a JSON schema cannot express."""
    errors: list[str] = []
    services = sdl.get("services") or {}
    compute = sdl["profiles"]["compute"]
    placement = sdl["profiles"]["placement"]
    endpoints = set((sdl.get("endpoints") or {}).keys())
    used_endpoints: set[str] = set()

    for svc_name, placements in sdl["deployment"].items():
        if svc_name not in services:
            errors.append(f"deployment.{svc_name}: no such service")
            continue
        for place_name, spec in placements.items():
            if place_name not in placement:
                errors.append(f"deployment.{svc_name}.{place_name}: no such placement profile")
                continue
            profile = spec["profile"]
            if profile not in compute:
                errors.append(f"deployment.{svc_name}.{place_name}.profile: no compute profile {profile!r}")
                continue
            if profile not in placement[place_name]["pricing"]:
                errors.append(f"profiles.placement.{place_name}.pricing: no price for {profile!r}")

            volumes = _volumes(compute[profile])
            names = [v.get("name", "default") for v in volumes]
            if len(names) != len(set(names)):
                errors.append(f"profiles.compute.{profile}: duplicated volume name")
            by_name = dict(zip(names, volumes))
            params = ((services[svc_name].get("params") or {}).get("storage") or {})
            mounts: dict[str, str] = {}
            for vol_name, p in params.items():
                if vol_name not in by_name:
                    errors.append(f"services.{svc_name}.params.storage.{vol_name}: no such volume in {profile!r}")
                    continue
                mount = (p or {}).get("mount", "")
                if mount in mounts:
                    errors.append(f"services.{svc_name}.params.storage.{vol_name}: mount {mount!r} already used")
                mounts[mount] = vol_name
            for vol_name, vol in by_name.items():
                attrs = vol.get("attributes") or {}
                persistent = _truthy(attrs.get("persistent", False))
                if persistent and not (params.get(vol_name) or {}).get("mount"):
                    errors.append(f"profiles.compute.{profile}.storage.{vol_name}: persistent=true needs "
                                  f"services.{svc_name}.params.storage.{vol_name}.mount")
                if not persistent and attrs.get("class") not in (None, "ram"):
                    errors.append(f"profiles.compute.{profile}.storage.{vol_name}: ephemeral storage with a class")
            roots = [n for n, v in by_name.items()
                     if not _truthy((v.get("attributes") or {}).get("persistent", False))
                     and (v.get("attributes") or {}).get("class") != "ram" and n not in params]
            if len(roots) > 1:
                errors.append(f"profiles.compute.{profile}: more than one root ephemeral volume")

    for svc_name, svc in services.items():
        for expose in svc.get("expose") or []:
            for to in expose.get("to") or []:
                if to.get("ip"):
                    used_endpoints.add(to["ip"])
                    if to["ip"] not in endpoints:
                        errors.append(f"services.{svc_name}.expose: endpoint {to['ip']!r} not declared")
                if not to.get("global") and not to.get("service"):
                    errors.append(f"services.{svc_name}.expose.to: neither global nor a service")
    for name in sorted(endpoints - used_endpoints):
        errors.append(f"endpoints.{name}: declared but never used")
    return errors


def native_settings() -> set[str]:
    """The names in worker/host/src/settings.rs' SETTINGS whose hosts include the native one."""
    text = SETTINGS_RS.read_text()
    body = text.split("pub const SETTINGS: &[Setting] = &[", 1)[1].split("\n];", 1)[0]
    names = set()
    for entry in re.findall(r"Setting \{(.*?)\n    \}", body, flags=re.S):
        name = re.search(r'name: "([A-Z0-9_]+)"', entry)
        hosts = re.search(r"hosts: ([A-Z_]+)", entry)
        assert name and hosts, f"unparsed SETTINGS entry: {entry[:200]}"
        if hosts.group(1) in ("ALL", "NATIVE", "SCHEDULED"):
            names.add(name.group(1))
    assert len(names) >= 15, f"too few settings parsed from {SETTINGS_RS}: {sorted(names)}"
    return names


def env_of(sdl: dict) -> dict[str, str]:
    env = {}
    for item in sdl["services"]["registry"].get("env") or []:
        key, _, value = item.partition("=")
        assert key not in env, f"{key} set twice in deploy.yaml"
        env[key] = value
    return env


def image_port() -> int:
    spec = importlib.util.spec_from_file_location("oci_image", OCI_IMAGE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LISTEN_PORT


# ---------------------------------------------------------------------------


def test_deploy_yaml_matches_the_schema():
    assert schema_errors(load_sdl()) == []


def test_deploy_yaml_passes_the_parsers_cross_checks():
    assert semantic_errors(load_sdl()) == []


def test_the_schema_is_a_valid_draft7_schema():
    jsonschema.Draft7Validator.check_schema(load_schema())


def test_version_2_0_one_global_http_service():
    sdl = load_sdl()
    assert sdl["version"] == "2.0"
    assert list(sdl["services"]) == ["registry"]
    global_http = [e for e in sdl["services"]["registry"]["expose"]
                   if e.get("as") == 80 and any(t.get("global") for t in e.get("to", []))]
    assert len(global_http) == 1
    # The ingress' body cap, raised from its 1 MiB default to its 100 MiB maximum.
    assert global_http[0]["http_options"]["max_body_size"] == 100 * 1024 * 1024


def test_persistent_data_volume_at_slash_data():
    sdl = load_sdl()
    profile = sdl["deployment"]["registry"]["akash"]["profile"]
    volumes = {v.get("name", "default"): v for v in _volumes(sdl["profiles"]["compute"][profile])}
    assert volumes["data"]["attributes"] == {"persistent": True, "class": "beta3"}
    assert sdl["services"]["registry"]["params"]["storage"]["data"]["mount"] == "/data"
    assert env_of(sdl)["OPENREGISTRY_DATA_DIR"] == "/data"


def test_pricing_in_uakt():
    sdl = load_sdl()
    prices = [p for place in sdl["profiles"]["placement"].values() for p in place["pricing"].values()]
    assert prices and all(p["denom"] == "uakt" for p in prices)


def test_every_env_name_is_a_native_setting():
    names = set(env_of(load_sdl()))
    unknown = names - native_settings() - EXTRA_NATIVE_ENV
    assert not unknown, f"deploy.yaml sets names that are not native settings: {sorted(unknown)}"


def test_every_native_setting_is_in_deploy_yaml():
    missing = native_settings() - set(env_of(load_sdl()))
    assert not missing, f"deploy.yaml lacks these settings (empty value = default): {sorted(missing)}"


def test_authentication_on_and_not_open():
    env = env_of(load_sdl())
    assert env["OPENREGISTRY_AUTH"] == "true"
    assert env["OPENREGISTRY_OPEN"] == "false"
    # Secrets are placeholders, never real values.
    for secret in ("OPENREGISTRY_DATABASE_URL", "OPENREGISTRY_SKYNET_API_KEY", "OPENREGISTRY_TOKEN_KEY"):
        assert env[secret] == "", f"{secret} must stay an empty placeholder in deploy.yaml"


def test_listen_port_is_the_exposed_port():
    sdl = load_sdl()
    port = image_port()
    listen = env_of(sdl).get("OPENREGISTRY_LISTEN", f"0.0.0.0:{port}")
    assert listen == f"0.0.0.0:{port}"
    assert [e["port"] for e in sdl["services"]["registry"]["expose"]] == [port]


def test_chunk_max_fits_the_ingress():
    sdl = load_sdl()
    expose = sdl["services"]["registry"]["expose"][0]
    assert int(env_of(sdl)["OPENREGISTRY_CHUNK_MAX_LENGTH"]) <= expose["http_options"]["max_body_size"]


# --- negative checks: broken copies of deploy.yaml fail ------------------------------------------

def _broken(mutate) -> dict:
    sdl = copy.deepcopy(load_sdl())
    mutate(sdl)
    return sdl


SCHEMA_BREAKS = {
    "version 3.0": lambda s: s.update(version="3.0"),
    "version as a number": lambda s: s.update(version=2.0),
    "no services": lambda s: s.pop("services"),
    "unknown top-level key": lambda s: s.update(networks={}),
    "service without image": lambda s: s["services"]["registry"].pop("image"),
    "unknown service key": lambda s: s["services"]["registry"].update(ports=["80:8080"]),
    "env as a map": lambda s: s["services"]["registry"].update(env={"OPENREGISTRY_AUTH": "true"}),
    "env entry without =": lambda s: s["services"]["registry"]["env"].append("OPENREGISTRY_AUTH"),
    "port 0": lambda s: s["services"]["registry"]["expose"][0].update(port=0),
    "port as a string": lambda s: s["services"]["registry"]["expose"][0].update(port="8080"),
    "proto http": lambda s: s["services"]["registry"]["expose"][0].update(proto="http"),
    "body cap over 100 MiB": lambda s: s["services"]["registry"]["expose"][0]["http_options"].update(
        max_body_size=200 * 1024 * 1024),
    "read timeout over 60 s": lambda s: s["services"]["registry"]["expose"][0]["http_options"].update(
        read_timeout=120000),
    "relative mount": lambda s: s["services"]["registry"]["params"]["storage"]["data"].update(mount="data"),
    "memory without unit suffix letters": lambda s: s["profiles"]["compute"]["registry"]["resources"][
        "memory"].update(size="512 MB"),
    "zero cpu": lambda s: s["profiles"]["compute"]["registry"]["resources"]["cpu"].update(units=0),
    "unknown storage class": lambda s: s["profiles"]["compute"]["registry"]["resources"]["storage"][1][
        "attributes"].update(**{"class": "fast"}),
    "persistent ram": lambda s: s["profiles"]["compute"]["registry"]["resources"]["storage"][1][
        "attributes"].update(**{"class": "ram"}),
    "beta3 not persistent": lambda s: s["profiles"]["compute"]["registry"]["resources"]["storage"][1][
        "attributes"].update(persistent=False),
    "price in usd": lambda s: s["profiles"]["placement"]["akash"]["pricing"]["registry"].update(denom="usd"),
    "price without amount": lambda s: s["profiles"]["placement"]["akash"]["pricing"]["registry"].pop("amount"),
    "count 0": lambda s: s["deployment"]["registry"]["akash"].update(count=0),
    "ip without global": lambda s: s["services"]["registry"]["expose"][0]["to"].append({"ip": "origin"}),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_BREAKS))
def test_broken_copy_fails_the_schema(name):
    assert schema_errors(_broken(SCHEMA_BREAKS[name])), f"{name}: the schema accepted it"


SEMANTIC_BREAKS = {
    "deployment of an unknown service": lambda s: s["deployment"].update(
        other={"akash": {"profile": "registry", "count": 1}}),
    "unknown compute profile": lambda s: s["deployment"]["registry"]["akash"].update(profile="big"),
    "unknown placement": lambda s: s["deployment"]["registry"].update(
        elsewhere=s["deployment"]["registry"].pop("akash")),
    "no price for the profile": lambda s: s["profiles"]["placement"]["akash"].update(
        pricing={"other": {"denom": "uakt", "amount": 1}}),
    "persistent volume without mount": lambda s: s["services"]["registry"].pop("params"),
    "mount of an unknown volume": lambda s: s["services"]["registry"]["params"]["storage"].update(
        cache={"mount": "/cache"}),
    "undeclared ip endpoint": lambda s: s["services"]["registry"]["expose"].append(
        {"port": 8080, "as": 8080, "to": [{"global": True, "ip": "upload-origin"}]}),
    "unused ip endpoint": lambda s: s.update(endpoints={"upload-origin": {"kind": "ip"}}),
}


@pytest.mark.parametrize("name", sorted(SEMANTIC_BREAKS))
def test_broken_copy_fails_the_cross_checks(name):
    broken = _broken(SEMANTIC_BREAKS[name])
    assert schema_errors(broken) == [], f"{name}: meant to pass the schema"
    assert semantic_errors(broken), f"{name}: the cross-checks accepted it"


def test_the_commented_upload_origin_variant_is_valid():
    """Uncommenting the IP-lease expose entry and `endpoints` gives a valid SDL too."""
    def upload_origin(s):
        s["services"]["registry"]["expose"].append(
            {"port": 8080, "as": 8080, "to": [{"global": True, "ip": "upload-origin"}]})
        s["endpoints"] = {"upload-origin": {"kind": "ip"}}
    sdl = _broken(upload_origin)
    assert schema_errors(sdl) == []
    assert semantic_errors(sdl) == []
    text = SDL_PATH.read_text()
    assert "#   upload-origin:\n#     kind: ip" in text and "#       ip: upload-origin" in text


def test_the_commented_stateless_variant_is_valid():
    """The Neon + Skynet profile (no persistent volume, no params) is a valid SDL too."""
    def stateless(s):
        s["profiles"]["compute"]["registry-stateless"] = {
            "resources": {"cpu": {"units": 1}, "memory": {"size": "512Mi"}, "storage": [{"size": "2Gi"}]}}
        s["profiles"]["placement"]["akash"]["pricing"]["registry-stateless"] = {"denom": "uakt", "amount": 10000}
        s["deployment"]["registry"]["akash"]["profile"] = "registry-stateless"
        s["services"]["registry"].pop("params")
        del s["profiles"]["compute"]["registry"]
        del s["profiles"]["placement"]["akash"]["pricing"]["registry"]
    sdl = _broken(stateless)
    assert schema_errors(sdl) == []
    assert semantic_errors(sdl) == []
    assert "# registry-stateless:" in SDL_PATH.read_text()
