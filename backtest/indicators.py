"""Bars prepared for evaluation, with every indicator computed once per distinct parameter.

Strategies of a population share indicators (a moving average of 50 bars is computed once, for
however many genomes use it); :class:`BarData` keeps them as rows of one table that the kernel
reads by row index, so nothing is copied per evaluation.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np

from qtmesh.base.bars import BarSeries, observed_bars_per_year, spacing_seconds
from qtmesh.base.errors import InvalidArgument

# Half-lives of the EWMA realised volatility the volatility filter reads (one hour of bars, at
# least 10) and of the slow reference the Q-learning trader compares it with (one day of bars,
# at least 5 volatility half-lives). In time, so a data set's spacing sets them: 60 and 1,440
# on minute bars, 10 and 50 on hourly or daily bars.
VOLATILITY_HALF_LIFE_SECONDS = 3_600.0
VOLATILITY_HALF_LIFE_MIN_BARS = 10
REFERENCE_HALF_LIFE_SECONDS = 86_400.0
REFERENCE_HALF_LIFE_MIN_VOLATILITY_HALF_LIVES = 5


class BarData:
    """One symbol's bars plus a growing table of indicator rows (``row(kind, period)``).

    Two figures come from the bars' own calendar unless given: ``bars_per_year``, which
    annualises every metric (:func:`~qtmesh.base.bars.observed_bars_per_year`: bars observed per
    year of the span), and ``spacing`` (seconds, the median gap), which turns the durations set
    in time (half-lives, the evaluation's embargo) into bars."""

    def __init__(
        self,
        series: BarSeries,
        *,
        bars_per_year: float | None = None,
        spacing: float | None = None,
    ) -> None:
        self.series = series
        self.symbol = series.symbol
        self.sector = series.sector
        self.time = series.time
        self.open = np.ascontiguousarray(series.open)
        self.high = np.ascontiguousarray(series.high)
        self.low = np.ascontiguousarray(series.low)
        self.close = np.ascontiguousarray(series.close)
        self.n = len(series)
        if bars_per_year is None:
            bars_per_year = observed_bars_per_year(self.time)
        if not math.isfinite(bars_per_year) or bars_per_year <= 0:
            raise InvalidArgument("bars_per_year", f"{bars_per_year} is not a positive number")
        self.bars_per_year = float(bars_per_year)
        self.spacing = float(spacing) if spacing is not None else spacing_seconds(self.time)
        self.volatility_half_life = max(
            VOLATILITY_HALF_LIFE_MIN_BARS, self.bars_in(VOLATILITY_HALF_LIFE_SECONDS)
        )
        self.reference_half_life = max(
            REFERENCE_HALF_LIFE_MIN_VOLATILITY_HALF_LIVES * self.volatility_half_life,
            self.bars_in(REFERENCE_HALF_LIFE_SECONDS),
        )
        self.hour = ((self.time // 10**9) % 86_400 / 3600).astype(np.float64)
        self.volatility = ewma_volatility(self.close, self.volatility_half_life, self.bars_per_year)
        self._table = np.empty((16, self.n))
        self._rows: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def bars_in(self, seconds: float) -> int:
        """The bars that span ``seconds`` at the data's spacing, rounded up (0 for none)."""
        return math.ceil(seconds / self.spacing - 1e-9) if seconds > 0 else 0

    @property
    def table(self) -> np.ndarray:
        return self._table

    def row(self, kind: str, period: int) -> int:
        """Row index of indicator ``kind`` with ``period``, computing it on first use."""
        key = (kind, int(period))
        with self._lock:
            found = self._rows.get(key)
            if found is not None:
                return found
            index = len(self._rows)
            if index == self._table.shape[0]:
                grown = np.empty((2 * index, self.n))
                grown[:index] = self._table
                self._table = grown
            self._table[index] = self._compute(kind, int(period))
            self._rows[key] = index
            return index

    def _compute(self, kind: str, period: int) -> np.ndarray:
        match kind:
            case "sma":
                return rolling_mean(self.close, period)
            case "zscore":
                return rolling_zscore(self.close, period)
            case "rsi":
                return wilder_rsi(self.close, period)
            case "atr":
                return wilder_atr(self.high, self.low, self.close, period)
            case "prior_high":
                return prior_extreme(self.high, period, True)
            case "prior_low":
                return prior_extreme(self.low, period, False)
            case "volatility_reference":
                return ewma_volatility(self.close, period, self.bars_per_year)
        raise ValueError(f"unknown indicator {kind!r}")


@numba.njit(cache=True)
def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values including the current one; NaN before that."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    origin = x[0]
    total = 0.0
    for t in range(n):
        total += x[t] - origin
        if t >= window:
            total -= x[t - window] - origin
        if t >= window - 1:
            out[t] = origin + total / window
    return out


@numba.njit(cache=True)
def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x - rolling mean) / rolling population std over ``window`` bars (Bollinger z-score)."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    origin = x[0]
    total = 0.0
    squares = 0.0
    for t in range(n):
        d = x[t] - origin
        total += d
        squares += d * d
        if t >= window:
            old = x[t - window] - origin
            total -= old
            squares -= old * old
        if t >= window - 1:
            mean = total / window
            variance = squares / window - mean * mean
            if variance > 1e-18 * (1.0 + mean * mean):
                out[t] = (d - mean) / np.sqrt(variance)
            else:
                out[t] = 0.0
    return out


@numba.njit(cache=True)
def wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI: average gain and loss smoothed with alpha = 1/period, seeded by a mean."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    gain = 0.0
    loss = 0.0
    for t in range(1, period + 1):
        change = close[t] - close[t - 1]
        if change > 0:
            gain += change
        else:
            loss -= change
    gain /= period
    loss /= period
    for t in range(period, n):
        if t > period:
            change = close[t] - close[t - 1]
            gain = (gain * (period - 1) + max(change, 0.0)) / period
            loss = (loss * (period - 1) + max(-change, 0.0)) / period
        out[t] = 100.0 if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
    return out


@numba.njit(cache=True)
def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's average true range."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    if n <= period:
        return out
    total = 0.0
    for t in range(1, period + 1):
        total += max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
    value = total / period
    out[period] = value
    for t in range(period + 1, n):
        true_range = max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1]))
        value = (value * (period - 1) + true_range) / period
        out[t] = value
    return out


