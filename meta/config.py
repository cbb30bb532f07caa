"""Settings of the meta-learning OS (MetaLearningConfig), the meta policy (MetaPolicyRules) and
the meta service (MetaConfig, environment variables QTMESH_META_<NAME>).

The two domain configs mirror the original spec's classes with its seed numbers; MetaConfig
inherits both so every setting is one flag and one environment variable, and checks that they
agree with each other. Every class validates itself and raises ConfigError naming the setting.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from qtmesh.base.config import require, setting
from qtmesh.base.reconnect import ReconnectConfig
from qtmesh.base.storage import DataDirConfig

ENV_PREFIX = "QTMESH_META_"


def _finite(config: Any, name: str) -> float:
    value = getattr(config, name)
    require(isinstance(value, int | float) and math.isfinite(value), name, "must be a number")
    return float(value)


def _positive(config: Any, *names: str) -> None:
    for name in names:
        require(_finite(config, name) > 0, name, f"must be positive (got {getattr(config, name)})")


def _fraction(config: Any, *names: str, allow_zero: bool = True) -> None:
    """A rate: 0..1 (or (0, 1] when zero is meaningless)."""
    for name in names:
        value = _finite(config, name)
        low_ok = value >= 0 if allow_zero else value > 0
        span = "0..1" if allow_zero else "(0, 1]"
        require(low_ok and value <= 1, name, f"must be in {span} (got {value})")


def _range(config: Any, low: str, high: str, *, initial: str | None = None) -> None:
    """``low`` <= ``initial`` <= ``high``."""
    require(
        _finite(config, low) <= _finite(config, high),
        low,
        f"is above {high} ({getattr(config, low)} > {getattr(config, high)})",
    )
    if initial is not None:
        value = _finite(config, initial)
        require(
            getattr(config, low) <= value <= getattr(config, high),
            initial,
            f"must be in {low}..{high} = {getattr(config, low)}..{getattr(config, high)} "
            f"(got {value})",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaLearningConfig:
    """How the meta-learning OS adapts the platform's learning hyperparameters."""

    meta_update_interval_minutes: float = setting(
        60.0, help="minutes between two adaptations; updates sooner only record their inputs"
    )
    meta_learning_rate: float = setting(
        0.01, help="share of the way each hyperparameter moves toward its target per adaptation"
    )
    performance_window_hours: float = setting(24.0, help="rolling window of trades, in hours")
    min_samples_for_update: int = setting(
        20, help="fewest trades in the window for an adaptation to happen"
    )
    adapt_rl_hyperparameters: bool = setting(
        True, help="adapt RL learning rate, exploration and discount"
    )
    adapt_strategy_weights: bool = setting(True, help="adapt strategy weights from evaluations")
    adapt_model_weights: bool = setting(True, help="adapt model (strategy family) weights")
    adapt_risk_tolerance: bool = setting(True, help="adapt risk multiplier and position sizing")

    rl_learning_rate_min: float = setting(1e-4, help="lowest RL learning rate")
    rl_learning_rate_max: float = setting(1e-2, help="highest RL learning rate")
    rl_learning_rate_initial: float = setting(1e-3, help="RL learning rate before any adaptation")
    rl_exploration_rate_min: float = setting(0.05, help="lowest RL exploration rate")
    rl_exploration_rate_max: float = setting(0.40, help="highest RL exploration rate")
    rl_exploration_rate_initial: float = setting(0.20, help="RL exploration rate at the start")
    rl_discount_min: float = setting(0.90, help="lowest RL discount factor")
    rl_discount_max: float = setting(0.99, help="highest RL discount factor")
    rl_discount_initial: float = setting(0.95, help="RL discount factor at the start")
    risk_multiplier_min: float = setting(0.5, help="lowest risk multiplier")
    risk_multiplier_max: float = setting(1.5, help="highest risk multiplier")
    position_size_scale_min: float = setting(0.5, help="lowest position-size scale")
    position_size_scale_max: float = setting(1.5, help="highest position-size scale")

    sharpe_low: float = setting(
        0.0, help="window Sharpe at or below which exploration targets its maximum"
    )
    sharpe_high: float = setting(
        2.0, help="window Sharpe at or above which exploration targets its minimum"
    )
    volatility_low: float = setting(
        0.005, help="trade-return volatility at or below which learning rate and discount peak"
    )
    volatility_high: float = setting(
        0.03, help="trade-return volatility at or above which learning rate and discount bottom"
    )
    streak_saturation: int = setting(
        10, help="streak length at which the risk multiplier targets its bound"
    )
    target_trade_volatility: float = setting(
        0.01, help="trade-return volatility that position-size scale 1.0 corresponds to"
    )
    strategy_weight_temperature: float = setting(
        0.1, help="softmax temperature over composite scores (0..1) for strategy weights"
    )
    model_weight_temperature: float = setting(
        0.5, help="softmax temperature over per-trade Sharpe ratios for model weights"
    )
    weight_smoothing: float = setting(
        0.2, help="exponential smoothing factor of strategy and model weights per adaptation"
    )
    baseline_smoothing: float = setting(
        0.05, help="exponential smoothing factor of the performance baseline per adaptation"
    )

    sesa_mutation_rate_initial: float = setting(0.3, help="SESA mutation rate at the start")
    sesa_mutation_magnitude_initial: float = setting(
        0.2, help="SESA mutation magnitude at the start"
    )
    sesa_mutation_rates: tuple[float, ...] = setting(
        (0.15, 0.3, 0.45), help="mutation rates the tuner chooses among (comma-separated)"
    )
    sesa_mutation_magnitudes: tuple[float, ...] = setting(
        (0.1, 0.2, 0.35), help="mutation magnitudes the tuner chooses among (comma-separated)"
    )
    sesa_trial_min_evaluations: int = setting(
        20, help="offspring a trial must score before the tuner may change the setting"
    )
    sesa_tuner_window_hours: float = setting(
        336.0, help="only scores this recent count for the tuner (the fitness landscape drifts)"
    )
    sesa_tuner_exploration: float = setting(0.5, help="UCB exploration coefficient of the tuner")

    def __post_init__(self) -> None:
        _positive(
            self,
            "meta_update_interval_minutes",
            "performance_window_hours",
            "target_trade_volatility",
            "strategy_weight_temperature",
            "model_weight_temperature",
            "sesa_tuner_window_hours",
        )
        _fraction(self, "weight_smoothing", "baseline_smoothing")
        _fraction(self, "meta_learning_rate", allow_zero=False)
        require(
            self.min_samples_for_update >= 2,
            "min_samples_for_update",
            f"must be at least 2: a volatility needs two trades "
            f"(got {self.min_samples_for_update})",
        )
        _positive(self, "rl_learning_rate_min")
        _range(
            self, "rl_learning_rate_min", "rl_learning_rate_max", initial="rl_learning_rate_initial"
        )
        _fraction(self, "rl_exploration_rate_min", "rl_exploration_rate_max")
        _range(
            self,
            "rl_exploration_rate_min",
            "rl_exploration_rate_max",
            initial="rl_exploration_rate_initial",
        )
        _fraction(self, "rl_discount_min", "rl_discount_max")
        _range(self, "rl_discount_min", "rl_discount_max", initial="rl_discount_initial")
        _positive(self, "risk_multiplier_min", "position_size_scale_min")
        _range(self, "risk_multiplier_min", "risk_multiplier_max")
        require(
            self.risk_multiplier_min <= 1 <= self.risk_multiplier_max,
            "risk_multiplier_min",
            "risk_multiplier_min..risk_multiplier_max must include 1.0, the neutral multiplier",
        )
        _range(self, "position_size_scale_min", "position_size_scale_max")
        require(
            self.position_size_scale_min <= 1 <= self.position_size_scale_max,
            "position_size_scale_min",
            "position_size_scale_min..position_size_scale_max must include 1.0",
        )
        require(
            _finite(self, "sharpe_low") < _finite(self, "sharpe_high"),
            "sharpe_low",
            f"must be below sharpe_high ({self.sharpe_low} >= {self.sharpe_high})",
        )
        _positive(self, "volatility_low")
        require(
            self.volatility_low < _finite(self, "volatility_high"),
            "volatility_low",
            f"must be below volatility_high ({self.volatility_low} >= {self.volatility_high})",
        )
        require(self.streak_saturation >= 1, "streak_saturation", "must be at least 1")
        for name in ("sesa_mutation_rate_initial", "sesa_mutation_magnitude_initial"):
            value = _finite(self, name)
            require(0.01 <= value <= 1, name, f"must be in 0.01..1 (got {value})")
        for name in ("sesa_mutation_rates", "sesa_mutation_magnitudes"):
            values = getattr(self, name)
            require(len(values) > 0, name, "must list at least one value")
            for value in values:
                require(
                    math.isfinite(value) and 0.01 <= value <= 1,
                    name,
                    f"values must be in 0.01..1 (got {value})",
                )
            require(len(set(values)) == len(values), name, "must not repeat a value")
        require(
            self.sesa_trial_min_evaluations >= 1, "sesa_trial_min_evaluations", "must be at least 1"
        )
        require(
            _finite(self, "sesa_tuner_exploration") >= 0,
            "sesa_tuner_exploration",
            "must not be negative",
        )

    @property
    def interval_nanos(self) -> int:
        return round(self.meta_update_interval_minutes * 60e9)

    @property
    def window_nanos(self) -> int:
        return round(self.performance_window_hours * 3600e9)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowGates:
    """The promotion gates of shadow strategies (applied by :mod:`meta.promotion`); a config
    inherits them and calls ``check_gates`` from its ``__post_init__``."""

    shadow_min_test_days: float = setting(
        7.0, help="days a shadow strategy tests before promotion (on the replay clock)"
    )
    shadow_min_trades: int = setting(50, help="trades a shadow strategy makes before promotion")
    shadow_required_sharpe: float = setting(
        1.0, help="Sharpe ratio a shadow strategy must exceed to be promoted"
    )
    shadow_required_deflated_sharpe: float = setting(
        0.95, help="deflated Sharpe ratio (a probability) a shadow needs, when SESA computed one"
    )
    shadow_max_promotions: int = setting(
        1, help="most shadow strategies promoted by one decision (the best first)"
    )

    def check_gates(self) -> None:
        require(
            _finite(self, "shadow_min_test_days") >= 0,
            "shadow_min_test_days",
            f"must not be negative (got {self.shadow_min_test_days})",
        )
        _fraction(self, "shadow_required_deflated_sharpe")
        _finite(self, "shadow_required_sharpe")
        require(self.shadow_min_trades >= 0, "shadow_min_trades", "must not be negative")
        require(self.shadow_max_promotions >= 1, "shadow_max_promotions", "must be at least 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaPolicyRules(ShadowGates):
    """Thresholds of the meta policy's rules (see meta/policy.py for the rules themselves)."""

    sesa_trigger_interval_hours: float = setting(
        24.0, help="run SESA evolution at least this often"
    )
    sesa_performance_drop_threshold: float = setting(
        0.15, help="relative drop of performance below its baseline that triggers evolution"
    )
    sesa_min_gap_hours: float = setting(
        2.0, help="a performance drop does not trigger evolution sooner than this after the last"
    )
    rl_retrain_interval_hours: float = setting(12.0, help="retrain RL models at least this often")
    rl_retrain_on_regime_change: bool = setting(True, help="retrain RL models on a regime change")
    rl_retrain_min_gap_hours: float = setting(
        1.0, help="a regime change does not trigger retraining sooner than this after the last"
    )
    target_performance: float = setting(
        1.0, help="performance (window Sharpe) target when the state does not give one"
    )
    exploration_rate_min: float = setting(0.05, help="exploration rate at or above target")
    exploration_rate_max: float = setting(
        0.30, help="exploration rate at zero performance or below"
    )
    exploration_hysteresis: float = setting(
        0.02, help="smallest exploration change worth a switch decision"
    )
    regime_exploration_rate: float = setting(
        0.20, help="least exploration right after a regime change"
    )
    min_performance_samples: int = setting(
        20, help="fewest trades behind the performance for performance-based rules to act"
    )
    winning_streak_length: int = setting(5, help="consecutive wins that increase risk")
    losing_streak_length: int = setting(3, help="consecutive losses that decrease risk")
    risk_step: float = setting(
        0.10, help="relative risk change per decision (0.10: plus or minus a tenth)"
    )
    risk_drop_threshold: float = setting(
        0.25, help="relative performance drop below baseline that decreases risk"
    )
    risk_multiplier_min: float = setting(0.5, help="risk decisions never go below this multiplier")
    risk_multiplier_max: float = setting(1.5, help="risk decisions never go above this multiplier")
    reweight_threshold: float = setting(
        0.10, help="total-variation distance of proposed from deployed weights that reweights"
    )

    def __post_init__(self) -> None:
        for name in (
            "sesa_trigger_interval_hours",
            "sesa_min_gap_hours",
            "rl_retrain_interval_hours",
            "rl_retrain_min_gap_hours",
            "exploration_hysteresis",
        ):
            require(
                _finite(self, name) >= 0, name, f"must not be negative (got {getattr(self, name)})"
            )
        _positive(self, "sesa_trigger_interval_hours", "rl_retrain_interval_hours")
        require(
            self.sesa_min_gap_hours <= self.sesa_trigger_interval_hours,
            "sesa_min_gap_hours",
            "must not exceed sesa_trigger_interval_hours",
        )
        require(
            self.rl_retrain_min_gap_hours <= self.rl_retrain_interval_hours,
            "rl_retrain_min_gap_hours",
            "must not exceed rl_retrain_interval_hours",
        )
        _fraction(
            self,
            "sesa_performance_drop_threshold",
            "risk_drop_threshold",
            "reweight_threshold",
        )
        _fraction(self, "risk_step", allow_zero=False)
        self.check_gates()
        require(
            self.min_performance_samples >= 0, "min_performance_samples", "must not be negative"
        )
        _positive(self, "target_performance")
        _fraction(self, "exploration_rate_min", "exploration_rate_max")
        _range(self, "exploration_rate_min", "exploration_rate_max")
        _fraction(self, "regime_exploration_rate")
        _range(
            self, "exploration_rate_min", "exploration_rate_max", initial="regime_exploration_rate"
        )
        for name in ("winning_streak_length", "losing_streak_length"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        _positive(self, "risk_multiplier_min")
        _range(self, "risk_multiplier_min", "risk_multiplier_max")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaConfig(DataDirConfig, MetaPolicyRules, MetaLearningConfig, ReconnectConfig):
    """Every setting of the meta service: the OS's, the policy's and where state is stored.

    ``risk_multiplier_min`` and ``risk_multiplier_max`` are declared by both parents and are one
    setting here: the OS and the policy move the same multiplier within the same bounds.
    """

    database_file = "meta.db"

    scale_fleet: bool = setting(
        True,
        help="give each new risk multiplier and position-size scale to the market's fleet, "
        "which scales every position by their product",
    )
    learn_from_fleet: bool = setting(
        True,
        help="follow the market's stream of the paper fleet's closed trades and adapt on them, "
        "on the market clock",
    )
    learn_from_sesa: bool = setting(
        True,
        help="follow SESA's stream of evolutions and count each ended one's candidates as "
        "evaluations, and each finished one as an evolution run, at the market time of its bars",
    )
    follow_regimes: bool = setting(
        True,
        help="follow the world model's stream of the market's regime changes, so the next update "
        "and the decisions until the next retraining see regime_changed",
    )
    record_to_memory: bool = setting(
        True,
        help="store every new parameter version (what kind of decision, the rules, the changes "
        "and what followed) in the memory engine, in the background (see meta/memory.py)",
    )

    def __post_init__(self) -> None:
        self.check_database()
        self.check_reconnect()
        MetaLearningConfig.__post_init__(self)
        MetaPolicyRules.__post_init__(self)
        # The policy's decisions must land inside the bounds the OS enforces.
        require(
            self.rl_exploration_rate_min <= self.exploration_rate_min
            and self.exploration_rate_max <= self.rl_exploration_rate_max,
            "exploration_rate_max"
            if self.exploration_rate_max > self.rl_exploration_rate_max
            else "exploration_rate_min",
            "exploration_rate_min..exploration_rate_max must lie within "
            "rl_exploration_rate_min..rl_exploration_rate_max",
        )

    @property
    def learning(self) -> MetaLearningConfig:
        return _project(self, MetaLearningConfig)

    @property
    def rules(self) -> MetaPolicyRules:
        return _project(self, MetaPolicyRules)


def _project(config: Any, cls: type) -> Any:
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})
