"""Selection: every gate at its boundary, the deflated-Sharpe gate, diversity, readiness."""

from __future__ import annotations

import dataclasses

import pytest

from backtest.evaluation import Evaluation
from backtest.metrics import empty_metrics
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage, make_genome
from sesa.selection import SelectionConfig, diverse_top, judge, select

POLICY = Policy()
CONFIG = SelectionConfig()
GOOD = dataclasses.replace(
    empty_metrics(10_000),
    sharpe_ratio=1.0,
    win_rate=0.55,
    profit_factor=1.5,
    max_drawdown=0.10,
    deflated_sharpe_ratio=0.5,
    trade_count=40,
    exposure=0.3,
)


def evaluation(metrics=GOOD, *, fast: float = 10.0, composite: float = 0.7) -> Evaluation:
    family = StrategyFamily.MA_CROSSOVER
    genome = make_genome(family, POLICY.repair(family, {"fast": fast, "slow": 500.0}))
    return Evaluation(genome, metrics, metrics, 20.0, composite, 100)


@pytest.mark.parametrize(
    ("field", "passing", "failing", "reason"),
    [
        ("sharpe_ratio", 0.5001, 0.5, "Sharpe"),
        ("win_rate", 0.4801, 0.48, "win rate"),
        ("profit_factor", 1.2001, 1.2, "profit factor"),
        ("max_drawdown", 0.1999, 0.20, "max drawdown"),
        # A few lucky trades, or a strategy that is almost never in the market, prove nothing.
        ("trade_count", 20, 19, "trades"),
        ("exposure", 0.02, 0.0199, "exposure"),
    ],
)
def test_each_gate_at_its_boundary(field, passing, failing, reason):
    ok = judge(evaluation(dataclasses.replace(GOOD, **{field: passing})), CONFIG)
    assert ok.passed_gates
    assert ok.stage is StrategyStage.SHADOW
    bad = judge(evaluation(dataclasses.replace(GOOD, **{field: failing})), CONFIG)
    assert not bad.passed_gates
    assert bad.stage is StrategyStage.REJECTED
    assert len(bad.gate_failures) == 1
    assert reason in bad.gate_failures[0]


def test_production_needs_the_deflated_sharpe_gate():
    shadow = judge(evaluation(dataclasses.replace(GOOD, deflated_sharpe_ratio=0.9499)), CONFIG)
    assert shadow.stage is StrategyStage.SHADOW
    assert shadow.promotion_readiness < 1
    production = judge(evaluation(dataclasses.replace(GOOD, deflated_sharpe_ratio=0.95)), CONFIG)
    assert production.stage is StrategyStage.PRODUCTION
    assert production.promotion_readiness == 1.0
    failing = judge(
        evaluation(dataclasses.replace(GOOD, deflated_sharpe_ratio=0.99, sharpe_ratio=0.1)), CONFIG
    )
    assert failing.stage is StrategyStage.REJECTED


def test_readiness_grows_with_gates_passed_and_deflated_sharpe():
    worse = judge(evaluation(dataclasses.replace(GOOD, sharpe_ratio=0.1, win_rate=0.1)), CONFIG)
    better = judge(evaluation(dataclasses.replace(GOOD, sharpe_ratio=0.1)), CONFIG)
    best = judge(evaluation(dataclasses.replace(GOOD, deflated_sharpe_ratio=0.9)), CONFIG)
    assert worse.promotion_readiness < better.promotion_readiness < best.promotion_readiness < 1
    assert better.promotion_readiness == pytest.approx(0.5 * 5 / 6 + 0.5 * 0.5 / 0.95)


def test_a_zero_deflated_sharpe_bar_is_met_by_any_strategy():
    config = SelectionConfig(min_deflated_sharpe=0.0)
    rejected = judge(
        evaluation(dataclasses.replace(GOOD, sharpe_ratio=0.1, deflated_sharpe_ratio=0.0)), config
    )
    assert rejected.stage is StrategyStage.REJECTED
    assert rejected.promotion_readiness == pytest.approx(0.5 * 5 / 6 + 0.5)
    assert judge(evaluation(GOOD), config).stage is StrategyStage.PRODUCTION


def test_top_k_skips_near_duplicates_and_behavioural_twins():
    def distinct(sharpe: float, **kwargs) -> Evaluation:
        return evaluation(dataclasses.replace(GOOD, sharpe_ratio=sharpe), **kwargs)

    candidates = [
        distinct(1.0, fast=10.0, composite=0.9),
        distinct(1.1, fast=11.0, composite=0.8),  # a step away in log-scaled fast: too close
        distinct(1.2, fast=150.0, composite=0.7),
        distinct(1.3, fast=40.0, composite=0.6),
    ]
    judged = [judge(e, CONFIG) for e in candidates]
    chosen = diverse_top(judged, k=3, min_distance=0.05, policy=POLICY)
    assert [j.evaluation.composite_score for j in chosen] == [0.9, 0.7, 0.6]
    assert len(diverse_top(judged, k=3, min_distance=0.0, policy=POLICY)) == 3
    # Far apart in parameters but trading identically (same metrics): one of them is enough.
    twins = [judge(distinct(1.0, fast=f, composite=0.9 - f / 1000), CONFIG) for f in (10.0, 150.0)]
    assert len(diverse_top(twins, k=2, min_distance=0.0, policy=POLICY)) == 1


def test_select_returns_gate_passers_only_and_judges_everything():
    rejected = evaluation(dataclasses.replace(GOOD, profit_factor=0.9), fast=100.0, composite=0.99)
    good = evaluation(fast=10.0, composite=0.5)
    selected, judged = select([rejected, good], CONFIG, policy=POLICY)
    assert [j.evaluation for j in selected] == [good]
    assert [j.stage for j in judged] == [StrategyStage.REJECTED, StrategyStage.SHADOW]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"top_k": 0}, "top_k"),
        ({"min_win_rate": 1.5}, "min_win_rate"),
        ({"min_sharpe": float("inf")}, "min_sharpe"),
        ({"min_trades": -1}, "min_trades"),
        ({"min_exposure": 1.5}, "min_exposure"),
    ],
)
def test_selection_config_is_validated(values, field):
    with pytest.raises(InvalidArgument) as failure:
        SelectionConfig(**values)
    assert failure.value.field == field
