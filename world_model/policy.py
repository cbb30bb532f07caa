"""What the world model recommends: sector exposure by volatility targeting at the regime's
volatility.

For a sector in (reported) regime k the exposure factor is the long-run volatility of the fitted
history (the mixture of the states weighted by the time the history spent in each) divided by the
volatility of state k, clipped to ``[min_factor, max_factor]``. The time spent is used rather than
the chain's stationary distribution because a history with one switch makes its last state
look absorbing. A volatile regime therefore scales exposure down, a calm one up (volatility
management in the sense of Moreira & Muir 2017). Scaling up also needs the regime to trend up:
its mean return at least ``min_drift_t`` standard errors above zero (default 0: a positive mean;
over days of data a drift is rarely significant, so a stricter bar would all but never pass).
Changes smaller than ``min_change`` are not worth an action. The confidence is the probability
of the regime. A recommendation's ``as_of_time`` is the market time of the last bar its regime
model was fitted on, so the federation can tell (and supersede) one that rests on a regime
computed long before the cycle it is offered in.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qtmesh.base.bars import format_time
from qtmesh.base.contract import AdjustExposure, Priority, Recommendation
from world_model.regimes import RegimeModel


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExposurePolicy:
    min_factor: float = 0.5
    max_factor: float = 1.5
    min_change: float = 0.1
    min_drift_t: float = 0.0
    # A volatile regime this likely is a HIGH priority (act within a minute), else MEDIUM.
    urgent_probability: float = 0.9


def exposure_factor(model: RegimeModel, regime: int, policy: ExposurePolicy) -> float:
    """Volatility-targeting factor for ``regime`` (1.0 when no change is warranted)."""
    long_run = model.long_run_stddev
    factor = float(
        np.clip(long_run / model.hmm.stddevs[regime], policy.min_factor, policy.max_factor)
    )
    if factor > 1 and model.drift_t_statistic(regime) < policy.min_drift_t:
        factor = 1.0
    if abs(factor - 1) < policy.min_change:
        factor = 1.0
    return factor


def recommend_exposure(
    sector: str, model: RegimeModel, regime: int, policy: ExposurePolicy
) -> Recommendation | None:
    """An AdjustExposure for ``sector`` in ``regime``, or None when exposure should stay."""
    factor = exposure_factor(model, regime, policy)
    if factor == 1.0:
        return None
    label = model.labels[regime]
    probability = min(max(float(model.probabilities[regime]), 0.0), 1.0)
    regime_vol = model.annualised(float(model.hmm.stddevs[regime]))
    long_run_vol = model.annualised(model.long_run_stddev)
    if factor < 1:
        urgent = label == model.labels[-1] and probability >= policy.urgent_probability
        priority = Priority.HIGH if urgent else Priority.MEDIUM
        reason = "cut exposure"
    else:
        priority = Priority.LOW
        drift_t = model.drift_t_statistic(regime)
        reason = f"the regime trends (drift t = {drift_t:.1f}), so raise exposure"
    evidence = {
        f"p_{name}": float(p) for name, p in zip(model.labels, model.probabilities, strict=True)
    }
    evidence |= {
        "regime_volatility": regime_vol,
        "long_run_volatility": long_run_vol,
        "factor": factor,
        "drift_t": model.drift_t_statistic(regime),
    }
    return Recommendation(
        id=f"exposure-{sector}",
        priority=priority,
        target=f"sector/{sector}",
        parameters=AdjustExposure(sector=sector, factor=round(factor, 4)),
        confidence=probability,
        rationale=(
            f"{sector} is in a {label} regime (p={probability:.2f} at "
            f"{format_time(model.as_of_time)}, from {model.observations} steps of "
            f"{model.bars_per_step} bars): volatility {regime_vol:.0%} annualised vs "
            f"{long_run_vol:.0%} long-run; volatility targeting says {reason} "
            f"by a factor of {factor:.2f}."
        ),
        evidence=evidence,
        as_of_time=model.as_of_time,
    )
