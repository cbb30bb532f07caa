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
from backtest.metrics import expected_max_sharpe, probabilistic_sharpe, sharpe_null_floor
from market.fleet import book as books
from market.fleet.book import DEPLOYMENT, BookEntry
from market.fleet.report import (
    EquitySample,
    FleetReport,
    MissionBook,
    SectorBook,
    SectorMark,
    StageRecord,
    StrategyBook,
    Trade,
    TradeQuery,
)
from market.fleet.setup import DeployedStrategy, FleetSetup
from market.fleet.state import PORTFOLIO, FleetState
from qtmesh.base.bars import BarSeries, observed_bars_per_year, spacing_seconds
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyGenome


class Backtester:
    """Backtests of the book's strategies per symbol, over every bar the symbol has, reused while
    those bars and the symbol's strategies are unchanged.

    Kernel and indicators are causal: a bar's figures depend on that bar and the ones before it
    only, so a run over bars the clock has not reached yet changes none of the earlier ones, and
    :func:`simulate` reads nothing after the clock. That is why the market backtests each
    symbol once over all its bars instead of again over the visible ones after every advance
    (tests/market/test_fleet_domain.py checks both agree). Annualisation and the durations set
    in time (the volatility filter's) use the calendar of the warm-up before the deployment, so
    they never change once the fleet is deployed. A strategy added later is backtested from the
    same warm-up as the deployed ones: it takes its signal's position over as it stands when it
    joins."""

    def __init__(self, setup: FleetSetup, *, evaluator: Evaluator | None = None) -> None:
        self._setup = setup
        self._evaluator = evaluator or Evaluator(settings=EvaluationSettings(costs=setup.costs))
        self._cache: dict[str, tuple[int, int, tuple[str, ...], Backtest]] = {}

    def warmup(self, series: BarSeries) -> tuple[int, int]:
        """(first bar of the warm-up, first bar after the deployment) of ``series``."""
        deployed = int(np.searchsorted(series.time, self._setup.deployment_time, "right"))
        return max(0, deployed - self._setup.warmup_bars), deployed

    def run(
        self, symbol: str, series: BarSeries, genomes: Sequence[StrategyGenome]
    ) -> tuple[int, Backtest]:
        """(index of the first bar run, backtest of ``genomes`` in their order over ``series``
        from there)."""
        n = len(series)
        ids = tuple(g.id for g in genomes)
        cached = self._cache.get(symbol)
        if cached is not None and cached[1] == n and cached[2] == ids:
            return cached[0], cached[3]
        first, deployed = self.warmup(series)
        warmup = series.time[first:deployed]
        data = BarData(
            series.slice(first, n),
            bars_per_year=observed_bars_per_year(warmup) if warmup.size > 1 else None,
            spacing=spacing_seconds(warmup) if warmup.size > 1 else None,
        )
        result = self._evaluator.backtest(list(genomes), data)
        self._cache[symbol] = (first, n, ids, result)
        return first, result


