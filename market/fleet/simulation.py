"""The fleet simulated on the replay's bars under the accounting stated in :mod:`market.fleet`:
:class:`Backtester` runs the backtest engine's kernel per symbol, :func:`simulate` turns the
backtests, the allocations and the arb-missions of a :class:`~market.fleet.state.FleetState`
into per-bar arrays (a :class:`FleetRun`), and the run computes the reports of any window and
pages through its trades from them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from backtest.evaluation import Backtest, EvaluationSettings, Evaluator
from backtest.indicators import BarData
from market.fleet.report import (
    FleetReport,
    MissionBook,
    SectorBook,
    StrategyBook,
    Trade,
    TradeQuery,
)
from market.fleet.setup import FleetSetup
from market.fleet.state import FleetState
from qtmesh.base.bars import NANOS_PER_YEAR, BarSeries
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument


class Backtester:
    """Backtests of the deployed strategies per symbol, reused while the symbol's bars are
    unchanged. Kernel and indicators are causal, so a longer run never changes earlier bars."""

    def __init__(self, setup: FleetSetup, *, evaluator: Evaluator | None = None) -> None:
        self._setup = setup
        self._evaluator = evaluator or Evaluator(settings=EvaluationSettings(costs=setup.costs))
        self._cache: dict[str, tuple[int, int, Backtest]] = {}

    def run(self, symbol: str, series: BarSeries) -> tuple[int, Backtest]:
        """(index of the first bar run, backtest of the symbol's strategies in setup order)."""
        n = len(series)
        cached = self._cache.get(symbol)
        if cached is not None and cached[1] == n:
            return cached[0], cached[2]
        deployed = int(np.searchsorted(series.time, self._setup.deployment_time, "right"))
        first = max(0, deployed - self._setup.warmup_bars)
        genomes = [s.genome for s in self._setup.strategies if s.symbol == symbol]
        result = self._evaluator.backtest(genomes, BarData(series.slice(first, n)))
        self._cache[symbol] = (first, n, result)
        return first, result


@dataclasses.dataclass(frozen=True, eq=False)
class FleetRun:
    """The fleet simulated up to the clock: per-bar arrays over the bars after deployment."""

    state: FleetState
    clock_time: int
    position: int
    times: np.ndarray  # (T,) bar times after the deployment, up to the clock
    positions: np.ndarray  # (S, T) held at each close
    log_growth: np.ndarray  # (S, T+1) cumulative log(1 + r_i), from 0
    contribution: np.ndarray  # (S, T+1) cumulative E(t-1) w_i(t) r_i(t), from 0
    sector_returns: np.ndarray  # (K, T)
    weights: np.ndarray  # (K, T) allocations in effect
    symbols: tuple[str, ...]  # the rows of ``closes``
    closes: np.ndarray  # (Y, T+1) closes per symbol, column 0 before the first bar
    mission_terms: np.ndarray  # (M, T) a * spread return less costs
    equity: np.ndarray  # (T+1,)
    bars_per_year: float
    trades: _TradeTable

    @property
    def setup(self) -> FleetSetup:
        return self.state.setup

    def window(self, start_time: int | None, end_time: int | None) -> tuple[int, int]:
        first = 0 if start_time is None else int(np.searchsorted(self.times, start_time, "left"))
        stop = (
            self.times.size
            if end_time is None
            else int(np.searchsorted(self.times, end_time, "right"))
        )
        return first, max(first, stop)

    def report(
        self, *, start_time: int | None = None, end_time: int | None = None, sector: str = ""
    ) -> FleetReport:
        setup = self.setup
        i0, i1 = self.window(start_time, end_time)
        bars = i1 - i0
        last = i1 - 1
        at = int(self.times[last]) if bars else min(end_time or self.clock_time, self.clock_time)
        # Held from the end of the window on: changes executed at its last bar count.
        allocations = self.state.allocations_at(at + 1)
        trade_counts = self.trades.entries_per_strategy(i0, i1, len(setup.strategies))
        sectors = []
        strategies = []
        for k, name in enumerate(setup.sectors):
            if sector and name != sector:
                continue
            members = setup.strategies_of(name)
            r = self.sector_returns[k, i0:i1]
            path = np.cumprod(1 + r)
            peak = np.maximum.accumulate(np.concatenate([[1.0], path]))[1:]
            symbols = [self._symbol_index(s) for s in setup.sector_symbols[name]]
            bench = float(np.mean(self.closes[symbols, i1] / self.closes[symbols, i0] - 1))
            held = self.positions[members, last] if bars else np.zeros(len(members))
            weight = allocations[name]
            sectors.append(
                SectorBook(
                    sector=name,
                    allocation=weight,
                    strategy_count=len(members),
                    roi=float(path[-1] - 1) if bars else 0.0,
                    pnl=float(
                        np.sum(self.contribution[members, i1] - self.contribution[members, i0])
                    ),
                    benchmark_return=bench,
                    volatility=float(np.std(r, ddof=1) * math.sqrt(self.bars_per_year))
                    if bars >= 2
                    else 0.0,
                    max_drawdown=float(np.max(1 - path / peak)) if bars else 0.0,
                    trade_count=int(trade_counts[members].sum()),
                    gross_exposure=float(weight * np.mean(np.abs(held))) if members else 0.0,
                    net_exposure=float(weight * np.mean(held)) if members else 0.0,
                )
            )
            for i in members:
                strategies.append(
                    StrategyBook(
                        strategy=setup.strategies[i],
                        weight=weight / len(members),
                        position=int(held[members.index(i)]),
                        roi=float(math.expm1(self.log_growth[i, i1] - self.log_growth[i, i0])),
                        pnl=float(self.contribution[i, i1] - self.contribution[i, i0]),
                        trade_count=int(trade_counts[i]),
                    )
                )
        missions = []
        for m, mission in enumerate(self.state.missions):
            if sector and sector not in (mission.long_sector, mission.short_sector):
                continue
            terms = self.mission_terms[m, i0:i1]
            missions.append(
                MissionBook(
                    mission=mission,
                    active=mission.open_time <= at < mission.close_time,
                    roi=float(np.prod(1 + terms / mission.allocation) - 1),
                    pnl=float(np.sum(self.equity[i0:i1] * terms)),
                )
            )
        start_equity, end_equity = float(self.equity[i0]), float(self.equity[i1])
        return FleetReport(
            deployment_time=setup.deployment_time,
            clock_time=self.clock_time,
            position=self.position,
            start_time=int(self.times[i0]) if bars else None,
            end_time=int(self.times[last]) if bars else None,
            bar_count=bars,
            capital=setup.capital,
            equity=end_equity,
            total_return=end_equity / start_equity - 1,
            pnl=end_equity - start_equity,
            sectors=tuple(sectors),
            strategies=tuple(strategies),
            missions=tuple(missions),
            changes=self.state.changes,
        )

    def list_trades(self, query: TradeQuery, limit: int) -> tuple[list[Trade], bool]:
        """Trades matching ``query``, ordered by (entry time, strategy id); True if more."""
        setup = self.setup
        table = self.trades
        mask = np.ones(table.size, dtype=bool)
        if query.sector:
            members = np.array(setup.strategies_of(query.sector), dtype=np.int64)
            mask &= np.isin(table.strategy, members)
        if query.strategy_id:
            mask &= table.strategy == self._strategy_index(query.strategy_id)
        entry_times = self.times[table.entry] if table.size else np.zeros(0, dtype=np.int64)
        if query.start_time is not None:
            mask &= entry_times >= query.start_time
        if query.end_time is not None:
            mask &= entry_times <= query.end_time
        if query.after is not None:
            time, strategy_id = query.after
            rank = table.rank[table.strategy]
            after_rank = table.rank_of(strategy_id)
            mask &= (entry_times > time) | ((entry_times == time) & (rank > after_rank))
        chosen = np.flatnonzero(mask)
        page = chosen[:limit]
        return [self._trade(int(j)) for j in page], chosen.size > limit

    def _trade(self, j: int) -> Trade:
        t = self.trades
        strategy = self.setup.strategies[t.strategy[j]]
        start, end = int(t.start[j]), int(t.end[j])
        i = int(t.strategy[j])
        value = 0.0
        pnl = 0.0
        if start <= end:
            value = math.expm1(self.log_growth[i, end + 1] - self.log_growth[i, start])
            pnl = float(self.contribution[i, end + 1] - self.contribution[i, start])
        exit_index = int(t.exit[j])
        entry_index = int(t.entry[j])
        return Trade(
            strategy_id=strategy.id,
            sector=strategy.sector,
            symbol=strategy.symbol,
            side=int(t.side[j]),
            entry_time=int(self.times[entry_index]),
            exit_time=int(self.times[exit_index]) if exit_index >= 0 else None,
            bar_count=(exit_index if exit_index >= 0 else self.times.size) - entry_index,
            return_fraction=float(value),
            pnl=pnl,
        )

    def _symbol_index(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def _strategy_index(self, strategy_id: str) -> int:
        for i, s in enumerate(self.setup.strategies):
            if s.id == strategy_id:
                return i
        raise InvalidArgument("strategy_id", f"unknown strategy {strategy_id!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class _TradeTable:
    """Every trade as columns, ordered by (entry bar, strategy id)."""

    strategy: np.ndarray
    entry: np.ndarray
    exit: np.ndarray  # -1 while open
    side: np.ndarray
    start: np.ndarray  # first and last bar whose return belongs to the trade
    end: np.ndarray
    rank: np.ndarray  # rank of each strategy's id among all ids
    ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return int(self.strategy.size)

    def rank_of(self, strategy_id: str) -> int:
        """Rank of ``strategy_id`` among the ids (fractional between two ids)."""
        ordered = sorted(self.ids)
        return int(np.searchsorted(np.array(ordered), strategy_id, "right")) - 1

    def entries_per_strategy(self, first: int, stop: int, count: int) -> np.ndarray:
        inside = (self.entry >= first) & (self.entry < stop)
        return np.bincount(self.strategy[inside], minlength=count)

    @classmethod
    def of(cls, positions: np.ndarray, ids: Sequence[str]) -> _TradeTable:
        bars = positions.shape[1]
        previous = np.zeros_like(positions)
        previous[:, 1:] = positions[:, :-1]
        changed = positions != previous
        rows, entries = np.nonzero(changed & (positions != 0))
        flat_changes = np.flatnonzero(changed)
        flat_entries = rows * bars + entries
        following = np.searchsorted(flat_changes, flat_entries, "right")
        exits = np.full(entries.size, -1, dtype=np.int64)
        has_next = following < flat_changes.size
        candidate = np.where(
            has_next, flat_changes[np.minimum(following, flat_changes.size - 1)], 0
        )
        same_row = has_next & (candidate // max(bars, 1) == rows)
        exits[same_row] = candidate[same_row] % bars
        reversal = previous[rows, entries] != 0
        start = entries + reversal.astype(np.int64)
        end = np.where(exits >= 0, exits, bars - 1)
        rank = np.argsort(np.argsort(np.array(ids))) if ids else np.zeros(0, dtype=np.int64)
        order = np.lexsort((rank[rows], entries)) if rows.size else np.zeros(0, dtype=np.int64)
        return cls(
            strategy=rows[order].astype(np.int64),
            entry=entries[order].astype(np.int64),
            exit=exits[order],
            side=positions[rows, entries][order].astype(np.int64),
            start=start[order],
            end=end[order],
            rank=rank,
            ids=tuple(ids),
        )


def simulate(
    state: FleetState,
    series: Mapping[str, BarSeries],
    *,
    clock_time: int,
    position: int = 0,
    backtester: Backtester,
    token: CancelToken | None = None,
) -> FleetRun:
    """The fleet over the bars after its deployment up to ``clock_time`` (the replay's
    ``position``); ``series`` holds each deployed symbol's bars up to the clock."""
    setup = state.setup
    symbols = sorted({s.symbol for s in setup.strategies})
    after = [
        s.time[np.searchsorted(s.time, setup.deployment_time, "right") :]
        for s in (series[y] for y in symbols)
    ]
    times = np.unique(np.concatenate(after)) if after else np.zeros(0, dtype=np.int64)
    times = times[times <= clock_time]
    bars = times.size
    returns = np.zeros((len(setup.strategies), bars))
    positions = np.zeros((len(setup.strategies), bars), dtype=np.int8)
    closes = np.empty((len(symbols), bars + 1))
    opens = np.empty((len(symbols), bars))
    for y, symbol in enumerate(symbols):
        if token is not None:
            token.raise_if_cancelled()
        bars_of = series[symbol]
        first, backtest = backtester.run(symbol, bars_of)
        index = np.searchsorted(bars_of.time, times, "left")
        present = (index < len(bars_of)) & (
            bars_of.time[np.minimum(index, len(bars_of) - 1)] == times
        )
        # The last bar at or before each time: prices carry over the symbol's gaps.
        carried = np.searchsorted(bars_of.time, times, "right") - 1
        before = int(np.searchsorted(bars_of.time, setup.deployment_time, "right")) - 1
        base = bars_of.close[before] if before >= 0 else bars_of.open[0]
        closes[y, 0] = base
        closes[y, 1:] = np.where(carried >= 0, bars_of.close[np.maximum(carried, 0)], base)
        opens[y] = np.where(
            present, bars_of.open[np.minimum(index, len(bars_of) - 1)], closes[y, :-1]
        )
        rows = [i for i, s in enumerate(setup.strategies) if s.symbol == symbol]
        local = index[present] - first
        for j, i in enumerate(rows):
            returns[i, present] = backtest.returns[j, local]
            held = np.zeros(bars, dtype=np.int8)
            held[present] = backtest.positions[j, local]
            # A symbol without a bar keeps its position through the gap.
            positions[i] = _carry(held, present)
    sector_returns = np.zeros((len(setup.sectors), bars))
    weights = np.empty((len(setup.sectors), bars))
    for k, sector in enumerate(setup.sectors):
        members = setup.strategies_of(sector)
        if members:
            sector_returns[k] = returns[members].mean(axis=0)
        weights[k] = setup.initial_allocations[sector]
    for change in state.changes:
        effective = times > change.time
        for k, sector in enumerate(setup.sectors):
            weights[k, effective] = change.allocations[sector]
    mission_terms = _mission_terms(state, times, closes, opens, symbols)
    growth = np.sum(weights * sector_returns, axis=0) + mission_terms.sum(axis=0)
    equity = setup.capital * np.concatenate([[1.0], np.cumprod(1 + growth)])
    sector_of = np.array([setup.sectors.index(s.sector) for s in setup.strategies], dtype=np.int64)
    counts = np.array([len(setup.strategies_of(s.sector)) for s in setup.strategies])
    strategy_weights = weights[sector_of] / counts[:, None] if len(sector_of) else weights[:0]
    contribution = np.zeros((len(setup.strategies), bars + 1))
    np.cumsum(equity[:-1] * strategy_weights * returns, axis=1, out=contribution[:, 1:])
    log_growth = np.zeros((len(setup.strategies), bars + 1))
    np.cumsum(np.log1p(np.maximum(returns, -1 + 1e-12)), axis=1, out=log_growth[:, 1:])
    spacing = float(np.median(np.diff(times))) if bars > 1 else 60e9
    return FleetRun(
        state=state,
        clock_time=clock_time,
        position=position,
        times=times,
        positions=positions,
        log_growth=log_growth,
        contribution=contribution,
        sector_returns=sector_returns,
        weights=weights,
        symbols=tuple(symbols),
        closes=closes,
        mission_terms=mission_terms,
        equity=equity,
        bars_per_year=NANOS_PER_YEAR / spacing,
        trades=_TradeTable.of(positions, [s.id for s in setup.strategies]),
    )


def _carry(held: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``held`` with the values at bars where ``present`` is False replaced by the last known."""
    if present.all():
        return held
    index = np.where(present, np.arange(held.size), -1)
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, held[np.maximum(index, 0)], 0).astype(np.int8)


def _mission_terms(
    state: FleetState,
    times: np.ndarray,
    closes: np.ndarray,
    opens: np.ndarray,
    symbols: list[str],
) -> np.ndarray:
    setup = state.setup
    missions = state.missions
    terms = np.zeros((len(missions), times.size))
    if not missions or times.size == 0:
        return terms
    cost = 2 * (setup.costs.commission_bps + setup.costs.slippage_bps) / 1e4

    def basket(sector: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [symbols.index(y) for y in setup.sector_symbols[sector]]
        held = np.mean(closes[rows, 1:] / closes[rows, :-1], axis=0) - 1
        entered = np.mean(closes[rows, 1:] / opens[rows], axis=0) - 1
        return held, entered

    for m, mission in enumerate(missions):
        inside = np.flatnonzero((times > mission.open_time) & (times <= mission.close_time))
        if inside.size == 0:
            continue
        long_held, long_entered = basket(mission.long_sector)
        short_held, short_entered = basket(mission.short_sector)
        spread = long_held - short_held
        spread[inside[0]] = long_entered[inside[0]] - short_entered[inside[0]]
        terms[m, inside] = mission.allocation * spread[inside]
        terms[m, inside[0]] -= mission.allocation * cost
        # Booked on the last bar inside only when it lies on the close time: before a later bar
        # exists nothing says it was the last, and charging it then would restate it.
        exit_bar = int(np.searchsorted(times, mission.close_time, "left"))
        if exit_bar < times.size:
            terms[m, exit_bar] -= mission.allocation * cost
    return terms
