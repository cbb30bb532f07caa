"""The spec's SESAEngine over the real evolution, on the embedded synthetic market."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from sesa import OPERATORS, EvaluationType, Evolution, EvolutionConfig, SelectionConfig, SESAEngine
from sesa.api import normalized_config

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
