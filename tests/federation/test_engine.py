"""The federation engine in-process: writes that outlive a cancelled caller, one concurrency
bound across plans, a shutdown that records the actions it interrupts, and the completions it
tells the agents of."""

from __future__ import annotations

import asyncio

from federation.config import FederationConfig
from federation.engine import INTERRUPTED, Federation
from federation.store import PlanStore
from qtmesh.base import contract as c
from qtmesh.base.errors import Unavailable
from qtmesh.base.storage import create_engine, sqlite_url
from tests.helpers.federation import MARKET, Owner


class Agent(Owner):
    """Recommends enabling ``count`` strategies and executes them once ``gate`` opens."""

    def __init__(self, count: int = 1, gate: asyncio.Event | None = None) -> None:
        super().__init__(gate=gate)
        self.count = count

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return [
            c.Recommendation(
                id=f"r{i}",
                priority=c.Priority.MEDIUM,
                target="t",
                parameters=c.EnableStrategy(strategy_id=f"s{i}"),
                confidence=0.5,
                rationale="r",
            )
            for i in range(self.count)
        ]


class HeldStore(PlanStore):
    """Commits at once, then holds the write's caller until ``release`` is set: a PostgreSQL
    write whose thread committed while its caller waits to be resumed."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.committed = asyncio.Event()
        self.release = asyncio.Event()

    async def run_short(self, work, *args):
        result = work(*args)
        self.committed.set()
        await self.release.wait()
        return result


def federation(
    tmp_path, agent: Agent, store_type=PlanStore, market_clock=None, sync_clock=None, **settings
) -> Federation:
    store = store_type(create_engine(sqlite_url(tmp_path / "federation.db")))
    config = FederationConfig(
        agents=("owner",),
        owners={"ENABLE_STRATEGY": "owner"},
        gap_update_interval_seconds=0.0,
        data_dir=tmp_path,
        **settings,
    )
    return Federation(
        config=config,
        agents={"owner": agent},
        owners={"owner": agent},
        store=store,
        market_clock=market_clock,
        sync_clock=sync_clock,
    )


async def test_a_plan_is_made_at_the_markets_clock_even_when_the_streamed_clock_lags(tmp_path):
    agent = Agent()
    contexts: list[c.AgentContext] = []
    recommend = agent.recommend

    async def remember(context: c.AgentContext) -> list[c.Recommendation]:
        contexts.append(context)
        return await recommend(context)

    agent.recommend = remember
    streamed = [(MARKET, 10)]  # what the stream delivered so far
    market = (MARKET + 240 * 60 * 10**9, 250)  # where a replay has moved the market

    async def sync() -> None:
        streamed.append(market)

    fed = federation(tmp_path, agent, market_clock=lambda: streamed[-1], sync_clock=sync)
    plan = await fed.generate_plan(execute=True)
    assert await fed.wait_for_executions()
    assert (contexts[0].as_of_time, contexts[0].market_position) == market
    assert plan.context.as_of_time == market[0]
    # Its actions' windows run from that time, so the plan's MEDIUM action did not expire.
    assert fed.store.get_plan(plan.sequence).actions[0].status is c.ActionStatus.COMPLETED

    async def unreachable() -> None:
        raise Unavailable("market down")

    fallback = federation(
        tmp_path / "b", Agent(), market_clock=lambda: streamed[0], sync_clock=unreachable
    )
    assert (await fallback.generate_plan()).context.as_of_time == MARKET
    await fed.close()
    await fallback.close()


async def test_a_plan_committed_for_a_cancelled_caller_is_still_published(tmp_path):
    fed = federation(tmp_path, Agent(), store_type=HeldStore)
    subscription = fed.hub.subscribe()
    caller = asyncio.ensure_future(fed.generate_plan())
    await fed.store.committed.wait()
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)
    assert caller.cancelled()
    fed.store.release.set()
    event = await subscription.next()
    assert event.sequence == 1
    assert event.plan is not None
    assert fed.store.last_sequence() == 1
    await fed.close()


async def test_the_concurrency_bound_holds_across_plans(tmp_path):
    gate = asyncio.Event()
    agent = Agent(count=3, gate=gate)
    fed = federation(tmp_path, agent, max_concurrent_actions=2)
    for _ in range(2):
        await fed.generate_plan(execute=True)
    async with agent.started:
        await agent.started.wait_for(lambda: agent.running == 2)
    for _ in range(20):
        await asyncio.sleep(0)  # give a third action every chance to start
    assert agent.running == 2
    gate.set()
    assert await fed.wait_for_executions()
    assert agent.peak == 2
    await fed.close()


async def test_shutdown_records_the_actions_it_interrupts(tmp_path):
    agent = Agent(count=2, gate=asyncio.Event())  # never opened
    fed = federation(tmp_path, agent, max_concurrent_actions=1, shutdown_grace_seconds=0.0)
    plan = await fed.generate_plan(execute=True)
    async with agent.started:
        await agent.started.wait_for(lambda: agent.running == 1)
    published = []
    publish = fed.hub.publish
    fed.hub.publish = lambda event: (published.append(event.sequence), publish(event))
    await fed.close()
    stored = fed.store.get_plan(plan.sequence)
    assert {a.status for a in stored.actions} == {c.ActionStatus.FAILED}
    assert {a.status_detail for a in stored.actions} == {INTERRUPTED}
    events = fed.store.events_after(0, 100)
    assert published == [e.sequence for e in events[-2:]]  # both failures, stored and published
    updates = [(e.update.action_id, e.update.status) for e in events if e.update is not None]
    first, second = (a.id for a in plan.actions)
    assert updates == [
        (first, c.ActionStatus.EXECUTING),
        (first, c.ActionStatus.FAILED),
        (second, c.ActionStatus.FAILED),
    ]


async def test_shutdown_lets_executions_finish_within_the_grace(tmp_path):
    gate = asyncio.Event()
    agent = Agent(count=1, gate=gate)
    fed = federation(tmp_path, agent, shutdown_grace_seconds=30.0)
    plan = await fed.generate_plan(execute=True)
    async with agent.started:
        await agent.started.wait_for(lambda: agent.running == 1)
    closing = asyncio.ensure_future(fed.close())
    gate.set()
    await closing
    assert fed.store.get_plan(plan.sequence).actions[0].status is c.ActionStatus.COMPLETED


async def test_agents_are_told_when_each_action_type_last_completed(tmp_path):
    agent = Agent()
    contexts: list[c.AgentContext] = []
    recommend = agent.recommend

    async def remember(context: c.AgentContext) -> list[c.Recommendation]:
        contexts.append(context)
        return await recommend(context)

    agent.recommend = remember
    market = (1_800_000_000 * 10**9, 42)
    fed = federation(tmp_path, agent, market_clock=lambda: market)
    await fed.generate_plan(execute=True)
    assert await fed.wait_for_executions()
    await fed.generate_plan(hints={"regime_changed": "true"})
    # Nothing had completed before the first cycle; the second hears when the strategy was
    # enabled, on the market clock, beside the caller's own hints.
    assert "completed/enable_strategy" not in contexts[0].hints
    assert dict(contexts[1].hints) == {
        "completed/enable_strategy": str(market[0]),
        "regime_changed": "true",
    }
    await fed.close()


class Advisor(Owner):
    """Recommends what it is given and executes it (once ``gate`` opens), returning
    ``outcome``."""

    def __init__(self, recommendations, gate=None, outcome=None) -> None:
        super().__init__(gate=gate)
        self.recommendations = recommendations
        self.outcome = outcome or {}

    async def recommend(self, context):
        return list(self.recommendations)

    async def execute(self, action, *, plan_sequence):
        result = await super().execute(action, plan_sequence=plan_sequence)
        return c.ExecutionResult(result.applied, result.detail, self.outcome)


def advised(tmp_path, advisor: Advisor, **kwargs) -> Federation:
    store = PlanStore(create_engine(sqlite_url(tmp_path / "federation.db")))
    config = FederationConfig(
        agents=("owner",),
        owners={t.name: "owner" for t in c.ActionType},
        gap_update_interval_seconds=0.0,
        data_dir=tmp_path,
        **kwargs.pop("settings", {}),
    )
    return Federation(
        config=config, agents={"owner": advisor}, owners={"owner": advisor}, store=store, **kwargs
    )


def recommendation(rid, parameters, priority=c.Priority.HIGH, as_of_time=0):
    return c.Recommendation(
        id=rid,
        priority=priority,
        target="t",
        parameters=parameters,
        confidence=0.8,
        rationale=rid,
        as_of_time=as_of_time,
    )


WALL = 1_900_000_000 * 10**9


async def test_a_plan_is_timed_and_aged_on_the_market_clock(tmp_path):
    advisor = Advisor(
        [
            recommendation("evolve", c.RunEvolution(), c.Priority.HIGH, as_of_time=MARKET - 10**9),
            recommendation(
                "old", c.EnableStrategy(strategy_id="s1"), as_of_time=MARKET - 2 * 86_400 * 10**9
            ),
        ]
    )
    fed = advised(
        tmp_path,
        advisor,
        market_clock=lambda: (MARKET, 42),
        wall_clock=lambda: WALL,
        settings={"priority_windows": {"HIGH": "30"}},
    )
    plan = await fed.generate_plan()
    assert plan.context.as_of_time == MARKET
    assert plan.create_time == WALL
    evolve, old = plan.actions
    assert evolve.execute_by_time == MARKET + 30 * 10**9
    assert old.status is c.ActionStatus.SUPERSEDED
    assert "2d of market time before the plan's" in old.status_detail
    await fed.close()


async def test_without_a_market_clock_windows_run_on_the_wall_clock(tmp_path):
    wall = [WALL]
    gate = asyncio.Event()
    advisor = Advisor(
        [
            recommendation("first", c.RunEvolution()),
            recommendation("second", c.EnableStrategy(strategy_id="s1")),
        ],
        gate=gate,
    )
    fed = advised(
        tmp_path, advisor, wall_clock=lambda: wall[0], settings={"max_concurrent_actions": 1}
    )
    plan = await fed.generate_plan(execute=True)
    assert {a.execute_by_time for a in plan.actions} == {WALL + 60 * 10**9}
    async with advisor.started:
        await advisor.started.wait_for(lambda: advisor.running == 1)
    wall[0] = WALL + 61 * 10**9
    gate.set()
    assert await fed.wait_for_executions()
    stored = fed.store.get_plan(plan.sequence)
    first, second = stored.actions
    assert first.status is c.ActionStatus.COMPLETED
    assert second.status is c.ActionStatus.EXPIRED
    assert second.status_detail == (
        "not started by 2030-03-17T17:47:40Z: wall clock at 2030-03-17T17:47:41Z"
    )
    await fed.close()


async def test_an_owners_outcome_is_stored_on_the_action_and_published(tmp_path):
    outcome = {"evolution_id": "evo-1", "candidates": "4"}
    advisor = Advisor([recommendation("evolve", c.RunEvolution())], outcome=outcome)
    fed = advised(tmp_path, advisor, market_clock=lambda: (MARKET, 1))
    subscription = fed.hub.subscribe()
    plan = await fed.generate_plan(execute=True)
    assert await fed.wait_for_executions()
    events = [await subscription.next() for _ in range(3)]
    completed = events[-1].update
    assert completed is not None
    assert completed.status is c.ActionStatus.COMPLETED
    assert dict(completed.outcome) == outcome
    executing = events[1].update
    assert executing is not None
    assert dict(executing.outcome) == {}
    assert dict(fed.store.get_plan(plan.sequence).actions[0].outcome) == outcome
    await fed.close()
