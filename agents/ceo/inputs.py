"""What the CEO reads: the fleet's drawdown, realised volatility and P&L trend at the end of a
period, and the world model's regimes of the sectors.

At the end of period k, over the last ``lookback`` period returns r of the fleet (at most; every
one needs ``min_observations``):

* drawdown: 1 - E_k / peak, E the fleet's equity at period ends, the peak taken over the
  lookback (and the equity at its start);
* volatility: std(r, ddof=1) x sqrt(periods per year), annualised like the fleet's own figures
  (a 365-day year of 24-hour days);
* trend: the t-statistic of the drift of cumulative P&L, mean(r) / (std(r, ddof=1) / sqrt(n)):
  how many standard errors the mean period return lies from zero.

Regime: per sector, P(volatile) - P(calm) from the world model's regime probabilities (0 for the
normal state), averaged with the sectors' allocations as weights (equal weights when nothing is
allocated); p, the probability of each sector's reported regime averaged the same way, is how
sure the world model is.

The inputs' ``as_of_time`` is the market time of the oldest data they rest on: the end of the
period, or the oldest sector regime when the world model's models are older.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from agents.fleet_history import FleetHistory
from world_model.regimes import RegimeReport


@dataclasses.dataclass(frozen=True, kw_only=True)
class Regime:
    stress: float  # P(volatile) - P(calm), allocation-weighted
    probability: float  # of the reported regimes, allocation-weighted
    probabilities: Mapping[str, float]  # calm/normal/volatile, allocation-weighted
    by_sector: Mapping[str, str]  # reported regime per sector
    as_of_time: int = 0  # market time of the oldest sector's regime model (its last bar)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CeoInputs:
    time: int  # end of the period, Unix nanoseconds
    observations: int
    drawdown: float
    volatility: float | None
    trend: float | None  # t-statistic
    regime: Regime | None

    def values(self) -> dict[str, float | None]:
        return {
            "drawdown": self.drawdown,
            "volatility": self.volatility,
            "trend": self.trend,
            "regime": self.regime.stress if self.regime is not None else None,
        }

    def missing(self) -> tuple[str, ...]:
        return tuple(name for name, value in self.values().items() if value is None)

    @property
    def as_of_time(self) -> int:
        """Market time of the oldest data the inputs rest on (module docstring)."""
        if self.regime is not None and self.regime.as_of_time:
            return min(self.time, self.regime.as_of_time)
        return self.time


def fleet_inputs(
    history: FleetHistory, k: int, *, lookback: int, min_observations: int
) -> CeoInputs:
    """The inputs at the end of the k-th period kept in ``history`` (no regime yet)."""
    first = max(0, k + 1 - lookback)
    r = history.portfolio[first : k + 1]
    equity = history.equity[first : k + 1]
    start = float(equity[0] / (1 + r[0]))
    peak = max(start, float(np.max(equity)))
    volatility = trend = None
    n = r.shape[0]
    if n >= max(min_observations, 2):
        sd = float(np.std(r, ddof=1))
        volatility = sd * math.sqrt(history.periods_per_year)
        trend = float(np.mean(r) / (sd / math.sqrt(n))) if sd > 0 else 0.0
    return CeoInputs(
        time=int(history.end_times[k]),
        observations=n,
        drawdown=max(0.0, 1 - float(equity[-1]) / peak),
        volatility=volatility,
        trend=trend,
        regime=None,
    )


def regime_of(reports: Mapping[str, RegimeReport], allocations: Mapping[str, float]) -> Regime:
    """The portfolio's regime from the sectors' reports (``sector -> report``)."""
    sectors = sorted(reports)
    if not sectors:
        raise ValueError("regime_of needs at least one sector's report")
    weights = np.array([max(allocations.get(s, 0.0), 0.0) for s in sectors])
    weights = (
        weights / weights.sum() if weights.sum() > 0 else np.full(len(sectors), 1 / len(sectors))
    )
    probabilities: dict[str, float] = {"calm": 0.0, "normal": 0.0, "volatile": 0.0}
    reported = 0.0
    for w, sector in zip(weights, sectors, strict=True):
        report = reports[sector]
        for label, p in zip(report.labels, report.probabilities, strict=True):
            probabilities[label] = probabilities.get(label, 0.0) + w * p
        reported += w * report.probability
    return Regime(
        stress=probabilities["volatile"] - probabilities["calm"],
        probability=reported,
        probabilities=probabilities,
        by_sector={s: reports[s].regime for s in sectors},
        as_of_time=min(reports[s].as_of_time for s in sectors),
    )
