"""The fill model of the backtest kernel on hand-made bars and signals, and its tail statistics."""

from __future__ import annotations

import numpy as np
import pytest
from backtesting.lib import crossover

from backtest import kernel as k

COMMISSION = 0.001
SLIPPAGE = 0.002


def run(
    closes,
    *,
    opens=None,
    highs=None,
    lows=None,
    signal,
    stop_atr: float = 0.0,
    risk_reward: float = 0.0,
    atr: float = 1.0,
    allow_short: bool = True,
    folds=(0, 1),
    embargo: int = 0,
    commission: float = COMMISSION,
    slippage: float = SLIPPAGE,
    entry: float = 0.5,
    exit_level: float = 0.5,
    entry_on_cross: bool = False,
):
    """MA-crossover kernel with the 'fast' row = 1 + signal and the 'slow' row = 1: the spread
    is the signal itself; with entry and exit thresholds at 0.5, +1 means long, -1 short and
    0 flat."""
    closes = np.asarray(closes, dtype=float)
    n = len(closes)
    opens = np.asarray(opens if opens is not None else np.r_[closes[0], closes[:-1]], dtype=float)
    highs = np.asarray(highs if highs is not None else np.maximum(opens, closes), dtype=float)
    lows = np.asarray(lows if lows is not None else np.minimum(opens, closes), dtype=float)
    p = np.zeros(k.PARAMETER_COUNT)
    p[k.P_ALLOW_SHORT] = 1.0 if allow_short else 0.0
    p[k.P_ENTRY] = entry
    p[k.P_EXIT] = exit_level
    p[k.P_ENTRY_ON_CROSS] = 1.0 if entry_on_cross else 0.0
    p[k.P_VOL_MAX] = 10.0
    p[k.P_SESSION_HOURS] = 24.0
    p[k.P_STOP_ATR] = stop_atr
    p[k.P_RISK_REWARD] = risk_reward
    fast = 1.0 + np.asarray(signal, dtype=float)
    slow = np.ones(n)
    returns = np.empty(n)
    positions = np.empty(n, dtype=np.int8)
    acc = np.zeros((2, k.ACCUMULATOR_COUNT))
    k._simulate(
        k.MA_CROSSOVER,
        p,
        fast,
        slow,
        slow,
        slow,
        np.full(n, atr),
        opens,
        highs,
        lows,
        closes,
        np.zeros(n),
        np.full(n, 0.2),
        np.array(folds, dtype=np.int64),
        embargo,
        commission,
        slippage,
        np.uint64(1),
        returns,
        positions,
        acc,
    )
    run.positions = positions
    run.out_of_sample = acc[k.OUT_OF_SAMPLE]
    return returns, acc[k.ALL_BARS]


def test_signal_at_close_fills_at_next_open_with_costs():
    closes = [100, 100, 110, 121, 121]
    opens = [100, 100, 105, 115, 130]
    # Long from the close of bar 1: filled at the open of bar 2, closed at the open of bar 4.
    returns, acc = run(closes, opens=opens, signal=[0, 1, 1, 0, 0])
    assert returns[0] == 0.0
    entry = 105 * (1 + SLIPPAGE)
    assert returns[1] == 0.0
    assert returns[2] == pytest.approx((1 - COMMISSION) * 110 / entry - 1, rel=1e-12)
    assert returns[3] == pytest.approx(121 / 110 - 1, rel=1e-12)
    exit_fill = 130 * (1 - SLIPPAGE)
    assert returns[4] == pytest.approx((exit_fill / 121) * (1 - COMMISSION) - 1, rel=1e-12)
    trade = (1 - COMMISSION) ** 2 * exit_fill / entry - 1
    assert acc[k.A_TRADES] == 1
    assert acc[k.A_WIN_SUM] == pytest.approx(trade, rel=1e-12)
    assert acc[k.A_TURNOVER] == 2
    assert acc[k.A_EXPOSED] == 2
    assert run.positions.tolist() == [0, 0, 1, 1, 0]


def test_short_positions_gain_when_prices_fall():
    returns, acc = run([100, 100, 90, 81], opens=[100, 100, 100, 90], signal=[0, -1, -1, -1])
    entry = 100 * (1 - SLIPPAGE)
    assert returns[2] == pytest.approx((1 - COMMISSION) * (1 - (90 / entry - 1)) - 1, rel=1e-12)
    assert returns[3] == pytest.approx(1 - (81 / 90 - 1) - 1, rel=1e-12)
    assert acc[k.A_TRADES] == 1  # still open at the end: counted, closed at the last close


