"""Settings of the market service (environment variables QTMESH_MARKET_<NAME>)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from backtest.evaluation import CostModel
from market.fleet import DAY_NANOS, FleetLimits
from qtmesh.base.config import ConfigError, require, setting
from qtmesh.base.genome import StrategyFamily
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_MARKET_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MarketConfig(DataDirConfig):
    database_file = "market.db"

    data_path: Path | None = setting(
        None,
        help="CSV or Parquet file of bars (format in market/sources.py); unset: synthetic market",
    )
    seed: int = setting(7, help="seed of the synthetic market")
    synthetic_days: int = setting(60, help="days of one-minute bars in the synthetic market")
    pace_bars_per_second: float = setting(
        0.0,
        help="bars the clock moves by itself per wall second (0: only Advance moves it); "
        "`qtmesh up --pace` sets it",
    )
    synthetic_noise: bool = setting(
        False, help="a synthetic market with zero drift and no regimes (market/synthetic.py)"
    )
    replay_start: float = setting(
        0.5, help="share of the timeline already revealed at start-up, in (0, 1]"
    )
    fleet_families: tuple[str, ...] = setting(
        ("MA_CROSSOVER", "MEAN_REVERSION", "BREAKOUT"),
        help="SESA families whose default genome the paper fleet deploys on every symbol",
    )
    fleet_allocations: dict[str, str] = setting(
        {},
        help="sector=fraction pairs of equity at deployment; unlisted sectors share the rest "
        "of 1.0 equally",
    )
    fleet_capital: float = setting(1_000_000.0, help="paper fleet equity at deployment")
    fleet_warmup_bars: int = setting(
        2880, help="bars before the deployment each strategy runs on to warm up its indicators"
    )
    fleet_commission_bps: float = setting(1.0, help="fleet commission per unit traded, in bps")
    fleet_slippage_bps: float = setting(1.0, help="fleet slippage per fill, in bps")
    max_sector_allocation: float = setting(
        0.5, help="most equity one sector may hold after an AdjustExposure action"
    )
    max_total_allocation: float = setting(
        1.5, help="most equity sectors and open arb-missions may hold together"
    )
    max_arb_allocation: float = setting(0.25, help="most equity per leg of one arb-mission")
    max_exposure_factor: float = setting(
        5.0, help="largest AdjustExposure factor accepted (larger ones are refused)"
    )
    arb_mission_days: float = setting(5.0, help="how long an arb-mission holds its legs, in days")

    def __post_init__(self) -> None:
        self.check_database()
        if self.data_path is not None:
            require(self.data_path.is_file(), "data_path", f"no such file: {self.data_path}")
            require(
                self.data_path.suffix.lower() in (".csv", ".parquet", ".pq"),
                "data_path",
                f"expected a .csv or .parquet file, got {self.data_path.name}",
            )
        require(1 <= self.synthetic_days <= 3650, "synthetic_days", "must be in 1..3650")
        require(
            math.isfinite(self.pace_bars_per_second) and 0 <= self.pace_bars_per_second <= 10_000,
            "pace_bars_per_second",
            "must be in 0..10000",
        )
        require(0 < self.replay_start <= 1, "replay_start", "must be in (0, 1]")
        require(self.seed >= 0, "seed", "must not be negative")
        require(len(self.fleet_families) > 0, "fleet_families", "must name at least one family")
        for family in self.fleet_families:
            require(
                family in StrategyFamily.__members__,
                "fleet_families",
                f"unknown family {family!r}; known: {', '.join(StrategyFamily.__members__)}",
            )
        for sector, value in self.allocations.items():
            require(
                math.isfinite(value) and 0 <= value <= self.max_sector_allocation,
                "fleet_allocations",
                f"{sector}={value} is not in 0..max_sector_allocation "
                f"({self.max_sector_allocation})",
            )
        require(
            math.isfinite(self.fleet_capital) and self.fleet_capital > 0,
            "fleet_capital",
            "must be a positive number",
        )
        require(self.fleet_warmup_bars >= 0, "fleet_warmup_bars", "must not be negative")
        for name in ("fleet_commission_bps", "fleet_slippage_bps"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0 <= value <= 1000, name, "must be in 0..1000")
        for name in ("max_sector_allocation", "max_arb_allocation"):
            value = getattr(self, name)
            require(math.isfinite(value) and 0 < value <= 1, name, "must be in (0, 1]")
        require(
            math.isfinite(self.max_total_allocation)
            and self.max_sector_allocation <= self.max_total_allocation <= 10,
            "max_total_allocation",
            "must be in max_sector_allocation..10",
        )
        require(
            math.isfinite(self.max_exposure_factor) and self.max_exposure_factor >= 1,
            "max_exposure_factor",
            "must be at least 1",
        )
        require(
            math.isfinite(self.arb_mission_days) and self.arb_mission_days > 0,
            "arb_mission_days",
            "must be positive",
        )

    @property
    def allocations(self) -> dict[str, float]:
        values = {}
        for sector, text in self.fleet_allocations.items():
            try:
                values[sector] = float(text)
            except ValueError:
                raise ConfigError(
                    "fleet_allocations", f"{sector}={text!r} is not a number"
                ) from None
        return values

    @property
    def families(self) -> tuple[StrategyFamily, ...]:
        return tuple(StrategyFamily[f] for f in self.fleet_families)

    @property
    def limits(self) -> FleetLimits:
        return FleetLimits(
            max_sector_allocation=self.max_sector_allocation,
            max_total_allocation=self.max_total_allocation,
            max_arb_allocation=self.max_arb_allocation,
            max_factor=self.max_exposure_factor,
            arb_mission_nanos=round(self.arb_mission_days * DAY_NANOS),
        )

    @property
    def costs(self) -> CostModel:
        return CostModel(
            commission_bps=self.fleet_commission_bps, slippage_bps=self.fleet_slippage_bps
        )
