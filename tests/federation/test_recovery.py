"""Crash recovery, on SQLite and PostgreSQL, the federation a child process:

* a federation SIGKILLed while an action executes settles it with its owner when it starts
  again (GetExecution by idempotency key, then a resend under the same key if the owner never
  applied it); its owner (which also recommends the action) is served by this test, so it
  outlives the kill;
* an owner that dies after applying an action and before answering (a process of its own) is
  asked once it is back, and the action completes without being applied again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.client import FederationClient
from federation.plan import Plan, StatusUpdate
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.channels import open_channel
from qtmesh.runtime.supervisor import Child
from qtmesh.testing import serving
from tests.helpers import durable_owner
from tests.helpers.federation import rec
from tests.helpers.processes import kill, service_process

HALT = c.HaltTrading(scope="portfolio")


class DurableOwner:
    """Recommends one halt and executes it, applying each key once into a record that lives in
    this process (a durable store, as far as the federation can tell). Its answer waits for
    ``answer``; it applies before waiting (``apply_first``: the federation dies after the change
    took effect, before it heard so) or after (the federation dies before it took effect)."""

    name = "owner"

    def __init__(self, *, apply_first: bool) -> None:
        self.apply_first = apply_first
        self.applied: dict[str, str] = {}  # key -> detail
        self.calls: list[str] = []  # keys of every ExecuteAction that reached the owner
        self.received = asyncio.Event()
        self.answer = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return [rec("halt", HALT, confidence=0.9, priority=c.Priority.HIGH)]

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        key = action.idempotency_key
        self.calls.append(key)
        if self.apply_first:
            self._apply(key, plan_sequence)
        self.received.set()
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled.set()  # the caller went away
            raise
        return c.ExecutionResult(not self.apply_first and self._apply(key, plan_sequence), key)

    def _apply(self, key: str, plan_sequence: int) -> bool:
        if key in self.applied:
            return False
        self.applied[key] = f"halted for plan {plan_sequence}"
        return True

    async def execution(self, idempotency_key: str) -> c.Execution:
        if idempotency_key in self.applied:
            return c.Execution(c.ExecutionState.APPLIED, self.applied[idempotency_key])
        return c.NOT_APPLIED


@contextlib.asynccontextmanager
async def federation_process(
    tmp_path: Path, database_url: str, owner: str
) -> AsyncIterator[tuple[Child, FederationClient]]:
    env = {
        "QTMESH_FEDERATION_DATABASE_URL": database_url,
        "QTMESH_FEDERATION_AGENTS": "owner",
        "QTMESH_FEDERATION_OWNERS": "HALT_TRADING=owner",
        "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
        "QTMESH_FEDERATION_RECORD_TO_MEMORY": "false",
        "QTMESH_ADDRESSES": f"owner={owner},market=127.0.0.1:1",
    }
    log = tmp_path / "federation.log"
    async with (
        service_process("federation", env=env, log_path=log) as child,
        open_channel(child.address) as channel,
    ):
        yield child, FederationClient(channel)


async def settled(client: FederationClient, plan: Plan) -> list[tuple[int, Plan | StatusUpdate]]:
    """Every event of the history up to the action's final status."""
    events = []
    async for sequence, event in client.subscribe(after_sequence=0):
        events.append((sequence, event))
        if isinstance(event, StatusUpdate) and event.status not in (
            c.ActionStatus.PENDING,
            c.ActionStatus.EXECUTING,
        ):
            return events
    raise AssertionError("the plan stream ended before the action settled")


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child process")
@pytest.mark.parametrize("apply_first", [True, False], ids=["applied", "not-applied"])
async def test_a_federation_killed_mid_execution_settles_the_action_with_its_owner_on_restart(
    tmp_path, database_url, apply_first
):
    owner = DurableOwner(apply_first=apply_first)
    async with serving([agent_service(owner, executes=[c.ActionType.HALT_TRADING])]) as served:
        async with federation_process(tmp_path, database_url, served.address) as (child, client):
            plan = await client.generate_plan(execute=True)
            await owner.received.wait()
            await kill(child)
        action = plan.actions[0]
        # The dead federation's call ends on the owner (as its connection drops); from now on
        # the owner answers.
        await owner.cancelled.wait()
        owner.answer.set()
        async with federation_process(tmp_path, database_url, served.address) as (_, client):
            events = await settled(client, plan)
            stored = await client.get_plan(plan.sequence)
    final = stored.action(action.id)
    assert final.status is c.ActionStatus.COMPLETED
    assert list(owner.applied) == [action.idempotency_key]
    if apply_first:
        # Asked, not sent again: the owner had applied it before the crash.
        assert owner.calls == [action.idempotency_key]
        assert final.status_detail.startswith("applied before the federation restarted: halted")
    else:
        assert owner.calls == [action.idempotency_key] * 2
        assert final.attempts == 1
    # Nothing acknowledged was lost: the plan, then EXECUTING from before the crash, then the
    # final status, in one gap-free sequence.
    statuses = [e.status for _, e in events if isinstance(e, StatusUpdate)]
    assert statuses == [c.ActionStatus.EXECUTING, c.ActionStatus.COMPLETED]
    assert [s for s, _ in events] == list(range(events[0][0], events[0][0] + len(events)))
    assert isinstance(events[0][1], Plan)


async def owner_process(
    record: Path, port: int, mode: str
) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        durable_owner.__file__,
        str(record),
        str(port),
        mode,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()
    assert line.startswith("address "), "the owner exited before serving"
    return process, line.split()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child process")
async def test_an_owner_killed_after_applying_is_asked_once_back_and_applies_nothing_twice(
    tmp_path, database_url
):
    record = tmp_path / "owner.json"
    dying, address = await owner_process(record, 0, "die-after-applying")
    port = int(address.rsplit(":", 1)[1])
    async with federation_process(tmp_path, database_url, address) as (_, client):
        plan = await client.generate_plan(execute=True)
        assert await dying.wait() == -9  # applied, then died before answering
        key = plan.actions[0].idempotency_key
        assert json.loads(record.read_text())["applied"] == {key: "halted for plan 1"}
        # Back on the same address; meanwhile the federation keeps the action EXECUTING.
        back, _ = await owner_process(record, port, "serve")
        try:
            events = await settled(client, plan)
            stored = await client.get_plan(plan.sequence)
        finally:
            back.kill()
            await back.wait()
    final = stored.action(plan.actions[0].id)
    assert final.status is c.ActionStatus.COMPLETED
    assert final.status_detail.startswith("applied, its answer lost (after 3 attempts: ")
    assert final.status_detail.endswith("): halted for plan 1")
    owner = json.loads(record.read_text())
    assert owner["calls"] == [key]  # asked, never sent again
    statuses = [e.status for _, e in events if isinstance(e, StatusUpdate)]
    assert statuses == [c.ActionStatus.EXECUTING, c.ActionStatus.COMPLETED]
