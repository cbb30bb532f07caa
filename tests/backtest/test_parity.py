"""Parity with backtesting.py (PyPI ``backtesting``: its SmaCross example on its GOOG and EURUSD
sample data) and empyrical-reloaded, under the conventions of docs/services/backtest.md
("Conventions against backtesting.py and empyrical"): the same trades bar for bar and price for
price, the documented differences asserted as exact relations."""

from __future__ import annotations

import dataclasses
import math
import warnings

import empyrical
import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover
from backtesting.test import EURUSD, GOOG, SMA

from backtest import kernel
from backtest.evaluation import CostModel, EvaluationSettings, Evaluator
from backtest.indicators import BarData
from backtest.metrics import Metrics, from_accumulators
from qtmesh.base.bars import make_series
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome, make_genome
from tests.helpers.empyrical_reference import reference

POLICY = Policy()
FAST, SLOW = 10, 20
CASH = 10_000.0
MARKETS = {"GOOG": GOOG, "EURUSD": EURUSD}
EVALUATOR = Evaluator(
    settings=EvaluationSettings(costs=CostModel(commission_bps=0.0, slippage_bps=0.0))
)


class SmaCross(Strategy):
    """backtesting.py's own example (its README and ``Backtest.run`` docstring)."""

    n1 = FAST
    n2 = SLOW

    def init(self) -> None:
        self.sma1 = self.I(SMA, self.data.Close, self.n1)
        self.sma2 = self.I(SMA, self.data.Close, self.n2)

    def next(self) -> None:
        if crossover(self.sma1, self.sma2):
            self.position.close()
            self.buy()
        elif crossover(self.sma2, self.sma1):
            self.position.close()
            self.sell()


def crossover_genome(*, entry_on_cross: bool = True, **changes: float) -> StrategyGenome:
    """SmaCross as a genome: thresholds 0, shorts allowed, the volatility filter wide open (its
    range's edges are no bound), the window all day, no stop."""
    values = {
        "fast": FAST,
        "slow": SLOW,
        "entry_on_cross": float(entry_on_cross),
        "allow_short": 1.0,
        "entry_threshold": 0.0,
        "exit_threshold": 0.0,
        "vol_min": 0.0,
        "vol_max": 5.0,
        "session_start": 0.0,
        "session_hours": 24.0,
        "stop_atr": 0.0,
        **changes,
    }
    family = StrategyFamily.MA_CROSSOVER
    return POLICY.validate(make_genome(family, values, origin="test"), field="genome")


def bar_data(frame: pd.DataFrame, *, bars_per_year: float | None = None) -> BarData:
    # pandas 3 reads the sample data at microsecond resolution: int64 nanoseconds asked for
    # explicitly (``asi8`` alone would be microseconds, a calendar 1,000 times too dense).
    time = pd.DatetimeIndex(frame.index).as_unit("ns").asi8
    series = make_series(
        "PARITY",
        "test",
        time=time,
        open=frame["Open"],
        high=frame["High"],
        low=frame["Low"],
        close=frame["Close"],
        volume=frame["Volume"],
    )
    return BarData(series, bars_per_year=bars_per_year)


@dataclasses.dataclass(frozen=True)
class Trade:
    entry_bar: int
    # None: still open after the last bar (valued at the last close, see ours()).
    exit_bar: int | None
    entry_price: float
    exit_price: float
    direction: int


def ours(positions: np.ndarray, data: BarData) -> list[Trade]:
    """Trades from the kernel's positions (held at each close): a trade enters on the first bar
    holding its position, filled at that bar's open, and exits at the open of the bar where the
    position changes. One still open after the last bar counts, closed at the last close."""
    trades = []
    entry = 0
    held = 0
    for t, position in enumerate(positions.tolist()):
        if position != held:
            if held:
                trades.append(Trade(entry, t, data.open[entry], data.open[t], held))
            entry, held = t, position
    if held:
        trades.append(Trade(entry, None, data.open[entry], data.close[-1], held))
    return trades


def theirs(stats: pd.Series) -> list[Trade]:
    frame = stats["_trades"]
    return [
        Trade(int(entry), int(exit_), float(entry_price), float(exit_price), int(np.sign(size)))
        for entry, exit_, entry_price, exit_price, size in zip(
            frame.EntryBar,
            frame.ExitBar,
            frame.EntryPrice,
            frame.ExitPrice,
            frame.Size,
            strict=True,
        )
    ]


