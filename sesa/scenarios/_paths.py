"""Bars from paths of cumulative log returns: the world model's scenarios as series SESA's kernel
evaluates (fills, ATR, channels and the time-of-day filter read every column)."""

from __future__ import annotations

import numpy as np

from qtmesh.base.bars import BarSeries, make_series
from qtmesh.base.errors import InvalidArgument

DAY_NANOS = 86_400 * 10**9


def series_from_log_returns(
    history: BarSeries, paths: np.ndarray, *, rng: np.random.Generator
) -> list[BarSeries]:
    """One series per row of ``paths`` (``paths[i, t]``: the log of bar ``t``'s close over the
    last close of ``history``), continuing ``history`` at its bar spacing.

    - close: the last close of history times ``exp(path)``;
    - open: the previous close (the first bar's: history's last close);
    - high and low: the larger and smaller of open and close, stretched by the wicks of a bar of
      history (its high over the larger of its open and close, its low over the smaller) drawn
      at the same time of day when bars divide a day evenly, else anywhere, so intrabar ranges
      (stops, ATR, channels) keep history's size and intraday profile;
    - volume: that same history bar's.
    """
    paths = np.asarray(paths, dtype=np.float64)
    if paths.ndim != 2 or paths.shape[1] < 1:
        raise InvalidArgument("paths", f"expected num_paths x horizon values, got {paths.shape}")
    if not np.all(np.isfinite(paths)):
        raise InvalidArgument("paths", "a path holds a value that is not a finite number")
    n = len(history)
    if n < 2:
        raise InvalidArgument("bars", f"{n} bars of history are too few to continue")
    length = paths.shape[1]
    body_high = np.maximum(history.open, history.close)
    body_low = np.minimum(history.open, history.close)
    upper = history.high / body_high  # >= 1 for valid bars
    lower = history.low / body_low  # <= 1
    spacing = int(np.median(np.diff(history.time)))
    period = DAY_NANOS // spacing if spacing > 0 and DAY_NANOS % spacing == 0 else 0
    times = history.time[-1] + spacing * np.arange(1, length + 1, dtype=np.int64)
    last = float(history.close[-1])
    series = []
    for path in paths:
        close = last * np.exp(path)
        open_ = np.concatenate([[last], close[:-1]])
        source = _sources(n, length, period, rng)
        series.append(
            make_series(
                history.symbol,
                history.sector,
                time=times,
                open=open_,
                high=np.maximum(open_, close) * upper[source],
                low=np.minimum(open_, close) * lower[source],
                close=close,
                volume=history.volume[source],
            )
        )
    return series


def _sources(n: int, length: int, period: int, rng: np.random.Generator) -> np.ndarray:
    """For each bar of a path, the history bar whose wicks and volume it takes: one at the same
    position in the day (bar ``t`` of the path is position ``n + t`` of history continued)."""
    if not period or n < period:
        return rng.integers(n, size=length)
    phase = (n + np.arange(length)) % period
    # History positions phase, phase + period, ... below n: how many there are of each phase.
    count = (n - 1 - phase) // period + 1
    return phase + period * (rng.random(length) * count).astype(np.int64)
