"""RUN_EVOLUTION over real market, meta and SESA servers (port 0): the action completes when the
evolution has finished, its candidates join the market's shadow book with the plan and action
that asked, meta's parameters tune it, and a retried key runs it once."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import grpc
import pytest

import sesa.agent
import sesa.service
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.client import MetaClient
from meta.config import MetaConfig
from meta.service import APP as META
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2_grpc
from qtmesh.base.contract import (
    Action,
    ActionType,
    AgentContext,
    ExecutionState,
    Priority,
    RunEvolution,
    TuneLearning,
)
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving, serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig

GENERATIONS = 3
TUNED = {
    "sesa_mutation_rate": 0.45,
    "sesa_mutation_magnitude": 0.35,
    "rl_learning_rate": 0.004,
    # Above the Q-learning gene's 0.3: the seed takes the bound.
    "rl_exploration_rate": 0.35,
    "rl_discount": 0.93,
}
OUTCOME_KEYS = {
    "evolution_id",
    "symbols",
    "sectors",
    "candidates",
    "fleet_change",
    "trials",
    "generations",
    "meta_version",
    "mutation_rate",
    "mutation_magnitude",
    "q_learning_learning_rate",
    "q_learning_exploration",
    "q_learning_discount",
    "started_by",
}


def run_evolution(key: str, symbols=("ORBT",), *, action_id: str = "evolve") -> Action:
    return Action(
        id=action_id,
        priority=Priority.LOW,
        target="sesa/evolution",
        parameters=RunEvolution(symbols=symbols, generations=GENERATIONS),
        confidence=0.6,
        rationale="test",
        idempotency_key=key,
    )


def tune(key: str, values: dict[str, float]) -> Action:
    return Action(
        id="tune",
        priority=Priority.LOW,
        target="meta",
        parameters=TuneLearning(parameters=values),
        confidence=0.6,
        rationale="test",
        idempotency_key=key,
    )


@contextlib.asynccontextmanager
async def market_server(tmp_path: Path):
    config = MarketConfig(synthetic_days=8, seed=5, data_dir=tmp_path / "market")
    async with serving_app(MARKET, config) as market:
        yield market


@contextlib.asynccontextmanager
async def sesa_server(addresses: dict[str, str], **settings):
    channels = ChannelConfig(addresses=addresses)
    alone = {"record_to_memory": False, "recall_from_memory": False}  # no memory is served
    config = SesaConfig(**(alone | settings))
    async with serving_app(sesa.service.APP, config, channel_config=channels) as s:
        yield s


@pytest.fixture
async def mesh(tmp_path):
    """Market, meta and SESA, SESA calling the other two."""
    async with market_server(tmp_path) as market:
        # Meta may push its scale to the market's fleet: its own changes, under its own keys.
        channels = ChannelConfig(addresses={"market": market.address})
        config = MetaConfig(
            data_dir=tmp_path / "meta",
            learn_from_sesa=False,
            follow_regimes=False,
            record_to_memory=False,
        )
        async with (
            serving_app(META, config, channel_config=channels) as meta,
            sesa_server({"market": market.address, "meta": meta.address}) as served,
        ):
            yield market, meta, served


@pytest.fixture
def evolutions(monkeypatch):
    """Counts the evolutions started (generation 0 is each one's first call of start)."""
    started: list[str] = []
    original = sesa.service.Evolution.start

    def start(self, seeds, data, **kwargs):
        started.append(data.symbol)
        return original(self, seeds, data, **kwargs)

    monkeypatch.setattr(sesa.service.Evolution, "start", start)
    return started


@pytest.fixture
def abandoned(monkeypatch):
    """Set when a call of SESA's execute is cancelled (its caller went away)."""
    event = asyncio.Event()
    original = sesa.agent.SesaAgent.execute

    async def execute(self, action, *, plan_sequence):
        try:
            return await original(self, action, plan_sequence=plan_sequence)
        except asyncio.CancelledError:
            event.set()
            raise

    monkeypatch.setattr(sesa.agent.SesaAgent, "execute", execute)
    return event


@pytest.fixture
def held(monkeypatch):
    """Holds every evolution step until the event is set."""
    release = asyncio.Event()
    reached = asyncio.Event()
    original = sesa.service.run_cancellable

    async def waiting(work):
        reached.set()
        await release.wait()
        return await original(work)

    monkeypatch.setattr(sesa.service, "run_cancellable", waiting)
    return reached, release


async def test_run_evolution_completes_with_its_candidates_in_the_shadow_book(mesh, evolutions):
    market, meta, served = mesh
    tuned = await AgentClient(meta.channel, name="meta").execute(tune("t1", TUNED), plan_sequence=1)
    assert tuned.applied
    parameters = await MetaClient(meta.channel).parameters()
    assert parameters.version > 1

    sesa = AgentClient(served.channel, name="sesa")
    result = await sesa.execute(run_evolution("plan-3/evolve"), plan_sequence=3)

    # Completed only once the evolution finished: its result is the action's.
    assert result.applied
    assert evolutions == ["ORBT"]
    outcome = result.outcome
    assert set(outcome) >= OUTCOME_KEYS
    assert "meta_error" not in outcome
    evolution_id = outcome["evolution_id"]
    candidates = outcome["candidates"].split(",")
    assert candidates
    assert all(c.startswith("ORBT/") for c in candidates)
    assert outcome["symbols"] == "ORBT"
    assert outcome["generations"] == str(GENERATIONS)
    assert int(outcome["trials"]) > GENERATIONS
    assert outcome["started_by"] == "plan-3/evolve"
    assert evolution_id in result.detail
    assert all(c in result.detail for c in candidates)
    # The meta version and the settings it served.
    assert outcome["meta_version"] == str(parameters.version)
    assert f"Meta parameters v{parameters.version}" in result.detail
    assert float(outcome["mutation_rate"]) == parameters.sesa_mutation_rate == 0.45
    assert float(outcome["mutation_magnitude"]) == parameters.sesa_mutation_magnitude == 0.35
    assert float(outcome["q_learning_learning_rate"]) == parameters.rl_learning_rate
    assert float(outcome["q_learning_discount"]) == parameters.rl_discount
    bound = Policy().spec(StrategyFamily.Q_LEARNING, "exploration").high
    assert parameters.rl_exploration_rate > bound
    assert float(outcome["q_learning_exploration"]) == bound

    # Over gRPC, the market's book: plan 3 -> this action -> this evolution -> its shadows.
    fleet = await MarketClient(market.channel).fleet()
    symbols = {s.symbol: s.sector for s in await MarketClient(market.channel).list_symbols()}
    shadows = {s.strategy.id: s for s in fleet.strategies if s.origin.startswith("evolution/")}
    assert set(shadows) == set(candidates)
    for shadow in shadows.values():
        assert shadow.origin == f"evolution/{evolution_id}"
        assert shadow.stage is StrategyStage.SHADOW
        assert shadow.enabled
        assert shadow.weight == 0.0
        assert shadow.strategy.symbol == "ORBT"
        assert shadow.strategy.sector == symbols["ORBT"] == outcome["sectors"]
        assert shadow.trials == int(outcome["trials"])
        assert shadow.strategy.genome.id == shadow.strategy.id.partition("/")[2]
    (change,) = [c for c in fleet.changes if c.cause.action_key == "plan-3/evolve"]
    assert (change.cause.action_id, change.cause.plan_sequence) == ("evolve", 3)
    assert str(change.sequence) == outcome["fleet_change"]
    assert evolution_id in change.detail

    # The same key again: the first result, no second evolution, no second book change.
    again = await sesa.execute(run_evolution("plan-3/evolve"), plan_sequence=3)
    assert not again.applied
    assert again.outcome == outcome
    assert evolutions == ["ORBT"]
    later = await MarketClient(market.channel).fleet()
    assert [c.sequence for c in later.changes if c.cause.action_key == "plan-3/evolve"] == [
        change.sequence
    ]

    # Its candidates are in the book; SESA asks for no evolution until this one is a day old.
    assert await sesa.recommend(AgentContext(cycle_id="c1")) == []


async def test_a_key_another_replica_ran_is_not_run_again_its_candidates_being_in_the_book(
    mesh, evolutions, tmp_path
):
    market, meta, served = mesh
    first = await AgentClient(served.channel, name="sesa").execute(
        run_evolution("plan-6/evolve"), plan_sequence=6
    )
    assert first.applied
    assert first.outcome["candidates"]
    # Another replica, with a log of its own (or this one after its pod moved): asked for the
    # state of the key, and sent it again, it finds the candidates in the market's book.
    addresses = {"market": market.address, "meta": meta.address}
    async with sesa_server(addresses, data_dir=tmp_path / "other-replica") as other:
        replica = AgentClient(other.channel, name="sesa")
        known = await replica.execution("plan-6/evolve")
        again = await replica.execute(run_evolution("plan-6/evolve"), plan_sequence=6)
    assert known.state is ExecutionState.APPLIED
    assert known.detail.startswith("finished before, its candidates in the market's book")
    assert not again.applied
    assert evolutions == ["ORBT"]  # one evolution in all
    fleet = await MarketClient(market.channel).fleet()
    assert len([c for c in fleet.changes if c.cause.action_key == "plan-6/evolve"]) == 1


async def test_a_retry_after_an_abandoned_attempt_waits_for_the_first_evolution(
    mesh, evolutions, held, abandoned
):
    _market, _meta, served = mesh
    reached, release = held
    sesa = AgentClient(served.channel, name="sesa")
    # The federation's attempt gives up (its deadline passed) while the evolution runs ...
    attempt = asyncio.ensure_future(sesa.execute(run_evolution("plan-4/evolve"), plan_sequence=4))
    await reached.wait()
    attempt.cancel()
    await abandoned.wait()
    # ... and its retry, with the same key, joins the evolution already running.
    retry = asyncio.ensure_future(sesa.execute(run_evolution("plan-4/evolve"), plan_sequence=4))
    # Another plan's action for the same symbols joins it too, instead of queueing a second.
    other = asyncio.ensure_future(
        sesa.execute(run_evolution("plan-5/evolve", action_id="e2"), plan_sequence=5)
    )
    # While it runs, SESA does not ask for another.
    assert await sesa.recommend(AgentContext(cycle_id="c1")) == []
    release.set()
    first, joined = await retry, await other
    assert evolutions == ["ORBT"]
    # The retry is the first answer for its key; the joining action names the key that ran.
    assert first.applied
    assert joined.applied
    assert joined.outcome["evolution_id"] == first.outcome["evolution_id"]
    assert joined.outcome["started_by"] == "plan-4/evolve"
    assert "joined the evolution asked for by plan-4/evolve" in joined.detail
    again = await sesa.execute(run_evolution("plan-4/evolve"), plan_sequence=4)
    assert not again.applied
    assert evolutions == ["ORBT"]
    # Once it has finished, a new key starts a new evolution.
    fresh = await sesa.execute(run_evolution("plan-6/evolve"), plan_sequence=6)
    assert fresh.applied
    assert evolutions == ["ORBT", "ORBT"]
    assert fresh.outcome["evolution_id"] != first.outcome["evolution_id"]


async def test_an_evolution_for_other_symbols_waits_for_the_running_one(mesh, evolutions, held):
    _market, _meta, served = mesh
    reached, release = held
    sesa = AgentClient(served.channel, name="sesa")
    first = asyncio.ensure_future(sesa.execute(run_evolution("p7/a"), plan_sequence=7))
    await reached.wait()
    second = asyncio.ensure_future(
        sesa.execute(run_evolution("p7/b", ("NOVA",), action_id="b"), plan_sequence=7)
    )
    release.set()
    a, b = await first, await second
    assert evolutions == ["ORBT", "NOVA"]  # one after the other, never both at once
    assert a.outcome["symbols"] == "ORBT"
    assert b.outcome["symbols"] == "NOVA"
    assert b.outcome["started_by"] == "p7/b"


async def test_without_meta_an_evolution_runs_on_sesa_defaults_and_says_so(tmp_path):
    # A meta address nothing listens on: a server that stopped.
    async with serving([]) as gone:
        address = gone.address
    async with (
        market_server(tmp_path) as market,
        sesa_server(
            {"market": market.address, "meta": address}, meta_timeout_seconds=2.0
        ) as served,
    ):
        sesa = AgentClient(served.channel, name="sesa")
        result = await sesa.execute(run_evolution("plan-8/evolve"), plan_sequence=8)
    assert result.applied
    outcome = result.outcome
    assert outcome["meta_version"] == "unavailable"
    assert outcome["meta_error"]
    assert "Meta parameters unavailable" in result.detail
    assert (float(outcome["mutation_rate"]), float(outcome["mutation_magnitude"])) == (0.3, 0.2)
    default = Policy().default_genome(StrategyFamily.Q_LEARNING).parameters
    for gene in ("learning_rate", "exploration", "discount"):
        assert float(outcome[f"q_learning_{gene}"]) == default[gene]
    assert outcome["evolution_id"]


async def test_bad_run_evolution_orders_are_rejected_before_any_work(mesh, evolutions):
    _market, _meta, served = mesh
    sesa = AgentClient(served.channel, name="sesa")
    with pytest.raises(InvalidArgument) as failure:
        await sesa.execute(run_evolution("p9/x", ("ORBT", "NOPE")), plan_sequence=9)
    assert failure.value.field == "action.parameters.run_evolution.symbols[1]"
    assert evolutions == []
    (proposal,) = await sesa.recommend(AgentContext(cycle_id="c1"))
    assert proposal.action_type is ActionType.RUN_EVOLUTION
    assert "no evolution has run yet" in proposal.rationale


async def test_evolve_adds_its_candidates_to_the_book_with_a_caller_key(mesh):
    market, _meta, served = mesh
    client = SesaClient(served.channel)
    config = pb.EvolutionConfig(num_generations=GENERATIONS)
    events = [
        e
        async for e in client.evolve(
            bars=bar_source(symbol="ORBT"), config=config, seed=3, shadow_book_key="desk/evolve-1"
        )
    ]
    result = events[-1]
    assert result.evolution_id.startswith("evo-")
    book = result.shadow_book
    assert book.applied
    assert book.change_sequence > 0
    selected = [f"ORBT/{e.genome.id}" for e in result.top if e.passed_gates]
    assert list(book.strategy_ids) == selected
    assert selected
    fleet = await MarketClient(market.channel).fleet()
    origins = {s.strategy.id: s.origin for s in fleet.strategies}
    assert all(origins[s] == f"evolution/{result.evolution_id}" for s in book.strategy_ids)
    (change,) = [c for c in fleet.changes if c.cause.action_key == "desk/evolve-1"]
    assert change.sequence == book.change_sequence

    # The same key again: the book keeps its first addition.
    again = [
        e
        async for e in client.evolve(
            bars=bar_source(symbol="ORBT"), config=config, seed=3, shadow_book_key="desk/evolve-1"
        )
    ][-1]
    assert again.evolution_id == result.evolution_id
    assert not again.shadow_book.applied
    assert again.shadow_book.change_sequence == book.change_sequence
    # Without a key nothing goes to the book.
    plain = [e async for e in client.evolve(bars=bar_source(symbol="ORBT"), config=config, seed=3)][
        -1
    ]
    assert plain.evolution_id
    assert plain.evolution_id != result.evolution_id
    assert not plain.HasField("shadow_book")
    latest = await MarketClient(market.channel).fleet()
    assert not any(plain.evolution_id in c.detail for c in latest.changes)


async def test_evolve_rejects_a_shadow_book_key_for_bars_of_no_market_symbol(mesh):
    market, _meta, served = mesh
    series = await MarketClient(market.channel).bars("ORBT", lookback=3000)
    foreign = dataclasses.replace(series, symbol="ELSEWHERE", sector="Nowhere")
    stub = sesa_pb2_grpc.SesaServiceStub(served.channel)
    request = pb.EvolveRequest(
        bars=bar_source(bars=foreign),
        config=pb.EvolutionConfig(num_generations=1),
        shadow_book_key="k",
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Evolve(request).read()
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == "shadow_book_key"


async def test_run_evolution_counts_its_generations_and_strategies_evaluated(mesh):
    _market, _meta, served = mesh

    def figure(name: str) -> float:
        value = served.server.metrics.registry.get_sample_value(name)
        assert value is not None, f"{name} is not exported"
        return value

    generations = figure("qtmesh_evolution_generations_total")
    evaluated = figure("qtmesh_evaluations_total")
    sesa = AgentClient(served.channel, name="sesa")
    result = await sesa.execute(run_evolution("plan-4/evolve"), plan_sequence=4)
    assert result.applied
    # Generation 0 (the seeds), then the order's generations.
    assert figure("qtmesh_evolution_generations_total") == generations + GENERATIONS + 1
    assert figure("qtmesh_evaluations_total") == evaluated + int(result.outcome["trials"])
    assert figure("qtmesh_evolutions_running") == 0
