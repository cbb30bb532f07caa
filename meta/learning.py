"""The meta-learning OS: adapts the platform's learning hyperparameters from a rolling window of
trades and the latest strategy evaluations.

Every adaptation works in two steps. First each parameter gets a *target* from the window,
through a monotone map documented on its function (higher Sharpe never raises the exploration
target; higher volatility never raises the learning-rate target; ...). Then the parameter moves
a share of the way toward it, which is exponential smoothing:

    new = old + meta_learning_rate * (target - old)      (in log space for the learning rate)

With the default rate of 1% per hourly adaptation a parameter covers 63% of the distance to a
steady target in about 100 adaptations (four days): single noisy windows barely move it. Weights
(strategy, model) are distributions re-derived from fresh scores, so they use their own factor,
``weight_smoothing``; a 1% step would leave a newly evolved strategy near zero weight for days.
A convex combination of in-bounds values stays in bounds, and the result is clipped anyway.

The clock is a parameter: nothing here reads the wall clock.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from meta.config import MetaLearningConfig
from meta.model import (
    Evaluation,
    MetaParameters,
    ParameterChange,
    Trade,
    changes_between,
)

HOURS_PER_YEAR = 365 * 24
# Sharpe ratios are clipped so one degenerate window (e.g. identical returns) cannot dominate.
SHARPE_CAP = 10.0
# Weights below this share are dropped (then the rest renormalised), so retired strategies leave.
MIN_WEIGHT = 1e-3
# SESA's mutation rate and magnitude are fractions; below 1% a mutation changes nothing.
SESA_BOUNDS = (0.01, 1.0)


@dataclasses.dataclass(frozen=True)
class WindowStats:
    """The trades of the window ``(now - window, now]`` by exit time.

    ``sharpe`` is annualised from per-trade returns at the window's trade rate:
    mean / std * sqrt(trades per year), std with ddof=1, a 365-day year (the market trades every
    day), clipped to +/-10. ``streak`` counts the trailing run of wins (positive) or losses
    (negative) in exit-time order; a flat trade ends a run.
    """

    count: int
    mean: float
    volatility: float
    sharpe: float
    streak: int
    family_sharpe: Mapping[str, float]


def annualised_sharpe(returns: np.ndarray, window_hours: float) -> float:
    if returns.size < 2:
        return 0.0
    std = float(np.std(returns, ddof=1))
    mean = float(np.mean(returns))
    if std <= 1e-12 * max(1.0, abs(mean)):
        return 0.0 if mean == 0 else math.copysign(SHARPE_CAP, mean)
    per_year = returns.size * HOURS_PER_YEAR / window_hours
    return float(np.clip(mean / std * math.sqrt(per_year), -SHARPE_CAP, SHARPE_CAP))


def streak_of(returns: Sequence[float]) -> int:
    streak = 0
    for value in reversed(returns):
        if value > 0 and streak >= 0:
            streak += 1
        elif value < 0 and streak <= 0:
            streak -= 1
        else:
            break
    return streak


def summarize(
    trades: Sequence[Trade],
    *,
    now: int,
    window_hours: float,
    families: Mapping[str, str] | None = None,
) -> WindowStats:
    """Statistics of the trades that closed in the window ending at ``now``.

    ``families`` maps strategy ids to a model name (their strategy family); per-model Sharpe
    ratios are per trade (mean / std, not annualised) and need two trades of that model."""
    start = now - round(window_hours * 3600e9)
    inside = sorted(
        (t for t in trades if start < t.exit_time <= now),
        key=lambda t: (t.exit_time, t.entry_time, t.strategy_id, t.symbol),
    )
    returns = np.array([t.return_fraction for t in inside], dtype=np.float64)
    by_family: dict[str, list[float]] = {}
    for t in inside:
        family = (families or {}).get(t.strategy_id)
        if family is None and t.family is not None:
            family = t.family.name
        if family is not None:
            by_family.setdefault(family, []).append(t.return_fraction)
    family_sharpe = {}
    for family, values in sorted(by_family.items()):
        if len(values) >= 2:
            std = float(np.std(values, ddof=1))
            mean = float(np.mean(values))
            family_sharpe[family] = (
                float(np.clip(mean / std, -SHARPE_CAP, SHARPE_CAP)) if std > 0 else 0.0
            )
    return WindowStats(
        count=int(returns.size),
        mean=float(returns.mean()) if returns.size else 0.0,
        volatility=float(np.std(returns, ddof=1)) if returns.size >= 2 else 0.0,
        sharpe=annualised_sharpe(returns, window_hours),
        streak=streak_of(returns.tolist()),
        family_sharpe=family_sharpe,
    )


@dataclasses.dataclass(frozen=True)
class Tracked:
    """What the OS remembers between adaptations besides the parameters."""

    baseline_performance: float | None = None
    last_adaptation_time: int | None = None
    # When an evolution the meta agent recommended was last executed (market clock); the
    # evolution interval counts from it when no offspring evaluations were reported since.
    last_evolution_time: int | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Adaptation:
    parameters: MetaParameters
    changes: tuple[ParameterChange, ...]
    tracked: Tracked
    adapted: bool
    detail: str


def _lerp(start: float, end: float, share: float) -> float:
    """From ``start`` (share 0) to ``end`` (share 1); clipped, so the ends are exact and the
    map stays monotone under rounding."""
    return _clip(start + (end - start) * share, min(start, end), max(start, end))


def _share(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def softmax(scores: Mapping[str, float], temperature: float) -> dict[str, float]:
    if not scores:
        return {}
    names = sorted(scores)
    values = np.array([scores[n] for n in names]) / temperature
    exp = np.exp(values - values.max())
    return dict(zip(names, (exp / exp.sum()).tolist(), strict=True))


def smooth_weights(
    old: Mapping[str, float], target: Mapping[str, float], factor: float
) -> dict[str, float]:
    """``(1 - factor) * old + factor * target`` over both key sets; tiny weights dropped."""
    names = sorted(set(old) | set(target))
    mixed = {n: (1 - factor) * old.get(n, 0.0) + factor * target.get(n, 0.0) for n in names}
    kept = {n: w for n, w in mixed.items() if w >= MIN_WEIGHT}
    total = sum(kept.values())
    return {n: w / total for n, w in kept.items()} if total > 0 else {}


class MetaLearningOS:
    """Adapts :class:`MetaParameters`; pure: the same inputs and clock give the same outputs."""

    def __init__(self, *, config: MetaLearningConfig) -> None:
        self.config = config

    def initial_parameters(self) -> MetaParameters:
        c = self.config
        return MetaParameters(
            rl_learning_rate=c.rl_learning_rate_initial,
            rl_exploration_rate=c.rl_exploration_rate_initial,
            rl_discount=c.rl_discount_initial,
            risk_multiplier=1.0,
            position_size_scale=1.0,
            sesa_mutation_rate=c.sesa_mutation_rate_initial,
            sesa_mutation_magnitude=c.sesa_mutation_magnitude_initial,
            version=1,
            cause="seed",
        )

    def clip(self, parameters: MetaParameters) -> MetaParameters:
        """``parameters`` inside the configured bounds (after a configuration change)."""
        c = self.config
        return dataclasses.replace(
            parameters,
            rl_learning_rate=_clip(
                parameters.rl_learning_rate, c.rl_learning_rate_min, c.rl_learning_rate_max
            ),
            rl_exploration_rate=_clip(
                parameters.rl_exploration_rate, c.rl_exploration_rate_min, c.rl_exploration_rate_max
            ),
            rl_discount=_clip(parameters.rl_discount, c.rl_discount_min, c.rl_discount_max),
            risk_multiplier=_clip(
                parameters.risk_multiplier, c.risk_multiplier_min, c.risk_multiplier_max
            ),
            position_size_scale=_clip(
                parameters.position_size_scale, c.position_size_scale_min, c.position_size_scale_max
            ),
        )

    def bounds(self) -> dict[str, tuple[float, float]]:
        """The range each scalar parameter must stay in (TuneLearning is checked against it)."""
        c = self.config
        return {
            "rl_learning_rate": (c.rl_learning_rate_min, c.rl_learning_rate_max),
            "rl_exploration_rate": (c.rl_exploration_rate_min, c.rl_exploration_rate_max),
            "rl_discount": (c.rl_discount_min, c.rl_discount_max),
            "risk_multiplier": (c.risk_multiplier_min, c.risk_multiplier_max),
            "position_size_scale": (c.position_size_scale_min, c.position_size_scale_max),
            "sesa_mutation_rate": SESA_BOUNDS,
            "sesa_mutation_magnitude": SESA_BOUNDS,
        }

    def due(self, tracked: Tracked, now: int) -> bool:
        last = tracked.last_adaptation_time
        return last is None or now - last >= self.config.interval_nanos

    # -- targets: each a monotone map from one window statistic --------------------------------

    def exploration_target(self, sharpe: float) -> float:
        """rl_exploration_rate_max at Sharpe <= sharpe_low, falling linearly to the minimum at
        sharpe_high: doing well means exploiting what was learned."""
        c = self.config
        share = _share(sharpe, c.sharpe_low, c.sharpe_high)
        return _lerp(c.rl_exploration_rate_max, c.rl_exploration_rate_min, share)

    def learning_rate_target(self, volatility: float) -> float:
        """Log-linear from the maximum at volatility_low to the minimum at volatility_high:
        noisy rewards make large gradient steps chase noise."""
        c = self.config
        share = _share(volatility, c.volatility_low, c.volatility_high)
        log_rate = _lerp(math.log(c.rl_learning_rate_max), math.log(c.rl_learning_rate_min), share)
        return _clip(math.exp(log_rate), c.rl_learning_rate_min, c.rl_learning_rate_max)

    def discount_target(self, volatility: float) -> float:
        """From the maximum at volatility_low to the minimum at volatility_high: when rewards are
        noisy, long-horizon value estimates are noisier still, so the horizon shortens."""
        c = self.config
        share = _share(volatility, c.volatility_low, c.volatility_high)
        return _lerp(c.rl_discount_max, c.rl_discount_min, share)

    def risk_target(self, streak: int) -> float:
        """1.0 without a streak; toward risk_multiplier_max as wins run to streak_saturation, and
        toward the minimum as losses do."""
        c = self.config
        share = max(-1.0, min(1.0, streak / c.streak_saturation))
        if share >= 0:
            return _lerp(1.0, c.risk_multiplier_max, share)
        return _lerp(1.0, c.risk_multiplier_min, -share)

    def position_size_target(self, volatility: float) -> float:
        """Volatility targeting: target_trade_volatility / volatility, within bounds, so each
        trade risks about the same; the maximum when volatility is zero."""
        c = self.config
        if volatility <= 0:
            return c.position_size_scale_max
        return _clip(
            c.target_trade_volatility / volatility,
            c.position_size_scale_min,
            c.position_size_scale_max,
        )

    def strategy_weight_target(self, evaluations: Sequence[Evaluation]) -> dict[str, float]:
        """Softmax of the latest composite score of each strategy not rejected and not in shadow
        test (shadows earn weight through promotion), at strategy_weight_temperature."""
        latest: dict[str, Evaluation] = {}
        for e in sorted(evaluations, key=lambda e: (e.strategy_id, e.evaluated_time)):
            latest[e.strategy_id] = e
        scores = {
            sid: e.composite_score
            for sid, e in latest.items()
            if e.stage is None or e.stage.name == "PRODUCTION"
        }
        return softmax(scores, self.config.strategy_weight_temperature)

    def model_weight_target(self, stats: WindowStats) -> dict[str, float]:
        """Softmax of each model's (strategy family's) per-trade Sharpe in the window."""
        return softmax(dict(stats.family_sharpe), self.config.model_weight_temperature)

    # -- the adaptation ------------------------------------------------------------------------

    def adapt(
        self,
        parameters: MetaParameters,
        tracked: Tracked,
        stats: WindowStats,
        evaluations: Sequence[Evaluation],
        *,
        now: int,
        cause: str = "meta update",
    ) -> Adaptation:
        """One adaptation at ``now``, recorded with ``cause``; ``adapted`` is False (and nothing
        moves) when it is not due or the window holds fewer than min_samples_for_update trades."""
        c = self.config
        if not self.due(tracked, now):
            due = (tracked.last_adaptation_time or 0) + c.interval_nanos
            minutes = (due - now) / 60e9
            return Adaptation(
                parameters,
                (),
                tracked,
                False,
                f"not due: adaptations run every {c.meta_update_interval_minutes:g} min and the "
                f"next is due in {minutes:.1f} min; the trades were recorded",
            )
        if stats.count < c.min_samples_for_update:
            return Adaptation(
                parameters,
                (),
                tracked,
                False,
                f"the {c.performance_window_hours:g} h window holds {stats.count} trades and "
                f"{c.min_samples_for_update} are needed; nothing was adapted",
            )
        eta = c.meta_learning_rate
        values: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        moved = f"moved {eta:.0%} of the way"

        def toward(name: str, target: float, reason: str, *, log: bool = False) -> None:
            old = getattr(parameters, name)
            if log:
                new = math.exp(math.log(old) + eta * (math.log(target) - math.log(old)))
            else:
                new = old + eta * (target - old)
            low, high = self.bounds()[name]
            values[name] = _clip(new, low, high)
            reasons[name] = f"{reason}: target {target:.4g}, {moved}"

        sharpe, vol = stats.sharpe, stats.volatility
        if c.adapt_rl_hyperparameters:
            toward(
                "rl_exploration_rate",
                self.exploration_target(sharpe),
                f"window Sharpe {sharpe:.2f} on the {c.sharpe_low:g}..{c.sharpe_high:g} scale "
                "(higher Sharpe, less exploration)",
            )
            toward(
                "rl_learning_rate",
                self.learning_rate_target(vol),
                f"trade volatility {vol:.3%} on the {c.volatility_low:.1%}..{c.volatility_high:.1%}"
                " scale (more variance, smaller steps)",
                log=True,
            )
            toward(
                "rl_discount",
                self.discount_target(vol),
                f"trade volatility {vol:.3%} (more variance, shorter horizon)",
            )
        if c.adapt_risk_tolerance:
            toward(
                "risk_multiplier",
                self.risk_target(stats.streak),
                f"streak {stats.streak:+d} (a run of {c.streak_saturation} targets the bound)",
            )
            toward(
                "position_size_scale",
                self.position_size_target(vol),
                f"trade volatility {vol:.3%} against the {c.target_trade_volatility:.1%} target",
            )
        if c.adapt_strategy_weights:
            target = self.strategy_weight_target(evaluations)
            if target:
                values["strategy_weights"] = smooth_weights(
                    parameters.strategy_weights, target, c.weight_smoothing
                )
                reasons["strategy_weights"] = (
                    f"softmax of {len(target)} composite scores at temperature "
                    f"{c.strategy_weight_temperature:g}, smoothed by {c.weight_smoothing:g}"
                )
        if c.adapt_model_weights:
            target = self.model_weight_target(stats)
            if target:
                values["model_weights"] = smooth_weights(
                    parameters.model_weights, target, c.weight_smoothing
                )
                reasons["model_weights"] = (
                    f"softmax of per-trade Sharpe of {len(target)} strategy families at "
                    f"temperature {c.model_weight_temperature:g}, "
                    f"smoothed by {c.weight_smoothing:g}"
                )
        new = dataclasses.replace(
            parameters,
            **values,
            version=parameters.version + 1,
            update_time=now,
            cause=cause,
        )
        baseline = tracked.baseline_performance
        baseline = (
            sharpe if baseline is None else baseline + c.baseline_smoothing * (sharpe - baseline)
        )
        changes = changes_between(parameters, new, reasons)
        return Adaptation(
            new,
            changes,
            dataclasses.replace(tracked, baseline_performance=baseline, last_adaptation_time=now),
            True,
            f"adapted from {stats.count} trades in the {c.performance_window_hours:g} h window "
            f"(Sharpe {sharpe:.2f}, volatility {vol:.3%}, streak {stats.streak:+d}); "
            f"{len(changes)} parameters moved",
        )


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))
