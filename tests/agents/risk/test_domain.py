"""The risk officer's method on known inputs: VaR and CVaR against numpy, empyrical and scipy and
on a known normal distribution; limits breached into halts and cuts with their numbers; the
fleet's kill switch as the officer reads it (a standing halt re-asserted while its breach stands,
a resume recommended once it has cleared); changes of the limits and their validation."""

from __future__ import annotations

import dataclasses

import empyrical
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from agents.risk.advice import recommend
from agents.risk.assessment import RiskInputs, RiskSettings, assess, caller_inputs
from agents.risk.limits import PORTFOLIO, Halt, RiskPolicy, fleet_halts
from agents.risk.measures import (
    historical_cvar,
    historical_var,
    parametric_cvar,
    parametric_var,
    tail_risk,
)
from market.fleet import Cause, FleetReport, FleetState, deploy
from qtmesh.base.concurrency import Cancelled, CancelToken
from qtmesh.base.contract import AdjustExposure, HaltTrading, Priority, ResumeTrading, RiskLimits
from qtmesh.base.errors import InvalidArgument

LIMITS = RiskLimits(
    max_var_95=0.01, max_drawdown=0.05, max_gross_exposure=1.0, max_sector_exposure=0.35
)
SETTINGS = RiskSettings()
HOUR = 3600 * 10**9
T0 = 1_767_571_200 * 10**9


def test_historical_figures_match_numpy_and_empyrical_exactly():
    r = np.random.default_rng(1).standard_t(3, size=997) * 0.01
    for c in (0.95, 0.99):
        assert historical_var(r, c) == -np.quantile(r, round(1 - c, 2))
        assert historical_var(r, c) == -empyrical.value_at_risk(r, round(1 - c, 2))
        assert historical_cvar(r, c) == pytest.approx(
            -empyrical.conditional_value_at_risk(r, 1 - c), rel=1e-15
        )
        # The CVaR convention: the mean of the floor((1 - c)(n - 1)) + 1 smallest returns.
        k = int((r.size - 1) * (1 - c))
        assert historical_cvar(r, c) == pytest.approx(-np.sort(r)[: k + 1].mean(), rel=1e-15)


def test_parametric_figures_are_the_normal_distributions():
    mu, sigma = 0.0004, 0.012
    for c in (0.95, 0.99):
        assert parametric_var(mu, sigma, c) == pytest.approx(
            -stats.norm.ppf(1 - c, mu, sigma), rel=1e-12
        )
        tail_mean = stats.norm.expect(
            lambda x: x, loc=mu, scale=sigma, ub=stats.norm.ppf(1 - c, mu, sigma), conditional=True
        )
        assert parametric_cvar(mu, sigma, c) == pytest.approx(-tail_mean, rel=1e-9)
    assert parametric_var(0, 1, 0.95) == pytest.approx(1.644854, abs=1e-6)
    assert parametric_var(0, 1, 0.99) == pytest.approx(2.326348, abs=1e-6)


def test_var_and_cvar_of_a_known_normal_distribution_within_sampling_tolerance():
    mu, sigma, n = -0.0002, 0.01, 200_000
    r = np.random.default_rng(7).normal(mu, sigma, n)
    tail = tail_risk(r)
    for c, var, cvar in (
        (0.95, tail.historical_var_95, tail.historical_cvar_95),
        (0.99, tail.historical_var_99, tail.historical_cvar_99),
    ):
        z = stats.norm.ppf(c)
        true_var = z * sigma - mu
        true_cvar = sigma * stats.norm.pdf(z) / (1 - c) - mu
        # Standard error of a sample quantile: sqrt(p(1-p)/n) / density at the quantile.
        se = np.sqrt(c * (1 - c) / n) * sigma / stats.norm.pdf(z)
        assert var == pytest.approx(true_var, abs=4 * se)
        assert cvar == pytest.approx(true_cvar, abs=6 * se)
    assert tail.parametric_var_95 == pytest.approx(stats.norm.ppf(0.95) * sigma - mu, rel=0.01)
    assert tail.parametric_cvar_99 == pytest.approx(
        sigma * stats.norm.pdf(stats.norm.ppf(0.99)) / 0.01 - mu, rel=0.01
    )


