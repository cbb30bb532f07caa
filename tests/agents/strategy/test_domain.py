"""The strategy officer's method on known inputs: the book and its changes, recent performance
against numpy/empyrical, a planted loser disabled, a recovered strategy enabled, inverse-volatility
weights, and promotion exactly at the meta policy's gates and not below."""

from __future__ import annotations

import dataclasses

import empyrical
import numpy as np
import pytest
from scipy import stats

from agents.fleet_history import HOUR_NANOS, FleetHistory
from agents.strategy.advice import DAY_NANOS, OfficerRules, _reweight, advise
from agents.strategy.book import BookPolicy, Universe
from agents.strategy.performance import SESA, Performance, fleet_performance
from backtest.metrics import probabilistic_sharpe
from market.fleet import FleetReport, SectorBook, StrategyBook, deploy
from qtmesh.base.contract import (
    DisableStrategy,
    EnableStrategy,
    Priority,
    PromoteStrategy,
    ReweightStrategies,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage

T0 = 1_767_571_200 * 10**9
SETUP = deploy({"AAA": "Tech", "BBB": "Tech", "CCC": "Energy"}, deployment_time=T0)
RULES = OfficerRules()


def fleet_report(n: int = 0) -> FleetReport:
    allocations = SETUP.initial_allocations
    counts = {s: len(SETUP.strategies_of(s)) for s in SETUP.sectors}
    return FleetReport(
        deployment_time=T0,
        clock_time=T0 + n * HOUR_NANOS,
        position=n * 60,
        start_time=None,
        end_time=None,
        bar_count=n * 60,
        capital=1e6,
        equity=1e6,
        total_return=0.0,
        pnl=0.0,
        sectors=tuple(
            SectorBook(s, allocations[s], counts[s], 0, 0, 0, 0, 0, 0, 0, 0) for s in SETUP.sectors
        ),
        strategies=tuple(
            StrategyBook(s, allocations[s.sector] / counts[s.sector], 0, 0, 0, 0)
            for s in SETUP.strategies
        ),
        missions=(),
        changes=(),
    )


UNIVERSE = Universe.of_fleet(fleet_report())
IDS = [s.id for s in SETUP.strategies]


def history(returns: np.ndarray, trades: np.ndarray) -> FleetHistory:
    n = returns.shape[0]
    return FleetHistory(
        period=HOUR_NANOS,
        current=fleet_report(n),
        sectors=SETUP.sectors,
        strategies=tuple(IDS),
        next_period=n,
        end_times=T0 + HOUR_NANOS * np.arange(1, n + 1),
        portfolio=returns.mean(axis=1),
        sector_returns=np.zeros((n, 2)),
        strategy_returns=returns,
        strategy_trades=trades,
        equity=np.ones(n),
    )


def genome(strategy_id: str):
    return dataclasses.replace(Policy().default_genome(StrategyFamily.BREAKOUT), id=strategy_id)


def test_the_book_starts_as_the_fleet_with_weights_by_allocation():
    entries = BookPolicy().entries(UNIVERSE)
    assert [e.strategy_id for e in entries] == sorted(
        IDS, key=lambda i: (UNIVERSE.base[i].sector, i)
    )
    assert all(e.producing and e.in_fleet for e in entries)
    assert sum(e.weight for e in entries) == pytest.approx(1.0)
    # Energy (one symbol) and Tech (two) hold half the capital each.
    energy = [e.weight for e in entries if e.record.sector == "Energy"]
    assert energy == pytest.approx([1 / 6] * 3)
    assert UNIVERSE.sector_symbols == {"Energy": ("CCC",), "Tech": ("AAA", "BBB")}


def test_actions_change_the_book_and_a_rejected_one_changes_nothing():
    book = BookPolicy()
    book, detail = book.enable(
        UNIVERSE,
        strategy_id="BBB/g1",
        sector="Tech",
        genome=genome("g1"),
        weight=0,
        at=T0 + HOUR_NANOS,
        field="f",
    )
    assert detail.startswith("BBB/g1 (breakout) added as a shadow on BBB from")
    shadow = next(e for e in book.entries(UNIVERSE) if e.strategy_id == "BBB/g1")
    assert shadow.record.stage is StrategyStage.SHADOW
    assert shadow.weight == 0
    assert shadow.record.since == T0 + HOUR_NANOS
    loser = IDS[0]
    book, detail = book.disable(UNIVERSE, strategy_id=loser, field="f")
    assert detail == f"{loser} disabled"
    weights = {e.strategy_id: e.weight for e in book.entries(UNIVERSE)}
    assert weights[loser] == 0
    assert sum(weights.values()) == pytest.approx(1.0)
    book, _ = book.promote(UNIVERSE, strategy_id="BBB/g1", at=T0 + 2 * HOUR_NANOS, field="f")
    promoted = next(e for e in book.entries(UNIVERSE) if e.strategy_id == "BBB/g1")
    assert promoted.producing
    tech = [e.weight for e in book.entries(UNIVERSE) if e.record.sector == "Tech" and e.producing]
    assert promoted.weight == pytest.approx(np.mean(tech))
    book, detail = book.reweight(UNIVERSE, weights={IDS[1]: 0.5, loser: 0.0}, field="f")
    assert detail.startswith("1 strategies reweighted")  # the disabled loser's 0 changes nothing
    assert BookPolicy.from_json(book.to_json()) == book

    for change, field in (
        (lambda: book.disable(UNIVERSE, strategy_id="nope", field="f"), "f.strategy_id"),
        (
            lambda: book.enable(
                UNIVERSE, strategy_id="g9", sector="Tech", genome=None, weight=0, at=T0, field="f"
            ),
            "f.genome",
        ),
        (
            lambda: book.enable(
                UNIVERSE,
                strategy_id="g9",
                sector="Mining",
                genome=genome("g9"),
                weight=0,
                at=T0,
                field="f",
            ),
            "f.sector",
        ),
        (
            lambda: book.enable(
                UNIVERSE,
                strategy_id="g9",
                sector="Tech",
                genome=dataclasses.replace(genome("g9"), parameters={"channel_bars": 1e9}),
                weight=0,
                at=T0,
                field="f",
            ),
            "f.genome.parameters[channel_bars]",
        ),
        (lambda: book.reweight(UNIVERSE, weights={loser: 1.0}, field="f"), f"f.weights[{loser}]"),
        (lambda: book.reweight(UNIVERSE, weights={"x": 1.0}, field="f"), "f.weights[x]"),
        (lambda: book.reweight(UNIVERSE, weights={}, field="f"), "f.weights"),
    ):
        with pytest.raises(InvalidArgument) as error:
            change()
        assert error.value.field == field
    with pytest.raises(FailedPrecondition):
        book.promote(UNIVERSE, strategy_id="never-shadowed", at=T0, field="f")


def test_recent_performance_follows_the_documented_conventions():
    rng = np.random.default_rng(1)
    returns = rng.normal(0.0002, 0.002, (48, len(IDS)))
    trades = rng.integers(0, 2, (48, len(IDS)))
    measured = fleet_performance(history(returns, trades), lookback=40)
    r = returns[-40:, 0]
    p = measured[IDS[0]]
    assert p.observations == 40
    assert p.sharpe == pytest.approx(empyrical.sharpe_ratio(r, annualization=8760), rel=1e-12)
    assert p.volatility == pytest.approx(
        empyrical.annual_volatility(r, annualization=8760), rel=1e-12
    )
    assert p.total_return == pytest.approx(empyrical.cum_returns_final(r), rel=1e-12)
    assert p.max_drawdown == pytest.approx(-empyrical.max_drawdown(r), rel=1e-12)
    assert p.trade_count == trades[-40:, 0].sum()
    assert p.psr == pytest.approx(
        probabilistic_sharpe(r.mean() / r.std(ddof=1), 0.0, 40, stats.skew(r), stats.kurtosis(r)),
        rel=1e-12,
    )


def test_a_planted_loser_is_disabled_and_noisy_strategies_are_not():
    # Seeded so that none of the eight zero-drift strategies falls under the 5% PSR by chance
    # (each does with probability 5%: the rule is a one-sided test at that level).
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.002, (72, len(IDS)))
    returns[:, 3] = rng.normal(-0.0012, 0.002, 72)  # a persistent loser in Tech
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    recommendations = advise(
        BookPolicy().entries(UNIVERSE), performance, RULES, clock_time=T0 + 72 * HOUR_NANOS
    )
    disables = [r for r in recommendations if isinstance(r.parameters, DisableStrategy)]
    assert [r.parameters.strategy_id for r in disables] == [IDS[3]]
    (disable,) = disables
    assert disable.priority is Priority.MEDIUM
    assert disable.confidence == pytest.approx(1 - performance[IDS[3]].psr)
    assert performance[IDS[3]].psr < 0.05
    assert "a persistent loser" in disable.rationale
    assert "over 72 hourly returns" in disable.rationale
    # The same loser with too few trades is left alone.
    few = fleet_performance(history(returns, np.zeros_like(trades)), lookback=72)
    assert not any(
        isinstance(r.parameters, DisableStrategy)
        for r in advise(BookPolicy().entries(UNIVERSE), few, RULES, clock_time=T0)
    )


