"""Shared fixtures: a test double of the agent contract served by the real runtime."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from hypothesis import settings

from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.errors import InvalidArgument, NotFound
from qtmesh.server import Service
from qtmesh.storage import sqlite_url
from qtmesh.testing import fresh_database, temporary_postgres

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


class ScriptedAgent(agent_pb2_grpc.AgentServiceServicer):
    """An AgentService whose Recommend does what ``context.hints["behavior"]`` says.

    block: waits until cancelled (records it); invalid / missing: raises a domain error;
    crash: raises a plain exception; gate: waits for ``release`` then answers.
    """

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()

    async def Recommend(
        self, request: agent_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.RecommendResponse:
        behavior = request.context.hints.get("behavior", "echo")
        self.started.set()
        if behavior == "block":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if behavior == "gate":
            await self.release.wait()
            self.finished.set()
        if behavior == "invalid":
            raise InvalidArgument("context.hints[behavior]", "is not a behaviour I accept")
        if behavior == "missing":
            raise NotFound("no such plan")
        if behavior == "crash":
            raise RuntimeError("secret internal detail")
        return agent_pb2.RecommendResponse(
            agent="scripted",
            recommendations=[agent_pb2.Recommendation(id="r1", rationale=request.context.cycle_id)],
        )


def agent_service(agent: ScriptedAgent) -> Service:
    return Service.of(
        agent,
        agent_pb2_grpc.add_AgentServiceServicer_to_server,
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    )


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