@given(
    st.lists(st.floats(-0.5, 0.5, allow_nan=False, allow_subnormal=False), min_size=2, max_size=300)
)
def test_cvar_is_never_below_var_and_99_never_below_95(values):
    tail = tail_risk(np.array(values))
    assert tail.historical_cvar_95 >= tail.historical_var_95 - 1e-12
    assert tail.historical_cvar_99 >= tail.historical_var_99 - 1e-12
    assert tail.historical_var_99 >= tail.historical_var_95 - 1e-12
    assert tail.parametric_cvar_95 >= tail.parametric_var_95 - 1e-12


def inputs(
    *,
    n: int = 100,
    sigma: float = 0.002,
    drawdown: float = 0.0,
    exposures: tuple[float, float] = (0.2, 0.2),
    allocations: tuple[float, float] = (0.25, 0.25),
    seed: int = 3,
) -> RiskInputs:
    rng = np.random.default_rng(seed)
    sector_returns = rng.normal(0, sigma, (n, 2))
    return RiskInputs(
        portfolio=sector_returns @ np.array(allocations),
        sectors=("Energy", "Tech"),
        sector_returns=sector_returns,
        allocations=allocations,
        exposures=exposures,
        gross_exposure=sum(exposures),
        drawdown=drawdown,
        sector_drawdowns=(0.0, 0.0),
        as_of_time=T0,
        horizon=HOUR,
        market_position=10,
    )


def test_a_quiet_fleet_within_its_limits_gets_no_recommendation():
    report = assess(inputs(), RiskPolicy(LIMITS), SETTINGS)
    assert report.breaches == ()
    assert report.observations == 100
    assert report.portfolio.historical_var_95 > 0
    assert recommend(report, SETTINGS) == []


def test_a_drawdown_past_the_halt_margin_recommends_a_critical_halt_with_the_numbers():
    report = assess(inputs(drawdown=0.07), RiskPolicy(LIMITS), SETTINGS)
    assert [b.limit for b in report.breaches] == ["max_drawdown"]
    (halt,) = recommend(report, SETTINGS)
    assert halt.priority is Priority.CRITICAL
    assert halt.parameters == HaltTrading(scope=PORTFOLIO)
    assert halt.target == "portfolio"
    assert "drawdown 7.00% is 40% over its 5.00% limit" in halt.rationale
    assert "per 1 h over 100 returns" in halt.rationale
    assert halt.confidence == 1.0  # past the halt threshold (25% over)
    assert halt.evidence["max_drawdown.value"] == 0.07
    assert halt.as_of_time == T0


def test_a_breach_exactly_at_the_halt_margin_halts_and_one_just_below_cuts():
    # 25% over the 5% limit is 6.25%.
    (halt,) = recommend(assess(inputs(drawdown=0.0625), RiskPolicy(LIMITS), SETTINGS), SETTINGS)
    assert halt.parameters == HaltTrading(scope=PORTFOLIO)
    (cut,) = recommend(assess(inputs(drawdown=0.0624), RiskPolicy(LIMITS), SETTINGS), SETTINGS)
    assert cut.parameters == AdjustExposure(sector="", factor=pytest.approx(0.05 / 0.0624))
    assert cut.priority is Priority.CRITICAL


