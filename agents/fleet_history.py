"""The paper fleet's history as returns per period, sampled incrementally from the market.

The risk officer, the CEO and the strategy officer reason about returns over fixed periods (one
hour by default). Period k of a deployment holds the bars with times in (d + kP, d + (k + 1)P],
d the deployment time and P the period. Once the replay clock reaches a period's end,
:class:`FleetSampler` asks the market's GetFleet for that window, once, and keeps:

* the portfolio return: the fleet's ``total_return`` over the window, i.e. the return of fleet
  equity (allocation-weighted sector returns plus arb-missions, after costs);
* each sector's return: its ``roi`` (its strategies' equal-weighted, compounded returns);
* each strategy's return (``roi``) and the trades it opened in the period;
* fleet equity at the period's end.

Periods without bars (a closed market) are left out: zero returns for hours nobody could trade
would understate risk. A completed period never changes (the fleet is causal and an action takes
effect only after it executes), so each is fetched once. Everything is re-read when the
deployment changes or the clock moves back (a restarted market replays from its start). Only the
last ``max_periods`` periods are kept; the first catch-up fetches no more than those.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from market.fleet import FleetReport
from qtmesh.base.bars import NANOS_PER_YEAR

HOUR_NANOS = 3600 * 10**9


class FleetReader(Protocol):
    """What the officers read from the market (implemented by MarketClient)."""

    async def fleet(
        self, *, start_time: int | None = None, end_time: int | None = None, sector: str = ""
    ) -> FleetReport: ...


@dataclasses.dataclass(frozen=True, eq=False)
class FleetHistory:
    """Returns per completed period, oldest first, and the fleet as it stands at the clock."""

    period: int  # nanoseconds
    current: FleetReport  # from the deployment to the clock: allocations, exposures, positions
    sectors: tuple[str, ...]
    strategies: tuple[str, ...]
    next_period: int  # index of the first period not fetched yet
    end_times: np.ndarray  # (n,) end of each period kept
    portfolio: np.ndarray  # (n,)
    sector_returns: np.ndarray  # (n, K)
    strategy_returns: np.ndarray  # (n, S)
    strategy_trades: np.ndarray  # (n, S) trades opened in the period
    equity: np.ndarray  # (n,) fleet equity at each period's end

    @classmethod
    def empty(cls, current: FleetReport, period: int) -> FleetHistory:
        sectors = tuple(s.sector for s in current.sectors)
        strategies = tuple(s.strategy.id for s in current.strategies)
        return cls(
            period=period,
            current=current,
            sectors=sectors,
            strategies=strategies,
            next_period=0,
            end_times=np.zeros(0, dtype=np.int64),
            portfolio=np.zeros(0),
            sector_returns=np.zeros((0, len(sectors))),
            strategy_returns=np.zeros((0, len(strategies))),
            strategy_trades=np.zeros((0, len(strategies)), dtype=np.int64),
            equity=np.zeros(0),
        )

    @property
    def deployment_time(self) -> int:
        return self.current.deployment_time

    @property
    def clock_time(self) -> int:
        return self.current.clock_time

    @property
    def position(self) -> int:
        return self.current.position

    @property
    def observations(self) -> int:
        return int(self.portfolio.shape[0])

    @property
    def periods_per_year(self) -> float:
        return NANOS_PER_YEAR / self.period

    def period_end(self, k: int) -> int:
        return self.deployment_time + (k + 1) * self.period

    def completed_periods(self, clock_time: int) -> int:
        """How many periods of the deployment end at or before ``clock_time``."""
        return max(0, (clock_time - self.deployment_time) // self.period)

    def matches(self, current: FleetReport) -> bool:
        """Whether ``current`` continues this history (same deployment, clock not moved back)."""
        return (
            current.deployment_time == self.deployment_time
            and current.clock_time >= self.clock_time
            and tuple(s.sector for s in current.sectors) == self.sectors
            and tuple(s.strategy.id for s in current.strategies) == self.strategies
        )

    def start_equity(self) -> float:
        """Equity at the start of the first period kept (capital when nothing is kept)."""
        if self.observations == 0:
            return self.current.equity
        return float(self.equity[0] / (1 + self.portfolio[0]))

    def drawdown(self) -> float:
        """Fall of equity now from its highest value at the start or end of a period kept."""
        peak = max(self.start_equity(), float(np.max(self.equity, initial=0.0)))
        now = self.current.equity
        return max(0.0, 1 - now / peak) if peak > 0 else 0.0

    def sector_drawdowns(self) -> dict[str, float]:
        """Per sector: fall of its compounded period returns from their peak, at the last period."""
        if self.observations == 0:
            return {s: 0.0 for s in self.sectors}
        path = np.cumprod(1 + self.sector_returns, axis=0)
        peak = np.maximum(np.max(path, axis=0), 1.0)
        return {s: float(max(0.0, 1 - path[-1, k] / peak[k])) for k, s in enumerate(self.sectors)}

    def extended(
        self, current: FleetReport, reports: Sequence[tuple[int, FleetReport]], max_periods: int
    ) -> FleetHistory:
        """This history with the fetched periods ``(index, report)`` appended, the oldest beyond
        ``max_periods`` dropped, and ``current`` as the fleet at the clock."""
        kept = [(k, r) for k, r in reports if r.bar_count > 0]
        next_period = max([self.next_period, *(k + 1 for k, _ in reports)])
        end_times = np.array([self.period_end(k) for k, _ in kept], dtype=np.int64)
        portfolio = np.array([r.total_return for _, r in kept], dtype=float)
        sectors = np.array([[s.roi for s in r.sectors] for _, r in kept], dtype=float)
        strategies = np.array([[s.roi for s in r.strategies] for _, r in kept], dtype=float)
        trades = np.array([[s.trade_count for s in r.strategies] for _, r in kept], dtype=np.int64)
        equity = np.array([r.equity for _, r in kept], dtype=float)

        def join(old: np.ndarray, new: np.ndarray) -> np.ndarray:
            if new.size == 0:
                new = new.reshape((0, *old.shape[1:]))
            return np.concatenate([old, new])[-max_periods:]

        return dataclasses.replace(
            self,
            current=current,
            next_period=next_period,
            end_times=join(self.end_times, end_times),
            portfolio=join(self.portfolio, portfolio),
            sector_returns=join(self.sector_returns, sectors),
            strategy_returns=join(self.strategy_returns, strategies),
            strategy_trades=join(self.strategy_trades, trades),
            equity=join(self.equity, equity),
        )

    def last(self, periods: int) -> FleetHistory:
        """The same history keeping only its last ``periods`` periods."""
        if periods >= self.observations:
            return self
        return dataclasses.replace(
            self,
            end_times=self.end_times[-periods:],
            portfolio=self.portfolio[-periods:],
            sector_returns=self.sector_returns[-periods:],
            strategy_returns=self.strategy_returns[-periods:],
            strategy_trades=self.strategy_trades[-periods:],
            equity=self.equity[-periods:],
        )


class FleetSampler:
    """Keeps a :class:`FleetHistory` up to date with the market; not safe to update
    concurrently (one refresh task per agent calls :meth:`update`)."""

    def __init__(
        self, market: FleetReader, *, period: int, max_periods: int, concurrency: int = 8
    ) -> None:
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self._market = market
        self._period = period
        self._max_periods = max_periods
        self._concurrency = concurrency
        self.history: FleetHistory | None = None

    async def update(self) -> FleetHistory:
        """Reads the fleet at the clock and every period completed since the last update."""
        current = await self._market.fleet()
        history = self.history
        if history is None or not history.matches(current):
            history = FleetHistory.empty(current, self._period)
        complete = history.completed_periods(current.clock_time)
        first = max(history.next_period, complete - self._max_periods)
        fetched: list[tuple[int, FleetReport]] = []
        for start in range(first, complete, self._concurrency):
            chunk = range(start, min(start + self._concurrency, complete))
            reports = await asyncio.gather(*(self._window(history, k) for k in chunk))
            fetched += zip(chunk, reports, strict=True)
        history = history.extended(current, fetched, self._max_periods)
        self.history = history
        return history

    async def _window(self, history: FleetHistory, k: int) -> FleetReport:
        end = history.period_end(k)
        return await self._market.fleet(start_time=end - self._period + 1, end_time=end)
