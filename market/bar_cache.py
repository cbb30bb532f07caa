"""The latest bars of each symbol, read from the market incrementally.

A follower that reads the same long window again and again (the world model refits its regime
models on the last 30 days every hour of market time) reads a window whole once, then only the
bars revealed since: from the last bar it holds on. That read must begin with the bar it holds
(same time, same close); if it does not, the market restarted or changed its data, and the window
is read whole again. A longer window than the one held is read whole too. Concurrent reads of one
symbol may both go to the market; the last one read is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from qtmesh.base.bars import BarSeries


class BarReader(Protocol):
    """What the cache reads (implemented by MarketClient)."""

    async def bars(
        self, symbol: str, *, start_time: int | None = None, lookback: int = 0
    ) -> BarSeries: ...


class BarCache:
    def __init__(self, market: BarReader, *, max_symbols: int = 256) -> None:
        self._market = market
        self._max = max_symbols
        self._held: OrderedDict[str, tuple[BarSeries, int]] = OrderedDict()

    async def latest(self, symbol: str, lookback: int) -> BarSeries:
        """The last ``lookback`` bars of ``symbol`` up to the market's clock."""
        held = self._held.get(symbol)
        series = None
        if held is not None and held[1] >= lookback and len(held[0]):
            cached = held[0]
            tail = await self._market.bars(symbol, start_time=int(cached.time[-1]))
            if len(tail) and tail.time[0] == cached.time[-1] and tail.close[0] == cached.close[-1]:
                merged = cached.append(tail.slice(1, len(tail)))
                series = merged.slice(max(0, len(merged) - held[1]), len(merged))
                lookback_held = held[1]
        if series is None:
            series = await self._market.bars(symbol, lookback=lookback)
            lookback_held = lookback
        self._held[symbol] = (series, lookback_held)
        self._held.move_to_end(symbol)
        while len(self._held) > self._max:
            self._held.popitem(last=False)
        return series.slice(max(0, len(series) - lookback), len(series))