@dataclasses.dataclass(frozen=True, eq=False)
class FleetRun:
    """The fleet simulated up to the clock: per-bar arrays over the bars after deployment."""

    state: FleetState
    clock_time: int
    position: int
    entries: tuple[BookEntry, ...]  # the rows: every strategy the book held, as it stands
    times: np.ndarray  # (T,) bar times after the deployment, up to the clock
    positions: np.ndarray  # (S, T) held at each close, 0 while inactive
    log_growth: np.ndarray  # (S, T+1) cumulative log(1 + r_i), from 0
    contribution: np.ndarray  # (S, T+1) cumulative E(t-1) w_i(t) r_i(t), from 0
    returns: np.ndarray  # (S, T) per-bar returns while active (paper returns for shadows)
    sector_returns: np.ndarray  # (K, T)
    weights: np.ndarray  # (K, T) nominal allocations in effect
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
        self,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        sector: str = "",
        curve_points: int = 0,
        static: FleetRun | None = None,
    ) -> FleetReport:
        """The fleet over the window; with ``curve_points``, samples of its equity curve beside
        ``static``'s (the same deployment simulated without its changes; this run when None)."""
        setup = self.setup
        i0, i1 = self.window(start_time, end_time)
        bars = i1 - i0
        last = i1 - 1
        at = int(self.times[last]) if bars else min(end_time or self.clock_time, self.clock_time)
        # Held from the end of the window on: changes executed at its last bar count.
        allocations = self.state.allocations_at(at + 1)
        halted = self.state.halted_at(at + 1)
        book = self.state.book_at(at + 1)
        scale = self.state.scale_at(at + 1)
        effective = self.state.effective_allocations(allocations, halted)
        trading = books.producing_weights(
            book, setup, {sector: value * scale for sector, value in effective.items()}
        )
        trade_counts = self.trades.entries_per_strategy(i0, i1, len(self.entries))
        sectors = []
        strategies = []
        for k, name in enumerate(setup.sectors):
            if sector and name != sector:
                continue
            members = [i for i, e in enumerate(self.entries) if e.sector == name]
            r = self.sector_returns[k, i0:i1]
            path = np.cumprod(1 + r)
            peak = np.maximum.accumulate(np.concatenate([[1.0], path]))[1:]
            symbols = [self._symbol_index(s) for s in setup.sector_symbols[name]]
            bench = float(np.mean(self.closes[symbols, i1] / self.closes[symbols, i0] - 1))
            held = {i: int(self.positions[i, last]) if bars else 0 for i in members}
            weight_of = {i: trading.get(self.entries[i].strategy_id, 0.0) for i in members}
            producing = [
                i
                for i in members
                if book.get(self.entries[i].strategy_id) is not None
                and book[self.entries[i].strategy_id].producing
            ]
            sectors.append(
                SectorBook(
                    sector=name,
                    allocation=allocations[name],
                    strategy_count=len(producing),
                    roi=float(path[-1] - 1) if bars else 0.0,
                    pnl=float(
                        np.sum(self.contribution[members, i1] - self.contribution[members, i0])
                    ),
                    benchmark_return=bench,
                    volatility=float(np.std(r, ddof=1) * math.sqrt(self.bars_per_year))
                    if bars >= 2
                    else 0.0,
                    max_drawdown=float(np.max(1 - path / peak)) if bars else 0.0,
                    trade_count=int(trade_counts[producing].sum()),
                    gross_exposure=float(sum(weight_of[i] * abs(held[i]) for i in members)),
                    net_exposure=float(sum(weight_of[i] * held[i] for i in members)),
                    halted=PORTFOLIO in halted or name in halted,
                )
            )
            for i in members:
                entry = book.get(self.entries[i].strategy_id, self.entries[i])
                strategies.append(
                    StrategyBook(
                        strategy=DeployedStrategy(
                            entry.strategy_id, entry.sector, entry.symbol, entry.genome
                        ),
                        weight=weight_of[i],
                        position=held[i],
                        roi=float(math.expm1(self.log_growth[i, i1] - self.log_growth[i, i0])),
                        pnl=float(self.contribution[i, i1] - self.contribution[i, i0]),
                        trade_count=int(trade_counts[i]),
                        stage=entry.stage,
                        enabled=entry.enabled,
                        since=entry.since,
                        origin=entry.origin,
                        trials=entry.trials,
                        book_weight=entry.weight,
                        # The deployed strategies are measured by the fleet's own books; a record
                        # is what the others (shadows, added, promoted) are judged by.
                        record=None
                        if entry.origin == DEPLOYMENT
                        else self._stage_record(i, entry, i1),
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
                    active=mission.open_time <= at < self.state.mission_end(mission),
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
            # Made in the window: those before it are in the reports of earlier windows.
            changes=tuple(
                c
                for c in self.state.changes
                if (start_time is None or c.time >= start_time) and c.time <= at
            ),
            halted=halted,
            scale=scale,
            curve=self._curve(i0, i1, curve_points, static or self),
        )

    def sector_marks(self) -> tuple[SectorMark, ...]:
        """Each sector's equity and drawdown at the clock (:class:`SectorMark`), in the
        setup's order of sectors."""
        equity = float(self.equity[-1])
        allocations = self.state.allocations
        # The compounded returns from 1 at the deployment: its peak is at least 1.
        path = np.cumprod(1 + self.sector_returns, axis=1)
        if self.times.size:
            peak = np.maximum(path.max(axis=1), 1.0)
            drawdowns = np.clip(1 - path[:, -1] / peak, 0.0, 1.0)
        else:
            drawdowns = np.zeros(len(self.setup.sectors))
        return tuple(
            SectorMark(sector, allocations[sector] * equity, float(drawdown))
            for sector, drawdown in zip(self.setup.sectors, drawdowns, strict=True)
        )

    def _curve(self, i0: int, i1: int, points: int, static: FleetRun) -> tuple[EquitySample, ...]:
        """At most ``points`` samples of equity over bars i0..i1 (equity index i0 is before the
        window's first bar, i1 after its last), evenly spaced, the first and last included."""
        if points <= 0:
            return ()
        index = np.unique(np.linspace(i0, i1, min(points, i1 - i0 + 1)).round().astype(np.int64))
        # Equity index k is after bar k - 1; index 0, before the first bar, is at deployment.
        times = np.concatenate([[self.setup.deployment_time], self.times])[index]
        growth = (self.closes[:, index] / self.closes[:, [i0]]).mean(axis=0)
        start = float(self.equity[i0])
        unchanged = static.equity[index] * (start / static.equity[i0])
        return tuple(
            EquitySample(
                time=int(t),
                equity=float(self.equity[k]),
                benchmark_equity=start * g,
                static_equity=float(s),
            )
            for t, k, g, s in zip(times, index, growth, unchanged, strict=True)
        )

    def list_trades(self, query: TradeQuery, limit: int) -> tuple[list[Trade], bool]:
        """Trades matching ``query``, ordered by (entry time, strategy id); True if more."""
        table = self.trades
        mask = np.ones(table.size, dtype=bool)
        if query.sector:
            members = np.array(
                [i for i, e in enumerate(self.entries) if e.sector == query.sector],
                dtype=np.int64,
            )
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

    def closed_trades(self, after: tuple[int, str] | None = None) -> list[Trade]:
        """The trades closed by the clock, in the order they closed: by (exit time, strategy
        id), only those after the keyset ``after``. A strategy closes at most one trade per
        bar, so the key is unique; a closed trade's bars are all at or before the clock and the
        accounting is causal, so it never changes as the clock moves on."""
        table = self.trades
        closed = np.flatnonzero(table.exit >= 0)
        exit_times = self.times[table.exit[closed]]
        rank = table.rank[table.strategy[closed]]
        if after is not None:
            time, strategy_id = after
            after_rank = table.rank_of(strategy_id)
            keep = (exit_times > time) | ((exit_times == time) & (rank > after_rank))
            closed, exit_times, rank = closed[keep], exit_times[keep], rank[keep]
        order = np.lexsort((rank, exit_times))
        return [self._trade(int(j)) for j in closed[order]]

    def _trade(self, j: int) -> Trade:
        t = self.trades
        strategy = self.entries[t.strategy[j]]
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
            strategy_id=strategy.strategy_id,
            sector=strategy.sector,
            symbol=strategy.symbol,
            side=int(t.side[j]),
            entry_time=int(self.times[entry_index]),
            exit_time=int(self.times[exit_index]) if exit_index >= 0 else None,
            bar_count=(exit_index if exit_index >= 0 else self.times.size) - entry_index,
            return_fraction=float(value),
            pnl=pnl,
            family=strategy.genome.family,
        )

    def _stage_record(self, i: int, entry: BookEntry, stop: int) -> StageRecord:
        """Row ``i``'s record over the bars after it entered its stage, up to ``stop``."""
        first = int(np.searchsorted(self.times, entry.since, "right"))
        first = min(first, stop)
        r = self.returns[i, first:stop]
        n = r.size
        growth = self.log_growth[i, first : stop + 1]
        total = float(math.expm1(growth[-1] - growth[0]))
        # Largest fall from a peak, in log terms first: one exp instead of one per bar.
        fall = float(np.min(growth - np.maximum.accumulate(growth))) if n else 0.0
        drawdown = -math.expm1(fall)
        deflated = None
        psr = 0.5
        sd = 0.0
        per_bar = 0.0
        if n >= 2:
            centred = r - r.mean()
            squared = centred * centred
            m2 = float(squared.mean())
            sd = math.sqrt(m2 * n / (n - 1))
            per_bar = float(r.mean()) / sd if sd > 0 else 0.0
            skew = float((squared * centred).mean()) / m2**1.5 if m2 > 0 else 0.0
            kurtosis = float((squared * squared).mean()) / m2**2 - 3 if m2 > 0 else 0.0
            benchmark = expected_max_sharpe(entry.trials, sharpe_null_floor(n))
            deflated = probabilistic_sharpe(per_bar, benchmark, n, skew, kurtosis)
            if sd > 0:
                psr = probabilistic_sharpe(per_bar, 0.0, n, skew, kurtosis)
        return StageRecord(
            start_time=entry.since,
            bar_count=n,
            total_return=total,
            sharpe=per_bar * math.sqrt(self.bars_per_year),
            trade_count=int(self.trades.entries_per_strategy(first, stop, len(self.entries))[i]),
            deflated_sharpe=deflated,
            volatility=sd * math.sqrt(self.bars_per_year),
            max_drawdown=drawdown,
            probabilistic_sharpe=psr,
        )

    def _symbol_index(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def _strategy_index(self, strategy_id: str) -> int:
        for i, e in enumerate(self.entries):
            if e.strategy_id == strategy_id:
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


def restated(run: FleetRun, state: FleetState) -> FleetRun | None:
    """``run`` with the changes ``state`` adds to its own, when none of them reaches a bar of the
    run: a change applies from the bar after its time, so one made at the run's last bar (an
    action executed at the clock) changes none of the per-bar figures, only the book as it
    stands. The result is what :func:`simulate` would compute, without the backtests. None when
    a change reaches a bar, adds a strategy or an arb-mission (a new row) or the states differ in
    what came before.
    """
    old = state.changes[: len(run.state.changes)]
    if (
        state.setup is not run.state.setup
        or len(old) < len(run.state.changes)
        or any(a is not b for a, b in zip(old, run.state.changes, strict=True))
    ):
        return None
    last = int(run.times[-1]) if run.times.size else None
    if last is not None and any(c.time < last for c in state.changes[len(old) :]):
        return None
    ids = state.strategy_ids()
    if ids != [e.strategy_id for e in run.entries] or len(state.missions) != len(
        run.state.missions
    ):
        return None
    final = state.book
    return dataclasses.replace(run, state=state, entries=tuple(final[sid] for sid in ids))


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
    ``position``); ``series`` holds each deployed symbol's bars up to the clock at least. Bars
    after the clock are backtested (see :class:`Backtester`) but never read."""
    setup = state.setup
    final = state.book
    entries = tuple(final[sid] for sid in state.strategy_ids())
    rows_of = {e.strategy_id: i for i, e in enumerate(entries)}
    symbols = sorted({s.symbol for s in setup.strategies})
    after = [
        s.time[np.searchsorted(s.time, setup.deployment_time, "right") :]
        for s in (series[y] for y in symbols)
    ]
    times = np.unique(np.concatenate(after)) if after else np.zeros(0, dtype=np.int64)
    times = times[times <= clock_time]
    bars = times.size
    count = len(entries)
    raw = np.zeros((count, bars))
    held = np.zeros((count, bars), dtype=np.int8)
    closes = np.empty((len(symbols), bars + 1))
    opens = np.empty((len(symbols), bars))
    symbol_of = np.array([symbols.index(e.symbol) for e in entries], dtype=np.int64)
    for y, symbol in enumerate(symbols):
        if token is not None:
            token.raise_if_cancelled()
        bars_of = series[symbol]
        rows = [i for i, e in enumerate(entries) if e.symbol == symbol]
        first, backtest = backtester.run(symbol, bars_of, [entries[i].genome for i in rows])
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
        local = index[present] - first
        for j, i in enumerate(rows):
            raw[i, present] = backtest.returns[j, local]
            kept = np.zeros(bars, dtype=np.int8)
            kept[present] = backtest.positions[j, local]
            # A symbol without a bar keeps its position through the gap.
            held[i] = _carry(kept, present)
    schedule = _schedule(state, entries, rows_of, times)
    returns, positions = _book_returns(raw, held, schedule.active, closes, opens, symbol_of, setup)
    # Capital weights: the sector's nominal allocation times the strategy's share in it. A
    # strategy that goes inactive keeps its last share for the bar it exits in (the gap to the
    # open it is flattened at), and none after.
    exits = schedule.exits
    share = schedule.share.copy()
    share[exits] = schedule.previous_share[exits]
    sector_of = np.array([setup.sectors.index(e.sector) for e in entries], dtype=np.int64)
    # Nominal allocations per segment of bars between changes, then per bar.
    by_segment = np.array(
        [
            [allocations[sector] for sector in setup.sectors]
            for allocations in (
                setup.initial_allocations,
                *(change.allocations for change in state.changes),
            )
        ]
    ).T
    weights = by_segment[:, schedule.segment]
    scale = schedule.scale
    sector_returns = np.zeros((len(setup.sectors), bars))
    members = np.zeros((len(setup.sectors), count))
    members[sector_of, np.arange(count)] = 1.0
    np.matmul(members, share * returns, out=sector_returns)
    mission_terms = _mission_terms(state, times, closes, opens, symbols)
    growth = np.sum(weights * scale * sector_returns, axis=0) + mission_terms.sum(axis=0)
    equity = setup.capital * np.concatenate([[1.0], np.cumprod(1 + growth)])
    strategy_weights = weights[sector_of] * scale * share if count else np.zeros((0, bars))
    contribution = np.zeros((count, bars + 1))
    np.cumsum(equity[:-1] * strategy_weights * returns, axis=1, out=contribution[:, 1:])
    log_growth = np.zeros((count, bars + 1))
    np.cumsum(np.log1p(np.maximum(returns, -1 + 1e-12)), axis=1, out=log_growth[:, 1:])
    # Annualised on the calendar of the warm-up (every symbol's bars before the deployment),
    # which never moves once deployed, like the backtests' own.
    warmups = [s.time[slice(*backtester.warmup(s))] for s in (series[y] for y in symbols)]
    calendar = np.unique(np.concatenate(warmups)) if warmups else times
    bars_per_year = observed_bars_per_year(calendar if calendar.size > 1 else times)
    return FleetRun(
        state=state,
        clock_time=clock_time,
        position=position,
        entries=entries,
        times=times,
        positions=positions,
        log_growth=log_growth,
        contribution=contribution,
        returns=returns,
        sector_returns=sector_returns,
        weights=weights,
        symbols=tuple(symbols),
        closes=closes,
        mission_terms=mission_terms,
        equity=equity,
        bars_per_year=bars_per_year,
        trades=_TradeTable.of(positions, [e.strategy_id for e in entries]),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class _Schedule:
    """The book per bar: which rows trade, and each producing row's share of its sector."""

    active: np.ndarray  # (S, T) bool: trading (production, not halted) or paper trading
    share: np.ndarray  # (S, T) share of the sector's capital, 0 unless producing
    previous_share: np.ndarray  # (S, T) the share at the bar before
    exits: np.ndarray  # (S, T) bool: active at the bar before, not at this one
    segment: np.ndarray  # (T,) how many changes apply to each bar
    scale: np.ndarray  # (T,) the meta position scale in effect (1: none)