def test_the_last_enabled_strategy_of_a_sector_is_never_disabled():
    returns = np.full((72, len(IDS)), -0.001) + np.random.default_rng(3).normal(0, 1e-4, (72, 9))
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    recommendations = advise(BookPolicy().entries(UNIVERSE), performance, RULES, clock_time=T0)
    disabled = {r.parameters.strategy_id for r in recommendations if r.id.startswith("strategy/d")}
    for sector in ("Tech", "Energy"):
        members = {i for i in IDS if UNIVERSE.base[i].sector == sector}
        assert len(members - disabled) == 1


def test_a_disabled_strategy_that_recovered_is_enabled_again():
    rng = np.random.default_rng(4)
    returns = rng.normal(0.0, 0.002, (72, len(IDS)))
    returns[:, 5] = rng.normal(0.0015, 0.002, 72)
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    book, _ = BookPolicy().disable(UNIVERSE, strategy_id=IDS[5], field="f")
    performance = fleet_performance(history(returns, trades), lookback=72)
    (enable,) = [
        r
        for r in advise(book.entries(UNIVERSE), performance, RULES, clock_time=T0)
        if isinstance(r.parameters, EnableStrategy)
    ]
    assert enable.parameters.strategy_id == IDS[5]
    assert enable.priority is Priority.LOW
    assert enable.confidence == pytest.approx(performance[IDS[5]].psr)


