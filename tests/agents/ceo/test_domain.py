"""The CEO's method on known inputs: severities and the score, modes for planted drawdowns,
trends and regimes, hysteresis that does not flap, the confidence formula and the mode it owns."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math

import empyrical
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from agents.ceo.config import CeoConfig
from agents.ceo.engine import Ceo
from agents.ceo.inputs import CeoInputs, fleet_inputs, regime_of
from agents.ceo.mode import ModeEvaluator, ModeState
from agents.ceo.scoring import Hysteresis, ScoringRule, confidence, indicated
from agents.fleet_history import HOUR_NANOS, FleetHistory
from market.fleet import FleetReport
from qtmesh.base.contract import StrategicMode as M
from qtmesh.base.errors import Unavailable
from world_model.regimes import RegimeReport

T0 = 1_767_571_200 * 10**9
RULE = ScoringRule()
HYSTERESIS = Hysteresis()


def planted_history(returns: np.ndarray) -> FleetHistory:
    """A fleet history of one sector whose equity follows ``returns`` per hour."""
    n = returns.shape[0]
    equity = 1e6 * np.cumprod(1 + returns)
    current = FleetReport(
        deployment_time=T0,
        clock_time=T0 + n * HOUR_NANOS,
        position=n * 60,
        start_time=T0 + 1,
        end_time=T0 + n * HOUR_NANOS,
        bar_count=n * 60,
        capital=1e6,
        equity=float(equity[-1]),
        total_return=float(equity[-1] / 1e6 - 1),
        pnl=float(equity[-1] - 1e6),
        sectors=(),
        strategies=(),
        missions=(),
        changes=(),
    )
    return FleetHistory(
        period=HOUR_NANOS,
        current=current,
        sectors=(),
        strategies=(),
        next_period=n,
        end_times=T0 + HOUR_NANOS * np.arange(1, n + 1),
        portfolio=returns,
        sector_returns=np.zeros((n, 0)),
        strategy_returns=np.zeros((n, 0)),
        strategy_trades=np.zeros((n, 0), dtype=np.int64),
        equity=equity,
    )


def report(sector: str, calm: float, normal: float, volatile: float) -> RegimeReport:
    probabilities = (calm, normal, volatile)
    labels = ("calm", "normal", "volatile")
    return RegimeReport(
        symbol="",
        sector=sector,
        as_of_time=T0,
        regime=labels[int(np.argmax(probabilities))],
        labels=labels,
        probabilities=probabilities,
        means=(0.0, 0.0, 0.0),
        stddevs=(1e-4, 2e-4, 4e-4),
        transition=(1 / 3,) * 9,
        observations=100,
        bars_per_step=30,
    )


def run(history: FleetHistory, regime=None, *, start: M = M.NORMAL, lookback: int = 168):
    """Evaluates every period in order, executing each recommended switch at once."""
    evaluator = ModeEvaluator(RULE, HYSTERESIS)
    current = start
    modes = []
    for k in range(history.observations):
        inputs = fleet_inputs(history, k, lookback=lookback, min_observations=6)
        inputs = CeoInputs(**{**inputs.__dict__, "regime": regime})
        evaluation = evaluator.evaluate(inputs, current)
        current = evaluation.target
        modes.append(current)
    return modes, evaluator.last


def test_severities_interpolate_between_the_anchors_and_clip_outside():
    assert RULE.severity("drawdown", 0.0) == 0
    assert RULE.severity("drawdown", 0.02) == pytest.approx(1.5)
    assert RULE.severity("drawdown", 0.5) == 3
    assert RULE.severity("volatility", 0.01) == 0
    assert RULE.severity("regime", 0.25) == pytest.approx(1.5)
    # The trend's anchors are of minus the t-statistic: t = 2 is severity 0, t = -2 severity 3.
    score, severities = RULE.score(
        {"drawdown": 0.0, "volatility": 0.02, "trend": 2.0, "regime": -1}
    )
    assert score == 0
    assert severities == {"drawdown": 0, "volatility": 0, "regime": 0, "trend": 0}
    score, _ = RULE.score({"drawdown": 0.06, "volatility": 0.3, "trend": -2.0, "regime": 1})
    assert score == 3


def test_a_missing_input_gives_its_weight_to_the_others():
    score, severities = RULE.score(
        {"drawdown": 0.03, "volatility": 0.08, "trend": 0.0, "regime": None}
    )
    assert "regime" not in severities
    assert score == pytest.approx((0.35 * 2 + 0.25 * 1 + 0.2 * 1) / 0.8)


def test_the_indicated_mode_is_the_nearest_level():
    assert [indicated(s) for s in (0.0, 0.49, 0.5, 1.49, 1.5, 2.49, 2.5, 3.0)] == [
        M.EXPANSION,
        M.EXPANSION,
        M.NORMAL,
        M.NORMAL,
        M.DEFENSIVE,
        M.DEFENSIVE,
        M.CAPITAL_PRESERVATION,
        M.CAPITAL_PRESERVATION,
    ]


def test_volatility_and_trend_follow_their_documented_conventions():
    r = np.random.default_rng(2).normal(0.0002, 0.001, 100)
    inputs = fleet_inputs(planted_history(r), 99, lookback=168, min_observations=6)
    assert inputs.volatility == pytest.approx(
        empyrical.annual_volatility(r, annualization=365 * 24), rel=1e-12
    )
    assert inputs.trend == pytest.approx(stats.ttest_1samp(r, 0).statistic, rel=1e-12)
    equity = np.cumprod(1 + r)
    assert inputs.drawdown == pytest.approx(1 - equity[-1] / max(1.0, equity.max()))
    few = fleet_inputs(planted_history(r[:5]), 4, lookback=168, min_observations=6)
    assert few.volatility is None
    assert few.trend is None
    assert few.missing() == ("volatility", "trend", "regime")


def test_a_calm_uptrend_in_a_calm_regime_expands():
    r = np.random.default_rng(3).normal(0.0002, 0.0001, 48)
    regime = regime_of({"Tech": report("Tech", 0.9, 0.1, 0.0)}, {"Tech": 0.5})
    modes, last = run(planted_history(r), regime)
    assert modes[-1] is M.EXPANSION
    assert last.score < 0.5
    assert "indicates EXPANSION" in last.rationale


def test_a_planted_drawdown_in_a_volatile_regime_preserves_capital():
    rng = np.random.default_rng(4)
    r = np.concatenate([rng.normal(0.0001, 0.0005, 36), rng.normal(-0.004, 0.004, 18)])
    regime = regime_of(
        {"Tech": report("Tech", 0.0, 0.1, 0.9), "Energy": report("Energy", 0.1, 0.2, 0.7)},
        {"Tech": 0.25, "Energy": 0.25},
    )
    modes, last = run(planted_history(r), regime)
    assert modes[:30] == [M.NORMAL] * 30
    assert modes[-1] is M.CAPITAL_PRESERVATION
    assert last.inputs.drawdown > 0.05
    assert regime.stress == pytest.approx((0.9 + 0.6) / 2)
    assert regime.probability == pytest.approx(0.8)
    # The mode went down through defensive: one level at a time or straight, never back up.
    levels = [[M.EXPANSION, M.NORMAL, M.DEFENSIVE, M.CAPITAL_PRESERVATION].index(m) for m in modes]
    assert levels == sorted(levels)


def test_a_moderate_drawdown_is_defensive():
    rng = np.random.default_rng(5)
    r = np.concatenate([rng.normal(0.0, 0.0004, 30), np.full(12, -0.003)])
    regime = regime_of({"Tech": report("Tech", 0.2, 0.6, 0.2)}, {"Tech": 1.0})
    modes, last = run(planted_history(r), regime)
    assert modes[-1] is M.DEFENSIVE
    assert 0.03 < last.inputs.drawdown < 0.045


def test_scores_oscillating_around_a_boundary_do_not_flap():
    evaluator = ModeEvaluator(RULE, HYSTERESIS)
    current = M.NORMAL
    scores = [1.45, 1.55] * 10 + [1.3, 1.69] * 10  # within the 0.2 margin of 1.5
    for s in scores:
        pending, target = HYSTERESIS.step(current, evaluator.pending, s)
        evaluator.pending = pending
        assert target is M.NORMAL
    # Crossing by more than the margin but falling back between evaluations never confirms.
    pending = None
    for s in [1.8, 1.2] * 10:
        pending, target = HYSTERESIS.step(current, pending, s)
        assert target is M.NORMAL
    # A crossing that persists switches on its second evaluation.
    pending, target = HYSTERESIS.step(current, None, 1.8)
    assert (pending, target) == ((M.DEFENSIVE, 1), M.NORMAL)
    pending, target = HYSTERESIS.step(current, pending, 1.9)
    assert (pending, target) == ((M.DEFENSIVE, 2), M.DEFENSIVE)
    # Once defensive, it takes a score below 1.5 - 0.2 to be a candidate to go back.
    assert HYSTERESIS.candidate(M.DEFENSIVE, 1.31) is M.DEFENSIVE
    assert HYSTERESIS.candidate(M.DEFENSIVE, 1.29) is M.NORMAL


@given(st.lists(st.floats(-0.19, 0.19), min_size=1, max_size=200), st.sampled_from([0, 1, 2]))
def test_noise_within_the_margin_never_switches(noise, boundary):
    """Property: any sequence of scores within the margin of a boundary keeps either mode."""
    levels = [M.EXPANSION, M.NORMAL, M.DEFENSIVE, M.CAPITAL_PRESERVATION]
    for current in levels[boundary : boundary + 2]:
        pending = None
        for n in noise:
            pending, target = HYSTERESIS.step(current, pending, boundary + 0.5 + n)
            assert target is current


def test_without_hysteresis_the_same_series_would_flap():
    noisy = 1.5 + 0.15 * np.sin(np.arange(40))
    plain = [indicated(s) for s in noisy]
    assert sum(a is not b for a, b in itertools.pairwise(plain)) > 10
    current, pending, switches = M.NORMAL, None, 0
    for s in noisy:
        pending, target = HYSTERESIS.step(current, pending, s)
        switches += target is not current
        current = target
    assert switches == 0


def test_confidence_grows_with_the_distance_past_the_band_and_the_regime_probability():
    assert confidence(M.NORMAL, 1.7, None) == pytest.approx(0.7 * 0.8)
    assert confidence(M.NORMAL, 1.7, 1.0) == pytest.approx(0.7)
    assert confidence(M.NORMAL, 3.0, 0.5) == pytest.approx(1.0 * 0.9)
    assert confidence(M.DEFENSIVE, 0.9, 0.0) == pytest.approx(1.0 * 0.8)  # capped at 1


def test_the_mode_switches_and_round_trips():
    state = ModeState(M.NORMAL)
    switched, detail = state.switched(M.DEFENSIVE, at=T0, cause="action a1 of plan 2")
    # The mode moves no position, and the detail says so.
    assert detail.startswith("mode NORMAL -> DEFENSIVE (the fleet trades as before")
    assert switched.since == T0
    same, detail = switched.switched(M.DEFENSIVE, at=T0 + 1, cause="again")
    assert same is switched
    assert detail.startswith("already DEFENSIVE since")
    assert ModeState.from_json(switched.to_json()) == switched
    assert math.isfinite(switched.since)


class SectorRegimes:
    """A world model that fails for Energy; Tech answers only after Energy failed."""

    def __init__(self) -> None:
        self.energy_failed = asyncio.Event()
        self.answered: list[str] = []

    async def detect_regime(self, *, sector: str) -> RegimeReport:
        if sector == "Energy":
            self.energy_failed.set()
            raise Unavailable("world model restarting")
        await self.energy_failed.wait()
        self.answered.append(sector)
        return report(sector, 0.2, 0.6, 0.2)


async def test_one_sectors_failure_leaves_no_regime_and_every_call_awaited():
    regimes = SectorRegimes()
    ceo = Ceo(market=None, regimes=regimes, mode=None, config=CeoConfig())
    history = dataclasses.replace(planted_history(np.zeros(10)), sectors=("Energy", "Tech"))
    regime, why = await ceo._regime(history)
    assert regime is None
    assert "Energy: world model restarting" in why
    assert regimes.answered == ["Tech"]  # awaited, not left running


async def test_a_fleet_without_sectors_has_no_regime():
    ceo = Ceo(market=None, regimes=SectorRegimes(), mode=None, config=CeoConfig())
    regime, why = await ceo._regime(planted_history(np.zeros(10)))
    assert regime is None
    assert "no sectors" in why
    with pytest.raises(ValueError, match="at least one sector"):
        regime_of({}, {})


def test_the_inputs_are_as_old_as_their_oldest_data():
    history = planted_history(np.zeros(10))
    inputs = fleet_inputs(history, 9, lookback=168, min_observations=6)
    assert inputs.as_of_time == inputs.time == T0 + 10 * HOUR_NANOS
    fresh = dataclasses.replace(report("Tech", 0.2, 0.6, 0.2), as_of_time=T0 + 10 * HOUR_NANOS)
    stale = dataclasses.replace(report("Energy", 0.2, 0.6, 0.2), as_of_time=T0 + HOUR_NANOS)
    regime = regime_of({"Tech": fresh, "Energy": stale}, {})
    assert regime.as_of_time == T0 + HOUR_NANOS
    # The world model's oldest regime is older than the period: the evaluation is that old.
    assert dataclasses.replace(inputs, regime=regime).as_of_time == T0 + HOUR_NANOS
    newer = regime_of({"Tech": dataclasses.replace(fresh, as_of_time=T0 + 11 * HOUR_NANOS)}, {})
    assert dataclasses.replace(inputs, regime=newer).as_of_time == inputs.time
