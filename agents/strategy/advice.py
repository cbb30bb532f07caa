"""What the strategy officer recommends from the book and its strategies' performance (see
:mod:`agents.strategy.performance`).

* **Disable** a persistent loser: an enabled production strategy with at least
  ``min_observations`` returns and ``min_trades`` trades in the lookback, a negative total
  return, and a PSR below ``disable_psr`` (0.05): the chance that its true Sharpe is positive is
  under 5%. Never the last enabled production strategy of its sector (the sector's allocation is
  the risk officer's and the market's lever). MEDIUM; confidence 1 - PSR.
* **Enable** a recovered strategy: a disabled one measured the same way with a positive total
  return and a PSR of at least ``enable_psr`` (0.95). LOW; confidence PSR.
* **Promote** a shadow that passes the meta policy's gates, judged by the meta policy's own
  :func:`meta.promotion.shadow_decisions` with the officer's rules (``MetaPolicyRules``): 7 days in
  test on the replay clock, 50 trades, Sharpe above 1.0 and a deflated Sharpe ratio of at least
  0.95, at most ``shadow_max_promotions`` (the best first). MEDIUM; confidence and rationale are
  the meta policy's (0.5 at a gate, 1.0 at twice its distance).
* **Reweight** by inverse volatility within each sector: every enabled production strategy with
  a measured volatility gets a weight proportional to m / its volatility, and the sector keeps
  its total weight (sector allocations are not the officer's to move); strategies being disabled
  get 0, and those without a measure keep theirs. A sector that trades no capital now (halted)
  is left out: the fleet refuses weights that leave a sector none, and there is nothing to move.
  Recommended when the total-variation distance 0.5 sum |w_new - w| reaches the meta policy's
  ``reweight_threshold`` (0.10). LOW; confidence min(1, 0.5 + 0.5 (distance - threshold) /
  threshold). m is meta's strategy weight of the strategy (by its id or its genome's id)
  relative to the mean of those meta weighs in the sector, 1 for one meta has no weight for; the
  rationale and the evidence (``meta_version``) name the version of meta's weights used.

Weights here are the entries' shares of the capital the fleet's producing strategies trade; the
fleet reads the weights of a reweighting relative within each sector, so a sector's split is what
changes. Every recommendation carries ``as_of_time``, the market time it was computed at.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence

from agents.strategy.book import Entry
from agents.strategy.performance import FLEET, Performance
from meta.config import MetaPolicyRules
from meta.model import DecisionType, ShadowCandidate
from meta.promotion import shadow_decisions
from qtmesh.base.contract import (
    DisableStrategy,
    EnableStrategy,
    Priority,
    PromoteStrategy,
    Recommendation,
    ReweightStrategies,
)
from qtmesh.base.genome import StrategyStage

DAY_NANOS = 86_400 * 10**9


@dataclasses.dataclass(frozen=True, kw_only=True)
class OfficerRules:
    min_observations: int = 12
    min_trades: int = 10
    disable_psr: float = 0.05
    enable_psr: float = 0.95
    meta: MetaPolicyRules = dataclasses.field(default_factory=MetaPolicyRules)


def _measured(p: Performance | None, rules: OfficerRules) -> bool:
    if p is None or p.trade_count < rules.min_trades:
        return False
    return p.source != FLEET or p.observations >= rules.min_observations


def _summary(p: Performance) -> str:
    span = f"{p.observations} hourly returns" if p.source == FLEET else f"{p.observations} bars"
    return (
        f"{p.total_return:+.2%} over {span}, Sharpe {p.sharpe:.2f}, {p.trade_count} trades, "
        f"P(true Sharpe > 0) = {p.psr:.1%}"
    )


@dataclasses.dataclass(frozen=True)
class MetaWeights:
    """Meta's strategy weights (by strategy id or genome id) and the version they are of."""

    weights: Mapping[str, float]
    version: int

    def of(self, e: Entry) -> float | None:
        value = self.weights.get(e.strategy_id, self.weights.get(e.record.genome.id))
        return value if value is not None and value > 0 else None


