"""The meta-learning OS: window statistics, adaptation rules, and properties that hold for any
input: more Sharpe never raises exploration, more variance never raises the learning rate, the
bounds are never crossed, too few samples change nothing, same inputs give same outputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meta.config import MetaLearningConfig
from meta.learning import (
    SHARPE_CAP,
    MetaLearningOS,
    Tracked,
    WindowStats,
    smooth_weights,
    softmax,
    streak_of,
    summarize,
)
from meta.model import NANOS_PER_HOUR, Evaluation, MetaParameters, Trade
from qtmesh.base.genome import StrategyFamily, StrategyStage

CONFIG = MetaLearningConfig()
OS = MetaLearningOS(config=CONFIG)
NOW = 1_767_571_200 * 10**9 + 1000 * NANOS_PER_HOUR
MINUTE = 60 * 10**9


def trades_of(returns, *, end: int = NOW, spacing: int = 30 * MINUTE, strategy="s") -> list[Trade]:
    """Trades closing ``spacing`` apart, the last at ``end``, in the given order."""
    n = len(returns)
    return [
        Trade(
            strategy_id=strategy if isinstance(strategy, str) else strategy[i],
            entry_time=end - (n - i) * spacing - MINUTE,
            exit_time=end - (n - 1 - i) * spacing,
            return_fraction=float(r),
        )
        for i, r in enumerate(returns)
    ]


def stats_of(returns, **kwargs) -> WindowStats:
    return summarize(
        trades_of(returns), now=NOW, window_hours=CONFIG.performance_window_hours, **kwargs
    )


def test_window_statistics_follow_their_documented_conventions():
    returns = [0.01, -0.012, 0.002, 0.004, -0.009, 0.003]
    stats = stats_of(returns)
    mean, std = np.mean(returns), np.std(returns, ddof=1)
    assert stats.count == 6
    assert stats.mean == pytest.approx(mean)
    assert stats.volatility == pytest.approx(std)
    assert stats.sharpe == pytest.approx(mean / std * math.sqrt(6 * 365))
    assert stats.streak == 1


def test_the_window_is_open_at_its_start_and_closed_at_now():
    window = round(CONFIG.performance_window_hours * NANOS_PER_HOUR)
    trades = [
        Trade(
            strategy_id="a",
            entry_time=NOW - window - MINUTE,
            exit_time=NOW - window,
            return_fraction=0.5,
        ),
        Trade(strategy_id="a", entry_time=NOW - MINUTE, exit_time=NOW, return_fraction=0.01),
        Trade(strategy_id="a", entry_time=NOW, exit_time=NOW + 1, return_fraction=0.02),
    ]
    stats = summarize(trades, now=NOW, window_hours=CONFIG.performance_window_hours)
    assert stats.count == 1
    assert stats.mean == 0.01


@pytest.mark.parametrize(
    ("returns", "streak"),
    [
        ([], 0),
        ([0.1, 0.1, -0.1], -1),
        ([-0.1, 0.1, 0.2, 0.3], 3),
        ([0.1, -0.1, -0.2], -2),
        ([0.1, 0.0], 0),
    ],
)
def test_streaks_count_the_trailing_run(returns, streak):
    assert streak_of(returns) == streak


def test_degenerate_windows_give_a_bounded_sharpe():
    assert stats_of([0.01] * 30).sharpe == SHARPE_CAP
    assert stats_of([-0.01] * 30).sharpe == -SHARPE_CAP
    assert stats_of([0.0] * 30).sharpe == 0.0
    assert stats_of([0.01]).sharpe == 0.0


def test_targets_map_the_documented_ranges():
    c = CONFIG
    assert OS.exploration_target(c.sharpe_low - 1) == c.rl_exploration_rate_max
    assert OS.exploration_target(c.sharpe_high + 1) == c.rl_exploration_rate_min
    assert OS.learning_rate_target(0.0) == pytest.approx(c.rl_learning_rate_max)
    assert OS.learning_rate_target(1.0) == pytest.approx(c.rl_learning_rate_min)
    midway = (c.volatility_low + c.volatility_high) / 2
    assert OS.learning_rate_target(midway) == pytest.approx(1e-3)  # log-scale midpoint
    assert OS.discount_target(0.0) == c.rl_discount_max
    assert OS.discount_target(1.0) == pytest.approx(c.rl_discount_min)
    assert OS.risk_target(0) == 1.0
    assert OS.risk_target(c.streak_saturation) == c.risk_multiplier_max
    assert OS.risk_target(-c.streak_saturation * 3) == c.risk_multiplier_min
    assert OS.position_size_target(c.target_trade_volatility) == 1.0
    assert OS.position_size_target(0.0) == c.position_size_scale_max


def adapt(returns, *, parameters=None, tracked=None, evaluations=(), os=OS, now=NOW, **kwargs):
    stats = summarize(
        trades_of(returns, end=now, **kwargs),
        now=now,
        window_hours=os.config.performance_window_hours,
    )
    return os.adapt(
        parameters or os.initial_parameters(), tracked or Tracked(), stats, evaluations, now=now
    )


def test_one_adaptation_moves_each_parameter_one_percent_toward_its_target():
    rng = np.random.default_rng(3)
    returns = rng.normal(0.003, 0.01, 30)
    result = adapt(returns)
    assert result.adapted
    before, after = OS.initial_parameters(), result.parameters
    stats = stats_of(returns)
    target = OS.exploration_target(stats.sharpe)
    assert after.rl_exploration_rate == pytest.approx(
        before.rl_exploration_rate + 0.01 * (target - before.rl_exploration_rate)
    )
    lr_target = OS.learning_rate_target(stats.volatility)
    assert math.log(after.rl_learning_rate) == pytest.approx(
        math.log(1e-3) + 0.01 * (math.log(lr_target) - math.log(1e-3))
    )
    assert (after.version, after.update_time, after.cause) == (2, NOW, "meta update")
    assert result.tracked == Tracked(baseline_performance=stats.sharpe, last_adaptation_time=NOW)
    names = {c.name for c in result.changes}
    assert {
        "rl_exploration_rate",
        "rl_learning_rate",
        "rl_discount",
        "position_size_scale",
    } <= names
    for change in result.changes:
        assert change.reason
        assert getattr(after, change.name) == change.new_value


def test_fewer_than_the_minimum_samples_change_nothing():
    start = OS.initial_parameters()
    result = adapt([0.01, -0.02] * 9 + [0.01])  # 19 trades
    assert not result.adapted
    assert result.parameters is start or result.parameters == start
    assert result.changes == ()
    assert result.tracked == Tracked()
    assert "holds 19 trades and 20 are needed" in result.detail
    assert adapt([0.01, -0.02] * 10).adapted


def test_adaptation_runs_once_per_interval():
    tracked = Tracked(baseline_performance=1.0, last_adaptation_time=NOW - 60 * MINUTE + 1)
    early = adapt([0.01, -0.005] * 15, tracked=tracked)
    assert not early.adapted
    assert "next is due in 0.0 min" in early.detail
    assert adapt(
        [0.01, -0.005] * 15,
        tracked=dataclasses.replace(tracked, last_adaptation_time=NOW - 60 * MINUTE),
    ).adapted


def test_the_baseline_is_smoothed():
    result = adapt(
        [0.01, -0.005] * 15, tracked=Tracked(baseline_performance=2.0, last_adaptation_time=None)
    )
    sharpe = stats_of([0.01, -0.005] * 15).sharpe
    assert result.tracked.baseline_performance == pytest.approx(2.0 + 0.05 * (sharpe - 2.0))


def test_streaks_move_risk():
    wins = adapt([-0.01] * 15 + [0.01] * 15)
    losses = adapt([0.01] * 15 + [-0.01] * 15)
    assert wins.parameters.risk_multiplier > 1.0 > losses.parameters.risk_multiplier


def test_high_variance_lowers_the_learning_rate_and_the_discount():
    calm = adapt([0.002, 0.0] * 15)
    wild = adapt([0.05, -0.045] * 15)
    assert wild.parameters.rl_learning_rate < 1e-3 < calm.parameters.rl_learning_rate
    assert wild.parameters.rl_discount < 0.95 < calm.parameters.rl_discount


def test_strategy_weights_are_a_smoothed_softmax_of_production_scores():
    evaluations = [
        Evaluation(
            strategy_id="a", composite_score=0.6, evaluated_time=NOW, stage=StrategyStage.PRODUCTION
        ),
        Evaluation(strategy_id="b", composite_score=0.5, evaluated_time=NOW),
        Evaluation(strategy_id="a", composite_score=0.1, evaluated_time=NOW - MINUTE),
        Evaluation(
            strategy_id="shadow",
            composite_score=0.9,
            evaluated_time=NOW,
            stage=StrategyStage.SHADOW,
        ),
        Evaluation(
            strategy_id="bad", composite_score=0.9, evaluated_time=NOW, stage=StrategyStage.REJECTED
        ),
    ]
    target = OS.strategy_weight_target(evaluations)
    assert set(target) == {"a", "b"}
    assert target["a"] / target["b"] == pytest.approx(math.exp(0.1 / 0.1))
    first = adapt([0.01, -0.005] * 15, evaluations=evaluations).parameters
    assert dict(first.strategy_weights) == pytest.approx(target)  # nothing to smooth from yet
    old = {"a": 0.2, "b": 0.3, "gone": 0.5}
    smoothed = smooth_weights(old, target, 0.2)
    assert sum(smoothed.values()) == pytest.approx(1.0)
    assert smoothed["gone"] == pytest.approx(0.4)


def test_model_weights_follow_the_realised_sharpe_of_each_family():
    trades = trades_of([0.02, 0.01, -0.01, -0.02] * 6, strategy=["up", "up", "down", "down"] * 6)
    families = {"up": StrategyFamily.BREAKOUT.name, "down": StrategyFamily.MEAN_REVERSION.name}
    stats = summarize(trades, now=NOW, window_hours=24, families=families)
    weights = OS.model_weight_target(stats)
    assert weights["BREAKOUT"] > 0.5 > weights["MEAN_REVERSION"]
    assert softmax({}, 1.0) == {}


def test_switches_turn_adaptations_off():
    frozen = MetaLearningOS(
        config=dataclasses.replace(
            CONFIG,
            adapt_rl_hyperparameters=False,
            adapt_risk_tolerance=False,
            adapt_strategy_weights=False,
            adapt_model_weights=False,
        )
    )
    result = adapt([0.01, -0.005] * 15, os=frozen)
    assert result.adapted
    assert result.changes == ()


def test_same_inputs_and_clock_give_the_same_outputs():
    rng = np.random.default_rng(9)
    returns = rng.normal(0, 0.01, 40)
    assert adapt(returns) == adapt(returns)


# -- properties -------------------------------------------------------------------------------

returns_lists = st.lists(st.floats(-0.05, 0.05, allow_nan=False), min_size=20, max_size=60)


@given(returns_lists, st.floats(0.0, 0.05))
def test_more_sharpe_never_raises_exploration(returns, shift):
    """Adding a constant to every return raises the mean at the same volatility."""
    assert stats_of([r + shift for r in returns]).sharpe >= stats_of(returns).sharpe - 1e-9
    base = adapt(returns).parameters.rl_exploration_rate
    better = adapt([r + shift for r in returns]).parameters.rl_exploration_rate
    assert better <= base + 1e-15


@given(returns_lists, st.floats(1.0, 4.0))
def test_more_variance_never_raises_the_learning_rate(returns, scale):
    mean = float(np.mean(returns))
    wider = [mean + (r - mean) * scale for r in returns]
    assert adapt(wider).parameters.rl_learning_rate <= adapt(
        returns
    ).parameters.rl_learning_rate * (1 + 1e-12)


windows = st.lists(
    st.tuples(
        st.lists(st.floats(-1.0, 10.0, allow_nan=False), min_size=0, max_size=40),
        st.lists(st.floats(0.0, 1.0), min_size=0, max_size=5),
    ),
    min_size=1,
    max_size=8,
)


@given(windows, st.floats(0.001, 1.0), st.floats(0.0, 1.0))
def test_bounds_are_never_crossed_for_any_sequence(sequence, rate, smoothing):
    config = dataclasses.replace(CONFIG, meta_learning_rate=rate, weight_smoothing=smoothing)
    os = MetaLearningOS(config=config)
    parameters, tracked = os.initial_parameters(), Tracked()
    bounds = os.bounds()
    for step, (returns, scores) in enumerate(sequence):
        now = NOW + step * NANOS_PER_HOUR
        evaluations = [
            Evaluation(strategy_id=f"s{i}", composite_score=s, evaluated_time=now)
            for i, s in enumerate(scores)
        ]
        result = adapt(
            returns, parameters=parameters, tracked=tracked, evaluations=evaluations, os=os, now=now
        )
        parameters, tracked = result.parameters, result.tracked
        for name, (low, high) in bounds.items():
            assert low <= getattr(parameters, name) <= high, name
        for weights in (parameters.strategy_weights, parameters.model_weights):
            assert all(w >= 0 for w in weights.values())
            assert not weights or sum(weights.values()) == pytest.approx(1.0)


def test_initial_parameters_are_the_seed_numbers():
    assert OS.initial_parameters() == MetaParameters(
        rl_learning_rate=1e-3,
        rl_exploration_rate=0.2,
        rl_discount=0.95,
        sesa_mutation_rate=0.3,
        sesa_mutation_magnitude=0.2,
        version=1,
        cause="seed",
    )
