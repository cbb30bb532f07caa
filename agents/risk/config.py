"""Settings of the risk officer (environment variables QTMESH_RISK_<NAME>)."""

from __future__ import annotations

import dataclasses
import math

from agents.officer import FleetPeriods
from agents.risk.assessment import RiskSettings
from agents.risk.limits import BOUNDS, check_limits
from qtmesh.base.config import require, setting
from qtmesh.base.contract import RiskLimits
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_RISK_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskConfig(DataDirConfig, FleetPeriods):
    database_file = "risk.db"

    period_minutes: float = setting(
        60.0, help="length of one return observation of the fleet: the horizon of VaR and CVaR"
    )
    lookback_periods: int = setting(720, help="fleet returns the figures rest on, at most")
    min_observations: int = setting(
        20, help="fewest returns VaR and CVaR are computed from (and caller series must have)"
    )
    max_observations: int = setting(100_000, help="longest return series AssessRisk accepts")
    max_sectors: int = setting(64, help="most sectors AssessRisk accepts")
    max_var_95: float = setting(0.004, help="initial limit: historical VaR95 over the horizon")
    max_drawdown: float = setting(0.05, help="initial limit: drawdown of fleet equity")
    max_gross_exposure: float = setting(1.0, help="initial limit: gross exposure of the fleet")
    max_sector_exposure: float = setting(0.35, help="initial limit: gross exposure of a sector")
    sector_var_share: float = setting(
        0.5, help="a sector's VaR budget as a share of max_var_95 (standalone, in equity terms)"
    )
    halt_margin: float = setting(
        0.25, help="drawdown or VaR this far over its limit (0.25: 25%) halts trading"
    )
    min_factor: float = setting(0.25, help="deepest exposure cut one recommendation asks for")

    def __post_init__(self) -> None:
        self.check_database()
        self.check_periods()
        require(
            self.max_observations >= self.min_observations,
            "max_observations",
            "must be at least min_observations",
        )
        require(self.max_sectors >= 1, "max_sectors", "must be at least 1")
        for name, bound in BOUNDS.items():
            value = getattr(self, name)
            require(math.isfinite(value) and 0 < value <= bound, name, f"must be in (0, {bound:g}]")
        require(0 < self.sector_var_share <= 1, "sector_var_share", "must be in (0, 1]")
        require(
            math.isfinite(self.halt_margin) and self.halt_margin > 0,
            "halt_margin",
            "must be positive",
        )
        require(0 < self.min_factor < 1, "min_factor", "must be in (0, 1)")

    @property
    def limits(self) -> RiskLimits:
        return check_limits(
            RiskLimits(
                max_var_95=self.max_var_95,
                max_drawdown=self.max_drawdown,
                max_gross_exposure=self.max_gross_exposure,
                max_sector_exposure=self.max_sector_exposure,
            )
        )

    @property
    def settings(self) -> RiskSettings:
        return RiskSettings(
            min_observations=self.min_observations,
            sector_var_share=self.sector_var_share,
            halt_margin=self.halt_margin,
            min_factor=self.min_factor,
        )