def advise(
    entries: Sequence[Entry],
    performance: Mapping[str, Performance],
    rules: OfficerRules,
    *,
    clock_time: int,
    meta: MetaWeights | None = None,
) -> list[Recommendation]:
    recommendations = []
    producing: defaultdict[str, int] = defaultdict(int)
    for e in entries:
        producing[e.record.sector] += e.producing
    losers = set()
    for e in entries:
        p = performance.get(e.strategy_id)
        if not _measured(p, rules):
            continue
        assert p is not None
        if e.producing and p.total_return < 0 and p.psr < rules.disable_psr:
            if producing[e.record.sector] <= 1:
                continue
            producing[e.record.sector] -= 1
            losers.add(e.strategy_id)
            recommendations.append(_disable(e, p, rules, clock_time))
        elif not e.record.enabled and p.total_return > 0 and p.psr >= rules.enable_psr:
            recommendations.append(_enable(e, p, rules, clock_time))
    recommendations += _promotions(entries, performance, rules, clock_time)
    reweight = _reweight(entries, performance, losers, rules, clock_time=clock_time, meta=meta)
    if reweight is not None:
        recommendations.append(reweight)
    return recommendations


def _disable(e: Entry, p: Performance, rules: OfficerRules, clock_time: int) -> Recommendation:
    return Recommendation(
        id=f"strategy/disable/{e.strategy_id}",
        priority=Priority.MEDIUM,
        target=f"strategy/{e.strategy_id}",
        parameters=DisableStrategy(strategy_id=e.strategy_id),
        confidence=1 - p.psr,
        rationale=(
            f"Disable {e.strategy_id}, a persistent loser: {_summary(p)}, below "
            f"{rules.disable_psr:.0%}."
        ),
        evidence=_evidence(p),
        as_of_time=clock_time,
    )


def _enable(e: Entry, p: Performance, rules: OfficerRules, clock_time: int) -> Recommendation:
    return Recommendation(
        id=f"strategy/enable/{e.strategy_id}",
        priority=Priority.LOW,
        target=f"strategy/{e.strategy_id}",
        parameters=EnableStrategy(strategy_id=e.strategy_id, sector=e.record.sector),
        confidence=p.psr,
        rationale=(
            f"Enable {e.strategy_id} again: {_summary(p)}, at least {rules.enable_psr:.0%}."
        ),
        evidence=_evidence(p),
        as_of_time=clock_time,
    )


def shadow_candidates(
    entries: Sequence[Entry], performance: Mapping[str, Performance], clock_time: int
) -> list[ShadowCandidate]:
    """The meta policy's view of every enabled shadow with a record in the fleet."""
    candidates = []
    for e in entries:
        p = performance.get(e.strategy_id)
        if e.record.stage is not StrategyStage.SHADOW or not e.record.enabled or p is None:
            continue
        candidates.append(
            ShadowCandidate(
                strategy_id=e.strategy_id,
                days_in_test=max(0, clock_time - e.record.since) / DAY_NANOS,
                trade_count=p.trade_count,
                sharpe_ratio=p.sharpe,
                deflated_sharpe_ratio=p.deflated_sharpe,
            )
        )
    return candidates


def _promotions(
    entries: Sequence[Entry],
    performance: Mapping[str, Performance],
    rules: OfficerRules,
    clock_time: int,
) -> list[Recommendation]:
    candidates = shadow_candidates(entries, performance, clock_time)
    by_id = {e.strategy_id: e for e in entries}
    recommendations = []
    for d in shadow_decisions(candidates, rules.meta):
        if d.type is not DecisionType.PROMOTE_SHADOW:
            continue
        record = by_id[d.strategy_id].record
        recommendations.append(
            Recommendation(
                id=f"strategy/promote/{d.strategy_id}",
                priority=Priority.MEDIUM,
                target=f"strategy/{d.strategy_id}",
                parameters=PromoteStrategy(
                    strategy_id=d.strategy_id, genome=record.genome, sector=record.sector
                ),
                confidence=d.confidence,
                rationale=(
                    f"{d.rationale} (its paper record on {record.symbol} since it entered the "
                    f"book, {record.trials} trials counted)"
                ),
                evidence=d.inputs,
                as_of_time=clock_time,
            )
        )
    return recommendations


