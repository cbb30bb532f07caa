"""How the CEO maps what it sees to a strategic mode, and the hysteresis that keeps it steady.

**Severities.** Each input is mapped onto a severity from 0 (expansion) to 3 (capital
preservation) by linear interpolation between four anchors, the input's values at severity 0, 1,
2 and 3, and clipped to 0..3 outside them. Defaults:

=================  =========================================  ===============================
input              definition                                 anchors (severity 0, 1, 2, 3)
=================  =========================================  ===============================
drawdown           fleet equity below its peak                0%, 1%, 3%, 6%
volatility         annualised std of period returns (ddof 1)  2%, 8%, 15%, 30%
regime stress      P(volatile) - P(calm), allocation-weighted  -1, 0, 0.5, 1
trend              minus the t-statistic of the mean return   -2, 0, 1, 2 (t = 2, 0, -1, -2)
=================  =========================================  ===============================

**Score.** The weighted mean of the severities (weights 0.35, 0.25, 0.2, 0.2); an input that is
missing (no regime from the world model, too few returns for volatility and trend) is left out
and the others' weights are renormalised. The score lies in 0..3; the *indicated* mode is the
nearest level: expansion below 0.5, normal below 1.5, defensive below 2.5, capital preservation
from 2.5.

**Hysteresis.** Two filters keep the mode from flapping. A Schmitt trigger: while the mode is at
level i, the score must leave [i - 0.5 - margin, i + 0.5 + margin] (margin 0.2) before another
mode is even a candidate. Persistence: the same candidate must come out of ``confirmations`` (2)
consecutive evaluations (one per completed period) before the CEO recommends switching to it.
A score oscillating around a boundary by less than the margin never switches; one that crosses
it by more but falls back in between evaluations never gathers its confirmations.

**Confidence** of a switch: min(1, 0.5 + d) x (0.8 + 0.2 p), d the distance of the score past the
boundary of the current mode's band (without the margin) and p the probability the world model
gives its reported regimes (allocation-weighted; 0 without a regime).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

import numpy as np

from qtmesh.base.contract import StrategicMode

# Modes by level: severity 0 is expansion, 3 capital preservation.
LEVELS = (
    StrategicMode.EXPANSION,
    StrategicMode.NORMAL,
    StrategicMode.DEFENSIVE,
    StrategicMode.CAPITAL_PRESERVATION,
)
INPUTS = ("drawdown", "volatility", "regime", "trend")


def level(mode: StrategicMode) -> int:
    return LEVELS.index(mode)


def check_anchors(name: str, anchors: tuple[float, ...]) -> tuple[float, ...]:
    if len(anchors) != 4 or not all(math.isfinite(a) for a in anchors):
        raise ValueError(f"{name}: four finite anchors are needed, got {anchors}")
    if any(b <= a for a, b in itertools.pairwise(anchors)):
        raise ValueError(f"{name}: anchors must increase, got {anchors}")
    return anchors


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoringRule:
    drawdown: tuple[float, ...] = (0.0, 0.01, 0.03, 0.06)
    volatility: tuple[float, ...] = (0.02, 0.08, 0.15, 0.30)
    regime: tuple[float, ...] = (-1.0, 0.0, 0.5, 1.0)
    trend: tuple[float, ...] = (-2.0, 0.0, 1.0, 2.0)  # of -t
    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {"drawdown": 0.35, "volatility": 0.25, "regime": 0.2, "trend": 0.2}
    )

    def __post_init__(self) -> None:
        for name in INPUTS:
            check_anchors(name, getattr(self, name))
        if set(self.weights) != set(INPUTS):
            raise ValueError(f"weights must name exactly {', '.join(INPUTS)}")
        if any(not (math.isfinite(w) and w >= 0) for w in self.weights.values()):
            raise ValueError("weights must be non-negative numbers")
        if sum(self.weights.values()) <= 0:
            raise ValueError("at least one weight must be positive")

    def severity(self, name: str, value: float) -> float:
        anchors = getattr(self, name)
        return float(np.interp(value, anchors, (0.0, 1.0, 2.0, 3.0)))

    def score(self, values: Mapping[str, float | None]) -> tuple[float, dict[str, float]]:
        """(score, severity per input present); ``values`` maps each input to its value, the
        trend as its t-statistic, None when missing."""
        severities = {}
        for name in INPUTS:
            value = values.get(name)
            if value is None or self.weights[name] == 0:
                continue
            severities[name] = self.severity(name, -value if name == "trend" else value)
        total = sum(self.weights[n] for n in severities)
        if total == 0:
            return 1.0, {}  # nothing to go by: the normal level
        return sum(self.weights[n] * s for n, s in severities.items()) / total, severities


def indicated(score: float) -> StrategicMode:
    """The mode whose level is nearest the score (boundaries at 0.5, 1.5, 2.5)."""
    return LEVELS[min(3, max(0, math.floor(score + 0.5)))]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hysteresis:
    margin: float = 0.2
    confirmations: int = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and 0 <= self.margin < 1):
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if self.confirmations < 1:
            raise ValueError(f"confirmations must be at least 1, got {self.confirmations}")

    def candidate(self, current: StrategicMode, score: float) -> StrategicMode:
        """The current mode while the score stays within its band widened by the margin, else
        the indicated one."""
        i = level(current)
        low = -math.inf if i == 0 else i - 0.5 - self.margin
        high = math.inf if i == 3 else i + 0.5 + self.margin
        return current if low <= score <= high else indicated(score)

    def step(
        self, current: StrategicMode, pending: tuple[StrategicMode, int] | None, score: float
    ) -> tuple[tuple[StrategicMode, int] | None, StrategicMode]:
        """One evaluation: the new pending switch (candidate, consecutive count) and the target
        mode, which is the candidate once it has its confirmations, else the current mode."""
        candidate = self.candidate(current, score)
        if candidate is current:
            return None, current
        count = pending[1] + 1 if pending is not None and pending[0] is candidate else 1
        target = candidate if count >= self.confirmations else current
        return (candidate, count), target


def distance_past(current: StrategicMode, score: float) -> float:
    """How far the score lies beyond the current mode's band [i - 0.5, i + 0.5]."""
    i = level(current)
    return max(0.0, score - (i + 0.5), (i - 0.5) - score)


def confidence(current: StrategicMode, score: float, regime_probability: float | None) -> float:
    p = regime_probability if regime_probability is not None else 0.0
    return min(1.0, 0.5 + distance_past(current, score)) * (0.8 + 0.2 * p)
