"""Daily, hourly and minute bars: bars per year from the data's own calendar, durations set in
time, and the families trading from their documented warm-up."""

from __future__ import annotations

import warnings

import empyrical
import numpy as np
import pytest

from backtest.evaluation import EvaluationSettings, Evaluator
from backtest.indicators import BarData
from qtmesh.base.bars import make_series, observed_bars_per_year, spacing_seconds
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, make_genome

POLICY = Policy()
MINUTE = 60 * 10**9
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MONDAY = np.datetime64("2018-01-01", "ns").astype(np.int64)


def genome(family: StrategyFamily, **values: float):
    """The family's default genome with ``values`` changed."""
    return POLICY.validate(make_genome(family, values), field="genome")


def business_days(n: int) -> np.ndarray:
    """Bar starts of ``n`` weekdays from a Monday (no holidays)."""
    days = np.arange(n * 7 // 5 + 7)
    weekdays = days[days % 7 < 5][:n]
    return MONDAY + weekdays * DAY


def fx_hours(n: int) -> np.ndarray:
    """Hourly bars around the clock on weekdays only, as FX trades."""
    hours = np.arange(n * 7 // 5 + 24 * 7)
    weekdays = hours[(hours // 24) % 7 < 5][:n]
    return MONDAY + weekdays * HOUR


def minutes(n: int) -> np.ndarray:
    return MONDAY + np.arange(n) * MINUTE


CALENDARS = {
    "daily": (business_days(2_148), 86_400.0),
    "hourly": (fx_hours(6_000), 3_600.0),
    "minute": (minutes(4_320), 60.0),
}


def data_on(calendar: str, *, seed: int = 11, **kwargs) -> BarData:
    time, spacing = CALENDARS[calendar]
    rng = np.random.default_rng(seed)
    scale = np.sqrt(spacing / 86_400)  # 1% a day, whatever the bars
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002 * scale**2, 0.01 * scale, time.size)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, 0.004 * scale, time.size)) * close
    series = make_series(
        "TEST",
        "Tech",
        time=time,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=np.full(time.size, 1_000.0),
    )
    return BarData(series, **kwargs)


def test_bars_per_year_is_what_the_calendar_holds_not_what_the_spacing_suggests():
    # 5 of 7 days a year: 365.25 * 5 / 7 is about 261 weekdays (252 once holidays are off).
    assert observed_bars_per_year(business_days(2_148)) == pytest.approx(260.9, abs=0.5)
    assert observed_bars_per_year(fx_hours(6_000)) == pytest.approx(24 * 260.9, rel=0.01)
    assert observed_bars_per_year(minutes(4_320)) == pytest.approx(525_600)
    for time, spacing in CALENDARS.values():
        assert spacing_seconds(time) == spacing


@pytest.mark.parametrize("calendar", CALENDARS)
def test_metrics_match_empyrical_at_the_calendars_period_count(calendar):
    for data in (data_on(calendar), data_on(calendar, bars_per_year=252.0)):
        genomes = [
            POLICY.default_genome(StrategyFamily.MA_CROSSOVER),
            genome(StrategyFamily.MEAN_REVERSION, bb_period=20, rsi_period=10),
        ]
        evaluator = Evaluator()
        evaluations = evaluator.evaluate(genomes, data)
        returns = evaluator.backtest_returns(genomes, data)
        split = int(evaluator.fold_starts(data.n)[1])
        for evaluation, r in zip(evaluations, returns, strict=True):
            oos = r[split:]
            assert evaluation.out_of_sample.trade_count > 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = {
                    "sharpe_ratio": empyrical.sharpe_ratio(oos, annualization=data.bars_per_year),
                    "sortino_ratio": empyrical.sortino_ratio(oos, annualization=data.bars_per_year),
                    "annualized_return": empyrical.annual_return(
                        oos, annualization=data.bars_per_year
                    ),
                    "annualized_volatility": empyrical.annual_volatility(
                        oos, annualization=data.bars_per_year
                    ),
                    "calmar_ratio": empyrical.calmar_ratio(oos, annualization=data.bars_per_year),
                }
            for name, value in expected.items():
                assert getattr(evaluation.out_of_sample, name) == pytest.approx(value, rel=1e-9)


def test_an_explicit_bars_per_year_must_be_positive():
    with pytest.raises(InvalidArgument, match="bars_per_year"):
        data_on("daily", bars_per_year=0.0)


@pytest.mark.parametrize(
    ("calendar", "volatility", "reference", "embargo"),
    [("daily", 10, 50, 1), ("hourly", 10, 50, 1), ("minute", 60, 1_440, 60)],
)
def test_durations_set_in_time_become_bars_at_the_datas_spacing(
    calendar, volatility, reference, embargo
):
    data = data_on(calendar)
    assert data.volatility_half_life == volatility
    assert data.reference_half_life == reference
    assert data.bars_in(EvaluationSettings().embargo_minutes * 60) == embargo
    # The volatility is unknown (NaN) for exactly its half-life of bars.
    assert np.isnan(data.volatility[:volatility]).all()
    assert not np.isnan(data.volatility[volatility:]).any()


def first_position(strategy, data: BarData) -> int:
    positions = Evaluator().backtest([strategy], data).positions[0]
    held = np.flatnonzero(positions)
    assert held.size, "the genome never traded"
    return int(held[0])


@pytest.mark.parametrize("calendar", CALENDARS)
def test_a_wide_open_crossover_trades_from_its_slow_average(calendar):
    data = data_on(calendar)
    crossover = POLICY.default_genome(StrategyFamily.MA_CROSSOVER)
    slow = int(crossover.parameters["slow"])
    # The slow average is known from bar slow - 1; its decision fills at the next open.
    assert first_position(crossover, data) == slow


@pytest.mark.parametrize("calendar", CALENDARS)
def test_a_volatility_band_waits_for_the_volatility(calendar):
    data = data_on(calendar)
    # Fast averages, so only the band's wait is left.
    open_band = genome(StrategyFamily.MA_CROSSOVER, fast=2, slow=5)
    banded = genome(StrategyFamily.MA_CROSSOVER, fast=2, slow=5, vol_min=0.01, vol_max=4.0)
    assert first_position(open_band, data) == 5
    assert first_position(banded, data) > data.volatility_half_life


@pytest.mark.parametrize("calendar", CALENDARS)
def test_q_learning_trades_once_its_slow_volatility_reference_is_known(calendar):
    data = data_on(calendar)
    first = first_position(POLICY.default_genome(StrategyFamily.Q_LEARNING), data)
    # Its state needs the reference (known from bar reference_half_life); the position decided
    # at a close fills at the next open. It explores from there (5% of decisions).
    assert data.reference_half_life < first <= data.reference_half_life + 200