def test_a_smaller_breach_cuts_exposure_in_proportion_with_confidence_from_its_size():
    report = assess(inputs(drawdown=0.055), RiskPolicy(LIMITS), SETTINGS)
    (cut,) = recommend(report, SETTINGS)
    assert cut.priority is Priority.CRITICAL
    assert cut.parameters == AdjustExposure(sector="", factor=pytest.approx(0.05 / 0.055))
    # 10% over the limit, halting at 25% over: 0.5 + 0.5 * 0.10 / 0.25.
    assert cut.confidence == pytest.approx(0.7)
    assert "drawdown 5.50% is 10% over its 5.00% limit" in cut.rationale
    assert cut.as_of_time == T0


def test_a_var_breach_scales_exposure_back_to_the_limit_and_is_discounted_for_few_returns():
    var = assess(inputs(n=40), RiskPolicy(LIMITS), SETTINGS).portfolio.historical_var_95
    limits = dataclasses.replace(LIMITS, max_var_95=var / 1.1)  # 10% over the limit
    settings = dataclasses.replace(SETTINGS, sector_var_share=1.0)
    report = assess(inputs(n=40), RiskPolicy(limits), settings)
    assert [b.limit for b in report.breaches] == ["max_var_95"]
    (cut,) = recommend(report, settings)
    assert cut.parameters.factor == pytest.approx(1 / 1.1)
    assert cut.confidence == pytest.approx((0.5 + 0.5 * 0.1 / 0.25) * 40 / 60)


def test_a_sector_over_its_exposure_limit_is_cut_critically_and_one_over_budget_highly():
    limits = RiskLimits(
        max_var_95=0.011,
        max_drawdown=0.05,
        max_gross_exposure=1.0,
        max_sector_exposure=0.35,
        sector_exposure_limits={"Energy": 0.15},
    )
    report = assess(
        inputs(sigma=0.02, exposures=(0.2, 0.1), allocations=(0.2, 0.2)),
        RiskPolicy(limits),
        SETTINGS,
    )
    limits_broken = {b.limit for b in report.breaches}
    assert "sector_exposure/Energy" in limits_broken
    assert "sector_var_95/Tech" in limits_broken
    by_target = {r.target: r for r in recommend(report, SETTINGS)}
    energy, tech = by_target["sector/Energy"], by_target["sector/Tech"]
    assert energy.priority is Priority.CRITICAL
    assert energy.parameters.factor <= 0.15 / 0.2 + 1e-12
    assert tech.priority is Priority.HIGH
    tech_risk = next(s for s in report.sectors if s.sector == "Tech")
    assert tech_risk.var_budget == pytest.approx(0.0055)
    assert tech.parameters == AdjustExposure(
        sector="Tech", factor=pytest.approx(0.0055 / tech_risk.equity_var_95)
    )
    assert "standalone VaR95 per 1 h in equity terms" in tech.rationale


def test_sector_cuts_account_for_a_portfolio_cut_in_the_same_round():
    limits = RiskLimits(
        max_var_95=1.0, max_drawdown=0.05, max_gross_exposure=0.5, max_sector_exposure=0.25
    )
    report = assess(inputs(exposures=(0.3, 0.26)), RiskPolicy(limits), SETTINGS)
    by_target = {r.target: r for r in recommend(report, SETTINGS)}
    portfolio = by_target["portfolio"].parameters.factor
    assert portfolio == pytest.approx(0.5 / 0.56)
    # Energy needs 0.25 / 0.3 and the portfolio cut gives 0.89 of it; Tech needs less than that.
    assert by_target["sector/Energy"].parameters.factor == pytest.approx((0.25 / 0.3) / portfolio)
    assert "sector/Tech" not in by_target


