"""What the registry's metadata database holds, read behind the registry's back (tests only)."""

from __future__ import annotations

import sqlite3


def rows_of(server, neon_backend, sql: str, params: list) -> list:
    """Rows of one query, in the registry's Postgres (through the gateway) or its SQLite.

    `sql` uses `$1`-style parameters; they become `?` for SQLite.
    """
    if neon_backend is not None:
        database = server.env["OPENREGISTRY_DATABASE_URL"].rsplit("/", 1)[1]
        return neon_backend.gateway.query(database, sql, params)
    for i in range(len(params), 0, -1):
        sql = sql.replace(f"${i}", "?")
    with sqlite3.connect(server.data_dir / "registry.sqlite") as db:
        return db.execute(sql, params).fetchall()


def locator_of(server, neon_backend, digest: str) -> str:
    """The storage locator the database keeps for a blob."""
    rows = rows_of(server, neon_backend, "SELECT locator FROM blobs WHERE digest = $1", [digest])
    assert len(rows) == 1, rows
    return rows[0][0]
