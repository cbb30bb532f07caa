"""The strategy officer's method on known inputs: the book read from the fleet's report, recent
performance against numpy/empyrical, each strategy measured one way (the fleet's periods or its
stage record), a planted loser disabled, a recovered strategy enabled, inverse-volatility
weights, and a shadow promoted on its stage record exactly at the meta policy's gates and not
below."""

from __future__ import annotations

import dataclasses

import empyrical
import numpy as np
import pytest
from scipy import stats

from agents.fleet_history import HOUR_NANOS, FleetHistory
from agents.strategy.advice import DAY_NANOS, MetaWeights, OfficerRules, _reweight, advise
from agents.strategy.book import ACTION, FLEET, entries_of
from agents.strategy.performance import FLEET as MEASURED_BY_FLEET
from agents.strategy.performance import (
    RECORD,
    book_performance,
    fleet_performance,
    record_performance,
)
from backtest.metrics import probabilistic_sharpe
from market.fleet import (
    DeployedStrategy,
    FleetReport,
    SectorBook,
    StageRecord,
    StrategyBook,
    deploy,
)
from qtmesh.base.contract import (
    DisableStrategy,
    EnableStrategy,
    Priority,
    PromoteStrategy,
    ReweightStrategies,
)
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage

T0 = 1_767_571_200 * 10**9
SETUP = deploy({"AAA": "Tech", "BBB": "Tech", "CCC": "Energy"}, deployment_time=T0)
RULES = OfficerRules()
IDS = [s.id for s in SETUP.strategies]
SECTOR = {s.id: s.sector for s in SETUP.strategies}


def genome(strategy_id: str):
    return dataclasses.replace(Policy().default_genome(StrategyFamily.BREAKOUT), id=strategy_id)


def deployed(
    *, disabled: frozenset[str] = frozenset(), halted: frozenset[str] = frozenset()
) -> list[StrategyBook]:
    """The deployment's rows as the fleet reports them: each producing strategy trades its
    sector's allocation split evenly (none while disabled or halted)."""
    producing = {
        sector: [i for i in IDS if SECTOR[i] == sector and i not in disabled]
        for sector in SETUP.sectors
    }
    rows = []
    for s in SETUP.strategies:
        trading = s.id not in disabled and s.sector not in halted and "portfolio" not in halted
        share = SETUP.initial_allocations[s.sector] / len(producing[s.sector])
        rows.append(
            StrategyBook(
                s, share if trading else 0.0, 0, 0, 0, 0, enabled=s.id not in disabled, since=T0
            )
        )
    return rows


def fleet_report(
    n: int = 0,
    rows: list[StrategyBook] | None = None,
    *,
    halted: frozenset[str] = frozenset(),
) -> FleetReport:
    rows = deployed(halted=halted) if rows is None else rows
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
            SectorBook(
                s,
                SETUP.initial_allocations[s],
                len(SETUP.strategies_of(s)),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                halted="portfolio" in halted or s in halted,
            )
            for s in SETUP.sectors
        ),
        strategies=tuple(rows),
        missions=(),
        changes=(),
        halted=halted,
    )


def history(
    returns: np.ndarray, trades: np.ndarray, current: FleetReport | None = None
) -> FleetHistory:
    n = returns.shape[0]
    current = current if current is not None else fleet_report(n)
    assert returns.shape[1] == len(current.strategies)
    return FleetHistory(
        period=HOUR_NANOS,
        current=current,
        sectors=SETUP.sectors,
        strategies=tuple(s.strategy.id for s in current.strategies),
        next_period=n,
        end_times=T0 + HOUR_NANOS * np.arange(1, n + 1),
        portfolio=returns.mean(axis=1),
        sector_returns=np.zeros((n, 2)),
        strategy_returns=returns,
        strategy_trades=trades,
        equity=np.ones(n),
    )


ENTRIES = entries_of(fleet_report())


def test_the_book_is_the_fleets_with_weights_as_shares_of_the_capital_traded():
    assert [e.strategy_id for e in ENTRIES] == sorted(IDS, key=lambda i: (SECTOR[i], i))
    assert all(e.producing and e.in_fleet for e in ENTRIES)
    assert all(e.record.origin == FLEET and e.record.since == T0 for e in ENTRIES)
    assert sum(e.weight for e in ENTRIES) == pytest.approx(1.0)
    # Energy (one symbol) and Tech (two) hold half the capital each.
    energy = [e.weight for e in ENTRIES if e.record.sector == "Energy"]
    assert energy == pytest.approx([1 / 6] * 3)
    tech = [e.weight for e in ENTRIES if e.record.sector == "Tech"]
    assert tech == pytest.approx([1 / 12] * 6)


