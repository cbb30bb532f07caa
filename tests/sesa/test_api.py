"""The spec's SESAEngine over the real evolution, on the embedded synthetic market, and
against a real SESA server reading a real market server."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import sesa.service
from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.config import MarketConfig
from market.service import APP as MARKET
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.convert import genome_from_proto
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from sesa import OPERATORS, EvaluationType, Evolution, EvolutionConfig, SelectionConfig, SESAEngine
from sesa._convert import (
    evaluation_from_proto,
    judgement_from_proto,
    result_from_proto,
    result_to_proto,
)
from sesa.api import normalized_config
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig

SMALL = {"num_generations": 1, "num_mutations_per_parent": 3, "evaluation_lookback_days": 3}


def test_the_spec_config_fields_and_string_evaluation_types():
    names = [f.name for f in dataclasses.fields(EvolutionConfig)]
    assert names[:7] == [
        "num_mutations_per_parent",
        "mutation_rate",
        "mutation_magnitude",
        "evaluation_type",
        "evaluation_lookback_days",
        "num_generations",
        "elite_carry_forward",
    ]
    spec = EvolutionConfig(evaluation_type="simulation")  # type: ignore[arg-type]
    assert normalized_config(spec).evaluation_type is EvaluationType.SIMULATION
    with pytest.raises(InvalidArgument, match="evaluation_type"):
        normalized_config(EvolutionConfig(evaluation_type="forecast"))  # type: ignore[arg-type]


def test_the_operators_must_be_the_ones_the_evolution_draws_from():
    SESAEngine(mutation_operators=OPERATORS)
    SESAEngine(mutation_operators=list(OPERATORS.values()))
    with pytest.raises(InvalidArgument, match="mutation_operators"):
        SESAEngine(mutation_operators=list(OPERATORS.values())[:2])


async def test_run_evolution_is_the_evolution_on_the_synthetic_market():
    engine = SESAEngine(
        mutation_operators=OPERATORS,
        evaluation_engine=Evaluator(),
        selection_engine=SelectionConfig(),
        seed=3,
    )
    with pytest.raises(FailedPrecondition):
        engine.evaluations()
    result = await engine.run_evolution(config=EvolutionConfig(**SMALL))
    assert len(result.generations) == 2
    # The same evolution, run directly on the same bars with the same seed, finds the same top.
    series = next(
        s for s in generate(SyntheticMarketSpec(seed=3, days=3)).series if s.symbol == "ORBT"
    )
    direct = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(**SMALL),
        rng=np.random.default_rng(3),
    )
    direct.start([], BarData(series))
    while not direct.finished:
        direct.step()
    assert [j.genome_id for j in result.top] == [j.genome_id for j in direct.result().top]
    evaluations = engine.evaluations()
    assert [e.strategy_id for e in evaluations] == [f"ORBT/{j.genome_id}" for j in result.top]
    assert {e.evaluated_time for e in evaluations} == {int(series.time[-1])}
    assert [e.composite_score for e in evaluations] == [
        j.evaluation.composite_score for j in result.top
    ]


def test_an_unknown_symbol_is_refused():
    with pytest.raises(InvalidArgument, match="symbol"):
        SESAEngine(symbol="NOPE").bars(2)


async def test_the_result_converts_back_from_its_message():
    engine = SESAEngine(seed=3)
    result = await engine.run_evolution(config=EvolutionConfig(**SMALL))
    back = result_from_proto(result_to_proto(result))
    assert back == result
    assert [s.top for s in back.generations] == [s.top for s in result.generations]
    assert back.pbo == result.pbo
    message = result_to_proto(dataclasses.replace(result, pbo=None))
    assert not message.HasField("pbo")
    assert result_from_proto(message).pbo is None
    unjudged = result_to_proto(result).top[0]
    unjudged.ClearField("stage")
    with pytest.raises(InvalidArgument, match=r"result\.top\[0\]\.stage"):
        judgement_from_proto(unjudged, field="result.top[0]")


def test_from_mesh_reads_the_sesa_entry(tmp_path):
    mesh_file = tmp_path / "mesh.json"
    mesh_file.write_text(json.dumps({"sesa": {"address": "127.0.0.1:50123"}}))
    assert SESAEngine.from_mesh(mesh_file=mesh_file, symbol="NOVA").address == "127.0.0.1:50123"
    with pytest.raises(FailedPrecondition, match="sesa"):
        SESAEngine.from_mesh(mesh_file=tmp_path / "missing.json")


@pytest.fixture
async def mesh():
    """SESA served over gRPC, reading its bars from a served synthetic market."""
    async with serving_app(MARKET, MarketConfig(synthetic_days=8, seed=5)) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        config = SesaConfig(
            world_model_scenarios=False, record_to_memory=False, recall_from_memory=False
        )
        async with serving_app(sesa.service.APP, config, channel_config=channels) as running:
            yield running


async def test_run_evolution_against_the_mesh_is_the_services_evolve(mesh):
    family = StrategyFamily.BREAKOUT
    seeds = [Policy().default_genome(family)]
    config = EvolutionConfig(
        num_generations=1, num_mutations_per_parent=3, evaluation_lookback_days=3
    )
    engine = SESAEngine(address=mesh.address, symbol="NOVA", seed=11)
    assert engine.address == mesh.address
    result = await engine.run_evolution(initial_strategies=seeds, config=config)

    # The service's own Evolve, asked the same: the same seed and bars give the same evolution.
    request = pb.EvolutionConfig(
        num_generations=1, num_mutations_per_parent=3, evaluation_lookback_days=3
    )
    events = [
        e
        async for e in SesaClient(mesh.channel).evolve(
            bars=bar_source(symbol="NOVA"), seeds=seeds, config=request, seed=11
        )
    ]
    reported = events[-1]
    assert isinstance(reported, pb.EvolutionResult)

    assert result.top
    assert len(result.top) == len(reported.top)
    assert {j.evaluation.genome.family for j in result.top} == {family}
    assert len(result.generations) == len(reported.generations) == 2
    assert result.trials == reported.trials > 0
    assert result.pbo == (reported.pbo if reported.HasField("pbo") else None)
    for i, (judged, message) in enumerate(zip(result.top, reported.top, strict=True)):
        evaluation = judged.evaluation
        assert evaluation.genome == genome_from_proto(message.genome, field="top")
        assert evaluation == evaluation_from_proto(message, field=f"top[{i}]")
        assert evaluation.composite_score == message.composite_score
        assert evaluation.risk_score == message.risk_score
        assert evaluation.metrics.bar_count == message.metrics.bar_count == 3 * 1440
        assert evaluation.out_of_sample.sharpe_ratio == message.out_of_sample_metrics.sharpe_ratio
        assert judged.passed_gates == message.passed_gates
        assert list(judged.gate_failures) == list(message.gate_failures)
        assert judged.promotion_readiness == message.promotion_readiness
    assert engine.last_result is result

    evaluations = engine.evaluations()
    assert [e.strategy_id for e in evaluations] == [f"NOVA/{m.genome.id}" for m in reported.top]
    assert {e.family for e in evaluations} == {family}
    for e, message in zip(evaluations, reported.top, strict=True):
        oos = message.out_of_sample_metrics
        assert e.composite_score == message.composite_score
        assert e.sharpe_ratio == oos.sharpe_ratio
        assert e.deflated_sharpe_ratio == oos.deflated_sharpe_ratio
        assert e.trade_count == oos.trade_count
        assert e.generation == message.genome.generation
        assert e.trials == reported.trials


async def test_bars_given_to_a_remote_engine_are_sent_inline(mesh):
    series = next(
        s for s in generate(SyntheticMarketSpec(seed=3, days=3)).series if s.symbol == "ORBT"
    )
    engine = SESAEngine(address=mesh.address, bars=BarData(series), seed=3)
    result = await engine.run_evolution(config=EvolutionConfig(**SMALL))
    assert result.top
    assert result.top[0].evaluation.metrics.bar_count == len(series)
    assert {e.evaluated_time for e in engine.evaluations()} == {int(series.time[-1])}
