"""The evolution loop: determinism, statistics, cancellation, overfitting control, simulation."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from qtmesh.base.bars import BarSeries, make_series
from qtmesh.base.concurrency import Cancelled, CancelToken
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyGenome, StrategyStage, make_genome
from sesa.evolution import (
    MAX_POPULATION,
    MAX_SCENARIO_BARS,
    EvaluationType,
    Evolution,
    EvolutionConfig,
)
from sesa.scenarios import BlockBootstrap
from sesa.selection import SelectionConfig

T0 = 1_767_571_200 * 10**9
MINUTE = 60 * 10**9


def bars(log_prices: np.ndarray, rng: np.random.Generator, noise: float) -> BarSeries:
    close = 100 * np.exp(log_prices)
    open_ = np.r_[100.0, close[:-1]]
    excursion = np.abs(rng.normal(0, noise, (2, len(close))))
    return make_series(
        "TEST",
        "Test",
        time=T0 + np.arange(len(close)) * MINUTE,
        open=open_,
        high=np.maximum(open_, close) * np.exp(excursion[0]),
        low=np.minimum(open_, close) * np.exp(-excursion[1]),
        close=close,
        volume=np.ones(len(close)),
    )


def random_walk(seed: int, n: int = 43_200, sigma: float = 5e-4) -> BarData:
    """A zero-drift random walk: no strategy has an edge on it."""
    rng = np.random.default_rng(seed)
    return BarData(bars(np.cumsum(rng.normal(0.0, sigma, n)), rng, 0.6 * sigma))


def planted_cycle(seed: int, n: int = 43_200) -> BarData:
    """A slow 3% price cycle under light noise: trend followers have a real edge."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    log_prices = 0.03 * np.sin(2 * np.pi * t / 3000) + np.cumsum(rng.normal(0, 1e-4, n))
    return BarData(bars(log_prices, rng, 1e-4))


def evolve(data: BarData, seed: int, **config) -> Evolution:
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(**config),
        rng=np.random.default_rng(seed),
    )
    evolution.start([], data)
    while not evolution.finished:
        evolution.step()
    return evolution


def test_the_same_seed_reproduces_the_run_exactly():
    data = random_walk(1, n=8_000)
    a, b = (
        evolve(data, 11, num_generations=3).result(),
        evolve(data, 11, num_generations=3).result(),
    )
    c = evolve(data, 12, num_generations=3).result()
    ids = lambda r: [j.genome_id for s in r.generations for j in s.top]  # noqa: E731
    assert ids(a) == ids(b)
    assert [s.best_composite for s in a.generations] == [s.best_composite for s in b.generations]
    assert ids(a) != ids(c)


def test_generations_report_their_statistics():
    data = planted_cycle(0, n=10_000)
    result = evolve(
        data, 3, num_generations=4, num_mutations_per_parent=10, elite_carry_forward=2
    ).result()
    stats = result.generations
    assert [s.generation for s in stats] == [0, 1, 2, 3, 4]
    assert stats[0].evaluated == len(StrategyFamily)  # one default seed per family
    assert all(s.evaluated == 22 for s in stats[1:])  # 2 elites + 2 x 10 children
    assert all(s.worst_composite <= s.median_composite <= s.best_composite for s in stats)
    best = [s.best_composite for s in stats]
    assert best == sorted(best), "elites carry forward, so the best never gets worse"
    trials = [s.trials for s in stats]
    assert trials == sorted(trials)
    assert result.trials == trials[-1]
    assert all(0 <= s.diversity <= 1 for s in stats)
    assert all(len(s.top) <= 5 for s in stats)


def test_a_cancelled_token_stops_a_generation():
    evolution = Evolution(
        evaluator=Evaluator(chunk_size=4),
        selection=SelectionConfig(),
        config=EvolutionConfig(num_generations=2),
        rng=np.random.default_rng(0),
    )
    evolution.start([], random_walk(2, n=5_000))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evolution.step(token)
    # The cancelled generation was never numbered: the next step is generation 1, with stats.
    assert evolution.generation == 0
    assert evolution.step().generation == 1
    assert [s.generation for s in evolution.result().generations] == [0, 1]


def test_generation_zero_times_its_own_evaluation():
    now = [0.0]

    class SlowEvaluator(Evaluator):
        def evaluate(self, genomes, data, **kwargs):
            now[0] += 10.0  # each evaluation takes ten seconds on this clock
            return super().evaluate(genomes, data, **kwargs)

    evolution = Evolution(
        evaluator=SlowEvaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(num_generations=1),
        rng=np.random.default_rng(0),
        clock=lambda: now[0],
    )
    assert evolution.start([], random_walk(2, n=2_000)).elapsed_seconds == 10.0
    assert evolution.step().elapsed_seconds == 10.0


def test_noise_never_reaches_production():
    """On a zero-drift random walk, 10 generations leave no production candidate (the benchmark
    runs 100 seeds; the requirement is at least 95 of 100)."""
    seeds = range(12)
    dirty = [
        seed
        for seed in seeds
        if evolve(random_walk(seed), seed, num_generations=10).result().production_candidates
    ]
    # 95% of 12 seeds leaves no room for a single failure.
    assert not dirty, f"noise runs {dirty} produced a production candidate"


def test_a_real_edge_can_reach_production():
    result = evolve(planted_cycle(0), 0, num_generations=10).result()
    assert result.production_candidates, "the deflated Sharpe gate must be passable"
    for judgement in result.production_candidates:
        assert judgement.stage is StrategyStage.PRODUCTION
        assert judgement.evaluation.out_of_sample.deflated_sharpe_ratio >= 0.95


