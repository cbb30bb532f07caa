"""Settings of the world model (environment variables QTMESH_WORLD_MODEL_<NAME>)."""

from __future__ import annotations

import dataclasses
import math

from qtmesh.base.config import require, setting
from qtmesh.base.reconnect import ReconnectConfig
from world_model.hmm import LABELS
from world_model.policy import ExposurePolicy
from world_model.regimes import Hysteresis, RegimeSettings

ENV_PREFIX = "QTMESH_WORLD_MODEL_"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorldModelConfig(ReconnectConfig):
    states: int = setting(3, help="hidden states of the regime model: 2 or 3")
    lookback_bars: int = setting(
        43_200, help="bars of history a regime model is fitted on by default (fewer if fewer exist)"
    )
    max_lookback_bars: int = setting(200_000, help="largest lookback a request may ask for")
    bars_per_step: int = setting(30, help="bars summed into one observation of the regime model")
    winsorize: float = setting(
        4.0, help="clip observations at this many robust standard deviations (0: never)"
    )
    max_iterations: int = setting(100, help="EM iterations at most per fit")
    tolerance: float = setting(1e-5, help="EM stops when the log-likelihood per step gains less")
    restarts: int = setting(2, help="random EM starts besides the deterministic one")
    seed: int = setting(7, help="seed of the EM restarts")
    refit_bars: int = setting(60, help="refit a cached model once this many new bars exist")
    switch_enter: float = setting(
        0.7, help="hysteresis: another regime is reported once its probability reaches this"
    )
    switch_exit: float = setting(
        0.3, help="hysteresis: the reported regime is dropped once its probability falls below"
    )
    min_factor: float = setting(0.5, help="smallest exposure factor recommended")
    max_factor: float = setting(1.5, help="largest exposure factor recommended")
    min_change: float = setting(0.1, help="exposure changes smaller than this are not recommended")
    min_drift_t: float = setting(
        0.0, help="raising exposure needs the regime's drift this many standard errors above 0"
    )
    block_size: int = setting(60, help="default mean block length of the bootstrap, in bars")
    max_horizon: int = setting(
        43_200,
        help="longest simulation horizon, in bars (30 days of one-minute bars: SESA's default "
        "evaluation window, which its forward evaluation simulates)",
    )
    max_paths: int = setting(10_000, help="most paths one simulation may draw")
    max_simulated_values: int = setting(
        20_000_000, help="most num_paths x horizon values one simulation may draw"
    )
    max_returned_values: int = setting(
        1_000_000, help="most num_paths x horizon values a response may include"
    )
    warm_up: bool = setting(True, help="fit every sector's model in the background at start-up")
    cache_size: int = setting(64, help="regime models kept (one per series and lookback)")
    watch_regimes: bool = setting(
        True,
        help="follow the market clock and publish the whole market's regime changes on "
        "WatchRegimes",
    )
    watch_interval_minutes: float = setting(
        60.0, help="market minutes at least between two detections of the market's regime"
    )
    kept_regime_events: int = setting(
        1000, help="regime events kept in memory for WatchRegimes to resume from"
    )
    watch_queue_events: int = setting(
        100,
        help="events a WatchRegimes subscriber may fall behind before it is cut off "
        "(RESOURCE_EXHAUSTED, with the sequence to resume after)",
    )

    def __post_init__(self) -> None:
        self.check_reconnect()
        require(self.states in LABELS, "states", f"must be one of {sorted(LABELS)}")
        require(self.lookback_bars >= 2, "lookback_bars", "must be at least 2")
        require(
            self.max_lookback_bars >= self.lookback_bars,
            "max_lookback_bars",
            "must be at least lookback_bars",
        )
        require(self.bars_per_step >= 1, "bars_per_step", "must be at least 1")
        require(self.winsorize >= 0, "winsorize", "must not be negative")
        require(self.max_iterations >= 1, "max_iterations", "must be at least 1")
        require(self.tolerance > 0, "tolerance", "must be positive")
        require(self.restarts >= 0, "restarts", "must not be negative")
        require(self.seed >= 0, "seed", "must not be negative")
        require(self.refit_bars >= 1, "refit_bars", "must be at least 1")
        require(0.5 < self.switch_enter <= 1, "switch_enter", "must be in (0.5, 1]")
        require(
            0 <= self.switch_exit < self.switch_enter, "switch_exit", "must be in [0, switch_enter)"
        )
        require(0 < self.min_factor <= 1, "min_factor", "must be in (0, 1]")
        require(self.max_factor >= 1, "max_factor", "must be at least 1")
        require(0 <= self.min_change < 1, "min_change", "must be in [0, 1)")
        require(self.block_size >= 1, "block_size", "must be at least 1")
        for name in ("max_horizon", "max_paths", "max_simulated_values", "max_returned_values"):
            require(getattr(self, name) >= 1, name, "must be at least 1")
        require(self.cache_size >= 1, "cache_size", "must be at least 1")
        require(
            math.isfinite(self.watch_interval_minutes) and self.watch_interval_minutes >= 0,
            "watch_interval_minutes",
            "must not be negative",
        )
        require(self.kept_regime_events >= 1, "kept_regime_events", "must be at least 1")
        require(self.watch_queue_events >= 1, "watch_queue_events", "must be at least 1")

    @property
    def regime_settings(self) -> RegimeSettings:
        return RegimeSettings(
            states=self.states,
            bars_per_step=self.bars_per_step,
            winsorize=self.winsorize,
            max_iterations=self.max_iterations,
            tolerance=self.tolerance,
            restarts=self.restarts,
        )

    @property
    def hysteresis(self) -> Hysteresis:
        return Hysteresis(enter=self.switch_enter, exit=self.switch_exit)

    @property
    def exposure_policy(self) -> ExposurePolicy:
        return ExposurePolicy(
            min_factor=self.min_factor,
            max_factor=self.max_factor,
            min_change=self.min_change,
            min_drift_t=self.min_drift_t,
        )

    @property
    def watch_interval_nanos(self) -> int:
        return round(self.watch_interval_minutes * 60e9)

    @property
    def min_history_bars(self) -> int:
        """Bars a fit needs: 10 steps per state, plus the first close."""
        return 10 * self.states * self.bars_per_step + 1