def test_a_shadow_a_disabled_strategy_and_a_halt_read_as_the_fleet_reports_them():
    shadow = StrategyBook(
        DeployedStrategy("BBB/g1", "Tech", "BBB", genome("g1")),
        0.0,
        0,
        0,
        0,
        0,
        stage=StrategyStage.SHADOW,
        since=T0 + HOUR_NANOS,
        origin="evolution/e7",
        trials=40,
        book_weight=1.0,
    )
    rows = [*deployed(disabled=frozenset({IDS[0]})), shadow]
    entries = {e.strategy_id: e for e in entries_of(fleet_report(2, rows))}
    added = entries["BBB/g1"]
    assert added.record.stage is StrategyStage.SHADOW
    assert not added.in_fleet
    assert not added.producing
    assert added.weight == 0
    assert (added.record.symbol, added.record.since) == ("BBB", T0 + HOUR_NANOS)
    assert (added.record.origin, added.record.trials, added.record.genome.id) == (
        "evolution/e7",
        40,
        "g1",
    )
    off = entries[IDS[0]]
    assert not off.record.enabled
    assert not off.producing
    assert off.weight == 0
    assert sum(e.weight for e in entries.values()) == pytest.approx(1.0)
    # Energy's two remaining strategies trade its half of the capital.
    assert entries[IDS[1]].weight == pytest.approx(0.25)
    # A halted sector trades nothing: the capital traded is the other sector's.
    halted = {e.strategy_id: e for e in entries_of(fleet_report(halted=frozenset({"Energy"})))}
    assert all(halted[i].weight == 0 for i in IDS[:3])
    assert sum(halted[i].weight for i in IDS[3:]) == pytest.approx(1.0)
    assert all(halted[i].producing for i in IDS)  # still enabled and in production
    # A halted portfolio trades nothing at all.
    assert all(e.weight == 0 for e in entries_of(fleet_report(halted=frozenset({"portfolio"}))))


def test_recent_performance_follows_the_documented_conventions():
    rng = np.random.default_rng(1)
    returns = rng.normal(0.0002, 0.002, (48, len(IDS)))
    trades = rng.integers(0, 2, (48, len(IDS)))
    measured = fleet_performance(history(returns, trades), lookback=40)
    r = returns[-40:, 0]
    p = measured[IDS[0]]
    assert p.source == MEASURED_BY_FLEET
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


def stage_record(
    *,
    bars: int = 10_000,
    trades: int = 60,
    sharpe: float = 1.5,
    deflated: float | None = 0.99,
    since: int = T0,
) -> StageRecord:
    return StageRecord(
        start_time=since,
        bar_count=bars,
        total_return=0.05,
        sharpe=sharpe,
        trade_count=trades,
        deflated_sharpe=deflated,
        volatility=0.2,
        max_drawdown=0.02,
        probabilistic_sharpe=0.99,
    )


def shadow_row(
    strategy_id: str = "BBB/g1",
    *,
    record: StageRecord | None,
    since: int = T0,
    enabled: bool = True,
    stage: StrategyStage = StrategyStage.SHADOW,
    weight: float = 0.0,
) -> StrategyBook:
    return StrategyBook(
        DeployedStrategy(strategy_id, "Tech", "BBB", genome(strategy_id.partition("/")[2])),
        weight,
        0,
        0,
        0,
        0,
        stage=stage,
        enabled=enabled,
        since=since,
        origin=ACTION,
        trials=25,
        record=record,
    )