def test_no_shorts_when_not_allowed():
    returns, acc = run([100, 100, 90, 81], signal=[0, -1, -1, -1], allow_short=False)
    assert not returns.any()
    assert acc[k.A_TRADES] == 0


def test_reversal_trades_two_units():
    _, acc = run([100, 100, 101, 102, 103], signal=[0, 1, -1, -1, -1])
    assert acc[k.A_TURNOVER] == 3  # enter long (1), then long -> short (2)
    assert acc[k.A_TRADES] == 2


def test_stop_fills_first_when_stop_and_target_share_a_bar():
    # Long filled at 100 (open of bar 2), ATR 1, stop 2 ATR below (98), target 2 x 2 above (104).
    # Bar 2 trades from 97 to 105: both levels touched, the stop wins.
    closes = [100, 100, 101, 101]
    returns, acc = run(
        closes,
        opens=[100, 100, 100, 101],
        highs=[100, 100, 105, 101],
        lows=[100, 100, 97, 101],
        signal=[0, 1, 1, 1],
        stop_atr=2.0,
        risk_reward=2.0,
        slippage=0.0,
        commission=0.0,
    )
    assert returns[2] == pytest.approx(98 / 100 - 1, rel=1e-12)
    assert acc[k.A_TRADES] == 1
    assert acc[k.A_WORST] == pytest.approx(-0.02, rel=1e-12)
    # After a stop the side stays blocked while its entry condition holds: no re-entry.
    assert returns[3] == 0.0


def test_take_profit_and_a_gap_through_the_stop():
    target, _ = run(
        [100, 100, 102, 103],
        opens=[100, 100, 100, 102],
        highs=[100, 100, 104.5, 103],
        lows=[100, 100, 99, 102],
        signal=[0, 1, 1, 1],
        stop_atr=2.0,
        risk_reward=2.0,
        slippage=0.0,
        commission=0.0,
    )
    assert target[2] == pytest.approx(104 / 100 - 1, rel=1e-12)
    gap, _ = run(
        [100, 100, 100, 95],
        opens=[100, 100, 100, 96],
        highs=[100, 100, 100.5, 96],
        lows=[100, 100, 99.5, 94],
        signal=[0, 1, 1, 1],
        stop_atr=2.0,
        slippage=0.0,
        commission=0.0,
    )
    # Opened below the stop (98): filled at the open, worse than the stop.
    assert gap[3] == pytest.approx(96 / 100 - 1, rel=1e-12)


def test_a_fold_boundary_closes_positions_and_embargoes_entries():
    n = 10
    closes = np.linspace(100, 110, n)
    returns, acc = run(closes, signal=np.ones(n), folds=(0, 5))
    # Long from bar 1; the fold starting at bar 5 forces an exit at its open; the signal is
    # still long, so it re-enters at the open of bar 6 (embargo 0 in this helper).
    assert acc[k.A_TRADES] == 2
    assert acc[k.A_TURNOVER] == 3
    assert returns[5] != 0.0
    # The trade closed at the boundary was opened in sample: only the re-entry, held to the
    # last close, is an out-of-sample trade.
    oos = run.out_of_sample
    assert oos[k.A_TRADES] == 1
    reentry = (1 - COMMISSION) * closes[-1] / (closes[5] * (1 + SLIPPAGE)) - 1
    assert oos[k.A_BEST] == pytest.approx(reentry, rel=1e-12)
    assert oos[k.A_HOLDING] == n - 6


def test_entries_wait_out_the_embargo():
    n = 12
    closes = np.linspace(100, 110, n)
    returns, _ = run(closes, signal=np.ones(n), folds=(0, 5), embargo=3)
    # Out at the open of bar 5; no entry decided at the closes of bars 5-7 (embargo 3 bars), so
    # the next entry fills at the open of bar 9.
    assert not returns[6:9].any()
    assert returns[9] != 0.0
    assert run.positions[5:9].tolist() == [0, 0, 0, 0]
    without, _ = run(closes, signal=np.ones(n), folds=(0, 5))
    assert without[6] != 0.0


