"""The promotion gates of shadow strategies, in one place: the meta policy decides with them and
so does the strategy officer, so a shadow is judged by the same rules whoever asks.

A shadow is promoted when it has tested ``shadow_min_test_days`` (on the market's replay clock),
made ``shadow_min_trades`` trades, has a Sharpe ratio above ``shadow_required_sharpe`` and, when
SESA computed one, a deflated Sharpe ratio of at least ``shadow_required_deflated_sharpe``. At
most ``shadow_max_promotions`` are promoted by one decision, the best first (by deflated Sharpe
ratio, then Sharpe ratio). Every candidate gets one decision: PROMOTE_SHADOW, or KEEP_SHADOW
naming the gate that held it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from meta.config import ShadowGates
from meta.decisions import EPS, decision, reaches, relative
from meta.model import DecisionType, MetaDecision, ShadowCandidate


def shadow_decisions(
    candidates: Iterable[ShadowCandidate], gates: ShadowGates
) -> Iterator[MetaDecision]:
    """One decision per candidate, in order of strategy id for those held by a gate, then the
    passed ones best first: PROMOTE_SHADOW for the best ``shadow_max_promotions``, KEEP_SHADOW
    (naming the gate or the limit) for every other."""
    passed: list[tuple[ShadowCandidate, dict[str, float], float]] = []
    for candidate in sorted(candidates, key=lambda c: c.strategy_id):
        failure = _failed_gate(candidate, gates)
        if failure is not None:
            yield failure
            continue
        inputs, margin = _gate_inputs(candidate, gates)
        passed.append((candidate, inputs, margin))
    # Best first: by deflated Sharpe when SESA gave one, then by Sharpe.
    passed.sort(
        key=lambda p: (
            -(p[0].deflated_sharpe_ratio if p[0].deflated_sharpe_ratio is not None else -1.0),
            -p[0].sharpe_ratio,
            p[0].strategy_id,
        )
    )
    limit = gates.shadow_max_promotions
    for rank, (candidate, inputs, margin) in enumerate(passed):
        if rank < limit:
            yield decision(
                "shadow_promotion",
                DecisionType.PROMOTE_SHADOW,
                f"Shadow strategy {candidate.strategy_id} passed every gate "
                f"({_gate_summary(candidate, gates)}): promote it to production.",
                inputs,
                margin=margin,
                strategy_id=candidate.strategy_id,
            )
        else:
            yield decision(
                "shadow_promotion_limit",
                DecisionType.KEEP_SHADOW,
                f"Shadow strategy {candidate.strategy_id} passed every gate, but {limit} "
                "better candidate(s) use this decision's promotions: keep it in test.",
                {**inputs, "shadow_max_promotions": float(limit)},
                strategy_id=candidate.strategy_id,
            )


def _gate_inputs(c: ShadowCandidate, gates: ShadowGates) -> tuple[dict[str, float], float]:
    r = gates
    inputs = {
        "days_in_test": c.days_in_test,
        "shadow_min_test_days": r.shadow_min_test_days,
        "trade_count": float(c.trade_count),
        "shadow_min_trades": float(r.shadow_min_trades),
        "sharpe_ratio": c.sharpe_ratio,
        "shadow_required_sharpe": r.shadow_required_sharpe,
    }
    margins = [
        relative(c.days_in_test, r.shadow_min_test_days),
        relative(c.trade_count, r.shadow_min_trades),
        relative(c.sharpe_ratio, r.shadow_required_sharpe),
    ]
    if c.deflated_sharpe_ratio is not None:
        inputs["deflated_sharpe_ratio"] = c.deflated_sharpe_ratio
        inputs["shadow_required_deflated_sharpe"] = r.shadow_required_deflated_sharpe
        room = 1 - r.shadow_required_deflated_sharpe
        margins.append(
            (c.deflated_sharpe_ratio - r.shadow_required_deflated_sharpe) / room if room else 1.0
        )
    return inputs, min(margins)


def _gate_summary(c: ShadowCandidate, gates: ShadowGates) -> str:
    r = gates
    parts = [
        f"{c.days_in_test:.1f} days >= {r.shadow_min_test_days:g}",
        f"{c.trade_count} trades >= {r.shadow_min_trades}",
        f"Sharpe {c.sharpe_ratio:.2f} > {r.shadow_required_sharpe:g}",
    ]
    if c.deflated_sharpe_ratio is not None:
        parts.append(
            f"deflated Sharpe {c.deflated_sharpe_ratio:.2f} >= "
            f"{r.shadow_required_deflated_sharpe:g}"
        )
    return ", ".join(parts)


def _failed_gate(c: ShadowCandidate, gates: ShadowGates) -> MetaDecision | None:
    r = gates
    inputs, _ = _gate_inputs(c, gates)
    keep = f"Shadow strategy {c.strategy_id}"
    if not reaches(c.days_in_test, r.shadow_min_test_days):
        rule, why = (
            "shadow_test_days",
            f"has tested {c.days_in_test:.1f} days of the {r.shadow_min_test_days:g} required",
        )
    elif c.trade_count < r.shadow_min_trades:
        rule, why = (
            "shadow_trade_count",
            f"has made {c.trade_count} trades of the {r.shadow_min_trades} required",
        )
    elif not c.sharpe_ratio > r.shadow_required_sharpe + EPS:
        rule, why = (
            "shadow_sharpe",
            f"has a Sharpe ratio of {c.sharpe_ratio:.2f}, not above {r.shadow_required_sharpe:g}",
        )
    elif c.deflated_sharpe_ratio is not None and not reaches(
        c.deflated_sharpe_ratio, r.shadow_required_deflated_sharpe
    ):
        rule, why = (
            "shadow_deflated_sharpe",
            f"has a deflated Sharpe ratio of {c.deflated_sharpe_ratio:.2f}, below "
            f"{r.shadow_required_deflated_sharpe:g}: its Sharpe may come from the number of "
            "strategies tried",
        )
    else:
        return None
    return decision(
        rule,
        DecisionType.KEEP_SHADOW,
        f"{keep} {why}: keep it in test.",
        inputs,
        strategy_id=c.strategy_id,
    )
