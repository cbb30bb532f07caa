"""The bar cache reads a window whole once, then only what the market revealed since; a market
that restarted or changed its bars is read whole again."""

from __future__ import annotations

import numpy as np

from market.bar_cache import BarCache
from qtmesh.base.bars import BarSeries, make_series

MINUTE = 60 * 10**9


def series(closes: np.ndarray, start: int = 0) -> BarSeries:
    n = closes.shape[0]
    return make_series(
        "ORBT",
        "Tech",
        time=start + np.arange(n, dtype=np.int64) * MINUTE,
        open=closes,
        high=closes,
        low=closes,
        close=closes,
        volume=np.ones(n),
    )


class Market:
    """The market's GetBars over ``bars`` up to ``clock`` (an index), recording each read."""

    def __init__(self, bars: BarSeries, clock: int) -> None:
        self.all, self.clock, self.reads = bars, clock, []

    async def bars(self, symbol, *, start_time=None, lookback=0):
        visible = self.all.slice(0, self.clock)
        if lookback:
            self.reads.append(("lookback", lookback))
            return visible.slice(self.clock - lookback, self.clock)
        first = int(np.searchsorted(visible.time, start_time, "left"))
        self.reads.append(("from", self.clock - first))
        return visible.slice(first, self.clock)


async def test_later_reads_fetch_only_the_new_bars_and_equal_a_whole_read():
    closes = np.linspace(100, 200, 1_000)
    market = Market(series(closes), clock=500)
    cache = BarCache(market)
    first = await cache.latest("ORBT", 300)
    market.clock = 560
    second = await cache.latest("ORBT", 300)
    assert market.reads == [("lookback", 300), ("from", 61)]  # the last bar held, then 60 new
    np.testing.assert_array_equal(second.close, closes[260:560])
    np.testing.assert_array_equal(second.time, market.all.time[260:560])
    assert first.close[-1] == closes[499]
    shorter = await cache.latest("ORBT", 100)
    np.testing.assert_array_equal(shorter.close, closes[460:560])


async def test_a_longer_window_or_changed_bars_are_read_whole():
    closes = np.linspace(100, 200, 1_000)
    market = Market(series(closes), clock=500)
    cache = BarCache(market)
    await cache.latest("ORBT", 100)
    await cache.latest("ORBT", 200)
    assert market.reads[-1] == ("lookback", 200)
    # The market restarted on other data: the bar held is not there any more.
    market.all = series(closes * 1.5)
    again = await cache.latest("ORBT", 200)
    assert market.reads[-2:] == [("from", 1), ("lookback", 200)]
    np.testing.assert_array_equal(again.close, closes[300:500] * 1.5)
