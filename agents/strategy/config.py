"""Settings of the strategy officer (environment variables QTMESH_STRATEGY_<NAME>).

The shadow promotion gates and the reweight threshold default to the meta policy's
(:class:`meta.config.MetaPolicyRules`), so both apply the same rules unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from agents.strategy.advice import OfficerRules
from meta.config import MetaPolicyRules
from qtmesh.config import Secret, require, setting
from qtmesh.storage import redact

ENV_PREFIX = "QTMESH_STRATEGY_"
_META = MetaPolicyRules()


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    data_dir: Path = setting(
        Path(".qtmesh/data"), help="directory of the SQLite database strategy.db when no URL is set"
    )
    database_url: Secret | None = setting(
        None, help="sqlite:///path or postgresql://user:pass@host/db; unset: SQLite in data_dir"
    )
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
    shadow_min_test_days: float = setting(
        _META.shadow_min_test_days, help="days a shadow tests before promotion (replay clock)"
    )
    shadow_min_trades: int = setting(
        _META.shadow_min_trades, help="trades a shadow makes before promotion"
    )
    shadow_required_sharpe: float = setting(
        _META.shadow_required_sharpe, help="Sharpe ratio a shadow must exceed"
    )
    shadow_required_deflated_sharpe: float = setting(
        _META.shadow_required_deflated_sharpe, help="deflated Sharpe ratio a shadow needs"
    )
    shadow_max_promotions: int = setting(
        _META.shadow_max_promotions, help="most shadows promoted by one recommendation round"
    )
    reweight_threshold: float = setting(
        _META.reweight_threshold, help="total-variation distance of weights that reweights"
    )
    sesa_timeout_seconds: float = setting(30.0, help="cap on one SESA evaluation of a shadow")
    default_page_size: int = setting(100, help="strategies per ListStrategies page by default")
    max_page_size: int = setting(1000, help="most strategies per ListStrategies page")

    def __post_init__(self) -> None:
        if self.database_url is not None:
            scheme = self.database_url.reveal().partition(":")[0]
            require(
                scheme in ("sqlite", "postgresql") or scheme.startswith("postgresql+"),
                "database_url",
                f"expected sqlite:/// or postgresql://, got {redact(self.database_url.reveal())}",
            )
        require(
            math.isfinite(self.period_minutes) and 1 <= self.period_minutes <= 7 * 1440,
            "period_minutes",
            "must be in 1..10080 (one week)",
        )
        require(self.min_observations >= 2, "min_observations", "must be at least 2")
        require(
            self.lookback_periods >= self.min_observations,
            "lookback_periods",
            "must be at least min_observations",
        )
        require(self.min_trades >= 0, "min_trades", "must not be negative")
        require(0 < self.disable_psr < 1, "disable_psr", "must be in (0, 1)")
        require(self.disable_psr < self.enable_psr < 1, "enable_psr", "must be in (disable_psr, 1)")
        require(self.sesa_timeout_seconds > 0, "sesa_timeout_seconds", "must be positive")
        require(
            1 <= self.default_page_size <= self.max_page_size,
            "default_page_size",
            "must be in 1..max_page_size",
        )
        self._meta_rules()  # the meta policy's own checks, naming the setting

    @property
    def url(self) -> str:
        if self.database_url is not None:
            return self.database_url.reveal()
        return f"sqlite:///{self.data_dir / 'strategy.db'}"

    @property
    def period_nanos(self) -> int:
        return round(self.period_minutes * 60e9)

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
