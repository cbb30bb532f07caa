"""Several federation processes on one PostgreSQL history: one leads (the lease), the others
serve the plan stream and the history, and when the leader is SIGKILLed mid-execution a
follower takes over, settles the action with its owner (which applies it once), and every
subscriber, of the follower or resuming from the dead leader, sees each event exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from federation.client import FederationClient
from federation.lease import libpq_url
from federation.plan import Plan, StatusUpdate
from federation.service import LEADER_ROLE
from qtmesh.base import contract as c
from qtmesh.base.errors import Unavailable
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import Child
from qtmesh.testing import fresh_database, serving
from tests.helpers.federation import rec
from tests.helpers.processes import kill, service_process

HALT = c.HaltTrading(scope="portfolio")
FINAL = (c.ActionStatus.COMPLETED, c.ActionStatus.FAILED, c.ActionStatus.BLOCKED)


class Owner:
    """Recommends one halt and applies each key once, answering only once ``answer`` is set;
    ``resent`` is set by the second ExecuteAction of a key (the new leader's)."""

    name = "owner"

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.calls: list[str] = []
        self.received = asyncio.Event()
        self.resent = asyncio.Event()
        self.answer = asyncio.Event()

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return [rec("halt", HALT, confidence=0.9, priority=c.Priority.HIGH)]

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        key = action.idempotency_key
        self.calls.append(key)
        (self.resent if self.received.is_set() else self.received).set()
        await self.answer.wait()
        if key in self.applied:
            return c.ExecutionResult(False, "already halted")
        self.applied.append(key)
        return c.ExecutionResult(True, f"halted for plan {plan_sequence}")

    async def execution(self, idempotency_key: str) -> c.Execution:
        if idempotency_key in self.applied:
            return c.Execution(c.ExecutionState.APPLIED, "halted")
        return c.NOT_APPLIED


@pytest.fixture
def postgres_url(postgres_server):
    if postgres_server is None:
        pytest.skip("PostgreSQL is not installed here and QTMESH_TEST_POSTGRES_URL is not set")
    with fresh_database(postgres_server) as url:
        yield url


@contextlib.asynccontextmanager
async def replica(
    tmp_path: Path, url: str, owner: str, name: str
) -> AsyncIterator[tuple[Child, FederationClient]]:
    env = {
        "QTMESH_FEDERATION_DATABASE_URL": url,
        "QTMESH_FEDERATION_AGENTS": "owner",
        "QTMESH_FEDERATION_OWNERS": "HALT_TRADING=owner",
        "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
        "QTMESH_FEDERATION_RECORD_TO_MEMORY": "false",
        "QTMESH_ADDRESSES": f"owner={owner},market=127.0.0.1:1",
    }
    async with (
        service_process("federation", env=env, log_path=tmp_path / f"{name}.log") as child,
        open_channel(child.address) as channel,
    ):
        yield child, FederationClient(channel)


class Seen:
    """Every event a subscriber received, and an event set once it has ``count`` of them."""

    def __init__(self, count: int = 0) -> None:
        self.events: list[tuple[int, Plan | StatusUpdate]] = []
        self.count = count
        self.reached = asyncio.Event()

    @property
    def sequences(self) -> list[int]:
        return [s for s, _ in self.events]

    async def until_settled(self, client: FederationClient, after: int = 0) -> Seen:
        """Every event after ``after`` until an action's final status."""
        async for sequence, event in client.subscribe(after_sequence=after):
            self.events.append((sequence, event))
            if len(self.events) >= self.count:
                self.reached.set()
            if isinstance(event, StatusUpdate) and event.status in FINAL:
                break
        return self


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child process")
async def test_a_follower_takes_over_from_a_killed_leader_and_nothing_runs_twice(
    tmp_path, postgres_url
):
    owner = Owner()
    served_owner = serving([agent_service(owner, executes=[c.ActionType.HALT_TRADING])])
    async with (
        served_owner as served,
        replica(tmp_path, postgres_url, served.address, "a") as (leader, on_leader),
        replica(tmp_path, postgres_url, served.address, "b") as (follower, on_follower),
        replica(tmp_path, postgres_url, served.address, "c") as (_, on_third),
    ):
        # Only the leader writes; a follower says who leads.
        assert await leads(leader.address, wait=False)
        assert not await leads(follower.address, wait=False)
        with pytest.raises(Unavailable, match=f"follows the leader.*pid {leader.process.pid}"):
            await on_follower.generate_plan()
        # Subscribers of a follower and of the leader, each until the plan, its EXECUTING.
        by_follower, by_leader = Seen(2), Seen(2)
        following = asyncio.ensure_future(by_follower.until_settled(on_follower))
        from_leader = asyncio.ensure_future(by_leader.until_settled(on_leader))

        plan = await on_leader.generate_plan(execute=True)
        await owner.received.wait()
        await by_follower.reached.wait()
        await by_leader.reached.wait()
        killed = time.monotonic()
        await kill(leader)
        with contextlib.suppress(Exception):
            await from_leader  # its stream ends with the process
        # A follower takes over and settles the action with its owner: not applied before
        # the crash, so sent again under the same key.
        await owner.resent.wait()
        takeover_s = time.monotonic() - killed
        owner.answer.set()
        await following
        # The dead leader's subscriber resumes on a follower after the last event it had.
        resumed = await Seen().until_settled(on_third, by_leader.sequences[-1])
        # Whichever follower leads now plans; the other still follows.
        results = await asyncio.gather(
            on_follower.generate_plan(), on_third.generate_plan(), return_exceptions=True
        )
        history = await Seen().until_settled(on_third)
        stored = await on_third.get_plan(plan.sequence)
    print(f"takeover: {takeover_s:.2f} s from SIGKILL to the owner asked again")
    key = plan.actions[0].idempotency_key
    assert owner.applied == [key]  # executed once, across the change of leader
    assert owner.calls == [key, key]
    assert stored.action(plan.actions[0].id).status is c.ActionStatus.COMPLETED
    assert by_follower.sequences == history.sequences
    assert by_leader.sequences + resumed.sequences == history.sequences
    statuses = [e.status for _, e in history.events if isinstance(e, StatusUpdate)]
    assert statuses == [c.ActionStatus.EXECUTING, c.ActionStatus.COMPLETED]
    planned = [r for r in results if isinstance(r, Plan)]
    assert len(planned) == 1
    assert [type(r) for r in results if not isinstance(r, Plan)] == [Unavailable]
    assert takeover_s < 10


async def leads(address: str, *, wait: bool) -> bool:
    """Whether the replica at ``address`` leads (its ``federation.leader`` health); with
    ``wait``, once it does (a Watch of that status)."""
    request = health_pb2.HealthCheckRequest(service=LEADER_ROLE)
    async with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        if not wait:
            answer = await stub.Check(request)
            return answer.status == health_pb2.HealthCheckResponse.SERVING
        async for answer in stub.Watch(request):
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return True
    return False


def end_lease_session(url: str) -> int:
    """Ends the server session holding the lease, as a network partition would; its pid."""
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND database = ("
            "SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    assert row is not None, "no session holds the lease"
    return int(row[0])


async def test_a_leader_that_loses_its_lease_session_stops_and_a_follower_leads(
    tmp_path, postgres_url
):
    owner = Owner()
    served_owner = serving([agent_service(owner, executes=[c.ActionType.HALT_TRADING])])
    async with (
        served_owner as served,
        replica(tmp_path, postgres_url, served.address, "a") as (leader, on_leader),
        replica(tmp_path, postgres_url, served.address, "b") as (_, on_follower),
    ):
        first = await on_leader.generate_plan()
        await asyncio.to_thread(end_lease_session, postgres_url)
        # Its next heartbeat fails: it stops by itself, draining as on SIGTERM.
        assert await leader.process.wait() == 0
        second = await on_follower.generate_plan()
    assert second.sequence > first.sequence
    log = (tmp_path / "a.log").read_text()
    assert "lost the federation's lease; stopping" in log