def test_a_standing_halt_is_reasserted_while_its_breach_stands_and_vetoes_the_rest():
    halt = Halt(PORTFOLIO, T0 - HOUR, "fleet change 1: portfolio halted", "h1")
    for drawdown in (0.055, 0.07):  # a cut's breach, then one past the halt margin
        report = assess(inputs(drawdown=drawdown), RiskPolicy(LIMITS), SETTINGS, halts=(halt,))
        assert report.trading_halted
        (standing,) = recommend(report, SETTINGS)
        assert standing.parameters == HaltTrading(scope=PORTFOLIO)
        assert standing.priority is Priority.CRITICAL
        assert standing.target == "portfolio"
        assert standing.confidence == 1.0
        # One intent per halt: re-asserted every cycle, the fleet applies it once.
        assert standing.intent_key == f"halt/portfolio/{halt.since}"
        assert standing.as_of_time == T0
        assert "it stands while a breach of portfolio stands" in standing.rationale
        assert "(fleet change 1: portfolio halted)" in standing.rationale
    # Too few returns to measure VaR: nothing says the breach has cleared, so it stands too.
    few = assess(inputs(n=19), RiskPolicy(LIMITS), SETTINGS, halts=(halt,))
    assert few.breaches == ()
    (standing,) = recommend(few, SETTINGS)
    assert standing.parameters == HaltTrading(scope=PORTFOLIO)
    # A halted sector with its breach standing is re-asserted; the rest is still watched.
    sector_halt = Halt("Energy", T0 - HOUR, "test", "h2")
    limits = RiskLimits(
        max_var_95=1.0, max_drawdown=0.05, max_gross_exposure=1.0, max_sector_exposure=0.1
    )
    report = assess(inputs(), RiskPolicy(limits), SETTINGS, halts=(sector_halt,))
    by_target = {r.target: r for r in recommend(report, SETTINGS)}
    assert sorted(by_target) == ["sector/Energy", "sector/Tech"]
    assert by_target["sector/Energy"].parameters == HaltTrading(scope="Energy")
    assert by_target["sector/Energy"].intent_key == f"halt/Energy/{sector_halt.since}"
    assert by_target["sector/Tech"].parameters == AdjustExposure(
        sector="Tech", factor=pytest.approx(0.1 / 0.2)
    )


def test_a_halt_whose_breach_has_cleared_is_recommended_for_resumption():
    halt = Halt(PORTFOLIO, T0 - 5 * HOUR, "fleet change 1: portfolio halted", "h1")
    report = assess(inputs(drawdown=0.01), RiskPolicy(LIMITS), SETTINGS, halts=(halt,))
    assert report.breaches == ()
    assert report.tail_measured
    (resume,) = recommend(report, SETTINGS)
    assert resume.parameters == ResumeTrading(scope=PORTFOLIO)
    assert resume.priority is Priority.HIGH
    assert resume.target == "portfolio"
    assert resume.intent_key == f"resume/portfolio/{halt.since}"
    assert resume.as_of_time == T0
    used = max(0.01 / LIMITS.max_drawdown, report.portfolio.historical_var_95 / LIMITS.max_var_95)
    assert resume.evidence["limit_use"] == pytest.approx(used)
    assert resume.confidence == pytest.approx(0.5 + 0.5 * (1 - used))
    assert "no limit is breached over the lookback any more" in resume.rationale
    # A flat fleet uses none of its limits: a sure resume.
    flat = assess(inputs(sigma=0.0), RiskPolicy(LIMITS), SETTINGS, halts=(halt,))
    (resume,) = recommend(flat, SETTINGS)
    assert resume.confidence == 1.0
    # A sector whose own breach cleared is resumed while another sector's breach is cut.
    sector_halt = Halt("Energy", T0 - HOUR, "test", "h2")
    limits = dataclasses.replace(LIMITS, sector_exposure_limits={"Tech": 0.1})
    report = assess(inputs(), RiskPolicy(limits), SETTINGS, halts=(sector_halt,))
    by_target = {r.target: r for r in recommend(report, SETTINGS)}
    assert by_target["sector/Energy"].parameters == ResumeTrading(scope="Energy")
    assert by_target["sector/Energy"].intent_key == f"resume/Energy/{sector_halt.since}"
    assert by_target["sector/Tech"].parameters == AdjustExposure(
        sector="Tech", factor=pytest.approx(0.1 / 0.2)
    )