def priced_return(trade: Trade, data: BarData) -> float:
    """A trade's return from its prices under our sizing: a long holds its equity's worth from
    fill to fill (the price ratio); a short is re-sized to its equity at every close, so it
    compounds each bar's inverse return along the path fill, closes, fill."""
    if trade.direction == 1:
        return trade.exit_price / trade.entry_price - 1
    closes = data.close[trade.entry_bar : trade.exit_bar]
    if trade.exit_bar is None:
        closes = closes[:-1]  # the last close is the exit price
    path = np.r_[trade.entry_price, closes, trade.exit_price]
    return float(np.prod(2 - path[1:] / path[:-1]) - 1)


@pytest.fixture(scope="module", params=sorted(MARKETS))
def market(request):
    """One sample market: its bars, our SmaCross genome entering by cross and by state, and
    backtesting.py's SmaCross without and with ``finalize_trades``."""
    frame = MARKETS[request.param]
    data = bar_data(frame, bars_per_year=252.0 if request.param == "GOOG" else None)
    run = EVALUATOR.backtest([crossover_genome(), crossover_genome(entry_on_cross=False)], data)
    stats = {}
    for finalize in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats[finalize] = Backtest(
                frame, SmaCross, cash=CASH, commission=0.0, finalize_trades=finalize
            ).run()
        still_open = any("remain open" in str(w.message) for w in caught)
        assert still_open is not finalize  # backtesting.py says so when it leaves one out
    return request.param, data, run, stats


def test_sma_cross_trades_match_backtesting_py(market):
    _, data, run, stats = market
    mine = ours(run.positions[0], data)
    reference_trades = theirs(stats[False])
    assert len(reference_trades) > 50
    # Entry and exit bars, fill prices and directions all equal, every reversal included.
    # backtesting.py leaves out the trade still open at the end; we count it (next test).
    assert mine[:-1] == reference_trades
    assert mine[-1].exit_bar is None
    assert mine[-1].entry_bar == reference_trades[-1].exit_bar
    assert all(t.entry_bar > SLOW for t in mine)  # the first cross needs two known averages


def test_an_open_position_at_the_end_closes_at_the_last_close(market):
    _, data, run, stats = market
    mine = ours(run.positions[0], data)
    finalized = theirs(stats[True])
    n = data.n
    # finalize_trades=True closes it with an order filled at the last bar's open; we count it
    # closed at the last close, without trading.
    assert mine[:-1] == finalized[:-1]
    last = finalized[-1]
    assert last == dataclasses.replace(mine[-1], exit_bar=n - 1, exit_price=data.open[n - 1])
    assert mine[-1].exit_price == data.close[n - 1]
    assert (
        stats[True]["# Trades"]
        == len(mine)
        == run.accumulators[0, kernel.ALL_BARS, kernel.A_TRADES]
    )
    # The kernel's trade statistics are those of exactly these trades, the open one included,
    # and its equity is theirs compounded (no costs; flat bars return 0).
    results = np.array([priced_return(t, data) for t in mine])
    assert np.prod(1 + run.returns[0]) == pytest.approx(np.prod(1 + results), rel=1e-12)
    acc = run.accumulators[0, kernel.ALL_BARS]
    assert acc[kernel.A_WINS] == np.sum(results > 0)
    assert acc[kernel.A_WIN_SUM] == pytest.approx(results[results > 0].sum(), rel=1e-12)
    assert acc[kernel.A_LOSS_SUM] == pytest.approx(results[results <= 0].sum(), rel=1e-12)
    assert acc[kernel.A_BEST] == pytest.approx(results.max(), rel=1e-12)
    assert acc[kernel.A_WORST] == pytest.approx(results.min(), rel=1e-12)
    assert acc[kernel.A_HOLDING] == sum((t.exit_bar or n) - t.entry_bar for t in mine)


def test_state_based_entry_differs_only_before_the_first_cross(market):
    _, data, run, _ = market
    on_cross, on_state = ours(run.positions[0], data), ours(run.positions[1], data)
    first = on_cross[0]
    # The default takes the side of the spread at the first close both averages are known
    # (bar SLOW - 1), filled at the next open, and holds it until the first cross reverses it;
    # with zero thresholds and shorts allowed both rules then agree.
    opening = Trade(SLOW, first.entry_bar, data.open[SLOW], first.entry_price, -first.direction)
    assert on_state == [opening, *on_cross]