def test_forward_evaluation_on_scenarios():
    data = planted_cycle(1, n=6_000)
    paths = [
        BarData(p)
        for p in BlockBootstrap(block_size=60).generate(
            data.series, count=3, length=6_000, rng=np.random.default_rng(4)
        )
    ]
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(num_generations=1, evaluation_type=EvaluationType.SIMULATION),
        rng=np.random.default_rng(4),
    )
    first = evolution.start([], data, paths=paths)
    assert first.evaluated == len(StrategyFamily)
    evolution.step()
    assert evolution.result().trials == evolution.trials.count
    with pytest.raises(InvalidArgument, match="scenario paths"):
        Evolution(
            evaluator=Evaluator(),
            selection=SelectionConfig(),
            config=EvolutionConfig(evaluation_type=EvaluationType.SIMULATION),
            rng=np.random.default_rng(0),
        ).start([], data)


def test_bootstrap_paths_continue_history_and_keep_the_time_of_day():
    data = planted_cycle(2, n=5_000)
    (path,) = BlockBootstrap(block_size=60).generate(
        data.series, count=1, length=1_000, rng=np.random.default_rng(0)
    )
    assert path.time[0] == data.time[-1] + MINUTE
    assert np.all(path.high >= np.maximum(path.open, path.close))
    assert np.all(path.low <= np.minimum(path.open, path.close))
    # Chained from the last close with a gap that history really had.
    assert np.isclose(path.open[0] / data.close[-1], data.open[1:] / data.close[:-1]).any()
    with pytest.raises(InvalidArgument):
        BlockBootstrap(block_size=60).generate(
            data.series.slice(0, 100), count=1, length=10, rng=np.random.default_rng(0)
        )


def test_seeds_are_validated_and_config_bounds_enforced():
    family = StrategyFamily.MEAN_REVERSION
    bad = StrategyGenome(id="s", family=family, parameters={"bb_period": 1.0})
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(num_generations=1),
        rng=np.random.default_rng(0),
    )
    with pytest.raises(InvalidArgument) as failure:
        evolution.start([bad], random_walk(0, n=2_000))
    assert failure.value.field == "seeds[0].parameters[bb_period]"
    for field, value in (
        ("mutation_rate", 1.5),
        ("num_mutations_per_parent", 0),
        ("elite_carry_forward", 0),
    ):
        with pytest.raises(InvalidArgument) as failure:
            EvolutionConfig(**{field: value})
        assert failure.value.field == f"config.{field}"
    largest = EvolutionConfig(elite_carry_forward=5, num_mutations_per_parent=999)
    assert largest.population == MAX_POPULATION
    with pytest.raises(InvalidArgument) as failure:
        EvolutionConfig(elite_carry_forward=5, num_mutations_per_parent=1000)
    assert failure.value.field == "config.num_mutations_per_parent"
    simulation = EvolutionConfig(evaluation_type=EvaluationType.SIMULATION, scenario_paths=10)
    simulation.check_scenario_bars(MAX_SCENARIO_BARS // 10)
    with pytest.raises(InvalidArgument) as failure:
        simulation.check_scenario_bars(MAX_SCENARIO_BARS // 10 + 1)
    assert failure.value.field == "config.scenario_paths"
    EvolutionConfig(scenario_paths=10).check_scenario_bars(MAX_SCENARIO_BARS)  # no simulation


def test_diversity_is_the_mean_pairwise_policy_distance():
    policy = Evaluator().policy
    genomes = [policy.default_genome(f) for f in StrategyFamily]
    rng = np.random.default_rng(5)
    for family in (StrategyFamily.MA_CROSSOVER, StrategyFamily.BREAKOUT):
        for _ in range(6):
            unit = {s.name: s.from_unit(rng.random()) for s in policy.specs(family)}
            genomes.append(make_genome(family, policy.repair(family, unit)))
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(),
        rng=np.random.default_rng(0),
    )
    pairs = [policy.distance(a, b) for i, a in enumerate(genomes) for b in genomes[i + 1 :]]
    assert evolution._diversity(genomes, None) == pytest.approx(np.mean(pairs), rel=1e-12)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evolution._diversity(genomes, token)


def test_an_evolution_reports_how_likely_its_best_is_overfit():
    noise = [evolve(random_walk(s, n=8_000), 3, num_generations=4).result() for s in range(3)]
    edge = [evolve(planted_cycle(s, n=10_000), 3, num_generations=4).result() for s in range(3)]
    # CSCV over every genome evaluated: about one half on noise, near zero with a real edge.
    assert all(r.pbo is not None and 0 <= r.pbo <= 1 for r in noise + edge)
    assert np.mean([r.pbo for r in noise]) > 0.35
    assert np.mean([r.pbo for r in edge]) < 0.2


def test_a_step_keeps_to_a_limit_of_new_evaluations():
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=EvolutionConfig(num_generations=3),
        rng=np.random.default_rng(2),
    )
    evolution.start([], planted_cycle(3, n=5_000))
    before = len(evolution.evaluations)
    stats = evolution.step(limit=3)
    assert len(evolution.evaluations) == before + 3
    assert evolution.trials.count == before + 3
    assert stats.evaluated <= 3 + evolution.config.elite_carry_forward
    with pytest.raises(InvalidArgument, match="limit"):
        evolution.step(limit=0)
