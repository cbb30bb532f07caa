"""What the memory engine recommends: case-based reasoning over the recalled episodes.

Decisions are recorded as short text. Those in the grammar below can be turned back into
actions for the sector of the context, so memory can recommend them again:

    hold                         no change (a valid outcome to compare against, never an action)
    adjust_exposure factor=<f>   AdjustExposure(sector, f)
    halt_trading                 HaltTrading(scope=sector)
    switch_mode mode=<mode>      SwitchMode(<mode>), e.g. mode=defensive

Any other decision text is remembered and summarised but not recommended.

For a sector, the recalled episodes with similarity >= ``min_similarity`` are grouped by
decision. Per decision: n episodes, the similarity-weighted mean outcome m, and the consistency
c = the similarity-weighted share of outcomes with the sign of m. The best decision (largest m
among those with n >= ``min_support``) is recommended when m > 0 and it is an action, with

    confidence = mean similarity x c x n / (n + min_support)

(the last factor shrinks small samples); priority MEDIUM from a confidence of
``medium_confidence`` on, else LOW. Decisions that consistently failed (m < 0, c >= 0.6)
are named in the rationale as ones to avoid. An empty memory, or no similar enough episode,
recommends nothing. A recommendation carries the market time of the context it was recalled for
(``as_of_time``: the clock of the market snapshot the features came from).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from memory.episodes import Recalled
from qtmesh.base.contract import (
    ActionParameters,
    AdjustExposure,
    HaltTrading,
    Priority,
    Recommendation,
    StrategicMode,
    SwitchMode,
)

HOLD = "hold"
_DECISION = re.compile(r"^(?P<verb>[a-z_]+)(?:\s+(?P<key>[a-z_]+)=(?P<value>\S+))?$")


def decision_text(parameters: ActionParameters | None) -> str:
    """The decision text of an action (None: hold)."""
    match parameters:
        case None:
            return HOLD
        case AdjustExposure(factor=factor):
            return f"adjust_exposure factor={factor:g}"
        case HaltTrading():
            return "halt_trading"
        case SwitchMode(mode=mode):
            return f"switch_mode mode={mode.name.lower()}"
    raise ValueError(f"{type(parameters).__name__} has no decision text")


def parse_decision(text: str, sector: str) -> ActionParameters | None:
    """The action a decision text stands for in ``sector``; None for hold or unknown text."""
    match = _DECISION.match(text.strip())
    if match is None:
        return None
    verb, key, value = match["verb"], match["key"], match["value"]
    try:
        if verb == "adjust_exposure" and key == "factor":
            factor = float(value)
            return AdjustExposure(sector=sector, factor=factor) if 0 <= factor < 100 else None
        if verb == "halt_trading" and key is None:
            return HaltTrading(scope=sector)
        if verb == "switch_mode" and key == "mode":
            return SwitchMode(mode=StrategicMode[value.upper()])
    except (ValueError, KeyError):
        return None
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdvicePolicy:
    min_similarity: float = 0.5
    min_support: int = 3
    # A failing decision is named as one to avoid when this share of its outcomes were losses.
    avoid_consistency: float = 0.6
    medium_confidence: float = 0.6


@dataclasses.dataclass(frozen=True)
class DecisionRecord:
    decision: str
    count: int
    mean_outcome: float
    consistency: float
    mean_similarity: float


def decision_records(recalled: Sequence[Recalled], policy: AdvicePolicy) -> list[DecisionRecord]:
    """Per decision, what followed it in the similar enough episodes (best first)."""
    groups: dict[str, list[Recalled]] = {}
    for r in recalled:
        if r.similarity >= policy.min_similarity:
            groups.setdefault(r.episode.decision, []).append(r)
    records = []
    for decision, members in groups.items():
        weights = np.array([r.similarity for r in members])
        outcomes = np.array([r.episode.outcome for r in members])
        mean = float(weights @ outcomes / weights.sum())
        agree = np.sign(outcomes) == np.sign(mean) if mean != 0 else outcomes == 0
        records.append(
            DecisionRecord(
                decision=decision,
                count=len(members),
                mean_outcome=mean,
                consistency=float(weights @ agree / weights.sum()),
                mean_similarity=float(weights.mean()),
            )
        )
    return sorted(records, key=lambda r: (-r.mean_outcome, r.decision))


def advise(
    sector: str, recalled: Sequence[Recalled], policy: AdvicePolicy, *, as_of_time: int = 0
) -> Recommendation | None:
    """The decision that worked best in similar past contexts of ``sector``, as an action;
    ``as_of_time`` is the market time of the context recalled for."""
    records = decision_records(recalled, policy)
    supported = [r for r in records if r.count >= policy.min_support]
    if not supported:
        return None
    best = supported[0]
    action = parse_decision(best.decision, sector)
    if best.mean_outcome <= 0 or action is None:
        return None
    avoid = [
        r for r in supported if r.mean_outcome < 0 and r.consistency >= policy.avoid_consistency
    ]
    confidence = (
        best.mean_similarity * best.consistency * best.count / (best.count + policy.min_support)
    )
    similar = sum(r.count for r in records)
    rationale = (
        f"In the {similar} most similar past {sector} contexts (similarity >= "
        f"{policy.min_similarity:g}), '{best.decision}' was followed by {best.mean_outcome:+.3%} "
        f"on average over {best.count} episodes ({best.consistency:.0%} of them with that sign, "
        f"mean similarity {best.mean_similarity:.2f})."
    )
    if avoid:
        rationale += (
            " Avoid "
            + "; ".join(
                f"'{r.decision}' ({r.mean_outcome:+.3%} over {r.count}, {r.consistency:.0%} losses)"
                for r in avoid
            )
            + "."
        )
    evidence = {
        "episodes": float(similar),
        "support": float(best.count),
        "mean_outcome": best.mean_outcome,
        "consistency": best.consistency,
        "mean_similarity": best.mean_similarity,
    }
    confidence = float(np.clip(confidence, 0.0, 1.0))
    return Recommendation(
        id=f"memory-{sector}",
        priority=Priority.MEDIUM if confidence >= policy.medium_confidence else Priority.LOW,
        target=f"sector/{sector}" if not isinstance(action, SwitchMode) else "mode",
        parameters=action,
        confidence=confidence,
        rationale=rationale,
        evidence=evidence,
        as_of_time=as_of_time,
    )
