"""The value types the fleet reports: the books of its sectors, strategies and arb-missions over
a window with the fleet's equity and changes, and its trades with the query that pages through
them. Frozen dataclasses that the simulation fills and the market's conversions copy; they compute
nothing and import no simulation."""

from __future__ import annotations

import dataclasses

from market.fleet.setup import DeployedStrategy
from market.fleet.state import ArbMission, FleetChange


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
