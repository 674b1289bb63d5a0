"""The fleet server's tests run against both of its databases: a SQLite file and a real
PostgreSQL server (one per test session, a fresh database per test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The `fleet_server.database` setting: a file path or a PostgreSQL DSN."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
