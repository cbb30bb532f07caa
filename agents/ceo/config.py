"""Settings of the CEO (environment variables QTMESH_CEO_<NAME>)."""

from __future__ import annotations

import dataclasses
import math

from agents.ceo.scoring import Hysteresis, ScoringRule, check_anchors
from agents.officer import FleetPeriods
from qtmesh.base.config import ConfigError, require, setting
from qtmesh.base.contract import StrategicMode
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_CEO_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CeoConfig(DataDirConfig, FleetPeriods):
    database_file = "ceo.db"

    initial_mode: str = setting("NORMAL", help="the mode before any SWITCH_MODE was executed")
    period_minutes: float = setting(
        60.0, help="length of one period of fleet returns; the CEO evaluates once per period"
    )
    lookback_periods: int = setting(
        168, help="periods the drawdown peak, volatility and trend are measured over"
    )
    min_observations: int = setting(6, help="fewest period returns volatility and trend need")
    drawdown_anchors: tuple[float, ...] = setting(
        (0.0, 0.01, 0.03, 0.06), help="drawdown at severity 0,1,2,3 (expansion..preservation)"
    )
    volatility_anchors: tuple[float, ...] = setting(
        (0.02, 0.08, 0.15, 0.30), help="annualised volatility at severity 0,1,2,3"
    )
    regime_anchors: tuple[float, ...] = setting(
        (-1.0, 0.0, 0.5, 1.0), help="regime stress P(volatile)-P(calm) at severity 0,1,2,3"
    )
    trend_anchors: tuple[float, ...] = setting(
        (-2.0, 0.0, 1.0, 2.0), help="minus the P&L trend's t-statistic at severity 0,1,2,3"
    )
    weight_drawdown: float = setting(0.35, help="weight of the drawdown in the score")
    weight_volatility: float = setting(0.25, help="weight of the realised volatility")
    weight_regime: float = setting(0.2, help="weight of the world model's regime stress")
    weight_trend: float = setting(0.2, help="weight of the P&L trend")
    switch_margin: float = setting(
        0.2, help="hysteresis: how far past its band the score must go to be a candidate"
    )
    confirmations: int = setting(
        2, help="hysteresis: consecutive evaluations a candidate needs before a switch"
    )
    regime_timeout_seconds: float = setting(
        5.0, help="how long an evaluation waits for the world model's regimes"
    )

    def __post_init__(self) -> None:
        self.check_database()
        require(
            self.initial_mode in StrategicMode.__members__,
            "initial_mode",
            f"must be one of {', '.join(StrategicMode.__members__)}",
        )
        self.check_periods()
        for name in ("drawdown", "volatility", "regime", "trend"):
            try:
                check_anchors(name, getattr(self, f"{name}_anchors"))
            except ValueError as exc:
                raise ConfigError(f"{name}_anchors", str(exc).partition(": ")[2]) from None
            weight = getattr(self, f"weight_{name}")
            require(math.isfinite(weight) and weight >= 0, f"weight_{name}", "must not be negative")
        require(
            sum(self.weights.values()) > 0,
            "weight_drawdown",
            "at least one weight must be positive",
        )
        require(0 <= self.switch_margin < 1, "switch_margin", "must be in [0, 1)")
        require(1 <= self.confirmations <= 100, "confirmations", "must be in 1..100")
        require(self.regime_timeout_seconds > 0, "regime_timeout_seconds", "must be positive")

    @property
    def weights(self) -> dict[str, float]:
        return {
            "drawdown": self.weight_drawdown,
            "volatility": self.weight_volatility,
            "regime": self.weight_regime,
            "trend": self.weight_trend,
        }

    @property
    def rule(self) -> ScoringRule:
        return ScoringRule(
            drawdown=self.drawdown_anchors,
            volatility=self.volatility_anchors,
            regime=self.regime_anchors,
            trend=self.trend_anchors,
            weights=self.weights,
        )

    @property
    def hysteresis(self) -> Hysteresis:
        return Hysteresis(margin=self.switch_margin, confirmations=self.confirmations)
