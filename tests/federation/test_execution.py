"""Executing a plan against in-process owners: dependencies, critical actions first, windows on
the market clock, bounded concurrency, retries, timeouts per action type, outcomes, and the
status sequence each action goes through."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from federation.execution import execute_plan
from federation.plan import Plan
from qtmesh.base import contract as c
from qtmesh.base.errors import InvalidArgument, Unavailable
from tests.helpers.federation import MARKET, Owner

EVOLVE = c.RunEvolution()


def action(
    aid: str,
    owner: str = "owner",
    *,
    depends_on=(),
    priority=c.Priority.MEDIUM,
    status=c.ActionStatus.PENDING,
    execute_by_time: int = 0,
    parameters: c.ActionParameters = EVOLVE,
) -> c.Action:
    return c.Action(
        id=aid,
        priority=priority,
        target=f"t/{aid}",
        parameters=parameters,
        execute_by_time=execute_by_time,
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


async def run(plan: Plan, owners, *, outcomes: dict | None = None, **overrides):
    """Executes ``plan``; returns the final statuses and every (id, status, detail, attempts)
    reported, in order. ``outcomes`` collects each completed action's outcome by id."""
    history: list[tuple[str, c.ActionStatus, str, int]] = []

    async def on_status(
        a: c.Action, status: c.ActionStatus, detail: str, attempts: int, outcome
    ) -> None:
        history.append((a.id, status, detail, attempts))
        if outcomes is not None and status is c.ActionStatus.COMPLETED:
            outcomes[a.id] = dict(outcome)

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

    async def on_status(
        a: c.Action, status: c.ActionStatus, detail: str, attempts: int, outcome
    ) -> None:
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


class MarketClock:
    """The market's clock as the federation sees it; a test moves it."""

    def __init__(self, now: int = MARKET) -> None:
        self.now = now

    def __call__(self) -> tuple[int, str]:
        return self.now, "market clock"


async def test_critical_actions_settle_before_anything_else_starts():
    gate = asyncio.Event()
    owner = Owner(gate=gate)
    plan = plan_of(
        action("halt", priority=c.Priority.CRITICAL),
        action("cut", priority=c.Priority.CRITICAL),
        action("high", priority=c.Priority.HIGH),
        action("low", priority=c.Priority.LOW),
    )
    running = asyncio.ensure_future(run(plan, {"owner": owner}, max_concurrent=5))
    async with owner.started:
        await owner.started.wait_for(lambda: owner.running == 2)
    for _ in range(20):
        await asyncio.sleep(0)  # give the others every chance to start beside them
    assert sorted(owner.keys) == ["gap-1/cut", "gap-1/halt"]  # slots were free
    gate.set()
    final, history = await running
    assert set(final.values()) == {c.ActionStatus.COMPLETED}
    order = [(h[0], h[1]) for h in history]
    last_critical = max(order.index((a, c.ActionStatus.COMPLETED)) for a in ("halt", "cut"))
    assert last_critical < min(order.index((a, c.ActionStatus.EXECUTING)) for a in ("high", "low"))


async def test_the_rest_of_a_plan_runs_after_a_failed_critical_action_and_its_dependencies():
    owner = Owner({"halt": [InvalidArgument("x", "no")]})
    plan = plan_of(
        # A critical action's dependency runs with it, whatever its priority (no deadlock).
        action("prepare", priority=c.Priority.LOW),
        action("halt", priority=c.Priority.CRITICAL, depends_on=("prepare",)),
        action("high", priority=c.Priority.HIGH),
    )
    final, history = await run(plan, {"owner": owner})
    assert final == {
        "prepare": c.ActionStatus.COMPLETED,
        "halt": c.ActionStatus.FAILED,
        "high": c.ActionStatus.COMPLETED,  # settled is enough: failed counts
    }
    order = [(h[0], h[1]) for h in history]
    assert order.index(("halt", c.ActionStatus.FAILED)) < order.index(
        ("high", c.ActionStatus.EXECUTING)
    )