def test_deployed_strategies_are_measured_by_the_fleets_periods_and_the_others_by_their_record():
    promoted_record = stage_record(bars=300, trades=12)
    rows = [
        *(dataclasses.replace(s, record=stage_record(bars=120)) for s in deployed()),
        shadow_row("BBB/g1", record=stage_record(bars=500)),
        shadow_row("BBB/g2", record=promoted_record, stage=StrategyStage.PRODUCTION, weight=0.05),
        shadow_row("BBB/g3", record=stage_record(bars=1)),  # too few bars to measure
        shadow_row("BBB/g4", record=None),
    ]
    report = fleet_report(1, rows)
    entries = entries_of(report)
    rng = np.random.default_rng(2)
    # One period: the deployed strategies have no fleet measure yet, and their per-bar record
    # does not stand in for it (min_observations counts fleet returns).
    one = history(rng.normal(0, 0.002, (1, len(rows))), np.ones((1, len(rows)), int), report)
    measured = book_performance(entries, one, lookback=72)
    assert set(measured) == {"BBB/g1", "BBB/g2"}
    assert measured["BBB/g1"] == record_performance(stage_record(bars=500))
    assert measured["BBB/g2"].source == RECORD
    assert measured["BBB/g2"].observations == 300
    assert measured["BBB/g2"].deflated_sharpe == promoted_record.deflated_sharpe
    # Two periods: the deployed ones by the fleet, the others still by their record.
    two = history(rng.normal(0, 0.002, (2, len(rows))), np.ones((2, len(rows)), int), report)
    measured = book_performance(entries, two, lookback=72)
    assert set(measured) == {*IDS, "BBB/g1", "BBB/g2"}
    assert all(measured[i].source == MEASURED_BY_FLEET for i in IDS)
    assert all(measured[i].observations == 2 for i in IDS)
    assert measured["BBB/g1"].source == RECORD


def test_a_planted_loser_is_disabled_and_noisy_strategies_are_not():
    # Seeded so that none of the eight zero-drift strategies falls under the 5% PSR by chance
    # (each does with probability 5%: the rule is a one-sided test at that level).
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.002, (72, len(IDS)))
    returns[:, 3] = rng.normal(-0.0012, 0.002, 72)  # a persistent loser in Tech
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    clock = T0 + 72 * HOUR_NANOS
    recommendations = advise(ENTRIES, performance, RULES, clock_time=clock)
    disables = [r for r in recommendations if isinstance(r.parameters, DisableStrategy)]
    assert [r.parameters.strategy_id for r in disables] == [IDS[3]]
    (disable,) = disables
    assert disable.priority is Priority.MEDIUM
    assert disable.confidence == pytest.approx(1 - performance[IDS[3]].psr)
    assert performance[IDS[3]].psr < 0.05
    assert "a persistent loser" in disable.rationale
    assert "over 72 hourly returns" in disable.rationale
    assert disable.as_of_time == clock
    # The same loser with too few trades is left alone.
    few = fleet_performance(history(returns, np.zeros_like(trades)), lookback=72)
    assert not any(
        isinstance(r.parameters, DisableStrategy)
        for r in advise(ENTRIES, few, RULES, clock_time=T0)
    )
    # And with fewer fleet returns than min_observations (12).
    for observations, disabled in ((11, []), (12, [IDS[3]])):
        short = {IDS[3]: dataclasses.replace(performance[IDS[3]], observations=observations)}
        assert [
            r.parameters.strategy_id
            for r in advise(ENTRIES, short, RULES, clock_time=T0)
            if isinstance(r.parameters, DisableStrategy)
        ] == disabled


def test_the_last_enabled_strategy_of_a_sector_is_never_disabled():
    returns = np.full((72, len(IDS)), -0.001) + np.random.default_rng(3).normal(0, 1e-4, (72, 9))
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    recommendations = advise(ENTRIES, performance, RULES, clock_time=T0)
    disabled = {r.parameters.strategy_id for r in recommendations if r.id.startswith("strategy/d")}
    for sector in ("Tech", "Energy"):
        members = {i for i in IDS if SECTOR[i] == sector}
        assert len(members - disabled) == 1


def test_a_disabled_strategy_that_recovered_is_enabled_again():
    rng = np.random.default_rng(4)
    returns = rng.normal(0.0, 0.002, (72, len(IDS)))
    returns[:, 5] = rng.normal(0.0015, 0.002, 72)
    trades = np.ones((72, len(IDS)), dtype=np.int64)
    entries = entries_of(fleet_report(72, deployed(disabled=frozenset({IDS[5]}))))
    performance = fleet_performance(history(returns, trades), lookback=72)
    clock = T0 + 72 * HOUR_NANOS
    (enable,) = [
        r
        for r in advise(entries, performance, RULES, clock_time=clock)
        if isinstance(r.parameters, EnableStrategy)
    ]
    assert enable.parameters == EnableStrategy(strategy_id=IDS[5], sector="Tech")
    assert enable.priority is Priority.LOW
    assert enable.confidence == pytest.approx(performance[IDS[5]].psr)
    assert enable.as_of_time == clock