def _schedule(
    state: FleetState,
    entries: tuple[BookEntry, ...],
    rows_of: Mapping[str, int],
    times: np.ndarray,
) -> _Schedule:
    count = len(entries)
    change_times = np.array([c.time for c in state.changes], dtype=np.int64)
    # Segment k holds the bars after the first k changes: changes apply from the next bar.
    segment = np.searchsorted(change_times, times, "left")
    segments = len(state.changes) + 1
    active = np.zeros((count, segments), dtype=bool)
    share = np.zeros((count, segments))
    book = books.initial_book(state.setup)
    halted: frozenset[str] = frozenset()
    scales = np.ones(segments)
    for k in range(segments):
        if k > 0:
            change = state.changes[k - 1]
            book = {**book, **{e.strategy_id: e for e in change.book}}
            halted = change.halted
            scales[k] = change.scale
        totals: dict[str, float] = {}
        for e in book.values():
            if e.producing:
                totals[e.sector] = totals.get(e.sector, 0.0) + e.weight
        for sid, e in book.items():
            i = rows_of[sid]
            stopped = PORTFOLIO in halted or e.sector in halted
            if e.shadowing:
                active[i, k] = True
            elif e.producing and not stopped:
                active[i, k] = True
                total = totals[e.sector]
                share[i, k] = e.weight / total if total > 0 else 0.0
    per_bar_active = active[:, segment]
    per_bar_share = share[:, segment]
    previous_active = np.concatenate([per_bar_active[:, :1], per_bar_active[:, :-1]], axis=1)
    previous_share = np.concatenate([per_bar_share[:, :1], per_bar_share[:, :-1]], axis=1)
    return _Schedule(
        active=per_bar_active,
        share=per_bar_share,
        previous_share=previous_share,
        exits=previous_active & ~per_bar_active,
        segment=segment,
        scale=scales[segment],
    )


