"""Semantic memory: what the episodes of each regime and sector add up to.

The store keeps, per (regime, sector, decision), the count, the sum and the sum of squares of the
outcomes and the number of positive ones, updated in the same transaction as every episode added
or evicted, so a summary always describes exactly the episodes in memory and costs nothing to
read. :func:`summarise` combines those rows per (regime, sector).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType


@dataclasses.dataclass(frozen=True)
class OutcomeTally:
    """Sufficient statistics of the outcomes of one (regime, sector, decision)."""

    regime: str
    sector: str
    decision: str
    count: int
    total: float
    total_squares: float
    positives: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class SemanticSummary:
    """Outcomes of a regime and sector. ``outcome_stddev`` is the sample standard deviation
    (ddof=1; 0 for a single episode); ``hit_rate`` the share of positive outcomes."""

    regime: str
    sector: str
    episode_count: int
    mean_outcome: float
    outcome_stddev: float
    hit_rate: float
    decision_outcomes: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "decision_outcomes", MappingProxyType(dict(self.decision_outcomes))
        )


def summarise(tallies: Iterable[OutcomeTally]) -> list[SemanticSummary]:
    """One summary per (regime, sector), sorted by regime then sector."""
    groups: dict[tuple[str, str], list[OutcomeTally]] = {}
    for tally in tallies:
        if tally.count > 0:
            groups.setdefault((tally.regime, tally.sector), []).append(tally)
    summaries = []
    for (regime, sector), members in sorted(groups.items()):
        count = sum(t.count for t in members)
        total = sum(t.total for t in members)
        squares = sum(t.total_squares for t in members)
        mean = total / count
        variance = (squares - count * mean * mean) / (count - 1) if count > 1 else 0.0
        summaries.append(
            SemanticSummary(
                regime=regime,
                sector=sector,
                episode_count=count,
                mean_outcome=mean,
                outcome_stddev=math.sqrt(max(variance, 0.0)),
                hit_rate=sum(t.positives for t in members) / count,
                decision_outcomes={
                    t.decision: t.total / t.count for t in sorted(members, key=lambda t: t.decision)
                },
            )
        )
    return summaries
