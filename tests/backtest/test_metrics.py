"""Metrics cross-checked against empyrical-reloaded (and scipy) on real backtests, plus the
probabilistic/deflated Sharpe ratios, the risk score and the composite score."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.stats

from backtest.evaluation import Evaluator, TrialLog, rescore_deflated
from backtest.indicators import BarData
from backtest.metrics import (
    EULER_GAMMA,
    ScoreWeights,
    composite_score,
    empty_metrics,
    expected_max_sharpe,
    probabilistic_sharpe,
    risk_score,
)
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, make_genome
from tests.helpers.empyrical_reference import reference

POLICY = Policy()


@pytest.fixture(scope="module")
def backtests():
    """Four genomes of every family with their metrics and raw returns on 10 synthetic days."""
    data = BarData(generate(SyntheticMarketSpec(seed=7, days=10)).series[5])
    rng = np.random.default_rng(3)
    genomes = []
    for family in StrategyFamily:
        for _ in range(4):
            values = {s.name: s.from_unit(rng.uniform()) for s in POLICY.specs(family)}
            values.update(vol_min=0.0, vol_max=5.0, session_hours=24.0)
            genomes.append(make_genome(family, POLICY.repair(family, values)))
    evaluator = Evaluator()
    evaluations = evaluator.evaluate(genomes, data)
    returns = evaluator.backtest_returns(genomes, data)
    split = int(evaluator.fold_starts(data.n)[1])
    return data, evaluations, returns, split


def test_metrics_match_empyrical(backtests):
    data, evaluations, returns, split = backtests
    compared = 0
    for evaluation, r in zip(evaluations, returns, strict=True):
        for metrics, series in ((evaluation.metrics, r), (evaluation.out_of_sample, r[split:])):
            assert metrics.bar_count == len(series)
            for name, expected in reference(series, data.bars_per_year).items():
                if not np.isfinite(expected) or expected == 0:
                    continue  # empyrical's NaN/inf where our convention reports 0 (documented)
                assert getattr(metrics, name) == pytest.approx(expected, rel=1e-9, abs=1e-15), name
                compared += 1
    assert compared > 300


def test_trade_metrics_are_consistent(backtests):
    _, evaluations, _, _ = backtests
    for e in evaluations:
        m = e.metrics
        if m.trade_count == 0:
            continue
        wins = round(m.win_rate * m.trade_count)
        losses = m.trade_count - wins
        assert m.expectancy == pytest.approx(
            (wins * m.average_win + losses * m.average_loss) / m.trade_count, rel=1e-9
        )
        assert m.worst_trade <= m.expectancy <= m.best_trade
        if losses and wins:
            assert m.profit_factor == pytest.approx(
                wins * m.average_win / -(losses * m.average_loss), rel=1e-9
            )
            assert m.payoff_ratio == pytest.approx(m.average_win / -m.average_loss, rel=1e-9)
        assert 0 <= m.exposure <= 1
        assert m.turnover * m.bar_count >= m.trade_count


def test_probabilistic_sharpe_follows_bailey_and_lopez_de_prado():
    sr, n, skew, kurt = 0.02, 10_000, -0.5, 4.0  # kurt is excess kurtosis
    expected = scipy.stats.norm.cdf(
        (sr - 0.01) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt + 3 - 1) / 4 * sr * sr)
    )
    assert probabilistic_sharpe(sr, 0.01, n, skew, kurt) == pytest.approx(expected, rel=1e-12)
    variance, trials = 0.0004, 100
    sr0 = math.sqrt(variance) * (
        (1 - EULER_GAMMA) * scipy.stats.norm.ppf(1 - 1 / trials)
        + EULER_GAMMA * scipy.stats.norm.ppf(1 - 1 / (trials * math.e))
    )
    assert expected_max_sharpe(trials, variance) == pytest.approx(sr0, rel=1e-9)
    assert expected_max_sharpe(1, variance) == 0.0
    assert expected_max_sharpe(1000, variance) > expected_max_sharpe(10, variance)


def test_more_trials_deflate_the_sharpe_ratio(backtests):
    _, evaluations, _, _ = backtests
    best = max(evaluations, key=lambda e: e.out_of_sample.per_bar_sharpe)
    few, many = TrialLog(prior=1), TrialLog(prior=10_000)
    for log in (few, many):
        for e in evaluations:
            log.add(e.out_of_sample.per_bar_sharpe)
    assert (
        rescore_deflated(best, many).out_of_sample.deflated_sharpe_ratio
        < rescore_deflated(best, few).out_of_sample.deflated_sharpe_ratio
    )
    assert best.out_of_sample.deflated_sharpe_ratio <= best.out_of_sample.probabilistic_sharpe_ratio


def test_risk_and_composite_scores_follow_their_formulas():
    m = dataclasses.replace(
        empty_metrics(1000),
        max_drawdown=0.15,
        annualized_volatility=0.30,
        conditional_value_at_risk_95=0.001,
        exposure=0.5,
        total_return=0.05,
        sharpe_ratio=1.0,
        win_rate=0.55,
        profit_factor=1.5,
    )
    bars_per_year = 525_600.0
    daily = 0.001 * math.sqrt(bars_per_year / 365)
    expected_risk = 100 * (0.4 * 0.5 + 0.3 * 0.5 + 0.2 * min(daily / 0.05, 1) + 0.1 * 0.5)
    risk = risk_score(m, bars_per_year=bars_per_year)
    assert risk == pytest.approx(expected_risk)
    expected = (
        0.25 * (0.5 + 0.5 * math.tanh(0.5))
        + 0.20 * (0.5 + 0.5 * math.tanh(0.5))
        + 0.15 * 0.55
        + 0.15 * 0.6
        + 0.15 * 0.5
        + 0.10 * (1 - risk / 100)
    )
    assert composite_score(m, risk, ScoreWeights()) == pytest.approx(expected)
    only_sharpe = ScoreWeights(pnl=0, sharpe=1, win_rate=0, profit_factor=0, drawdown=0, risk=0)
    assert composite_score(m, risk, only_sharpe) == pytest.approx(0.5 + 0.5 * math.tanh(0.5))


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        ({"pnl": -0.1, "sharpe": 0.45}, "weights.pnl"),
        ({"pnl": 0.5}, "weights"),
        ({"risk": float("nan")}, "weights.risk"),
    ],
)
def test_weights_must_be_non_negative_and_sum_to_one(weights, field):
    with pytest.raises(InvalidArgument) as failure:
        ScoreWeights(**weights)
    assert failure.value.field == field


def test_a_live_backtest_has_no_fold_boundaries(backtests):
    data, evaluations, _, split = backtests
    evaluator = Evaluator()
    genomes = [e.genome for e in evaluations]
    live = evaluator.backtest(genomes, data)
    folded = evaluator.backtest(genomes, data, walk_forward=True)
    assert live.positions.shape == (len(genomes), data.n)
    assert set(np.unique(live.positions)) <= {-1, 0, 1}
    # Identical until the first fold boundary, where only the walk-forward run is forced flat.
    assert np.array_equal(live.returns[:, :split], folded.returns[:, :split])
    held_across = live.positions[:, split - 1] != 0
    assert np.any(folded.positions[held_across, split] == 0)