async def test_an_action_that_cannot_start_in_its_window_expires_and_never_runs_late():
    clock = MarketClock()
    gate = asyncio.Event()
    owner = Owner(gate=gate)
    five_minutes = 300 * 10**9
    plan = plan_of(
        action("high", priority=c.Priority.HIGH, execute_by_time=MARKET + 60 * 10**9),
        action("medium", priority=c.Priority.MEDIUM, execute_by_time=MARKET + five_minutes),
        action("after", priority=c.Priority.MEDIUM, depends_on=("medium",)),
        action("low", priority=c.Priority.LOW),  # no window: when convenient
    )
    # One slot: the medium action waits for the high one, while the market moves on.
    running = asyncio.ensure_future(run(plan, {"owner": owner}, max_concurrent=1, clock=clock))
    async with owner.started:
        await owner.started.wait_for(lambda: owner.running == 1)
    clock.now = MARKET + five_minutes + 1
    gate.set()
    final, history = await running
    assert final == {
        "high": c.ActionStatus.COMPLETED,
        "medium": c.ActionStatus.EXPIRED,
        "after": c.ActionStatus.BLOCKED,
        "low": c.ActionStatus.COMPLETED,
    }
    details = {h[0]: h[2] for h in history}
    assert details["medium"] == (
        "not started by 2027-01-15T08:05:00Z: market clock at 2027-01-15T08:05:00.000000001Z"
    )
    assert details["after"] == "dependency not completed: medium is expired"
    assert "gap-1/medium" not in owner.keys
    assert owner.keys == ["gap-1/high", "gap-1/low"]


async def test_an_action_starting_at_the_end_of_its_window_runs():
    clock = MarketClock(MARKET + 60 * 10**9)
    plan = plan_of(action("high", priority=c.Priority.HIGH, execute_by_time=MARKET + 60 * 10**9))
    final, _ = await run(plan, {"owner": Owner()}, clock=clock)
    assert final == {"high": c.ActionStatus.COMPLETED}


class TimedOwner(Owner):
    """A remote-like owner: records the deadline each call is given."""

    takes_timeout = True

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: dict[str, float] = {}

    async def execute(self, action, *, plan_sequence, timeout=None):
        self.timeouts[action.id] = timeout
        return await super().execute(action, plan_sequence=plan_sequence)


async def test_each_action_type_has_its_own_timeout():
    owner = TimedOwner()
    plan = plan_of(
        action("evolve", parameters=c.RunEvolution()),
        action("tune", parameters=c.TuneLearning(retrain_models=True)),
    )
    await run(plan, {"owner": owner}, timeout=10.0, timeouts={c.ActionType.RUN_EVOLUTION: 600.0})
    assert owner.timeouts == {"evolve": 600.0, "tune": 10.0}
    slow = Owner(gate=asyncio.Event())  # never answers
    final, history = await run(
        plan_of(action("tune", parameters=c.TuneLearning(retrain_models=True))),
        {"owner": slow},
        timeout=5.0,
        timeouts={c.ActionType.TUNE_LEARNING: 0.05},
        attempts=1,
    )
    assert final == {"tune": c.ActionStatus.FAILED}
    assert history[-1][2] == "after 1 attempts: timed out (0.05 s each)"


class OutcomeOwner(Owner):
    async def execute(self, action, *, plan_sequence):
        await super().execute(action, plan_sequence=plan_sequence)
        return c.ExecutionResult(True, "evolved", {"evolution_id": "evo-3", "candidates": "2"})


async def test_the_owners_outcome_is_reported_with_the_completion():
    outcomes: dict = {}
    final, _ = await run(plan_of(action("a1")), {"owner": OutcomeOwner()}, outcomes=outcomes)
    assert final == {"a1": c.ActionStatus.COMPLETED}
    assert outcomes == {"a1": {"evolution_id": "evo-3", "candidates": "2"}}


class RecordingOwner(Owner):
    """An Owner that answers GetExecution from ``record`` (key -> detail), after failing the
    first ``unreachable`` questions UNAVAILABLE (an owner still restarting)."""

    def __init__(self, record: dict[str, str], *, unreachable: int = 0) -> None:
        super().__init__()
        self.record = record
        self.unreachable = unreachable
        self.asked: list[str] = []

    async def execution(self, idempotency_key: str) -> c.Execution:
        self.asked.append(idempotency_key)
        if self.unreachable:
            self.unreachable -= 1
            raise Unavailable("owner restarting")
        if idempotency_key in self.record:
            return c.Execution(c.ExecutionState.APPLIED, self.record[idempotency_key], {"n": "1"})
        return c.NOT_APPLIED