def _book_returns(
    raw: np.ndarray,
    held: np.ndarray,
    active: np.ndarray,
    closes: np.ndarray,
    opens: np.ndarray,
    symbol_of: np.ndarray,
    setup: FleetSetup,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar returns and positions of each row as the book has it trade.

    While active a row earns its backtest's returns. In the bar it stops (disabled, or halted)
    it holds its position from the previous close to this bar's open, where it is flattened at
    the fill cost; in the bar it starts (added, enabled, promoted or resumed) it enters at this
    bar's open at the fill cost and earns the rest of the backtest's return from there (the
    open-to-close part; a stop inside that bar is not modelled apart). ``closes`` and ``opens``
    are per symbol (``symbol_of`` maps rows to them), ``closes`` from the close before the first
    bar on.
    """
    if raw.size == 0:
        return raw, held
    cost = (setup.costs.commission_bps + setup.costs.slippage_bps) / 1e4
    returns = raw * active
    positions = (held * active).astype(np.int8)
    before = np.empty_like(active)
    before[:, 0] = active[:, 0]
    before[:, 1:] = active[:, :-1]

    def gap(rows: np.ndarray, bars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The position carried into each bar, and its return from the close to the open."""
        carried = held[rows, bars - 1].astype(float)
        symbols = symbol_of[rows]
        return carried, carried * (opens[symbols, bars] / closes[symbols, bars] - 1)

    # Transitions are rare: only their bars are computed apart.
    rows, bars = np.nonzero(before & ~active)  # stops: flattened at the open
    carried, overnight = gap(rows, bars)
    returns[rows, bars] = overnight - np.abs(carried) * cost
    rows, bars = np.nonzero(~before & active)  # starts: enter at the open
    carried, overnight = gap(rows, bars)
    now = held[rows, bars].astype(float)
    returns[rows, bars] = raw[rows, bars] - overnight - np.abs(now) * cost * (carried == now)
    return returns, positions


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
        end = state.mission_end(mission)
        inside = np.flatnonzero((times > mission.open_time) & (times <= end))
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
        exit_bar = int(np.searchsorted(times, end, "left"))
        if exit_bar < times.size:
            terms[m, exit_bar] -= mission.allocation * cost
    return terms
