"""Shared fixtures: quiet logs, a working directory per test, databases of both backends, and a
test double of the agent contract (tests/helpers/agents.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

from qtmesh.base.storage import sqlite_url
from qtmesh.testing import fresh_database, temporary_postgres
from tests.helpers.agents import ScriptedAgent

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    """Tests log through structlog's capture-free default; keep the output readable."""
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _own_working_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services default to data under ./.qtmesh: each test gets a directory of its own, so no
    test writes into the repository or sees another test's state."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def scripted_agent() -> ScriptedAgent:
    return ScriptedAgent()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """QTMESH_TEST_POSTGRES_URL if set, else a temporary local server if PostgreSQL is
    installed, else None (PostgreSQL cases are then skipped)."""
    if os.environ.get("QTMESH_TEST_POSTGRES_URL"):
        yield os.environ["QTMESH_TEST_POSTGRES_URL"]
        return
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend: every store test runs against both."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "store.db")
        return
    server = request.getfixturevalue("postgres_server")
    if server is None:
        pytest.skip("PostgreSQL is not installed here and QTMESH_TEST_POSTGRES_URL is not set")
    with fresh_database(server) as url:
        yield url