def test_weights_move_to_inverse_volatility_within_each_sector():
    rng = np.random.default_rng(5)
    scales = np.array([0.001, 0.002, 0.004, 0.001, 0.002, 0.004, 0.002, 0.002, 0.002])
    returns = rng.normal(0, 1, (72, 9)) * scales
    trades = np.ones((72, 9), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    entries = BookPolicy().entries(UNIVERSE)
    (reweight,) = [
        r
        for r in advise(entries, performance, RULES, clock_time=T0)
        if isinstance(r.parameters, ReweightStrategies)
    ]
    weights = reweight.parameters.weights
    assert sum(weights.values()) == pytest.approx(1.0)
    for sector in ("Tech", "Energy"):
        members = [e.strategy_id for e in entries if e.record.sector == sector]
        assert sum(weights[m] for m in members) == pytest.approx(0.5)
        inverse = np.array([1 / performance[m].volatility for m in members])
        np.testing.assert_allclose([weights[m] for m in members], 0.5 * inverse / inverse.sum())
    assert reweight.evidence["total_variation"] >= 0.10
    # Equal volatilities leave the weights where they are: nothing to recommend.
    flat = fleet_performance(history(rng.normal(0, 0.002, (72, 9)), trades), lookback=72)
    flat = {k: dataclasses.replace(p, volatility=0.1) for k, p in flat.items()}
    assert not any(
        isinstance(r.parameters, ReweightStrategies)
        for r in advise(entries, flat, RULES, clock_time=T0)
    )


def shadow_case(days: float, trades: int, sharpe: float, deflated: float):
    book, _ = BookPolicy().enable(
        UNIVERSE, strategy_id="g1", sector="Tech", genome=genome("g1"), weight=0, at=T0, field="f"
    )
    performance = {
        "g1": Performance(
            source=SESA,
            observations=10_000,
            total_return=0.05,
            volatility=0.2,
            sharpe=sharpe,
            max_drawdown=0.02,
            trade_count=trades,
            psr=0.99,
            deflated_sharpe=deflated,
        )
    }
    clock = T0 + round(days * DAY_NANOS)
    return [
        r
        for r in advise(book.entries(UNIVERSE), performance, RULES, clock_time=clock)
        if isinstance(r.parameters, PromoteStrategy)
    ]


def test_a_shadow_exactly_at_the_gates_is_promoted_and_one_below_any_gate_is_not():
    # The gates are the meta policy's: 7 days, 50 trades, Sharpe above 1.0, deflated >= 0.95.
    assert (RULES.meta.shadow_min_test_days, RULES.meta.shadow_min_trades) == (7.0, 50)
    (promote,) = shadow_case(7.0, 50, 1.0 + 1e-6, 0.95)
    assert promote.parameters.strategy_id == "g1"
    assert promote.parameters.sector == "Tech"
    assert promote.parameters.genome.id == "g1"
    assert promote.priority is Priority.MEDIUM
    assert promote.confidence == pytest.approx(0.5, abs=1e-5)  # right at the gates
    assert "passed every gate" in promote.rationale
    assert shadow_case(6.999, 50, 1.5, 0.99) == []
    assert shadow_case(7.0, 49, 1.5, 0.99) == []
    assert shadow_case(7.0, 50, 1.0, 0.99) == []  # the Sharpe must exceed 1.0
    assert shadow_case(7.0, 50, 1.5, 0.9499) == []


def test_a_loser_is_zeroed_even_when_no_survivor_of_its_sector_is_measured():
    entries = BookPolicy().entries(UNIVERSE)
    loser = max(entries, key=lambda e: e.weight).strategy_id
    # No performance at all: nothing measured to reweight the survivors by.
    rules = dataclasses.replace(
        RULES, meta=dataclasses.replace(RULES.meta, reweight_threshold=0.01)
    )
    reweight = _reweight(entries, {}, {loser}, rules)
    assert reweight is not None
    assert reweight.parameters.weights[loser] == 0.0
    others = {e.strategy_id: e.weight for e in entries if e.strategy_id != loser}
    assert {k: reweight.parameters.weights[k] for k in others} == pytest.approx(others)


def test_a_sector_without_deployed_strategies_has_no_test_symbol():
    empty = dataclasses.replace(UNIVERSE, sector_symbols={**UNIVERSE.sector_symbols, "Tech": ()})
    with pytest.raises(FailedPrecondition) as failure:
        BookPolicy().enable(
            empty, strategy_id="g1", sector="Tech", genome=genome("g1"), weight=0, at=T0, field="f"
        )
    assert failure.value.metadata["field"] == "f.sector"
