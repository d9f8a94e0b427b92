"""`openregistry migrate`: applies the schema to the configured database; a second run is a no-op.

Runs against the embedded SQLite by default and against PostgreSQL through the Neon gateway under
E2E_METADATA=neon.
"""

from __future__ import annotations

import os
from pathlib import Path
import sqlite3
import subprocess

import pytest

from registry_server import openregistry_bin

pytestmark = [
    pytest.mark.openregistry_only,
    pytest.mark.native_only("`openregistry migrate` is the native CLI (the Worker's databases are migrated with it too)"),
]


def migrate(env: dict[str, str], data_dir) -> str:
    result = subprocess.run(
        [str(openregistry_bin()), "migrate", "--data-dir", str(data_dir)],
        env={**os.environ, **env, "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def applied_versions(neon_backend, env, data_dir) -> list[str]:
    if neon_backend is None:
        with sqlite3.connect(data_dir / "registry.sqlite") as db:
            return [str(v) for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    database = env["OPENREGISTRY_DATABASE_URL"].rsplit("/", 1)[1]
    return [row[0] for row in neon_backend.gateway.query(
        database, "SELECT version FROM schema_migrations ORDER BY version")]


def test_migrate_applies_the_schema_once_and_a_second_run_changes_nothing(neon_backend, work_dir):
    env = neon_backend.registry_env("migrate") if neon_backend is not None else {}
    data_dir = work_dir / "data"
    first = migrate(env, data_dir)
    assert "0001_registry.sql" in first and "0002_auth.sql" in first
    versions = applied_versions(neon_backend, env, data_dir)
    schema = sorted((Path(__file__).resolve().parents[2] / "schema").glob("*.sql"))
    assert versions == [str(int(f.name.split("_", 1)[0])) for f in schema], versions
    second = migrate(env, data_dir)
    assert "applied=[]" in second, second
    assert applied_versions(neon_backend, env, data_dir) == versions


def test_migrate_refuses_a_database_url_it_cannot_use(work_dir):
    result = subprocess.run(
        [str(openregistry_bin()), "migrate", "--data-dir", str(work_dir / "data")],
        env={**os.environ, "OPENREGISTRY_DATABASE_URL": "mysql://user:pw@db.example.com/x"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "postgres://" in result.stderr