def test_entry_on_cross_enters_only_on_the_cross_event():
    nan = float("nan")
    closes = np.full(10, 100.0)
    # Beyond the entry level (0.5) from the first known spread (bar 1; bar 0's is unknown, as
    # in a moving average's warm-up): the default enters at once; a cross-based entry waits
    # for the spread to come from below the level (bar 5). Exits stay state-based: below the
    # exit level (0.2) at bar 4 closes the default's long.
    signal = [nan, 0.6, 0.6, 0.3, 0.1, 0.6, 0.3, 0.5, 0.6, 0.6]
    run(closes, signal=signal, exit_level=0.2)
    assert run.positions.tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 1, 1]
    run(closes, signal=signal, exit_level=0.2, entry_on_cross=True)
    assert run.positions.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    # Strictly: a spread that only touches the level on its way up never crossed it.
    run(closes[:5], signal=[nan, 0.1, 0.5, 0.6, 0.6], entry_on_cross=True)
    assert run.positions.tolist() == [0, 0, 0, 0, 0]
    # Shorts mirror it below -entry; a reversal is an entry, so it waits for the cross too.
    signal = [nan, -0.6, -0.6, 0.0, -0.6, 0.6, -0.6, -0.6]
    run(closes[:8], signal=signal)
    assert run.positions.tolist() == [0, 0, -1, -1, 0, -1, 1, -1]
    run(closes[:8], signal=signal, entry_on_cross=True)
    assert run.positions.tolist() == [0, 0, 0, 0, 0, -1, 1, -1]


@pytest.mark.parametrize("entry", [0.0, 0.25])
def test_entry_on_cross_is_backtesting_lib_crossover(entry):
    """Every entry happens exactly where backtesting.lib.crossover of the spread and the
    level says it crossed, ties included (the signals are multiples of 1/4: exact floats)."""
    rng = np.random.default_rng(4)
    signal = rng.integers(-3, 4, 400) / 4
    closes = np.full(len(signal), 100.0)
    run(closes, signal=signal, entry=entry, exit_level=0.0, entry_on_cross=True)
    positions = run.positions
    assert np.count_nonzero(np.diff(positions)) > 50
    up, down = np.full(len(signal), entry), np.full(len(signal), -entry)
    for t in range(len(signal) - 1):
        seen = slice(0, t + 1)
        crossed_up = crossover(signal[seen], up[seen])
        crossed_down = crossover(down[seen], signal[seen])
        assert (positions[t + 1] == 1 and positions[t] != 1) == (crossed_up and positions[t] != 1)
        assert (positions[t + 1] == -1 and positions[t] != -1) == (
            crossed_down and positions[t] != -1
        )


def tail_statistics(returns: np.ndarray, split: int) -> np.ndarray:
    """The kernel's 5th/95th percentiles and CVaR of ``returns``, all bars and from ``split``."""
    acc = np.zeros((2, k.ACCUMULATOR_COUNT))
    k._statistics(returns, split, acc[k.ALL_BARS], acc[k.OUT_OF_SAMPLE])
    k._order_statistics(returns, split, acc[k.ALL_BARS], acc[k.OUT_OF_SAMPLE])
    return acc[:, [k.A_Q05, k.A_Q95, k.A_CVAR]]


def expected_tail_statistics(r: np.ndarray) -> list[float]:
    tail = int(np.floor(0.05 * (len(r) - 1))) + 1
    return [np.quantile(r, 0.05), np.quantile(r, 0.95), np.sort(r)[:tail].mean()]


@pytest.mark.parametrize(
    "shape",
    ["fat tails", "mostly flat", "all flat", "ties", "one jump", "all negative", "tiny"],
)
def test_tail_statistics_are_exact_for_every_shape_of_returns(shape):
    rng = np.random.default_rng(11)
    n = 7 if shape == "tiny" else 20_000
    r = rng.standard_t(3, n) * 1e-3
    if shape == "mostly flat":
        r[rng.random(n) < 0.95] = 0.0
    elif shape == "all flat":
        r[:] = 0.0
    elif shape == "ties":
        r = np.round(r, 4)  # many repeated values, zeros among them
    elif shape == "one jump":
        r = rng.normal(0, 1e-4, n)
        r[n // 2] = -0.5  # one huge loss squeezes every other return into a few cells
    elif shape == "all negative":
        r = -np.abs(r) - 1e-6
    for split in (0, n // 3, n):
        got = tail_statistics(r, split)
        np.testing.assert_allclose(got[0], expected_tail_statistics(r), rtol=1e-12, atol=1e-18)
        if split < n:
            np.testing.assert_allclose(
                got[1], expected_tail_statistics(r[split:]), rtol=1e-12, atol=1e-18
            )