def test_sizing_fully_invested_against_whole_units(market):
    """Same trades, different returns: we hold the whole equity (shorts re-sized at every
    close), backtesting.py whole units of cash / price held to the exit."""
    _, data, run, stats = market
    mine = ours(run.positions[0], data)[:-1]
    frame = stats[False]["_trades"]
    mine_returns = np.array([priced_return(t, data) for t in mine])
    equity = CASH + np.concatenate([[0.0], np.cumsum(frame.PnL.to_numpy())[:-1]])
    size = np.abs(frame.Size.to_numpy())
    entry, exit_ = frame.EntryPrice.to_numpy(), frame.ExitPrice.to_numpy()
    # Their units: as many whole ones as the equity at the entry buys (no leverage, no costs).
    assert np.all(size * entry <= equity)
    assert np.all((size + 1) * entry > equity)
    np.testing.assert_allclose(frame.PnL, frame.Size * (exit_ - entry), rtol=1e-12)
    invested = size * entry / equity
    assert np.all(invested < 1)
    # Per unit a trade returns direction x (exit / entry - 1) to them ...
    np.testing.assert_allclose(
        frame.ReturnPct, np.sign(frame.Size) * (exit_ / entry - 1), rtol=1e-12
    )
    # ... and to their equity only the invested share of it (exit - entry cancels digits).
    np.testing.assert_allclose(
        frame.PnL / equity, invested * frame.ReturnPct, rtol=1e-12, atol=1e-15
    )
    long = frame.Size.to_numpy() > 0
    # A long trade returns the same to us per unit of equity: the price ratio ...
    np.testing.assert_allclose(mine_returns[long], frame.ReturnPct[long], rtol=1e-12)
    # ... a short one compounds each bar's inverse return instead (priced_return): theirs only
    # when the price moved on at most one step of its path fill, closes, fill.
    shorts = [
        (t, r, theirs)
        for t, r, theirs in zip(mine, mine_returns, frame.ReturnPct, strict=True)
        if t.direction == -1
    ]
    assert len(shorts) > 20
    for trade, result, reference_result in shorts:
        path = np.r_[
            trade.entry_price, data.close[trade.entry_bar : trade.exit_bar], trade.exit_price
        ]
        moves = np.count_nonzero(np.diff(path))
        same = bool(result == pytest.approx(reference_result, rel=1e-12, abs=1e-15))
        assert same is bool(moves <= 1), trade


def our_metrics(acc: np.ndarray, bars_per_year: float) -> Metrics:
    return from_accumulators(acc, bars_per_year=bars_per_year, trials=1, trial_variance=0.0)


def strategies() -> list[StrategyGenome]:
    """SmaCross both ways, each family's default with the filter open, and a stopped crossover."""
    defaults = [
        POLICY.validate(
            make_genome(f, {**POLICY.default_genome(f).parameters, "vol_max": 5.0}), field="g"
        )
        for f in StrategyFamily
    ]
    stopped = crossover_genome(stop_atr=2.0, risk_reward=3.0)
    return [crossover_genome(), crossover_genome(entry_on_cross=False), *defaults, stopped]


def test_metrics_match_empyrical_at_252_bars_a_year_on_goog():
    data = bar_data(GOOG, bars_per_year=252.0)
    run = EVALUATOR.backtest(strategies(), data)
    for r, acc in zip(run.returns, run.accumulators, strict=True):
        assert acc[kernel.ALL_BARS, kernel.A_TRADES] > 5
        metrics = our_metrics(acc[kernel.ALL_BARS], 252.0)
        assert metrics.bar_count == len(r) == data.n
        for name, expected in reference(r, 252.0).items():
            # Real strategies: every denominator non-zero, so every figure defined both ways.
            assert np.isfinite(expected), name
            assert getattr(metrics, name) == pytest.approx(expected, rel=1e-9, abs=1e-15), name
        # empyrical's 'daily' default is 252 periods a year: the figure to pass for equities.
        assert metrics.sharpe_ratio == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-9)
        assert metrics.annualized_return == pytest.approx(empyrical.annual_return(r), rel=1e-9)


