"""The SESA server over gRPC, against a real market server: Evolve, Evaluate, Mutate, Select,
validation and cancellation (RUN_EVOLUTION and the shadow book: test_run_evolution.py)."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

import sesa.service
from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.config import MarketConfig
from market.service import APP as MARKET
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.market.v1 import market_pb2
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2_grpc
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig

POLICY = Policy()
QUICK = pb.EvolutionConfig(
    num_generations=2, num_mutations_per_parent=4, evaluation_lookback_days=3
)


@pytest.fixture
async def mesh():
    async with serving_app(MARKET, MarketConfig(synthetic_days=8, seed=5)) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        # No world model here: SIMULATION bootstraps (tests/sesa/test_world_model_scenarios.py).
        config = SesaConfig(
            world_model_scenarios=False, record_to_memory=False, recall_from_memory=False
        )
        async with serving_app(sesa.service.APP, config, channel_config=channels) as running:
            yield running


async def collect(client: SesaClient, **kwargs) -> list:
    return [event async for event in client.evolve(**kwargs)]


async def test_evolve_streams_each_generation_then_the_result(mesh):
    client = SesaClient(mesh.channel)
    events = await collect(client, bars=bar_source(symbol="NOVA"), config=QUICK, seed=7)
    stats, result = events[:-1], events[-1]
    assert [s.generation for s in stats] == [0, 1, 2]
    assert all(isinstance(s, pb.GenerationStats) for s in stats)
    assert isinstance(result, pb.EvolutionResult)
    assert result.trials == stats[-1].trials > 0
    assert result.HasField("pbo")
    assert 0 <= result.pbo <= 1
    assert len(result.generations) == 3
    assert result.top
    top = result.top[0]
    assert top.metrics.bar_count == 3 * 1440
    assert top.out_of_sample_metrics.bar_count < top.metrics.bar_count
    assert 0 <= top.promotion_readiness <= 1
    again = await collect(client, bars=bar_source(symbol="NOVA"), config=QUICK, seed=7)
    assert [e.genome.id for e in again[-1].top] == [e.genome.id for e in result.top]


async def test_simulation_evolves_on_bootstrapped_scenarios(mesh):
    client = SesaClient(mesh.channel)
    config = pb.EvolutionConfig()
    config.CopyFrom(QUICK)
    config.num_generations = 1
    config.evaluation_type = pb.EVALUATION_TYPE_SIMULATION
    config.scenario_paths = 2
    events = await collect(client, bars=bar_source(symbol="NOVA"), config=config, seed=1)
    assert isinstance(events[-1], pb.EvolutionResult)
    assert events[-1].top[0].metrics.bar_count == 3 * 1440


async def test_evaluate_a_batch_on_inline_bars_or_a_market_window(mesh):
    client = SesaClient(mesh.channel)
    genomes = [POLICY.default_genome(family) for family in StrategyFamily]
    series = generate(SyntheticMarketSpec(seed=3, days=2)).series[0]
    inline = await client.evaluate(genomes, bars=bar_source(bars=series))
    assert [e.genome.id for e in inline] == [g.id for g in genomes]
    assert all(e.metrics.bar_count == len(series) for e in inline)
    assert all(e.trials == len(genomes) for e in inline)
    windowed = await client.evaluate(
        genomes, bars=bar_source(symbol="ORBT", lookback=2000), trials=50
    )
    assert all(e.metrics.bar_count == 2000 for e in windowed)
    assert all(e.trials == 50 for e in windowed)
    # Same bars, same genomes: the same metrics, whichever replica evaluates.
    again = await client.evaluate(genomes, bars=bar_source(bars=series))
    assert [e.composite_score for e in again] == [e.composite_score for e in inline]


async def test_inline_bars_differing_only_in_highs_and_lows_are_not_served_from_cache(mesh):
    client = SesaClient(mesh.channel)
    family = StrategyFamily.MA_CROSSOVER
    stopped = POLICY.validate(
        StrategyGenome(id="stop", family=family, parameters={"stop_atr": 1.0}), field="g"
    )
    genomes = [stopped, POLICY.default_genome(StrategyFamily.BREAKOUT)]
    series = generate(SyntheticMarketSpec(seed=3, days=2)).series[0]
    wider = dataclasses.replace(series, high=series.high * 1.002, low=series.low * 0.998)
    first = await client.evaluate(genomes, bars=bar_source(bars=series))
    second = await client.evaluate(genomes, bars=bar_source(bars=wider))
    expected = Evaluator(policy=POLICY).evaluate(genomes, BarData(wider))
    assert [e.composite_score for e in second] == pytest.approx(
        [e.composite_score for e in expected], rel=1e-12
    )
    assert [e.composite_score for e in second] != [e.composite_score for e in first]


async def test_mutate_and_select(mesh):
    client = SesaClient(mesh.channel)
    parent = POLICY.default_genome(StrategyFamily.MA_CROSSOVER)
    children = await client.mutate(
        [parent], operator=pb.MUTATION_OPERATOR_PARAMETER_TWEAK, count=12, seed=3
    )
    assert len(children) == 12
    assert all(c.parent_ids == (parent.id,) and c.generation == 1 for c in children)
    assert all(POLICY.validate(c, field="c") for c in children)
    evaluations = await client.evaluate(children, bars=bar_source(symbol="ORBT", lookback=3000))
    response = await client.select(evaluations, config=pb.SelectionConfig(top_k=2), trials=500)
    assert len(response.judged) == 12
    assert len(response.selected) <= 2
    assert all(j.trials == 500 for j in response.judged)
    assert all(j.stage != strategy_pb2.STRATEGY_STAGE_UNSPECIFIED for j in response.judged)
    # A zero deflated-Sharpe bar: rejected strategies still get a readiness, not an error.
    lenient = await client.select(evaluations, config=pb.SelectionConfig(min_deflated_sharpe=0.0))
    assert len(lenient.judged) == 12
    assert all(0 <= j.promotion_readiness <= 1 for j in lenient.judged)
    # The trade-count gate arrives from the request: none of them trades a million times.
    strict = await client.select(
        evaluations, config=pb.SelectionConfig(min_deflated_sharpe=0.0, min_trades=1_000_000)
    )
    assert not strict.selected
    assert all(any("trades < 1000000" in f for f in j.gate_failures) for j in strict.judged), [
        list(j.gate_failures) for j in strict.judged
    ]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda s: s.Evaluate(pb.EvaluateRequest(genomes=[strategy_pb2.StrategyGenome(id="x")])),
            "genomes[0].family",
        ),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[
                        strategy_pb2.StrategyGenome(id="x", family=1, parameters={"fast": 999.0})
                    ]
                )
            ),
            "genomes[0].parameters[fast]",
        ),
        (lambda s: s.Evaluate(pb.EvaluateRequest()), "genomes"),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[
                        strategy_pb2.StrategyGenome(id="x", family=1, parameters={"fast": 7.0}),
                        strategy_pb2.StrategyGenome(id="x", family=1, parameters={"fast": 8.0}),
                    ]
                )
            ),
            "genomes[1].id",
        ),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    bars=pb.BarSource(window=pb.BarWindow(symbol="NOPE")),
                )
            ),
            "bars.window.symbol",
        ),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    bars=pb.BarSource(window=pb.BarWindow(symbol="ORBT", lookback=100)),
                )
            ),
            "bars",
        ),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    weights=pb.ScoreWeights(pnl=0.9),
                )
            ),
            "weights",
        ),
        (
            lambda s: s.Evaluate(
                pb.EvaluateRequest(
                    genomes=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    bars=pb.BarSource(bars=market_pb2.BarSeries(symbol="X", time_unix_nanos=[1])),
                )
            ),
            "bars.bars.open",
        ),
        (
            lambda s: s.Mutate(
                pb.MutateRequest(parents=[strategy_pb2.StrategyGenome(id="x", family=1)], count=1)
            ),
            "operator",
        ),
        (
            lambda s: s.Mutate(
                pb.MutateRequest(
                    parents=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    operator=pb.MUTATION_OPERATOR_CROSSOVER,
                    count=1,
                )
            ),
            "parents",
        ),
        (
            lambda s: s.Mutate(
                pb.MutateRequest(
                    parents=[strategy_pb2.StrategyGenome(id="x", family=1)],
                    operator=pb.MUTATION_OPERATOR_PARAMETER_TWEAK,
                    count=1,
                    magnitude=3.0,
                )
            ),
            "magnitude",
        ),
        (
            lambda s: s.Mutate(
                pb.MutateRequest(
                    parents=[
                        strategy_pb2.StrategyGenome(id="q", family=4),
                        strategy_pb2.StrategyGenome(id="x", family=1),
                    ],
                    operator=pb.MUTATION_OPERATOR_RL_PARAMETERS,
                    count=2,
                )
            ),
            "parents[1]",
        ),
        (lambda s: s.Select(pb.SelectRequest()), "evaluations"),
        (
            lambda s: s.Evolve(
                pb.EvolveRequest(config=pb.EvolutionConfig(mutation_rate=2.0))
            ).read(),
            "config.mutation_rate",
        ),
        (
            lambda s: s.Evolve(
                pb.EvolveRequest(
                    config=pb.EvolutionConfig(num_mutations_per_parent=1000, elite_carry_forward=10)
                )
            ).read(),
            "config.num_mutations_per_parent",
        ),
        (
            lambda s: s.Evolve(
                pb.EvolveRequest(
                    bars=bar_source(symbol="NOVA"),
                    config=pb.EvolutionConfig(
                        evaluation_type=pb.EVALUATION_TYPE_SIMULATION,
                        evaluation_lookback_days=3,
                        scenario_paths=1000,
                    ),
                )
            ).read(),
            "config.scenario_paths",
        ),
        (
            lambda s: s.Evolve(
                pb.EvolveRequest(seeds=[strategy_pb2.StrategyGenome(id="x", family=1)] * 5001)
            ).read(),
            "seeds",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(mesh, call, field):
    stub = sesa_pb2_grpc.SesaServiceStub(mesh.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(stub)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, failure.value.details()
    assert error_info(failure.value).metadata["field"] == field


async def test_a_client_that_cancels_evolve_stops_the_work(mesh, monkeypatch):
    calls = 0
    cancelled_at = 0
    stepping = asyncio.Event()
    stopped = asyncio.Event()
    original = sesa.service.run_cancellable

    async def watched(work):
        nonlocal calls
        calls += 1
        if calls == 2:  # generation 1 is being bred and evaluated
            stepping.set()
        try:
            return await original(work)
        except asyncio.CancelledError:
            nonlocal cancelled_at
            cancelled_at = calls
            stopped.set()  # run_cancellable re-raises only once the worker thread has stopped
            raise

    monkeypatch.setattr(sesa.service, "run_cancellable", watched)
    stub = sesa_pb2_grpc.SesaServiceStub(mesh.channel)
    config = pb.EvolutionConfig(num_generations=1000, evaluation_lookback_days=3)
    call = stub.Evolve(pb.EvolveRequest(bars=bar_source(symbol="NOVA"), config=config, seed=1))
    first = await call.read()
    assert first.generation.generation == 0
    await asyncio.wait_for(stepping.wait(), timeout=30)
    call.cancel()
    await asyncio.wait_for(stopped.wait(), timeout=30)
    # The generation in flight was the last: the stream started none after the cancel.
    assert cancelled_at >= 2
    assert calls == cancelled_at


def figure(running, name: str) -> float:
    """The value of one of the server's own metrics now (as a scrape would read it)."""
    value = running.server.metrics.registry.get_sample_value(name)
    assert value is not None, f"{name} is not exported"
    return value


