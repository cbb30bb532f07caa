"""The paper fleet: strategies deployed per sector trade the replay under SESA's fill model; their
P&L, positions and trades, and the allocations that only executed actions change.

Accounting (fractions of fleet equity; per-bar returns run from the previous close to the close):

* **Deployment.** The fleet trades the bars after ``deployment_time`` (the replay clock when it
  was first deployed). Each strategy is backtested by SESA's kernel (signal at the close, fill at
  the next open, commission and slippage in basis points, ATR stops) on its symbol's bars from
  ``warmup_bars`` before the deployment up to the clock, without walk-forward folds. Positions
  held at the deployment are taken over as they stand.
* **Sectors.** Sector s holds allocation w_s. Its capital is split equally among its n_s
  strategies and rebalanced every bar, so its per-bar return is r_s(t) = mean_i r_i(t) and each
  strategy's weight is w_s / n_s. The rest of equity is cash, earning nothing.
* **Changes.** An executed action changes allocations from the first bar after the market time
  of its execution; a change never takes effect before an earlier one.
* **Arb-missions.** Allocation a on each leg: long the equal-weighted basket of one sector's
  symbols, short the other's. The legs fill at the open of the first bar after the action and
  close at the close of the last bar within the mission's duration; each fill costs commission
  and slippage on both legs. The exit's costs are booked on the first bar at or after the
  mission's close time: the last bar of the mission when one falls on the close time, else
  the next bar (outside the mission, which earns no spread on it). Only then is the exit
  known to have happened, so no bar already reported is restated.
* **Equity.** E(t) = E(t-1) * (1 + sum_s w_s(t) r_s(t) + sum_m m(t)), m(t) being a mission's
  spread return times a, less its costs. Sector, strategy and mission P&L are E(t-1) times their
  term, so together they add up to the change of equity.
* **Trades.** A trade is a run of one non-zero position held at bar closes. Every bar's return
  belongs to exactly one trade (or to none, when flat): a bar in which the position reverses
  belongs to the trade it closes. An entry stopped out within its first bar leaves no position
  at any close and is not listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from agents.contract import StrategyFamily, StrategyGenome
from market.bars import NANOS_PER_YEAR, BarSeries
from qtmesh.concurrency import CancelToken
from qtmesh.errors import FailedPrecondition, InvalidArgument
from sesa.evaluation import Backtest, CostModel, EvaluationSettings, Evaluator
from sesa.genome import Policy
from sesa.indicators import BarData

DAY_NANOS = 86_400 * 10**9
DEFAULT_FAMILIES = (
    StrategyFamily.MA_CROSSOVER,
    StrategyFamily.MEAN_REVERSION,
    StrategyFamily.BREAKOUT,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetLimits:
    """Bounds every executed action is held to; a change beyond them is clipped to them."""

    # No sector may hold more than this fraction of equity.
    max_sector_allocation: float = 0.5
    # Sector allocations plus the legs of active arb-missions (counted once) stay within this.
    max_total_allocation: float = 1.5
    max_arb_allocation: float = 0.25
    # AdjustExposure factors above this are refused as a likely mistake.
    max_factor: float = 5.0
    arb_mission_nanos: int = 5 * DAY_NANOS


@dataclasses.dataclass(frozen=True)
class DeployedStrategy:
    id: str
    sector: str
    symbol: str
    genome: StrategyGenome


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetSetup:
    """What is deployed: strategies by sector, starting allocations, costs and limits."""

    strategies: tuple[DeployedStrategy, ...]
    sectors: tuple[str, ...]
    sector_symbols: Mapping[str, tuple[str, ...]]
    initial_allocations: Mapping[str, float]
    deployment_time: int
    capital: float = 1_000_000.0
    costs: CostModel = dataclasses.field(default_factory=CostModel)
    warmup_bars: int = 2880
    limits: FleetLimits = dataclasses.field(default_factory=FleetLimits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_allocations", _frozen(self.initial_allocations))
        object.__setattr__(self, "sector_symbols", MappingProxyType(dict(self.sector_symbols)))

    def fingerprint(self) -> str:
        """Identifies the deployment: the same data and settings after a restart give the same
        fingerprint, so the stored changes of that deployment apply again."""
        content = {
            "strategies": [
                [s.id, s.sector, s.symbol, s.genome.family.name, dict(s.genome.parameters)]
                for s in self.strategies
            ],
            "allocations": dict(sorted(self.initial_allocations.items())),
            "deployment_time": self.deployment_time,
            "capital": self.capital,
            "costs": [self.costs.commission_bps, self.costs.slippage_bps],
            "warmup_bars": self.warmup_bars,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def strategies_of(self, sector: str) -> list[int]:
        return [i for i, s in enumerate(self.strategies) if s.sector == sector]

    def check_sector(self, sector: str, *, field: str) -> str:
        if sector not in self.initial_allocations:
            raise InvalidArgument(
                field, f"unknown sector {sector!r}; known: {', '.join(self.sectors)}"
            )
        return sector


def deploy(
    symbols: Mapping[str, str],
    *,
    deployment_time: int,
    families: Sequence[StrategyFamily] = DEFAULT_FAMILIES,
    allocations: Mapping[str, float] | None = None,
    policy: Policy | None = None,
    capital: float = 1_000_000.0,
    costs: CostModel | None = None,
    warmup_bars: int = 2880,
    limits: FleetLimits | None = None,
) -> FleetSetup:
    """The default fleet: each family's default genome on every symbol (``symbols`` maps symbol
    to sector). Sectors missing from ``allocations`` share what the listed ones leave of 1.0."""
    policy = policy or Policy()
    limits = limits or FleetLimits()
    sectors = tuple(sorted(set(symbols.values())))
    given = dict(allocations or {})
    for sector, value in given.items():
        if sector not in sectors:
            raise InvalidArgument("fleet_allocations", f"unknown sector {sector!r}")
        if not (math.isfinite(value) and 0 <= value <= limits.max_sector_allocation):
            raise InvalidArgument(
                f"fleet_allocations[{sector}]",
                f"{value} is not in 0..{limits.max_sector_allocation} (max_sector_allocation)",
            )
    rest = [s for s in sectors if s not in given]
    share = max(0.0, 1.0 - sum(given.values())) / len(rest) if rest else 0.0
    initial = {s: given.get(s, min(share, limits.max_sector_allocation)) for s in sectors}
    if sum(initial.values()) > limits.max_total_allocation + 1e-12:
        raise InvalidArgument(
            "fleet_allocations",
            f"total {sum(initial.values()):.4g} exceeds max_total_allocation "
            f"{limits.max_total_allocation}",
        )
    genomes = [policy.default_genome(f) for f in families]
    strategies = tuple(
        DeployedStrategy(f"{symbol}/{g.id}", sector, symbol, g)
        for symbol, sector in sorted(symbols.items(), key=lambda item: (item[1], item[0]))
        for g in genomes
    )
    by_sector: dict[str, list[str]] = {}
    for symbol, sector in sorted(symbols.items()):
        by_sector.setdefault(sector, []).append(symbol)
    return FleetSetup(
        strategies=strategies,
        sectors=sectors,
        sector_symbols={s: tuple(v) for s, v in by_sector.items()},
        initial_allocations=initial,
        deployment_time=deployment_time,
        capital=capital,
        costs=costs or CostModel(),
        warmup_bars=warmup_bars,
        limits=limits,
    )


# -- changes ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cause:
    """The executed action behind a change."""

    action_key: str
    action_id: str
    plan_sequence: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArbMission:
    id: str
    long_sector: str
    short_sector: str
    allocation: float
    open_time: int
    close_time: int
    action_id: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FleetChange:
    """One executed action: the allocations after it and the mission it opened, if any."""

    sequence: int
    time: int
    cause: Cause
    allocations: Mapping[str, float]
    mission: ArbMission | None
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "allocations", _frozen(self.allocations))


@dataclasses.dataclass(frozen=True)
class FleetState:
    """A deployment and the changes executed on it, oldest first."""

    setup: FleetSetup
    changes: tuple[FleetChange, ...] = ()

    @property
    def allocations(self) -> Mapping[str, float]:
        return self.changes[-1].allocations if self.changes else self.setup.initial_allocations

    @property
    def missions(self) -> list[ArbMission]:
        return [c.mission for c in self.changes if c.mission is not None]

    def allocations_at(self, time: int) -> Mapping[str, float]:
        """Allocations in effect for a bar at ``time``."""
        current = self.setup.initial_allocations
        for change in self.changes:
            if change.time < time:
                current = change.allocations
        return current

    def next_time(self, clock_time: int) -> int:
        """The time a change executed at ``clock_time`` takes: never before an earlier one."""
        return max(clock_time, self.changes[-1].time if self.changes else clock_time)

    def in_use(self, at: int) -> float:
        """Sector allocations plus the allocation of missions still open at ``at``."""
        open_missions = sum(m.allocation for m in self.missions if m.close_time > at)
        return sum(self.allocations.values()) + open_missions

    def with_change(self, change: FleetChange) -> FleetState:
        return FleetState(self.setup, (*self.changes, change))

    def adjust_exposure(
        self, sector: str, factor: float, *, at: int, cause: Cause, field: str
    ) -> FleetChange:
        """Scales one sector's allocation (all sectors' with ``sector`` "") by ``factor``,
        clipped to max_sector_allocation and to what max_total_allocation leaves."""
        limits = self.setup.limits
        if not (math.isfinite(factor) and 0 <= factor <= limits.max_factor):
            raise InvalidArgument(f"{field}.factor", f"{factor} is not in 0..{limits.max_factor}")
        chosen = (
            self.setup.sectors
            if sector == ""
            else (self.setup.check_sector(sector, field=f"{field}.sector"),)
        )
        new = dict(self.allocations)
        in_use = self.in_use(at)
        notes = []
        for s in chosen:
            old = new[s]
            wanted = old * factor
            value = min(wanted, limits.max_sector_allocation)
            if value > old:
                value = min(value, old + max(0.0, limits.max_total_allocation - in_use))
            in_use += value - old
            new[s] = value
            clipped = ""
            if value < wanted - 1e-12:
                clipped = " (capped by max_sector_allocation/max_total_allocation)"
            notes.append(f"{s} {old:.2%} -> {value:.2%}{clipped}")
        detail = f"allocation x{factor:g}: " + "; ".join(notes)
        return FleetChange(
            sequence=len(self.changes) + 1,
            time=at,
            cause=cause,
            allocations=new,
            mission=None,
            detail=detail,
        )

    def spawn_arb_mission(
        self,
        long_sector: str,
        short_sector: str,
        allocation: float,
        *,
        at: int,
        cause: Cause,
        field: str,
    ) -> FleetChange:
        """Opens a long-short pair of sector baskets with ``allocation`` of equity per leg,
        clipped to max_arb_allocation and to what max_total_allocation leaves."""
        limits = self.setup.limits
        self.setup.check_sector(long_sector, field=f"{field}.long_sector")
        self.setup.check_sector(short_sector, field=f"{field}.short_sector")
        if long_sector == short_sector:
            raise InvalidArgument(f"{field}.short_sector", "must differ from long_sector")
        if not (math.isfinite(allocation) and 0 < allocation <= 1):
            raise InvalidArgument(f"{field}.allocation", f"{allocation} is not in (0, 1]")
        headroom = limits.max_total_allocation - self.in_use(at)
        value = min(allocation, limits.max_arb_allocation, headroom)
        if value <= 1e-9:
            raise FailedPrecondition(
                f"no allocation left for an arb-mission: {self.in_use(at):.2%} of equity is in "
                f"use and max_total_allocation is {limits.max_total_allocation:.2%}"
            )
        sequence = len(self.changes) + 1
        mission = ArbMission(
            id=f"arb-{sequence}",
            long_sector=long_sector,
            short_sector=short_sector,
            allocation=value,
            open_time=at,
            close_time=at + limits.arb_mission_nanos,
            action_id=cause.action_id,
        )
        clipped = " (capped)" if value < allocation - 1e-12 else ""
        days = limits.arb_mission_nanos / DAY_NANOS
        return FleetChange(
            sequence=sequence,
            time=at,
            cause=cause,
            allocations=self.allocations,
            mission=mission,
            detail=f"{mission.id}: long {long_sector} / short {short_sector}, "
            f"{value:.2%} of equity per leg{clipped}, for {days:g} days",
        )


# -- simulation ---------------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class SectorBook:
    sector: str
    allocation: float
    strategy_count: int
    roi: float
    pnl: float
    benchmark_return: float
    volatility: float
    max_drawdown: float
    trade_count: int
    gross_exposure: float
    net_exposure: float


@dataclasses.dataclass(frozen=True)
class StrategyBook:
    strategy: DeployedStrategy
    weight: float
    position: int
    roi: float
    pnl: float
    trade_count: int


@dataclasses.dataclass(frozen=True)
class MissionBook:
    mission: ArbMission
    active: bool
    roi: float
    pnl: float


@dataclasses.dataclass(frozen=True)
class FleetReport:
    deployment_time: int
    clock_time: int
    # Replay position of the clock.
    position: int
    start_time: int | None
    end_time: int | None
    bar_count: int
    capital: float
    equity: float
    total_return: float
    pnl: float
    sectors: tuple[SectorBook, ...]
    strategies: tuple[StrategyBook, ...]
    missions: tuple[MissionBook, ...]
    changes: tuple[FleetChange, ...]


@dataclasses.dataclass(frozen=True)
class Trade:
    strategy_id: str
    sector: str
    symbol: str
    side: int
    entry_time: int
    exit_time: int | None
    bar_count: int
    return_fraction: float
    pnl: float

    @property
    def trade_id(self) -> str:
        return f"{self.strategy_id}@{self.entry_time}"


@dataclasses.dataclass(frozen=True)
class TradeQuery:
    sector: str = ""
    strategy_id: str = ""
    start_time: int | None = None
    end_time: int | None = None
    # Keyset: only trades after this (entry_time, strategy_id).
    after: tuple[int, str] | None = None


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


def _frozen(values: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType({k: float(v) for k, v in sorted(values.items())})