@numba.njit(cache=True)
def prior_extreme(x: np.ndarray, window: int, maximum: bool) -> np.ndarray:
    """Max (or min) of the ``window`` bars before each bar, excluding it (a Donchian channel)."""
    n = x.shape[0]
    out = np.full(n, np.nan)
    queue = np.empty(n, dtype=np.int64)  # monotonic deque of indices
    head = 0
    tail = 0
    for t in range(n):
        if t >= window:
            while head < tail and queue[head] < t - window:
                head += 1
            out[t] = x[queue[head]]
        while head < tail and (
            (x[queue[tail - 1]] <= x[t]) if maximum else (x[queue[tail - 1]] >= x[t])
        ):
            tail -= 1
        queue[tail] = t
        tail += 1
    return out


@numba.njit(cache=True)
def ewma_volatility(close: np.ndarray, half_life: int, bars_per_year: float) -> np.ndarray:
    """Annualised EWMA volatility of log returns (alpha from the half-life), NaN on bar 0."""
    n = close.shape[0]
    out = np.full(n, np.nan)
    alpha = 1.0 - 0.5 ** (1.0 / half_life)
    variance = 0.0
    for t in range(1, n):
        r = np.log(close[t] / close[t - 1])
        variance = r * r if t == 1 else (1 - alpha) * variance + alpha * r * r
        if t >= half_life:
            out[t] = np.sqrt(variance * bars_per_year)
    return out
