"""The value types the fleet reports: the books of its sectors, strategies and arb-missions over
a window with the fleet's equity and changes, and its trades with the query that pages through
them. Frozen dataclasses that the simulation fills and the market's conversions copy; they compute
nothing and import no simulation."""

from __future__ import annotations

import dataclasses

from market.fleet.book import DEPLOYMENT
from market.fleet.setup import DeployedStrategy
from market.fleet.state import ArbMission, FleetChange
from qtmesh.base.genome import StrategyFamily, StrategyStage


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
    # Halted at the end of the window: it trades nothing, its allocation is kept for a resume.
    halted: bool = False


@dataclasses.dataclass(frozen=True)
class SectorMark:
    """A sector at the clock. ``equity``: its part of the fleet's equity, its nominal allocation
    from the clock on times the fleet's equity (a halted sector keeps its allocation for the
    resume). ``drawdown``: how far its compounded returns since the deployment stand below their
    running peak, a fraction 0..1 (the convention of :attr:`SectorBook.max_drawdown`)."""

    sector: str
    equity: float
    drawdown: float


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """A strategy's own record since it entered its stage: for a shadow, its paper record.
    Returns are per bar while it trades; Sharpe is annualised; the deflated Sharpe ratio counts
    the trials that found it (None with fewer than two bars)."""

    start_time: int
    bar_count: int
    total_return: float
    sharpe: float
    trade_count: int
    deflated_sharpe: float | None
    volatility: float = 0.0  # annualised
    max_drawdown: float = 0.0
    probabilistic_sharpe: float = 0.5  # P(true Sharpe > 0)


@dataclasses.dataclass(frozen=True)
class StrategyBook:
    """One strategy of the book over the window; ``weight`` is the fraction of equity it trades
    at the window's end (0 for a shadow, a disabled or a halted strategy)."""

    strategy: DeployedStrategy
    weight: float
    position: int
    roi: float
    pnl: float
    trade_count: int
    stage: StrategyStage = StrategyStage.PRODUCTION
    enabled: bool = True
    since: int = 0
    origin: str = DEPLOYMENT
    trials: int = 1
    book_weight: float = 1.0  # relative, within the sector
    record: StageRecord | None = None


@dataclasses.dataclass(frozen=True)
class MissionBook:
    mission: ArbMission
    active: bool
    roi: float
    pnl: float


@dataclasses.dataclass(frozen=True)
class EquitySample:
    """Fleet equity after the bar at ``time`` (the window's start: before its first bar), beside
    the static fleet (the deployment with no change made to it) and an equal-weight buy and
    hold of the fleet's symbols, both from the fleet's equity at the window's start."""

    time: int
    equity: float
    benchmark_equity: float
    static_equity: float


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
    # The changes made in the window (from its start, or the deployment, to its end).
    changes: tuple[FleetChange, ...]
    # Scopes halted from the end of the window on ("portfolio" or sectors).
    halted: frozenset[str] = frozenset()
    # Meta's scale of every position from the end of the window on.
    scale: float = 1.0
    # The window's equity curve, when asked for (FleetRun.report's curve_points).
    curve: tuple[EquitySample, ...] = ()


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
    # The family of the strategy's genome.
    family: StrategyFamily | None = None

    @property
    def trade_id(self) -> str:
        return f"{self.strategy_id}@{self.entry_time}"

    @property
    def cursor(self) -> tuple[int, str] | None:
        """Where a closed trade stands in the order trades close: (exit time, strategy id);
        None while open."""
        return None if self.exit_time is None else (self.exit_time, self.strategy_id)


@dataclasses.dataclass(frozen=True)
class ClosedTrades:
    """One message of the stream of closed trades: trades closed after the previous cursor, in
    the order they closed, as the fleet stood at ``clock_time``. ``cursor`` is the last trade
    sent so far (exit time, strategy id); ``caught_up`` marks the last message of a clock step."""

    trades: tuple[Trade, ...]
    cursor: tuple[int, str] | None
    clock_time: int
    position: int
    caught_up: bool


@dataclasses.dataclass(frozen=True)
class TradeQuery:
    sector: str = ""
    strategy_id: str = ""
    start_time: int | None = None
    end_time: int | None = None
    # Keyset: only trades after this (entry_time, strategy_id).
    after: tuple[int, str] | None = None
