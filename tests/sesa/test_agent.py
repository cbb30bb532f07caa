"""SESA's agent and meta priors in process: keys, joins, failures and recommendations of
RUN_EVOLUTION against a scripted evolution, and how meta's parameters become an evolution's
settings and seeds."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from qtmesh.base.contract import (
    Action,
    AgentContext,
    ExecutionResult,
    Priority,
    RunEvolution,
    TuneLearning,
)
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.base.genome import Policy, StrategyFamily
from sesa.agent import (
    DAY_NANOS,
    EvolutionOrder,
    EvolutionReport,
    FinishedEvolution,
    SesaAgent,
    evolution_id,
)
from sesa.evolution import EvolutionConfig, EvolutionResult
from sesa.priors import Priors, TunedParameters

POLICY = Policy()
TUNED = TunedParameters(
    version=7,
    sesa_mutation_rate=0.5,
    sesa_mutation_magnitude=0.1,
    rl_learning_rate=1e-4,  # below the gene's 0.001
    rl_exploration_rate=0.12,
    rl_discount=0.97,
)


def action(key: str, symbols=("ORBT",), parameters=None) -> Action:
    return Action(
        id="a1",
        priority=Priority.LOW,
        target="sesa/evolution",
        parameters=parameters or RunEvolution(symbols=symbols),
        confidence=0.6,
        rationale="test",
        idempotency_key=key,
    )


class Scripted:
    """run_evolution: each order waits for ``release`` (when given), then reports one
    evolution per symbol, or raises ``failure``."""

    def __init__(self) -> None:
        self.orders: list[EvolutionOrder] = []
        self.release: asyncio.Event | None = None
        self.failure: Exception | None = None
        self.running = 0
        self.most_at_once = 0
        self.started = asyncio.Event()
        self.checked: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def check(self, order: EvolutionOrder) -> None:
        # No await after this: the agent has registered the key once the event is seen.
        self.checked[order.key].set()
        if "NOPE" in order.symbols:
            raise InvalidArgument("action.parameters.run_evolution.symbols[0]", "unknown")

    async def run(self, order: EvolutionOrder) -> EvolutionReport:
        self.orders.append(order)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        try:
            if self.release is not None:
                await self.release.wait()
            if self.failure is not None:
                raise self.failure
            result = EvolutionResult((), (), (), (), 11, 0.0)
            finished = tuple(
                FinishedEvolution(result, s, "Tech", 0, evolution_id("t", order.key, s))
                for s in order.symbols
            )
            config = EvolutionConfig(num_generations=order.generations or 5)
            priors = Priors(None, "test")
            return EvolutionReport(order, priors, config, tuple(priors.seeds(POLICY)), finished)
        finally:
            self.running -= 1


@pytest.fixture
def scripted() -> Scripted:
    return Scripted()


@pytest.fixture
async def agent(scripted):
    agent = SesaAgent(
        run_evolution=scripted.run, check_order=scripted.check, default_symbols=("ORBT",)
    )
    yield agent
    await agent.close()


def test_meta_parameters_set_the_mutation_and_the_q_learning_seed():
    priors = Priors(TUNED)
    config = priors.config(EvolutionConfig(num_generations=9))
    assert (config.mutation_rate, config.mutation_magnitude) == (0.5, 0.1)
    assert config.num_generations == 9
    seeds = priors.seeds(POLICY)
    assert [s.family for s in seeds] == list(StrategyFamily)
    (q,) = [s for s in seeds if s.family is StrategyFamily.Q_LEARNING]
    assert q.parameters["learning_rate"] == POLICY.spec(q.family, "learning_rate").low
    assert (q.parameters["exploration"], q.parameters["discount"]) == (0.12, 0.97)
    assert q.origin == "meta/v7"
    assert POLICY.validate(q, field="q") == q
    others = [s for s in seeds if s.family is not StrategyFamily.Q_LEARNING]
    assert others == [POLICY.default_genome(s.family) for s in others]
    assert priors.version == "7"


def test_without_meta_the_defaults_stand():
    priors = Priors(None, "UNAVAILABLE: down")
    base = EvolutionConfig()
    assert priors.config(base) is base
    assert priors.seeds(POLICY) == [POLICY.default_genome(f) for f in StrategyFamily]
    assert priors.version == "unavailable"


async def test_a_key_runs_once_and_a_failed_run_may_run_again(agent, scripted):
    first = await agent.execute(action("k1"), plan_sequence=1)
    assert first.applied
    again = await agent.execute(action("k1"), plan_sequence=1)
    assert (again.applied, again.outcome) == (False, first.outcome)
    assert again.detail.startswith("already ran: ")
    assert len(scripted.orders) == 1

    scripted.failure = Unavailable("market down")
    with pytest.raises(Unavailable):
        await agent.execute(action("k2"), plan_sequence=2)
    scripted.failure = None
    retried = await agent.execute(action("k2"), plan_sequence=2)
    assert retried.applied
    assert len(scripted.orders) == 3


async def test_evolutions_run_one_at_a_time_and_equal_orders_join(agent, scripted):
    scripted.release = asyncio.Event()
    a = asyncio.ensure_future(agent.execute(action("k1"), plan_sequence=1))
    await scripted.started.wait()
    b = asyncio.ensure_future(agent.execute(action("k2"), plan_sequence=2))
    c = asyncio.ensure_future(agent.execute(action("k3", ("NOVA",)), plan_sequence=3))
    await scripted.checked["k2"].wait()
    await scripted.checked["k3"].wait()
    assert agent.running
    assert await agent.recommend(AgentContext(cycle_id="c")) == []
    scripted.release.set()
    results: list[ExecutionResult] = [await a, await b, await c]
    assert [o.symbols for o in scripted.orders] == [("ORBT",), ("NOVA",)]
    assert scripted.most_at_once == 1
    assert results[1].outcome["started_by"] == "k1"
    assert results[1].outcome["evolution_id"] == results[0].outcome["evolution_id"]
    assert results[2].outcome["started_by"] == "k3"
    assert all(r.applied for r in results)


async def test_bad_orders_and_other_actions_are_rejected_at_once(agent, scripted):
    with pytest.raises(InvalidArgument):
        await agent.execute(action("k1", ("NOPE",)), plan_sequence=1)
    with pytest.raises(InvalidArgument) as failure:
        await agent.execute(action("k2", parameters=TuneLearning()), plan_sequence=1)
    assert failure.value.field == "action.type"
    with pytest.raises(InvalidArgument) as failure:
        await agent.execute(action(""), plan_sequence=1)
    assert failure.value.field == "action.idempotency_key"
    assert scripted.orders == []


async def test_an_evolution_is_asked_for_when_none_ran_or_the_latest_is_a_day_old(agent):
    (first,) = await agent.recommend(AgentContext(cycle_id="c1"))
    assert isinstance(first.parameters, RunEvolution)
    assert first.parameters.symbols == ("ORBT",)
    assert "no evolution has run yet" in first.rationale
    result = EvolutionResult((), (), (), (), 3, 0.0)
    agent.remember(FinishedEvolution(result, "ORBT", "Tech", 10 * DAY_NANOS, "evo-1"))
    assert await agent.recommend(AgentContext(cycle_id="c2", as_of_time=10 * DAY_NANOS)) == []
    later = AgentContext(cycle_id="c3", as_of_time=12 * DAY_NANOS)
    (stale,) = await agent.recommend(later)
    assert "the latest evolution finished 48 h ago" in stale.rationale


async def test_an_evolution_another_replica_completed_counts_through_the_federations_hint(
    agent, scripted
):
    """A fresh replica (none of its own) reads the federation's completed/run_evolution."""
    hint = {"completed/run_evolution": str(10 * DAY_NANOS)}
    fresh = AgentContext(cycle_id="c1", as_of_time=10 * DAY_NANOS + 3600 * 10**9, hints=hint)
    assert await agent.recommend(fresh) == []
    later = AgentContext(cycle_id="c2", as_of_time=11 * DAY_NANOS, hints=hint)
    (stale,) = await agent.recommend(later)
    assert "the latest evolution finished 24 h ago" in stale.rationale
    # Its own newer evolution wins over an older hint; a broken hint is no evolution.
    result = EvolutionResult((), (), (), (), 3, 0.0)
    agent.remember(FinishedEvolution(result, "ORBT", "Tech", 11 * DAY_NANOS, "evo-1"))
    assert await agent.recommend(later) == []
    broken = AgentContext(cycle_id="c3", hints={"completed/run_evolution": "soon"})
    assert await agent.recommend(broken) == []  # its own evolution still counts
    (first,) = await SesaAgent(
        run_evolution=agent._run_evolution,
        check_order=agent._check_order,
        default_symbols=("ORBT",),
    ).recommend(broken)
    assert "no evolution has run yet" in first.rationale


async def test_closing_cancels_a_running_evolution(scripted):
    scripted.release = asyncio.Event()
    agent = SesaAgent(
        run_evolution=scripted.run, check_order=scripted.check, default_symbols=("ORBT",)
    )
    call = asyncio.ensure_future(agent.execute(action("k1"), plan_sequence=1))
    await scripted.started.wait()
    await agent.close()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not agent.running
    assert agent.run_of("k1") is None