def test_the_halts_are_read_from_the_fleets_changes_the_portfolio_first():
    setup = deploy({"AAA": "Tech", "CCC": "Energy"}, deployment_time=T0)
    state = FleetState(setup)
    steps = (
        ("halt", "Tech", "h1"),
        ("resume", "Tech", "r1"),
        ("halt", "Tech", "h3"),  # halted again: the halt that stands is this one
        ("halt", PORTFOLIO, "h4"),
        ("halt", PORTFOLIO, "h5"),  # already halted: changes nothing
    )
    for k, (kind, scope, action_id) in enumerate(steps):
        change = getattr(state, kind)(
            scope, at=T0 + (k + 1) * HOUR, cause=Cause(f"key-{k}", action_id, k), field="f"
        )
        state = state.with_change(change)
    fleet = FleetReport(
        deployment_time=T0,
        clock_time=T0 + 9 * HOUR,
        position=9 * 60,
        start_time=None,
        end_time=None,
        bar_count=0,
        capital=1e6,
        equity=1e6,
        total_return=0.0,
        pnl=0.0,
        sectors=(),
        strategies=(),
        missions=(),
        changes=state.changes,
        halted=state.halted,
    )
    portfolio, tech = fleet_halts(fleet)
    assert (portfolio.scope, portfolio.since, portfolio.action_id) == (
        PORTFOLIO,
        T0 + 4 * HOUR,
        "h4",
    )
    assert portfolio.reason.startswith("fleet change 4: portfolio halted")
    assert (tech.scope, tech.since, tech.action_id) == ("Tech", T0 + 3 * HOUR, "h3")
    assert tech.reason.startswith("fleet change 3: Tech halted")
    # Resuming the portfolio lifts every halt.
    resumed = state.resume(PORTFOLIO, at=T0 + 9 * HOUR, cause=Cause("k", "r2", 9), field="f")
    state = state.with_change(resumed)
    cleared = dataclasses.replace(fleet, changes=state.changes, halted=state.halted)
    assert fleet_halts(cleared) == ()


def test_too_few_returns_leave_tail_figures_out_and_never_break_a_var_limit():
    limits = RiskLimits(
        max_var_95=1e-9, max_drawdown=0.05, max_gross_exposure=1.0, max_sector_exposure=0.35
    )
    report = assess(inputs(n=19), RiskPolicy(limits), SETTINGS)
    assert report.portfolio.historical_var_95 == 0
    assert report.breaches == ()


def test_a_flat_fleet_with_enough_returns_has_measured_tail_figures_of_zero():
    flat = assess(inputs(sigma=0.0, drawdown=0.055), RiskPolicy(LIMITS), SETTINGS)
    assert flat.portfolio.historical_var_95 == 0
    assert flat.tail_measured
    (cut,) = recommend(flat, SETTINGS)
    assert "historical VaR95 0.00%" in cut.rationale
    assert "too few" not in cut.rationale
    few = assess(inputs(n=19, drawdown=0.055), RiskPolicy(LIMITS), SETTINGS)
    assert not few.tail_measured
    (cut,) = recommend(few, SETTINGS)
    assert "(19 returns: too few for VaR)" in cut.rationale


def test_limits_change_as_given_and_zero_leaves_a_limit_alone():
    policy = RiskPolicy(LIMITS)
    given = RiskLimits(max_drawdown=0.08, sector_exposure_limits={"Tech": 0.2})
    changed, detail = policy.with_limits(given, sectors={"Tech", "Energy"}, field="limits")
    assert changed.limits.max_drawdown == 0.08
    assert changed.limits.max_var_95 == LIMITS.max_var_95
    assert changed.sector_limit("Tech") == 0.2
    assert changed.sector_limit("Energy") == 0.35
    assert (
        detail
        == "limits: max_drawdown 5.00% -> 8.00%; Tech exposure limit the default -> 20.00% (the "
        "fleet trades as before: the officer's next breaches, and the cuts or halts they call "
        "for, are judged by them)"
    )
    removed, _ = changed.with_limits(
        RiskLimits(sector_exposure_limits={"Tech": 0}), sectors={"Tech"}, field="limits"
    )
    assert removed.sector_limit("Tech") == 0.35
    assert RiskPolicy.from_json(changed.to_json()) == changed
    assert set(changed.to_json()) == {"limits"}


