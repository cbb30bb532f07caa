"""SESA and the memory engine, over real market, memory and SESA servers (port 0): every finished
evolution is stored as an episode, and what SESA recalls of past evolutions in similar market
contexts changes its RUN_EVOLUTION recommendation; memory being away changes neither the
evolution nor the recommendation."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest

import sesa.service
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from memory.client import MemoryClient
from memory.episodes import Episode, Recalled
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.contract import AgentContext, Priority, Recommendation, RunEvolution
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import Running, serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig
from sesa.memory import (
    MIN_SUPPORT,
    Recollection,
    context_features,
    recollect,
    review,
    subject,
)
from tests.helpers.memory import served_memory

QUICK = pb.EvolutionConfig(
    num_generations=2, num_mutations_per_parent=4, evaluation_lookback_days=3
)
T0 = 1_800_000_000 * 10**9
NOWHERE = "127.0.0.1:1"  # nothing listens there


@contextlib.asynccontextmanager
async def sesa_server(tmp_path: Path, market: Running, memory: str, **settings):
    config = SesaConfig(data_dir=tmp_path / "sesa", **settings)
    channels = ChannelConfig(
        addresses={"market": market.address, "memory": memory, "meta": NOWHERE}
    )
    async with serving_app(sesa.service.APP, config, channel_config=channels) as served:
        yield served


@pytest.fixture
async def market(tmp_path):
    config = MarketConfig(synthetic_days=8, seed=5, data_dir=tmp_path / "market")
    async with serving_app(MARKET, config) as running:
        yield running


def evolution(
    i: int, features: dict[str, float], *, symbol: str = "ORBT", candidates: int, sharpe: float
) -> Episode:
    """A remembered evolution, as SESA stores them."""
    return Episode(
        id=f"sesa-evo-{symbol}-{i}",
        time=T0 + i,
        features=features,
        decision="run_evolution generations=3",
        outcome=sharpe,
        sector=subject(symbol),
        tags={"source": "sesa", "symbol": symbol, "candidates": str(candidates)},
    )


async def test_a_finished_evolution_is_stored_as_an_episode(tmp_path, market):
    async with (
        served_memory(tmp_path, market) as (memory, store),
        sesa_server(tmp_path, market, memory.address) as served,
    ):
        client = SesaClient(served.channel)
        events = [
            e async for e in client.evolve(bars=bar_source(symbol="NOVA"), config=QUICK, seed=7)
        ]
        result = events[-1]
        [stored] = await store.wait_for(1)
        snapshot = await MarketClient(market.channel).snapshot()

    assert stored.id == f"sesa-{result.evolution_id}"
    assert stored.sector == "evolution/NOVA"
    assert stored.decision == "run_evolution generations=2"
    # The market did not move: SESA read the context the test reads.
    assert dict(stored.features) == context_features(snapshot, "NOVA")
    assert stored.time == snapshot.clock_time  # the end of the bars it ran on
    best = result.top[0]
    assert stored.outcome == pytest.approx(best.out_of_sample_metrics.sharpe_ratio)
    tags = stored.tags
    assert tags["source"] == "sesa"
    assert tags["symbol"] == "NOVA"
    assert tags["evolution_id"] == result.evolution_id
    assert tags["generations"] == "2"
    assert tags["population"] == str(2 * (1 + 4))
    assert tags["trials"] == str(result.trials)
    assert tags["best"].split(",")[0] == best.genome.id
    assert tags["candidates"] == str(sum(1 for j in result.top if j.passed_gates))
    assert tags["shadows"] == "0"  # an Evolve without a shadow book key sends none
    assert tags["started_by"] == "evolve"


async def test_what_sesa_recalls_changes_its_recommendation(tmp_path, market):
    async with (
        served_memory(tmp_path, market) as (memory, _store),
        sesa_server(tmp_path, market, memory.address, record_to_memory=False) as served,
    ):
        sesa = AgentClient(served.channel, name="sesa")
        context = AgentContext(cycle_id="c1", as_of_time=0)
        features = context_features(await MarketClient(market.channel).snapshot(), "ORBT")
        assert features is not None
        client = MemoryClient(memory.channel)
        # Other evolutions, elsewhere and in other markets, so the features vary in memory.
        for i in range(3):
            step = (i + 1) * 0.05
            shifted = {
                k: v + (step if j % 2 else -step) for j, (k, v) in enumerate(features.items())
            }
            await client.store(evolution(i, shifted, symbol="QBIT", candidates=1, sharpe=1.0))

        # Without a relevant memory: SESA's own recommendation.
        [alone] = await sesa.recommend(context)
        assert isinstance(alone.parameters, RunEvolution)
        assert alone.priority is Priority.LOW
        assert alone.confidence == pytest.approx(0.6)
        assert "Memory" not in alone.rationale

        # The last evolutions on ORBT in this very context found nothing: no recommendation.
        for i in range(MIN_SUPPORT):
            await client.store(evolution(10 + i, features, candidates=0, sharpe=-0.4))
        assert await sesa.recommend(context) == []

        # More of them did find candidates: the recommendation returns, raised.
        for i in range(4):
            await client.store(evolution(20 + i, features, candidates=2, sharpe=1.8))
        [recalled] = await sesa.recommend(context)
        assert recalled.priority is Priority.MEDIUM
        assert "Memory: 4 of the 6 evolutions on ORBT" in recalled.rationale
        assert recalled.evidence["memory_similar"] == 6
        assert recalled.evidence["memory_productive"] == 4
        assert recalled.evidence["memory_best_sharpe"] == pytest.approx(1.8)
        weight = 6 / (6 + MIN_SUPPORT)
        assert recalled.confidence == pytest.approx(0.6 * (1 - weight) + 4 / 6 * weight)


async def test_memory_away_changes_neither_the_evolution_nor_the_recommendation(tmp_path, market):
    async with sesa_server(tmp_path, market, NOWHERE) as served:
        client = SesaClient(served.channel)
        sesa = AgentClient(served.channel, name="sesa")
        [alone] = await sesa.recommend(AgentContext(cycle_id="c1"))
        assert (alone.priority, alone.confidence) == (Priority.LOW, pytest.approx(0.6))
        events = [
            e async for e in client.evolve(bars=bar_source(symbol="NOVA"), config=QUICK, seed=7)
        ]
        assert isinstance(events[-1], pb.EvolutionResult)
        assert events[-1].top


# -- the rule, on its own ------------------------------------------------------------------------

BASE = Recommendation(
    id="run-evolution",
    priority=Priority.LOW,
    target="sesa/evolution",
    parameters=RunEvolution(symbols=("ORBT",)),
    confidence=0.6,
    rationale="Run a SESA evolution on ORBT: because.",
)


def recalled(similarity: float, candidates: int, sharpe: float = 1.0) -> Recalled:
    return Recalled(evolution(0, {"x": 1.0}, candidates=candidates, sharpe=sharpe), similarity)


def test_dissimilar_evolutions_are_not_recollected():
    memory = recollect([recalled(0.49, 0), recalled(0.2, 0), recalled(0.9, 3, sharpe=2.0)])
    assert memory == Recollection(similar=1, productive=1, hit_rate=1.0, best_sharpe=2.0)


def test_too_few_similar_evolutions_leave_the_recommendation_as_it_is():
    assert review(BASE, recollect([recalled(0.9, 0)]), ["ORBT"]) is BASE
    assert review(BASE, recollect([]), ["ORBT"]) is BASE


def test_a_low_hit_rate_keeps_the_priority_and_lowers_the_confidence():
    memory = recollect([recalled(0.8, 0), recalled(0.8, 0), recalled(0.8, 0), recalled(0.8, 1)])
    changed = review(BASE, memory, ["ORBT"])
    assert changed is not None
    assert changed.priority is Priority.LOW
    assert changed.confidence == pytest.approx(0.6 * (2 / 6) + 0.25 * (4 / 6))
    assert (
        dataclasses.replace(changed, confidence=0.6, rationale=BASE.rationale, evidence={}) == BASE
    )
