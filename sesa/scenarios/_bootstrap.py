"""Seasonal block bootstrap of bars: forward paths stitched from blocks of history."""

from __future__ import annotations

import numpy as np

from qtmesh.base.bars import BarSeries, make_series
from qtmesh.base.errors import InvalidArgument
from sesa.scenarios._base import ScenarioGenerator

DAY_NANOS = 86_400 * 10**9


class BlockBootstrap(ScenarioGenerator):
    """Resamples blocks of ``block_size`` consecutive bars, each bar as its open, high, low and
    close relative to the previous close, and chains them from the last close of history.

    Blocks keep short-range dependence (volatility clustering, intraday structure). When bars
    divide a day evenly, each block is drawn from history at the same time of day as the place
    it fills ("seasonal"), so the diurnal volatility cycle and time-of-day filters stay
    meaningful on the paths.
    """

    def __init__(self, *, block_size: int = 60) -> None:
        if block_size < 1:
            raise InvalidArgument("block_size", "must be at least 1")
        self.block_size = block_size

    def generate(
        self, history: BarSeries, *, count: int, length: int, rng: np.random.Generator
    ) -> list[BarSeries]:
        n = len(history)
        if n < 2 * self.block_size + 1:
            raise InvalidArgument(
                "bars", f"{n} bars are too few to bootstrap blocks of {self.block_size}"
            )
        if count < 1 or length < 1:
            raise InvalidArgument("count", "count and length must be at least 1")
        previous = history.close[:-1]
        relative = (
            np.stack([history.open[1:], history.high[1:], history.low[1:], history.close[1:]])
            / previous
        )
        volume = history.volume[1:]
        spacing = int(np.median(np.diff(history.time)))
        period = DAY_NANOS // spacing if DAY_NANOS % spacing == 0 else 0
        # Source positions that may start a block (the whole block must lie in history).
        last_start = relative.shape[1] - self.block_size
        paths = []
        for _ in range(count):
            take = np.empty(length, dtype=np.int64)
            for first in range(0, length, self.block_size):
                if period:
                    # Same time of day as the bar being filled: first + n - 1 steps after bar 0.
                    phase = (first + relative.shape[1]) % period
                    candidates = np.arange(phase, last_start + 1, period)
                    start = int(candidates[rng.integers(len(candidates))]) if len(candidates) else 0
                else:
                    start = int(rng.integers(last_start + 1))
                size = min(self.block_size, length - first)
                take[first : first + size] = np.arange(start, start + size)
            growth = relative[:, take]
            close = history.close[-1] * np.cumprod(growth[3])
            base = np.concatenate([[history.close[-1]], close[:-1]])
            paths.append(
                make_series(
                    history.symbol,
                    history.sector,
                    time=history.time[-1] + spacing * np.arange(1, length + 1, dtype=np.int64),
                    open=base * growth[0],
                    high=base * growth[1],
                    low=base * growth[2],
                    close=close,
                    volume=volume[take],
                )
            )
        return paths
