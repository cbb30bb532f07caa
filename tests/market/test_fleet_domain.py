"""The paper fleet's domain: accounting identities, SESA's fill model, allocation changes from the
next bar, arb-missions by hand, trades, limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.evaluation import CostModel, EvaluationSettings, Evaluator
from backtest.indicators import BarData
from market.fleet import (
    DAY_NANOS,
    Backtester,
    Candidate,
    Cause,
    FleetLimits,
    FleetState,
    TradeQuery,
    deploy,
    simulate,
)
from market.fleet.simulation import _TradeTable, restated
from market.replay import Replay
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.bars import make_series
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily

MINUTE = 60 * 10**9
CAUSE = Cause("key", "action", 1)


DEPLOYED = 1440  # the fleet is deployed at the end of the first day


@pytest.fixture(scope="module")
def market() -> Replay:
    """Three days, all revealed: simulations pick their own clock."""
    replay = Replay(generate(SyntheticMarketSpec(seed=3, days=3)).series, start_position=1)
    replay.advance(replay.length - 1)
    return replay


def setup_of(replay: Replay, **kwargs):
    return deploy(
        {i.symbol: i.sector for i in replay.symbol_infos()},
        deployment_time=replay.time_at(DEPLOYED),
        warmup_bars=600,
        **kwargs,
    )


def visible(replay: Replay) -> dict:
    return {s: replay.bars(s, *replay.window(s)) for s in replay.symbols}


def run_at(replay: Replay, state: FleetState, clock: int):
    series = {
        s: b.slice(0, int(np.searchsorted(b.time, clock, "right")))
        for s, b in visible(replay).items()
    }
    return simulate(state, series, clock_time=clock, backtester=Backtester(state.setup))


def test_default_fleet_deploys_each_family_on_every_symbol_with_equal_allocations(market):
    setup = setup_of(market)
    assert setup.sectors == ("Crypto", "Energy", "Financials", "Tech")
    assert len(setup.strategies) == 9 * 3
    assert dict(setup.initial_allocations) == dict.fromkeys(setup.sectors, 0.25)
    assert {s.genome.family for s in setup.strategies} == {
        StrategyFamily.MA_CROSSOVER,
        StrategyFamily.MEAN_REVERSION,
        StrategyFamily.BREAKOUT,
    }
    assert setup.fingerprint() == setup_of(market).fingerprint()
    assert setup.fingerprint() != setup_of(market, capital=2.0).fingerprint()


def test_pnl_of_sectors_and_missions_adds_up_to_the_change_of_equity(market):
    state = FleetState(setup_of(market))
    clock = market.time_at(DEPLOYED + 2 * 1440)
    state = state.with_change(
        state.spawn_arb_mission(
            "Tech", "Energy", 0.1, at=market.time_at(DEPLOYED) + 90 * MINUTE, cause=CAUSE, field="p"
        )
    )
    run = run_at(market, state, clock)
    report = run.report()
    parts = sum(s.pnl for s in report.sectors) + sum(m.pnl for m in report.missions)
    assert report.pnl == pytest.approx(parts, rel=1e-9, abs=1e-6)
    assert report.equity == pytest.approx(report.capital + report.pnl)
    assert report.bar_count == 2 * 1440
    # Every trade's P&L adds up to its strategy's.
    trades, more = run.list_trades(TradeQuery(), 100_000)
    assert not more
    for book in report.strategies:
        own = [t.pnl for t in trades if t.strategy_id == book.strategy.id]
        assert sum(own) == pytest.approx(book.pnl, abs=1e-6)
        assert book.trade_count == len(own)


def test_strategy_returns_are_sesas_backtest_after_the_deployment(market):
    setup = setup_of(market)
    run = run_at(market, FleetState(setup), market.time_at(DEPLOYED + 1440))
    report = run.report()
    book = report.strategies[0]
    series = visible(market)[book.strategy.symbol]
    deployed = int(np.searchsorted(series.time, setup.deployment_time, "right"))
    first = deployed - setup.warmup_bars
    data = BarData(series.slice(first, deployed + 1440))
    evaluator = Evaluator(settings=EvaluationSettings(costs=CostModel()))
    returns = evaluator.backtest([book.strategy.genome], data).returns[0, setup.warmup_bars :]
    assert book.roi == pytest.approx(float(np.prod(1 + returns) - 1), rel=1e-9, abs=1e-12)
    sector = next(s for s in report.sectors if s.sector == book.strategy.sector)
    members = [b for b in report.strategies if b.strategy.sector == sector.sector]
    assert sector.strategy_count == len(members) == 3 * len(setup.sector_symbols[sector.sector])
    assert [b.weight for b in members] == pytest.approx([0.25 / len(members)] * len(members))


def test_the_past_never_changes_as_the_clock_moves(market):
    state = FleetState(setup_of(market))
    start = market.time_at(DEPLOYED + 1)
    end = market.time_at(DEPLOYED + 600)
    early = run_at(market, state, market.time_at(DEPLOYED + 700)).report(
        start_time=start, end_time=end
    )
    late = run_at(market, state, market.time_at(DEPLOYED + 2000)).report(
        start_time=start, end_time=end
    )
    assert early.sectors == late.sectors
    assert early.strategies == late.strategies


def test_backtesting_bars_after_the_clock_changes_nothing_up_to_it(market):
    """The market backtests every bar it holds, once; the fleet must equal the one simulated on
    the bars up to the clock alone, a shadow of each family added on the way included."""
    setup = setup_of(market)
    policy = Policy()
    symbol, sector = setup.strategies[0].symbol, setup.strategies[0].sector
    state = FleetState(setup)
    at = market.time_at(DEPLOYED + 300)
    state = state.with_change(state.halt("portfolio", at=at, cause=CAUSE, field="f"))
    state = state.with_change(
        state.resume("portfolio", at=market.time_at(DEPLOYED + 400), cause=CAUSE, field="f")
    )
    candidates = [
        Candidate(f"{symbol}/{g.id}", sector, g)
        for g in (policy.default_genome(f) for f in StrategyFamily)
    ]
    state = state.with_change(
        state.add_shadows(
            candidates,
            evolution_id="evo",
            trials=10,
            at=market.time_at(DEPLOYED + 500),
            cause=CAUSE,
            field="f",
        )
    )
    loaded = visible(market)
    backtester = Backtester(setup)
    for bars in (501, 900, 1439):
        clock = market.time_at(DEPLOYED + bars)
        ahead = simulate(state, loaded, clock_time=clock, backtester=backtester)
        alone = run_at(market, state, clock)
        assert ahead.times.size == alone.times.size == bars
        for name in ("positions", "returns", "equity", "contribution", "sector_returns"):
            assert np.array_equal(getattr(ahead, name), getattr(alone, name)), name
        assert ahead.report() == alone.report()


def test_an_allocation_change_applies_from_the_next_bar(market):
    base = FleetState(setup_of(market))
    at = market.time_at(DEPLOYED + 500)
    change = base.adjust_exposure("Tech", 1.2, at=at, cause=CAUSE, field="p")
    changed = base.with_change(change)
    clock = market.time_at(DEPLOYED + 1000)
    before, after = run_at(market, base, clock), run_at(market, changed, clock)
    tech = base.setup.sectors.index("Tech")
    assert np.all(after.weights[tech, after.times <= at] == 0.25)
    assert np.all(after.weights[tech, after.times > at] == pytest.approx(0.3))
    # Up to the change, everything is as without it; the allocation holds from then on.
    upto = {"end_time": at}
    assert [(s.roi, s.pnl) for s in before.report(**upto).sectors] == [
        (s.roi, s.pnl) for s in after.report(**upto).sectors
    ]
    assert after.report(**upto).sectors[-1].allocation == pytest.approx(0.3)
    assert after.report(end_time=at - MINUTE).sectors[-1].allocation == 0.25
    assert after.report().sectors[-1].allocation == pytest.approx(0.3)
    assert changed.allocations_at(at) == base.setup.initial_allocations
    assert changed.allocations_at(at + 1)["Tech"] == pytest.approx(0.3)
    # The curve beside the static fleet: the same deployment without the change.
    curve = after.report(curve_points=2000, static=before).curve
    assert [c.static_equity for c in curve] == pytest.approx(
        [c.equity for c in before.report(curve_points=2000).curve], rel=1e-12
    )
    upto_change = [c for c in curve if c.time <= at]
    assert [c.equity for c in upto_change] == pytest.approx(
        [c.static_equity for c in upto_change], rel=1e-12
    )
    assert curve[-1].equity != pytest.approx(curve[-1].static_equity, rel=1e-9)


def test_adjust_exposure_is_bounded():
    setup = deploy(
        {"A": "One", "B": "Two", "C": "Three"},
        deployment_time=0,
        limits=FleetLimits(max_sector_allocation=0.4, max_total_allocation=1.1, max_factor=5),
    )
    state = FleetState(setup)
    third = 1 / 3
    capped = state.adjust_exposure("One", 2.0, at=1, cause=CAUSE, field="p")
    assert capped.allocations["One"] == pytest.approx(0.4)
    assert "capped" in capped.detail
    state = state.with_change(capped)
    # The total may grow only to max_total_allocation.
    grown = state.adjust_exposure("Two", 1.2, at=2, cause=CAUSE, field="p")
    assert grown.allocations["Two"] == pytest.approx(1.1 - 0.4 - third)
    everything = FleetState(setup).adjust_exposure("", 0.5, at=1, cause=CAUSE, field="p")
    assert dict(everything.allocations) == {s: pytest.approx(third / 2) for s in setup.sectors}
    assert state.adjust_exposure("One", 0.0, at=3, cause=CAUSE, field="p").allocations["One"] == 0
    with pytest.raises(InvalidArgument) as bad:
        state.adjust_exposure("Metals", 1.2, at=3, cause=CAUSE, field="p")
    assert bad.value.field == "p.sector"
    for factor in (-1.0, 5.5, math.nan, math.inf):
        with pytest.raises(InvalidArgument) as bad:
            state.adjust_exposure("One", factor, at=3, cause=CAUSE, field="p")
        assert bad.value.field == "p.factor"


def test_arb_missions_are_bounded_and_validated():
    setup = deploy(
        {"A": "One", "B": "Two"},
        deployment_time=0,
        limits=FleetLimits(max_arb_allocation=0.2, max_total_allocation=1.25),
    )
    state = FleetState(setup)
    first = state.spawn_arb_mission("One", "Two", 0.5, at=1, cause=CAUSE, field="p")
    assert first.mission.allocation == pytest.approx(0.2)
    assert first.mission.close_time == 1 + 5 * DAY_NANOS
    state = state.with_change(first)
    second = state.spawn_arb_mission("Two", "One", 0.2, at=2, cause=CAUSE, field="p")
    assert second.mission.allocation == pytest.approx(0.05)  # what 1.25 leaves
    state = state.with_change(second)
    with pytest.raises(FailedPrecondition, match="no allocation left"):
        state.spawn_arb_mission("One", "Two", 0.1, at=3, cause=CAUSE, field="p")
    # Once the missions closed, their allocation is free again.
    later = 2 + 5 * DAY_NANOS
    assert state.spawn_arb_mission("One", "Two", 0.1, at=later, cause=CAUSE, field="p")
    for args, field in [
        (("One", "One", 0.1), "p.short_sector"),
        (("One", "Nope", 0.1), "p.short_sector"),
        (("Nope", "One", 0.1), "p.long_sector"),
        (("One", "Two", 0.0), "p.allocation"),
        (("One", "Two", math.nan), "p.allocation"),
    ]:
        with pytest.raises(InvalidArgument) as bad:
            FleetState(setup).spawn_arb_mission(*args, at=1, cause=CAUSE, field="p")
        assert bad.value.field == field


def _opens(closes: np.ndarray) -> np.ndarray:
    """Opens that gap away from the previous close, so a fill at the open is told apart from one
    at the close before it."""
    gaps = 1 + 5e-4 * np.where(np.arange(closes.size) % 2 == 0, 1.0, -1.0)
    return np.concatenate([[closes[0]], closes[:-1]]) * gaps


def _flat_series(symbol: str, sector: str, closes: np.ndarray, *, skip: tuple[int, ...] = ()):
    """Minute bars with ``closes``; the minutes in ``skip`` have no bar."""
    opens = _opens(closes)
    kept = np.setdiff1d(np.arange(closes.size), skip)
    return make_series(
        symbol,
        sector,
        time=kept.astype(np.int64) * MINUTE,
        open=opens[kept],
        high=np.maximum(opens, closes)[kept] * 1.0001,
        low=np.minimum(opens, closes)[kept] * 0.9999,
        close=closes[kept],
        volume=np.full(kept.size, 100.0),
    )


def _arb_market(*, skip: tuple[int, ...] = ()):
    """Two one-symbol sectors, one drifting up and one down, deployed at minute 99 with nothing
    allocated, and an arb-mission of 0.2 (100 minutes) spawned at minute 149."""
    n = 400
    rng = np.random.default_rng(1)
    up = 100 * np.cumprod(1 + rng.normal(3e-4, 1e-3, n))
    down = 50 * np.cumprod(1 + rng.normal(-3e-4, 1e-3, n))
    replay = Replay(
        [_flat_series("UP", "Long", up, skip=skip), _flat_series("DN", "Short", down, skip=skip)],
        start_position=100,
    )
    replay.advance(replay.length - 100)
    setup = deploy(
        {"UP": "Long", "DN": "Short"},
        deployment_time=replay.time_at(100),
        families=[StrategyFamily.MA_CROSSOVER],
        allocations={"Long": 0.0, "Short": 0.0},
        costs=CostModel(commission_bps=1, slippage_bps=2),
        warmup_bars=50,
        limits=FleetLimits(arb_mission_nanos=100 * MINUTE),
    )
    opened = replay.time_at(150)
    state = FleetState(setup)
    state = state.with_change(
        state.spawn_arb_mission("Long", "Short", 0.2, at=opened, cause=CAUSE, field="p")
    )
    return replay, state, up, down


def test_an_arb_mission_earns_the_spread_of_the_sector_baskets_less_costs():
    replay, state, up, down = _arb_market()
    run = run_at(replay, state, replay.clock_time)
    mission = run.report().missions[0]
    # Bars 150..249 (0-based index = minute): filled at the open of bar 150, closed at the close
    # of bar 249; costs of 2 legs x 3 bps on each fill.
    first, last = 150, 249
    up_open, down_open = _opens(up)[first], _opens(down)[first]
    assert up_open != up[first - 1]
    spread = [up[first] / up_open - down[first] / down_open]
    spread += [up[t] / up[t - 1] - down[t] / down[t - 1] for t in range(first + 1, last + 1)]
    terms = 0.2 * np.array(spread)
    terms[0] -= 0.2 * 6e-4
    terms[-1] -= 0.2 * 6e-4
    # The entry is the open of the bar after the action, not the close before it.
    assert run.mission_terms[0, first - 100] == pytest.approx(terms[0], rel=1e-12)
    np.testing.assert_allclose(run.mission_terms[0, first - 100 : last - 99], terms, rtol=1e-12)
    assert not mission.active
    assert mission.roi == pytest.approx(float(np.prod(1 + terms / 0.2) - 1), rel=1e-9)
    equity = run.equity
    assert mission.pnl == pytest.approx(float(np.sum(equity[first - 100 : last - 99] * terms)))
    report = run.report()
    assert report.pnl == pytest.approx(mission.pnl)  # sectors hold nothing


def test_an_arb_missions_exit_cost_never_restates_a_reported_bar():
    # No bar at minute 249, the mission's close time: its last bar is 248, the next one 250.
    replay, state, up, down = _arb_market(skip=(249,))
    close_time = 249 * MINUTE
    assert state.missions[0].close_time == close_time
    before = run_at(replay, state, 248 * MINUTE)
    after = run_at(replay, state, 250 * MINUTE)
    reported = before.mission_terms.shape[1]
    np.testing.assert_array_equal(after.mission_terms[:, :reported], before.mission_terms)
    np.testing.assert_array_equal(after.equity[: reported + 1], before.equity)
    # The exit's costs land on bar 250, the first one after the close, which earns no spread.
    assert after.times[reported] == 250 * MINUTE
    assert after.mission_terms[0, reported] == pytest.approx(-0.2 * 6e-4, rel=1e-12)
    last = before.mission_terms[0, -1]
    assert last == pytest.approx(0.2 * (up[248] / up[247] - down[248] / down[247]), rel=1e-12)


def test_trades_follow_position_changes():
    positions = np.array([[0, 1, 1, 0, -1, 1, 1, 0, 0, -1]], dtype=np.int8)
    table = _TradeTable.of(positions, ["s"])
    assert table.entry.tolist() == [1, 4, 5, 9]
    assert table.exit.tolist() == [3, 5, 7, -1]
    assert table.side.tolist() == [1, -1, 1, -1]
    # A bar in which the position reverses belongs to the trade it closes.
    assert list(zip(table.start.tolist(), table.end.tolist(), strict=True)) == [
        (1, 3),
        (4, 5),
        (6, 7),
        (9, 9),
    ]


@given(
    st.lists(
        st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=40), min_size=1, max_size=3
    ).filter(lambda rows: len({len(r) for r in rows}) == 1)
)
def test_every_held_bar_belongs_to_exactly_one_trade(rows):
    positions = np.array(rows, dtype=np.int8)
    table = _TradeTable.of(positions, [f"s{i}" for i in range(len(rows))])
    owned = np.zeros(positions.shape, dtype=int)
    for i, start, end in zip(table.strategy, table.start, table.end, strict=True):
        owned[i, start : end + 1] += 1
    held = positions != 0
    previous = np.zeros_like(positions)
    previous[:, 1:] = positions[:, :-1]
    # A bar belongs to a trade when a position is held at its close or was left during it.
    expected = held | (previous != 0)
    assert np.array_equal(owned, expected.astype(int))
    assert np.all(table.side == positions[table.strategy, table.entry])


def test_actions_at_the_clock_restate_the_run_as_a_fresh_simulation_would(market):
    clock = market.time_at(DEPLOYED + 800)
    base = FleetState(setup_of(market))
    first = run_at(market, base, clock)
    victim = base.setup.strategies[0].id
    state = base.with_change(
        base.disable_strategy(strategy_id=victim, at=clock, cause=CAUSE, field="p")
    )
    state = state.with_change(state.adjust_exposure("Tech", 0.5, at=clock, cause=CAUSE, field="p"))
    state = state.with_change(state.halt("Energy", at=clock, cause=CAUSE, field="p"))
    again = restated(first, state)
    fresh = run_at(market, state, clock)
    assert again is not None
    assert again.report() == fresh.report()
    assert again.report(sector="Tech") == fresh.report(sector="Tech")
    for name in ("equity", "weights", "returns", "positions", "contribution"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))
    # A change that reaches a bar of the run needs the simulation.
    earlier = base.with_change(
        base.adjust_exposure("Tech", 0.5, at=clock - 10 * MINUTE, cause=CAUSE, field="p")
    )
    assert restated(first, earlier) is None
    # So does one that adds a row: an arb-mission (or a strategy).
    mission = base.with_change(
        base.spawn_arb_mission("Tech", "Energy", 0.1, at=clock, cause=CAUSE, field="p")
    )
    assert restated(first, mission) is None
    # So does one from another history of changes.
    assert restated(run_at(market, state, clock), base) is None


def test_the_equity_curve_samples_the_window_beside_an_equal_weight_buy_and_hold(market):
    state = FleetState(setup_of(market))
    run = run_at(market, state, market.time_at(DEPLOYED + 1440))
    whole = run.report()
    assert whole.curve == ()
    curve = run.report(curve_points=50).curve
    assert len(curve) == 50
    times = [s.time for s in curve]
    assert times == sorted(set(times))
    assert (curve[0].time, curve[-1].time) == (whole.deployment_time, whole.end_time)
    assert curve[0].equity == curve[0].benchmark_equity == whole.capital
    assert [c.static_equity for c in curve] == [c.equity for c in curve]  # nothing changed
    assert curve[-1].equity == pytest.approx(whole.equity)
    # Buy and hold: every symbol's close at the end over its close at the deployment, averaged.
    growth = [
        b.close[np.searchsorted(b.time, whole.end_time)]
        / b.close[np.searchsorted(b.time, whole.deployment_time)]
        for b in visible(market).values()
    ]
    assert curve[-1].benchmark_equity == pytest.approx(whole.capital * np.mean(growth))
    # A later window starts both curves from the equity the fleet had then.
    late = run.report(start_time=curve[25].time + 1, curve_points=10_000).curve
    assert late[0].equity == late[0].benchmark_equity == pytest.approx(curve[25].equity)
    assert len(late) == run.report(start_time=curve[25].time + 1).bar_count + 1


def test_sector_marks_are_the_equity_allocated_and_the_drawdown_from_the_running_peak(market):
    base = FleetState(setup_of(market))
    at = market.time_at(DEPLOYED + 100)
    state = base.with_change(base.adjust_exposure("Tech", 1.2, at=at, cause=CAUSE, field="p"))
    run = run_at(market, state, market.time_at(DEPLOYED + 240))
    report = run.report()
    marks = run.sector_marks()
    assert [m.sector for m in marks] == list(state.setup.sectors)
    # The allocation in effect from the clock on, of the fleet's equity now.
    assert [m.equity for m in marks] == pytest.approx(
        [s.allocation * report.equity for s in report.sectors], rel=1e-12
    )
    assert marks[-1].equity == pytest.approx(0.3 * report.equity, rel=1e-12)
    # The sector's compounded return to each bar, from the reports of windows ending there
    # (1 at the deployment, before the first bar).
    growth = {s.sector: [1.0] for s in report.sectors}
    for time in run.times:
        for s in run.report(end_time=int(time)).sectors:
            growth[s.sector].append(1 + s.roi)
    for mark in marks:
        path = growth[mark.sector]
        assert mark.drawdown == pytest.approx(1 - path[-1] / max(path), abs=1e-12)
        assert 0 <= mark.drawdown <= 1
    assert any(m.drawdown > 0 for m in marks)
    # At the deployment, nothing has moved yet.
    fresh = run_at(market, base, market.time_at(DEPLOYED))
    assert [(m.equity, m.drawdown) for m in fresh.sector_marks()] == [
        (0.25 * base.setup.capital, 0.0)
    ] * len(base.setup.sectors)