def test_weights_move_to_inverse_volatility_within_each_sector():
    rng = np.random.default_rng(5)
    scales = np.array([0.001, 0.002, 0.004, 0.001, 0.002, 0.004, 0.002, 0.002, 0.002])
    returns = rng.normal(0, 1, (72, 9)) * scales
    trades = np.ones((72, 9), dtype=np.int64)
    performance = fleet_performance(history(returns, trades), lookback=72)
    (reweight,) = [
        r
        for r in advise(ENTRIES, performance, RULES, clock_time=T0 + HOUR_NANOS)
        if isinstance(r.parameters, ReweightStrategies)
    ]
    weights = reweight.parameters.weights
    assert sum(weights.values()) == pytest.approx(1.0)
    for sector in ("Tech", "Energy"):
        members = [e.strategy_id for e in ENTRIES if e.record.sector == sector]
        assert sum(weights[m] for m in members) == pytest.approx(0.5)
        inverse = np.array([1 / performance[m].volatility for m in members])
        np.testing.assert_allclose([weights[m] for m in members], 0.5 * inverse / inverse.sum())
    assert reweight.evidence["total_variation"] >= 0.10
    assert reweight.as_of_time == T0 + HOUR_NANOS
    # Equal volatilities leave the weights where they are: nothing to recommend.
    flat = fleet_performance(history(rng.normal(0, 0.002, (72, 9)), trades), lookback=72)
    flat = {k: dataclasses.replace(p, volatility=0.1) for k, p in flat.items()}
    assert not any(
        isinstance(r.parameters, ReweightStrategies)
        for r in advise(ENTRIES, flat, RULES, clock_time=T0)
    )


def test_metas_strategy_weights_tilt_the_reweighting_and_name_their_version():
    # Equal volatilities alone move nothing; meta weighing one Energy strategy's genome nine
    # times another's moves the sector's capital toward it in that proportion.
    rng = np.random.default_rng(5)
    trades = np.ones((72, 9), dtype=np.int64)
    flat = fleet_performance(history(rng.normal(0, 0.002, (72, 9)), trades), lookback=72)
    flat = {k: dataclasses.replace(p, volatility=0.1) for k, p in flat.items()}
    energy = [e for e in ENTRIES if e.record.sector == "Energy"]
    favoured = energy[0]
    meta = MetaWeights({favoured.record.genome.id: 0.9, energy[1].strategy_id: 0.1}, version=7)
    (reweight,) = [
        r
        for r in advise(ENTRIES, flat, RULES, clock_time=T0, meta=meta)
        if isinstance(r.parameters, ReweightStrategies)
    ]
    weights = reweight.parameters.weights
    # Relative to the mean (0.5) of those meta weighs; the unweighed one counts as the mean.
    tilt = np.array([0.9, 0.1, 0.5]) / 0.5
    np.testing.assert_allclose([weights[e.strategy_id] for e in energy], 0.5 * tilt / tilt.sum())
    assert reweight.evidence["meta_version"] == 7
    assert "meta's strategy weights (version 7)" in reweight.rationale
    tech = [e.strategy_id for e in ENTRIES if e.record.sector == "Tech"]
    assert [weights[t] for t in tech] == pytest.approx([0.5 / len(tech)] * len(tech))


def test_a_halted_sector_is_left_out_of_a_reweighting():
    # The fleet refuses weights that leave a sector none; a halted sector trades no capital, so
    # a reweighting of the other sectors must not name its strategies.
    rng = np.random.default_rng(5)
    scales = np.array([0.001, 0.002, 0.004, 0.001, 0.002, 0.004, 0.002, 0.002, 0.002])
    trades = np.ones((72, 9), dtype=np.int64)
    performance = fleet_performance(
        history(rng.normal(0, 1, (72, 9)) * scales, trades), lookback=72
    )
    entries = entries_of(fleet_report(72, halted=frozenset({"Energy"})))
    (reweight,) = [
        r
        for r in advise(entries, performance, RULES, clock_time=T0)
        if isinstance(r.parameters, ReweightStrategies)
    ]
    weights = reweight.parameters.weights
    assert set(weights) == {i for i in IDS if SECTOR[i] == "Tech"}
    assert sum(weights.values()) == pytest.approx(1.0)
    # With the portfolio halted nothing trades, so nothing is reweighted.
    halted = entries_of(fleet_report(72, halted=frozenset({"portfolio"})))
    assert not any(
        isinstance(r.parameters, ReweightStrategies)
        for r in advise(halted, performance, RULES, clock_time=T0)
    )


