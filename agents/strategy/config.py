"""Settings of the strategy officer (environment variables QTMESH_STRATEGY_<NAME>).

The shadow promotion gates are the meta policy's own settings (:class:`meta.config.ShadowGates`)
and the reweight threshold defaults to the meta policy's, so both apply the same rules unless
told otherwise.
"""

from __future__ import annotations

import dataclasses

from agents.officer import FleetPeriods
from agents.strategy.advice import OfficerRules
from meta.config import MetaPolicyRules, ShadowGates
from qtmesh.base.config import require, setting

ENV_PREFIX = "QTMESH_STRATEGY_"
_META = MetaPolicyRules()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyConfig(FleetPeriods, ShadowGates):
    """The officer stores nothing: the book it advises on is the market fleet's."""

    period_minutes: float = setting(60.0, help="length of one period of fleet returns")
    lookback_periods: int = setting(72, help="periods recent fleet performance is measured over")
    min_observations: int = setting(12, help="fewest fleet returns a disable or enable needs")
    min_trades: int = setting(10, help="fewest trades a disable or enable needs")
    disable_psr: float = setting(
        0.05, help="disable a losing strategy whose P(true Sharpe > 0) is below this"
    )
    enable_psr: float = setting(
        0.95, help="enable a disabled strategy whose P(true Sharpe > 0) reaches this"
    )
    reweight_threshold: float = setting(
        _META.reweight_threshold, help="total-variation distance of weights that reweights"
    )
    default_page_size: int = setting(100, help="strategies per ListStrategies page by default")
    max_page_size: int = setting(1000, help="most strategies per ListStrategies page")

    def __post_init__(self) -> None:
        self.check_periods()
        require(self.min_trades >= 0, "min_trades", "must not be negative")
        require(0 < self.disable_psr < 1, "disable_psr", "must be in (0, 1)")
        require(self.disable_psr < self.enable_psr < 1, "enable_psr", "must be in (disable_psr, 1)")
        require(
            1 <= self.default_page_size <= self.max_page_size,
            "default_page_size",
            "must be in 1..max_page_size",
        )
        self._meta_rules()  # the meta policy's own checks, naming the setting

    def _meta_rules(self) -> MetaPolicyRules:
        return dataclasses.replace(
            _META,
            shadow_min_test_days=self.shadow_min_test_days,
            shadow_min_trades=self.shadow_min_trades,
            shadow_required_sharpe=self.shadow_required_sharpe,
            shadow_required_deflated_sharpe=self.shadow_required_deflated_sharpe,
            shadow_max_promotions=self.shadow_max_promotions,
            reweight_threshold=self.reweight_threshold,
        )

    @property
    def rules(self) -> OfficerRules:
        return OfficerRules(
            min_observations=self.min_observations,
            min_trades=self.min_trades,
            disable_psr=self.disable_psr,
            enable_psr=self.enable_psr,
            meta=self._meta_rules(),
        )