async def test_an_action_left_executing_is_completed_from_the_owners_record_without_a_resend():
    owner = RecordingOwner({"gap-1/a1": "halted at 10:00"}, unreachable=2)
    # Its window has long passed: it started in time, so it finishes.
    left = action("a1", status=c.ActionStatus.EXECUTING, execute_by_time=MARKET - 1)
    outcomes: dict = {}
    final, history = await run(
        plan_of(dataclasses.replace(left, attempts=1), action("a2", depends_on=("a1",))),
        {"owner": owner},
        outcomes=outcomes,
        clock=lambda: (MARKET, "market clock"),
    )
    assert final == {"a1": c.ActionStatus.COMPLETED, "a2": c.ActionStatus.COMPLETED}
    assert owner.asked == ["gap-1/a1"] * 3  # asked again while it could not answer
    assert owner.keys == ["gap-1/a2"]  # a1 was never sent again
    assert history[0] == (
        "a1",
        c.ActionStatus.COMPLETED,
        "applied before the federation restarted: halted at 10:00",
        1,
    )
    assert outcomes["a1"] == {"n": "1"}
    # The dependent waited for the resumed action.
    assert [h[:2] for h in history[1:]] == [
        ("a2", c.ActionStatus.EXECUTING),
        ("a2", c.ActionStatus.COMPLETED),
    ]


async def test_an_action_left_executing_that_was_never_applied_is_sent_again_under_its_key():
    owner = RecordingOwner({})
    plain = Owner()  # no GetExecution: it cannot say, so the action is sent again
    final, history = await run(
        plan_of(
            dataclasses.replace(action("a1", status=c.ActionStatus.EXECUTING), attempts=2),
            action("b1", "plain", status=c.ActionStatus.EXECUTING),
        ),
        {"owner": owner, "plain": plain},
    )
    assert final == {"a1": c.ActionStatus.COMPLETED, "b1": c.ActionStatus.COMPLETED}
    assert owner.keys == ["gap-1/a1"]
    assert plain.keys == ["gap-1/b1"]
    assert sorted(history) == [
        ("a1", c.ActionStatus.COMPLETED, "did a1", 3),
        ("b1", c.ActionStatus.COMPLETED, "did b1", 1),
    ]


async def test_an_action_whose_answers_were_lost_completes_if_its_owner_applied_it():
    # Every attempt fails UNAVAILABLE, yet the owner applied the first: its answer was lost.
    applied = RecordingOwner({"gap-1/a1": "did a1"}, unreachable=1)
    applied.behaviour = {"a1": [Unavailable("down")] * 3}
    never = RecordingOwner({})
    never.behaviour = {"b1": [Unavailable("down")] * 3}
    final, history = await run(
        plan_of(action("a1"), action("b1", "never")), {"owner": applied, "never": never}
    )
    assert final == {"a1": c.ActionStatus.COMPLETED, "b1": c.ActionStatus.FAILED}
    settled = {h[0]: h[2:] for h in history if h[1] is not c.ActionStatus.EXECUTING}
    assert settled["a1"] == ("applied, its answer lost (after 3 attempts: down): did a1", 3)
    assert settled["b1"] == ("after 3 attempts: down; never never applied it", 3)


async def test_an_owner_that_never_answers_fails_the_action_once_the_answer_timeout_passed():
    silent = RecordingOwner({}, unreachable=10**6)
    silent.behaviour = {"a1": [Unavailable("down")] * 3}
    final, history = await run(
        plan_of(
            action("a1"),
            dataclasses.replace(action("a2"), status=c.ActionStatus.EXECUTING, attempts=1),
        ),
        {"owner": silent},
        answer_timeout=0.2,
    )
    assert final == {"a1": c.ActionStatus.FAILED, "a2": c.ActionStatus.FAILED}
    settled = {h[0]: h[2] for h in history if h[1] is c.ActionStatus.FAILED}
    silence = "owner did not say within 0.2 s whether it applied it"
    assert settled == {"a1": f"after 3 attempts: down; {silence}", "a2": f"interrupted; {silence}"}
    assert silent.keys == ["gap-1/a1"] * 3  # a2 was never sent again blind
