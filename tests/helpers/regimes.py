"""A market whose regime switches: bars the world model's regime watcher reports a change on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from market.sources import save_bars
from qtmesh.base.bars import BarSeries, make_series

DAY = 1440
MINUTE = 60 * 10**9
T0 = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z
# One day per volatility of each bar's log return: volatile, calm, calm, volatile.
DAILY_VOLATILITY = (2e-3, 5e-4, 5e-4, 2e-3)
# Where a replay should start (MarketConfig.replay_start) to begin near the end of the second
# calm day, so the next twelve hours turn volatile.
BEFORE_THE_SWITCH = 0.74


def _series(symbol: str, sector: str, rng: np.random.Generator) -> BarSeries:
    returns = np.concatenate([rng.normal(0, v, DAY) for v in DAILY_VOLATILITY])
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    open_ = np.concatenate([[100.0], close[:-1]])
    n = close.shape[0]
    return make_series(
        symbol,
        sector,
        time=T0 + np.arange(n, dtype=np.int64) * MINUTE,
        open=open_,
        high=np.maximum(open_, close) * 1.0001,
        low=np.minimum(open_, close) * 0.9999,
        close=close,
        volume=np.full(n, 1000.0),
    )


def save_switching_market(path: Path) -> Path:
    """Three independent symbols in two sectors, one-minute bars over four days (see
    :data:`DAILY_VOLATILITY`), saved as a market data file at ``path``."""
    rng = np.random.default_rng(5)
    save_bars(
        [_series(s, sector, rng) for s, sector in [("AAA", "One"), ("BBB", "One"), ("CCC", "Two")]],
        path,
    )
    return path