def test_a_policy_stored_with_halts_before_the_fleet_owned_them_still_loads():
    stored = {
        **RiskPolicy(LIMITS).to_json(),
        "halts": [{"scope": "Tech", "since": T0, "reason": "old", "action_id": "h1"}],
    }
    assert RiskPolicy.from_json(stored) == RiskPolicy(LIMITS)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        (RiskLimits(max_drawdown=1.5), "limits.max_drawdown"),
        (RiskLimits(max_var_95=float("nan")), "limits.max_var_95"),
        (RiskLimits(max_gross_exposure=11), "limits.max_gross_exposure"),
        (
            RiskLimits(sector_exposure_limits={"Mining": 0.2}),
            "limits.sector_exposure_limits[Mining]",
        ),
        (RiskLimits(sector_exposure_limits={"Tech": -1}), "limits.sector_exposure_limits[Tech]"),
        (RiskLimits(), "limits"),
    ],
)
def test_bad_limits_are_rejected_naming_the_field(given, field):
    with pytest.raises(InvalidArgument) as error:
        RiskPolicy(LIMITS).with_limits(given, sectors={"Tech"}, field="limits")
    assert error.value.field == field


@pytest.mark.parametrize(
    ("series", "field"),
    [
        ({"Tech": ([], 0.5)}, "sector_returns[Tech].returns"),
        ({"Tech": ([0.01] * 5, 0.5)}, "sector_returns[Tech].returns"),
        ({"Tech": ([0.01] * 29 + [float("nan")], 0.5)}, "sector_returns[Tech].returns[29]"),
        ({"Tech": ([0.01] * 29 + [-1.5], 0.5)}, "sector_returns[Tech].returns[29]"),
        ({"Tech": ([0.01] * 30, float("inf"))}, "sector_returns[Tech].exposure"),
        ({"Mining": ([0.01] * 30, 0.5)}, "sector_returns[Mining]"),
        (
            {"Energy": ([0.01] * 30, 0.5), "Tech": ([0.01] * 31, 0.5)},
            "sector_returns[Tech].returns",
        ),
    ],
)
def test_caller_series_are_validated_naming_the_field(series, field):
    with pytest.raises(InvalidArgument) as error:
        caller_inputs(series, sectors={"Tech", "Energy"}, minimum=20, maximum=1000, max_sectors=8)
    assert error.value.field == field


def test_caller_series_make_an_exposure_weighted_portfolio():
    rng = np.random.default_rng(5)
    energy, tech = rng.normal(0, 0.01, 50), rng.normal(0, 0.02, 50)
    given = caller_inputs(
        {"Tech": (tech, 0.3), "Energy": (energy, 0.5)},
        sectors={"Tech", "Energy"},
        minimum=20,
        maximum=1000,
        max_sectors=8,
    )
    np.testing.assert_allclose(given.portfolio, 0.5 * energy + 0.3 * tech)
    assert given.sectors == ("Energy", "Tech")
    assert given.gross_exposure == pytest.approx(0.8)
    report = assess(given, RiskPolicy(LIMITS), SETTINGS)
    assert report.portfolio.historical_var_95 == pytest.approx(
        -np.quantile(0.5 * energy + 0.3 * tech, 0.05), rel=1e-12
    )


def test_a_cancelled_assessment_stops_between_sectors():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        assess(inputs(), RiskPolicy(LIMITS), SETTINGS, token=token)