def _reweight(
    entries: Sequence[Entry],
    performance: Mapping[str, Performance],
    losers: set[str],
    rules: OfficerRules,
    *,
    clock_time: int,
    meta: MetaWeights | None = None,
) -> Recommendation | None:
    by_sector: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.producing:
            by_sector[e.record.sector].append(e)
    # A sector without capital now (halted) has nothing to move, and weights of 0 for all its
    # strategies are what the fleet refuses.
    by_sector = {
        sector: members
        for sector, members in by_sector.items()
        if sum(e.weight for e in members) > 0
    }
    current = {e.strategy_id: e.weight for members in by_sector.values() for e in members}
    proposed = dict(current)
    for members in by_sector.values():
        total = sum(current[e.strategy_id] for e in members)
        kept = [e for e in members if e.strategy_id not in losers]
        measured = [
            e
            for e in kept
            if _measured(performance.get(e.strategy_id), rules)
            and performance[e.strategy_id].volatility > 0
        ]
        for e in members:
            if e.strategy_id in losers:
                proposed[e.strategy_id] = 0.0
        if not measured:
            continue  # the losers are out even when no survivor can be measured yet
        fixed = sum(current[e.strategy_id] for e in kept if e not in measured)
        tilt = _tilt(measured, meta)
        inverse = {
            e.strategy_id: tilt[e.strategy_id] / performance[e.strategy_id].volatility
            for e in measured
        }
        scale = max(total - fixed, 0.0) / sum(inverse.values())
        for e in members:
            if e.strategy_id in inverse:
                proposed[e.strategy_id] = inverse[e.strategy_id] * scale
    distance = 0.5 * sum(abs(proposed[k] - current[k]) for k in current)
    threshold = rules.meta.reweight_threshold
    if not current or distance < threshold or distance == 0:
        return None
    confidence = 1.0 if threshold == 0 else min(1.0, 0.5 + 0.5 * (distance - threshold) / threshold)
    evidence = {"total_variation": distance, "reweight_threshold": threshold}
    how = "inverse volatility"
    if meta is not None and any(meta.of(e) is not None for e in entries if e.producing):
        how = f"inverse volatility tilted by meta's strategy weights (version {meta.version})"
        evidence["meta_version"] = float(meta.version)
    return Recommendation(
        id="strategy/reweight",
        priority=Priority.LOW,
        target="strategies",
        parameters=ReweightStrategies(weights=proposed),
        confidence=confidence,
        rationale=(
            f"Reweight by {how} within each sector: {distance:.1%} of the weight "
            f"moves (threshold {threshold:.0%}), toward the steadier strategies; sectors keep "
            "their totals."
        ),
        evidence=evidence,
        as_of_time=clock_time,
    )


def _tilt(members: Sequence[Entry], meta: MetaWeights | None) -> dict[str, float]:
    """Each member's meta weight relative to the mean of the members meta weighs (1 for a
    member meta has no weight for, and for all without meta)."""
    weighed = {e.strategy_id: w for e in members if meta is not None and (w := meta.of(e))}
    mean = sum(weighed.values()) / len(weighed) if weighed else 1.0
    return {e.strategy_id: weighed.get(e.strategy_id, mean) / mean for e in members}


def _evidence(p: Performance) -> dict[str, float]:
    evidence = {
        "total_return": p.total_return,
        "sharpe_ratio": p.sharpe,
        "volatility": p.volatility,
        "max_drawdown": p.max_drawdown,
        "trade_count": float(p.trade_count),
        "psr": p.psr,
        "observations": float(p.observations),
    }
    if p.deflated_sharpe is not None:
        evidence["deflated_sharpe_ratio"] = p.deflated_sharpe
    return evidence