def promotions(
    days: float,
    trades: int,
    sharpe: float,
    deflated: float | None,
    *,
    rules: OfficerRules = RULES,
    extra: tuple[StrategyBook, ...] = (),
):
    """Promotions of a Tech shadow that entered the book at T0 with this stage record, at T0 +
    ``days`` on the replay clock, measured the way the officer measures it."""
    record = stage_record(trades=trades, sharpe=sharpe, deflated=deflated)
    rows = [*deployed(), shadow_row("BBB/g1", record=record), *extra]
    clock = T0 + round(days * DAY_NANOS)
    report = dataclasses.replace(fleet_report(0, rows), clock_time=clock)
    entries = entries_of(report)
    performance = book_performance(entries, FleetHistory.empty(report, HOUR_NANOS), 72)
    return [
        r
        for r in advise(entries, performance, rules, clock_time=clock)
        if isinstance(r.parameters, PromoteStrategy)
    ]


def test_a_shadow_exactly_at_the_gates_on_its_stage_record_is_promoted_and_one_below_is_not():
    # The gates are the meta policy's: 7 days, 50 trades, Sharpe above 1.0, deflated >= 0.95.
    assert (RULES.meta.shadow_min_test_days, RULES.meta.shadow_min_trades) == (7.0, 50)
    (promote,) = promotions(7.0, 50, 1.0 + 1e-6, 0.95)
    assert promote.parameters.strategy_id == "BBB/g1"
    assert promote.parameters.sector == "Tech"
    assert promote.parameters.genome.id == "g1"
    assert promote.parameters.replaces == ""
    assert promote.priority is Priority.MEDIUM
    assert promote.target == "strategy/BBB/g1"
    assert promote.confidence == pytest.approx(0.5, abs=1e-5)  # right at the gates
    assert "passed every gate" in promote.rationale
    assert "its paper record on BBB since it entered the book, 25 trials counted" in (
        promote.rationale
    )
    assert promote.evidence["deflated_sharpe_ratio"] == 0.95
    assert promote.as_of_time == T0 + 7 * DAY_NANOS
    assert promotions(6.999, 50, 1.5, 0.99) == []
    assert promotions(7.0, 49, 1.5, 0.99) == []
    assert promotions(7.0, 50, 1.0, 0.99) == []  # the Sharpe must exceed 1.0
    assert promotions(7.0, 50, 1.5, 0.9499) == []


def test_only_enabled_shadows_measured_on_two_bars_or_more_are_candidates():
    # A record of a single bar (no deflated Sharpe, so no deflated gate) is not a measure; a
    # disabled shadow is not tested; a strategy already in production is not a shadow.
    one_bar = shadow_row("BBB/g5", record=stage_record(bars=1, deflated=None))
    off = shadow_row("BBB/g6", record=stage_record(), enabled=False)
    live = shadow_row("BBB/g7", record=stage_record(), stage=StrategyStage.PRODUCTION, weight=0.05)
    many = dataclasses.replace(
        RULES, meta=dataclasses.replace(RULES.meta, shadow_max_promotions=10)
    )
    promoted = promotions(8.0, 60, 1.5, 0.99, rules=many, extra=(one_bar, off, live))
    assert [r.parameters.strategy_id for r in promoted] == ["BBB/g1"]


def test_at_most_shadow_max_promotions_are_promoted_the_best_first():
    better = shadow_row("BBB/g0", record=stage_record(deflated=0.999))
    (promote,) = promotions(8.0, 60, 1.5, 0.99, extra=(better,))
    assert promote.parameters.strategy_id == "BBB/g0"
    two = dataclasses.replace(RULES, meta=dataclasses.replace(RULES.meta, shadow_max_promotions=2))
    promoted = promotions(8.0, 60, 1.5, 0.99, rules=two, extra=(better,))
    assert [r.parameters.strategy_id for r in promoted] == ["BBB/g0", "BBB/g1"]


def test_a_loser_is_zeroed_even_when_no_survivor_of_its_sector_is_measured():
    loser = max(ENTRIES, key=lambda e: e.weight).strategy_id
    # No performance at all: nothing measured to reweight the survivors by.
    rules = dataclasses.replace(
        RULES, meta=dataclasses.replace(RULES.meta, reweight_threshold=0.01)
    )
    reweight = _reweight(ENTRIES, {}, {loser}, rules, clock_time=T0)
    assert reweight is not None
    assert reweight.parameters.weights[loser] == 0.0
    others = {e.strategy_id: e.weight for e in ENTRIES if e.strategy_id != loser}
    assert {k: reweight.parameters.weights[k] for k in others} == pytest.approx(others)