async def test_evolve_and_evaluate_count_generations_and_strategies_evaluated(mesh):
    client = SesaClient(mesh.channel)
    generations = figure(mesh, "qtmesh_evolution_generations_total")
    evaluated = figure(mesh, "qtmesh_evaluations_total")
    events = await collect(client, bars=bar_source(symbol="NOVA"), config=QUICK, seed=7)
    result = events[-1]
    # Generation 0 evaluates the seeds, then the two of the config: three completed.
    assert len(result.generations) == 3
    assert figure(mesh, "qtmesh_evolution_generations_total") == generations + 3
    # Every genome evaluated is one trial (no prior trials were given).
    assert result.trials > 3
    assert figure(mesh, "qtmesh_evaluations_total") == evaluated + result.trials
    assert figure(mesh, "qtmesh_evolutions_running") == 0

    genomes = [POLICY.default_genome(family) for family in StrategyFamily]
    await client.evaluate(genomes, bars=bar_source(symbol="ORBT", lookback=2000), trials=50)
    assert figure(mesh, "qtmesh_evaluations_total") == evaluated + result.trials + len(genomes)
    # A refused Evolve runs no generation.
    with pytest.raises(InvalidArgument):
        await collect(client, bars=bar_source(symbol="NOPE"), config=QUICK)
    assert figure(mesh, "qtmesh_evolution_generations_total") == generations + 3
    assert figure(mesh, "qtmesh_evolutions_running") == 0


async def test_an_evolution_is_running_until_it_ends_even_when_cancelled(mesh):
    stub = sesa_pb2_grpc.SesaServiceStub(mesh.channel)
    # Subscribed before the evolution starts: its end is the event to wait for.
    watch = stub.WatchEvolutions(pb.WatchEvolutionsRequest())
    await watch.initial_metadata()
    config = pb.EvolutionConfig(num_generations=1000, evaluation_lookback_days=3)
    call = stub.Evolve(pb.EvolveRequest(bars=bar_source(symbol="NOVA"), config=config, seed=1))
    first = await call.read()
    assert first.generation.generation == 0
    assert figure(mesh, "qtmesh_evolutions_running") == 1
    call.cancel()
    async for event in watch:
        if event.HasField("ended"):
            break
    assert event.ended.outcome == pb.EVOLUTION_OUTCOME_CANCELLED
    # The end is published in the same step of the event loop as the gauge falls.
    assert figure(mesh, "qtmesh_evolutions_running") == 0
    watch.cancel()
