"""How every rule of the meta policy decides, in numbers.

A threshold is reached when the value is within :data:`EPS` (1e-9) of it, so a value printed
equal to a threshold counts as reaching it. Confidence is 0.5 at a rule's threshold and rises
linearly to 1.0 once the deciding input is twice as far past it; decisions that act on nothing
(hold, keep) carry confidence 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping

from meta.model import ACTIONABLE, DecisionType, MetaDecision

EPS = 1e-9


def confidence(margin: float) -> float:
    """0.5 at the threshold (margin 0), 1.0 at twice the threshold's distance (margin >= 1)."""
    return 0.5 + 0.5 * min(1.0, max(0.0, margin))


def reaches(value: float, threshold: float) -> bool:
    return value >= threshold - EPS


def relative(value: float, threshold: float) -> float:
    """How far past a threshold, relative to it (1.0 when the threshold is zero)."""
    return (value - threshold) / abs(threshold) if threshold else 1.0


def decision(
    rule: str,
    type_: DecisionType,
    rationale: str,
    inputs: Mapping[str, float],
    *,
    margin: float = 1.0,
    strategy_id: str = "",
    proposed: Mapping[str, float] | None = None,
) -> MetaDecision:
    return MetaDecision(
        type=type_,
        rule=rule,
        inputs=inputs,
        rationale=rationale,
        strategy_id=strategy_id,
        proposed=proposed or {},
        confidence=1.0 if type_ not in ACTIONABLE else confidence(margin),
    )