def test_the_data_calendar_annualises_by_its_own_bars_per_year():
    """Unless told, we annualise by the bars the data observes per year (GOOG: 251.5, not 252),
    so our figures are empyrical's at 252 rescaled by that ratio, exactly."""
    observed = bar_data(GOOG)
    a = observed.bars_per_year
    assert a == pytest.approx(
        (len(GOOG) - 1) / ((GOOG.index[-1] - GOOG.index[0]).days / 365), rel=1e-12
    )
    assert 251 < a < 252
    run = EVALUATOR.backtest([crossover_genome()], observed)
    r = run.returns[0]
    mine = our_metrics(run.accumulators[0, kernel.ALL_BARS], a)
    scale = math.sqrt(a / 252)
    assert mine.sharpe_ratio == pytest.approx(empyrical.sharpe_ratio(r) * scale, rel=1e-9)
    assert mine.sortino_ratio == pytest.approx(empyrical.sortino_ratio(r) * scale, rel=1e-9)
    vol = empyrical.annual_volatility(r) * scale
    assert mine.annualized_volatility == pytest.approx(vol, rel=1e-9)
    growth = empyrical.cum_returns_final(r) + 1
    assert mine.annualized_return == pytest.approx(growth ** (a / len(r)) - 1, rel=1e-9)
    assert mine.sharpe_ratio != pytest.approx(empyrical.sharpe_ratio(r), rel=1e-4)


def test_hourly_metrics_match_empyrical_at_the_observed_calendar():
    data = bar_data(EURUSD)
    assert 6_100 < data.bars_per_year < 6_300  # ~24 x 5 x 52 less holidays: not 8,760
    run = EVALUATOR.backtest(strategies(), data)
    for r, acc in zip(run.returns, run.accumulators, strict=True):
        metrics = our_metrics(acc[kernel.ALL_BARS], data.bars_per_year)
        for name, expected in reference(r, data.bars_per_year).items():
            assert np.isfinite(expected), name
            assert getattr(metrics, name) == pytest.approx(expected, rel=1e-9, abs=1e-15), name


def kernel_metrics(r: np.ndarray) -> Metrics:
    acc = np.zeros((2, kernel.ACCUMULATOR_COUNT))
    kernel._statistics(r, len(r), acc[kernel.ALL_BARS], acc[kernel.OUT_OF_SAMPLE])
    kernel._order_statistics(r, len(r), acc[kernel.ALL_BARS], acc[kernel.OUT_OF_SAMPLE])
    return our_metrics(acc[kernel.ALL_BARS], 252.0)


def test_an_undefined_ratio_is_zero_where_empyrical_says_nan_or_inf():
    """Where a denominator is 0 empyrical (and scipy) return NaN or inf; we report 0, except
    omega (and profit factor), +inf with gains and no losses. Everything defined agrees."""
    # A crossover whose window (01:00-02:00) never holds a daily bar's hour (00:00): all flat.
    flat = EVALUATOR.backtest(
        [crossover_genome(session_start=1.0, session_hours=1.0)], bar_data(GOOG, bars_per_year=252)
    )
    r = flat.returns[0]
    assert not r.any()
    expected_nan = {"sharpe_ratio", "sortino_ratio", "calmar_ratio", "omega_ratio", "tail_ratio"}
    expected_nan |= {"stability", "skewness", "kurtosis"}
    got = our_metrics(flat.accumulators[0, kernel.ALL_BARS], 252.0)
    for name, value in reference(r, 252.0).items():
        assert math.isnan(value) is (name in expected_nan), name
        assert getattr(got, name) == (0.0 if name in expected_nan else value), name
    # Only gains (GOOG's absolute daily moves): no downside, no drawdown, no losses.
    close = GOOG["Close"].to_numpy()
    gains = np.abs(np.diff(close) / close[:-1])
    got = kernel_metrics(gains)
    expected = reference(gains, 252.0)
    assert math.isinf(expected["sortino_ratio"])
    assert got.sortino_ratio == 0.0
    assert math.isnan(expected["calmar_ratio"])
    assert got.calmar_ratio == 0.0
    assert math.isnan(expected["omega_ratio"])
    assert got.omega_ratio == math.inf
    assert expected["max_drawdown"] == got.max_drawdown == 0.0
    for name in expected.keys() - {"sortino_ratio", "calmar_ratio", "omega_ratio"}:
        assert getattr(got, name) == pytest.approx(expected[name], rel=1e-9, abs=1e-15), name
