"""Executing a plan against in-process owners: dependencies, bounded concurrency, retries,
timeouts and the status sequence each action goes through."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from federation.execution import execute_plan
from federation.plan import Plan
from qtmesh.base import contract as c
from qtmesh.base.errors import InvalidArgument, Unavailable
from tests.helpers.federation import Owner


def action(
    aid: str,
    owner: str = "owner",
    *,
    depends_on=(),
    priority=c.Priority.MEDIUM,
    status=c.ActionStatus.PENDING,
) -> c.Action:
    return c.Action(
        id=aid,
        priority=priority,
        target=f"t/{aid}",
        parameters=c.RunEvolution(),
        confidence=0.5,
        rationale="r",
        depends_on=depends_on,
        status=status,
        owner=owner,
        idempotency_key=f"gap-1/{aid}",
    )


def plan_of(*actions: c.Action) -> Plan:
    return Plan(
        id="gap-1",
        sequence=1,
        create_time=0,
        confidence=0.5,
        consensus_score=1.0,
        actions=actions,
        agents=(),
        context=c.AgentContext(cycle_id="x"),
        summary="",
    )


async def run(plan: Plan, owners, **overrides):
    history: list[tuple[str, c.ActionStatus, str, int]] = []

    async def on_status(a: c.Action, status: c.ActionStatus, detail: str, attempts: int) -> None:
        history.append((a.id, status, detail, attempts))

    settings = {"max_concurrent": 5, "timeout": 5.0, "attempts": 3, "backoff": 0.0, **overrides}
    final = await execute_plan(plan, owners=owners, on_status=on_status, **settings)
    return final, history


async def test_statuses_move_from_executing_to_completed():
    owner = Owner()
    final, history = await run(plan_of(action("a1")), {"owner": owner})
    assert final == {"a1": c.ActionStatus.COMPLETED}
    assert [(h[0], h[1]) for h in history] == [
        ("a1", c.ActionStatus.EXECUTING),
        ("a1", c.ActionStatus.COMPLETED),
    ]
    assert history[-1][2] == "did a1"


async def test_a_failed_dependency_blocks_its_dependents():
    owner = Owner({"a1": [InvalidArgument("x", "rejected")]})
    plan = plan_of(action("a1"), action("a2", depends_on=("a1",)), action("a3", depends_on=("a2",)))
    final, history = await run(plan, {"owner": owner})
    assert final == {
        "a1": c.ActionStatus.FAILED,
        "a2": c.ActionStatus.BLOCKED,
        "a3": c.ActionStatus.BLOCKED,
    }
    assert (
        "INVALID_ARGUMENT"
        in dict((h[0], h[2]) for h in history if h[1] is c.ActionStatus.FAILED)["a1"]
    )
    assert owner.keys == ["gap-1/a1"]  # the blocked ones never reached the owner


async def test_held_or_superseded_dependencies_block_too():
    plan = plan_of(
        action("a1", status=c.ActionStatus.HELD),
        action("a2", depends_on=("a1",)),
        action("a3", status=c.ActionStatus.SUPERSEDED),
    )
    final, history = await run(plan, {"owner": Owner()})
    assert final["a2"] is c.ActionStatus.BLOCKED
    assert "a1 is held" in history[0][2]
    assert final["a3"] is c.ActionStatus.SUPERSEDED  # never executed


async def test_unavailable_is_retried_with_the_same_key_then_succeeds():
    owner = Owner({"a1": [Unavailable("down"), Unavailable("still down")]})
    final, history = await run(plan_of(action("a1")), {"owner": owner})
    assert final["a1"] is c.ActionStatus.COMPLETED
    assert history[-1][3] == 3
    assert owner.keys == ["gap-1/a1"] * 3


async def test_retries_are_bounded():
    owner = Owner({"a1": [Unavailable("down")] * 5})
    final, history = await run(plan_of(action("a1")), {"owner": owner}, attempts=3)
    assert final["a1"] is c.ActionStatus.FAILED
    assert history[-1][2] == "after 3 attempts: down"
    assert len(owner.keys) == 3


async def test_a_slow_owner_times_out():
    owner = Owner(gate=asyncio.Event())  # never opened
    final, history = await run(plan_of(action("a1")), {"owner": owner}, timeout=0.05, attempts=2)
    assert final["a1"] is c.ActionStatus.FAILED
    assert "timed out" in history[-1][2]


async def test_at_most_max_concurrent_actions_run_at_once():
    gate = asyncio.Event()
    owner = Owner(gate=gate)
    plan = plan_of(*(action(f"a{i}") for i in range(12)))
    running = asyncio.ensure_future(run(plan, {"owner": owner}, max_concurrent=5))
    async with owner.started:
        await owner.started.wait_for(lambda: owner.running == 5)
    for _ in range(10):
        await asyncio.sleep(0)  # give any sixth action every chance to start
    assert owner.running == 5
    gate.set()
    final, _ = await running
    assert owner.peak == 5
    assert set(final.values()) == {c.ActionStatus.COMPLETED}


async def test_actions_without_an_executor_fail():
    final, history = await run(plan_of(action("a1", owner="nobody")), {"owner": Owner()})
    assert final["a1"] is c.ActionStatus.FAILED
    assert "no executor" in history[-1][2]


async def test_higher_priorities_are_started_first():
    gate = asyncio.Event()
    owner = Owner(gate=gate)
    plan = plan_of(
        action("low", priority=c.Priority.LOW),
        action("critical", priority=c.Priority.CRITICAL),
        action("high", priority=c.Priority.HIGH),
    )
    running = asyncio.ensure_future(run(plan, {"owner": owner}, max_concurrent=1))
    async with owner.started:
        await owner.started.wait_for(lambda: bool(owner.keys))
    gate.set()
    await running
    assert owner.keys == ["gap-1/critical", "gap-1/high", "gap-1/low"]


def test_action_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        action("a").status = c.ActionStatus.FAILED  # type: ignore[misc]


async def test_a_dependency_cycle_blocks_its_actions_instead_of_hanging():
    plan = plan_of(
        action("a1", depends_on=("a2",)),
        action("a2", depends_on=("a1",)),
        action("a3", depends_on=("a2",)),
        action("a4", depends_on=("a4",)),
        action("a5", depends_on=("gone",)),
        action("a6"),
    )
    owner = Owner()
    final, history = await run(plan, {"owner": owner})
    assert final == {
        "a1": c.ActionStatus.BLOCKED,
        "a2": c.ActionStatus.BLOCKED,
        "a3": c.ActionStatus.BLOCKED,
        "a4": c.ActionStatus.BLOCKED,
        "a5": c.ActionStatus.BLOCKED,
        "a6": c.ActionStatus.COMPLETED,
    }
    details = {h[0]: h[2] for h in history}
    assert details["a1"] == "dependency cycle among a1, a2, a3, a4"
    assert details["a5"] == "dependency not completed: gone is not in the plan"
    assert owner.keys == ["gap-1/a6"]


async def test_a_failing_status_report_stops_the_execution_and_leaves_nothing_running():
    gate = asyncio.Event()
    owner = Owner(gate=gate)

    async def on_status(a: c.Action, status: c.ActionStatus, detail: str, attempts: int) -> None:
        if a.id == "a1" and status is c.ActionStatus.COMPLETED:
            raise RuntimeError("history is gone")

    plan = plan_of(
        action("a1", priority=c.Priority.HIGH),
        action("a2", depends_on=("a1",)),
        action("a3"),
    )
    before = asyncio.all_tasks()
    running = asyncio.ensure_future(
        execute_plan(
            plan,
            owners={"owner": owner},
            on_status=on_status,
            max_concurrent=5,
            timeout=5.0,
            attempts=1,
            backoff=0.0,
        )
    )
    async with owner.started:
        await owner.started.wait_for(lambda: owner.running == 2)
    gate.set()
    with pytest.raises(ExceptionGroup) as failure:
        await running
    assert failure.group_contains(RuntimeError, match="history is gone")
    assert asyncio.all_tasks() - before == set()  # a3 and a2 were cancelled, not left behind


async def test_plans_sharing_slots_share_the_concurrency_bound():
    gate = asyncio.Event()
    owner = Owner(gate=gate)
    slots = asyncio.Semaphore(3)

    async def on_status(*_args) -> None:
        return None

    def execute(plan: Plan):
        return execute_plan(
            plan,
            owners={"owner": owner},
            on_status=on_status,
            slots=slots,
            timeout=5.0,
            attempts=1,
            backoff=0.0,
        )

    first = plan_of(*(action(f"a{i}") for i in range(3)))
    second = dataclasses.replace(first, id="gap-2", sequence=2)
    both = asyncio.ensure_future(asyncio.gather(execute(first), execute(second)))
    async with owner.started:
        await owner.started.wait_for(lambda: owner.running == 3)
    for _ in range(10):
        await asyncio.sleep(0)  # give a fourth action every chance to start
    assert owner.running == 3
    gate.set()
    await both
    assert owner.peak == 3
    assert len(owner.keys) == 6
