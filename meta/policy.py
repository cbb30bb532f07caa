"""The meta policy: named rules that decide when to evolve, retrain, promote, explore and how
much risk to take, each decision carrying its rule, the inputs it read and a rationale.

Rules run in the order of :data:`RULES` and are grouped by topic; within a topic the first rule
that fires wins (for example, a losing streak decides risk before a winning-streak rule can).
A threshold is reached when the value is within 1e-9 of it, so a value printed equal to a
threshold counts as reaching it. Confidence is 0.5 at a rule's threshold and rises linearly to
1.0 once the deciding input is twice as far past it (:mod:`meta.decisions`); the shadow
promotion gates are :mod:`meta.promotion`, which the strategy officer applies too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

from meta.config import MetaPolicyRules
from meta.decisions import EPS, decision, reaches, relative
from meta.model import (
    ACTIONABLE,
    NANOS_PER_HOUR,
    DecisionType,
    MetaDecision,
    MetaState,
)
from meta.promotion import shadow_decisions


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    decision: DecisionType
    summary: str
    settings: tuple[str, ...] = ()


D = DecisionType
RULES: tuple[Rule, ...] = (
    Rule(
        "insufficient_data",
        D.HOLD,
        "fewer trades than min_performance_samples: performance-based rules hold",
        ("min_performance_samples",),
    ),
    Rule(
        "evolution_interval",
        D.RUN_EVOLUTION,
        "no evolution for sesa_trigger_interval_hours (or never)",
        ("sesa_trigger_interval_hours",),
    ),
    Rule(
        "evolution_performance_drop",
        D.RUN_EVOLUTION,
        "performance fell sesa_performance_drop_threshold below its baseline",
        ("sesa_performance_drop_threshold", "sesa_min_gap_hours"),
    ),
    Rule(
        "evolution_cooldown",
        D.HOLD,
        "a drop would trigger evolution, but the last ran under sesa_min_gap_hours ago",
        ("sesa_min_gap_hours",),
    ),
    Rule(
        "retrain_interval",
        D.RETRAIN_MODELS,
        "no RL retraining for rl_retrain_interval_hours (or never)",
        ("rl_retrain_interval_hours",),
    ),
    Rule(
        "retrain_regime_change",
        D.RETRAIN_MODELS,
        "the market regime changed",
        ("rl_retrain_on_regime_change", "rl_retrain_min_gap_hours"),
    ),
    Rule(
        "retrain_cooldown",
        D.HOLD,
        "a regime change would retrain, but the last retraining is too recent",
        ("rl_retrain_min_gap_hours",),
    ),
    Rule(
        "shadow_test_days",
        D.KEEP_SHADOW,
        "a shadow strategy has tested fewer than shadow_min_test_days",
        ("shadow_min_test_days",),
    ),
    Rule(
        "shadow_trade_count",
        D.KEEP_SHADOW,
        "a shadow strategy has made fewer than shadow_min_trades trades",
        ("shadow_min_trades",),
    ),
    Rule(
        "shadow_sharpe",
        D.KEEP_SHADOW,
        "a shadow strategy's Sharpe ratio does not exceed shadow_required_sharpe",
        ("shadow_required_sharpe",),
    ),
    Rule(
        "shadow_deflated_sharpe",
        D.KEEP_SHADOW,
        "SESA's deflated Sharpe ratio is below shadow_required_deflated_sharpe",
        ("shadow_required_deflated_sharpe",),
    ),
    Rule(
        "shadow_promotion",
        D.PROMOTE_SHADOW,
        "a shadow strategy passed every gate (days, trades, Sharpe, deflated Sharpe if known)",
        ("shadow_max_promotions",),
    ),
    Rule(
        "shadow_promotion_limit",
        D.KEEP_SHADOW,
        "passed every gate, but better candidates used this decision's promotions",
        ("shadow_max_promotions",),
    ),
    Rule(
        "explore_on_regime_change",
        D.SWITCH_TO_EXPLORE,
        "after a regime change, exploration rises to at least regime_exploration_rate",
        ("regime_exploration_rate", "exploration_hysteresis"),
    ),
    Rule(
        "explore_below_target",
        D.SWITCH_TO_EXPLORE,
        "performance below target: exploration rises toward exploration_rate_max",
        ("target_performance", "exploration_rate_min", "exploration_rate_max"),
    ),
    Rule(
        "exploit_near_target",
        D.SWITCH_TO_EXPLOIT,
        "performance at or above target: exploration falls to exploration_rate_min",
        ("target_performance", "exploration_rate_min", "exploration_rate_max"),
    ),
    Rule(
        "risk_down_on_losing_streak",
        D.DECREASE_RISK,
        "losing_streak_length losses in a row: risk multiplier -risk_step",
        ("losing_streak_length", "risk_step", "risk_multiplier_min"),
    ),
    Rule(
        "risk_down_on_performance_drop",
        D.DECREASE_RISK,
        "performance fell risk_drop_threshold below its baseline: risk multiplier -risk_step",
        ("risk_drop_threshold", "risk_step", "risk_multiplier_min"),
    ),
    Rule(
        "risk_up_on_winning_streak",
        D.INCREASE_RISK,
        "winning_streak_length wins in a row: risk multiplier +risk_step",
        ("winning_streak_length", "risk_step", "risk_multiplier_max"),
    ),
    Rule(
        "risk_at_bound",
        D.HOLD,
        "a streak or a drop would move risk, but the multiplier is already at its bound",
        ("risk_multiplier_min", "risk_multiplier_max"),
    ),
    Rule(
        "mutation_tuner",
        D.ADJUST_MUTATION,
        "the SESA tuner finished a trial and proposes another mutation setting (meta/tuning.py)",
        (),
    ),
    Rule(
        "reweight_on_drift",
        D.REWEIGHT_STRATEGIES,
        "proposed strategy weights are reweight_threshold (total variation) from the deployed "
        "ones (never when none were reported)",
        ("reweight_threshold",),
    ),
    Rule("hold", D.HOLD, "no other rule asked for a change", ()),
)
RULE_NAMES = frozenset(r.name for r in RULES)
del D


def recommended_exploration(performance: float, target: float, rules: MetaPolicyRules) -> float:
    """The exploration rate for a performance: exploration_rate_max at or below zero, falling
    linearly to exploration_rate_min at the target and above. Never rises with performance."""
    share = min(1.0, max(0.0, performance / target))
    low, high = rules.exploration_rate_min, rules.exploration_rate_max
    # Clipped so rounding never lands a hair outside the bounds a TuneLearning is checked against.
    return min(high, max(low, high - (high - low) * share))


def relative_drop(state: MetaState) -> float | None:
    """How far performance is below a positive baseline, as a fraction of it."""
    if state.baseline_performance <= 0:
        return None
    return (state.baseline_performance - state.performance) / state.baseline_performance


def _hours_since(time: int | None, now: int) -> float | None:
    return None if time is None else max(0, now - time) / NANOS_PER_HOUR


class MetaPolicy:
    """Evaluates the rules on a state; pure: the same state gives the same decisions."""

    def __init__(self, rules: MetaPolicyRules) -> None:
        self.rules = rules

    def decide(self, state: MetaState) -> tuple[MetaDecision, ...]:
        decisions = [
            *self._data(state),
            *self._evolution(state),
            *self._retraining(state),
            *self._shadows(state),
            *self._exploration(state),
            *self._risk(state),
            *self._mutation(state),
            *self._weights(state),
        ]
        if not any(d.type in ACTIONABLE for d in decisions):
            decisions.append(self._hold(state))
        return tuple(decisions)

    def _enough_data(self, state: MetaState) -> bool:
        return (
            state.sample_count is None or state.sample_count >= self.rules.min_performance_samples
        )

    def _data(self, state: MetaState) -> Iterator[MetaDecision]:
        if self._enough_data(state):
            return
        n, needed = state.sample_count, self.rules.min_performance_samples
        yield decision(
            "insufficient_data",
            DecisionType.HOLD,
            f"Only {n} trades back the performance figure and {needed} are needed, so the "
            "performance-drop, exploration and drop-driven risk rules hold.",
            {"sample_count": float(n or 0), "min_performance_samples": float(needed)},
        )

    def _evolution(self, state: MetaState) -> Iterator[MetaDecision]:
        r = self.rules
        elapsed = _hours_since(state.last_evolution_time, state.now)
        interval = r.sesa_trigger_interval_hours
        if elapsed is None or reaches(elapsed, interval):
            inputs = {"sesa_trigger_interval_hours": interval}
            if elapsed is None:
                why = "No SESA evolution is on record"
            else:
                inputs["hours_since_evolution"] = elapsed
                why = (
                    f"The last SESA evolution ran {elapsed:.1f} h ago, at or past the "
                    f"{interval:g} h interval"
                )
            yield decision(
                "evolution_interval",
                DecisionType.RUN_EVOLUTION,
                f"{why}: run an evolution.",
                inputs,
                margin=1.0 if elapsed is None else (elapsed - interval) / interval,
            )
            return
        drop = relative_drop(state)
        threshold = r.sesa_performance_drop_threshold
        if drop is None or not self._enough_data(state) or not reaches(drop, threshold):
            return
        inputs = {
            "performance": state.performance,
            "baseline_performance": state.baseline_performance,
            "relative_drop": drop,
            "sesa_performance_drop_threshold": threshold,
            "hours_since_evolution": elapsed,
        }
        said = (
            f"Performance {state.performance:.2f} is {drop:.1%} below its baseline "
            f"{state.baseline_performance:.2f} (threshold {threshold:.0%})"
        )
        if elapsed < r.sesa_min_gap_hours:
            yield decision(
                "evolution_cooldown",
                DecisionType.HOLD,
                f"{said}, but the last evolution ran only {elapsed:.1f} h ago (minimum gap "
                f"{r.sesa_min_gap_hours:g} h): hold.",
                {**inputs, "sesa_min_gap_hours": r.sesa_min_gap_hours},
            )
            return
        yield decision(
            "evolution_performance_drop",
            DecisionType.RUN_EVOLUTION,
            f"{said}: run an evolution.",
            inputs,
            margin=(drop - threshold) / threshold if threshold else 1.0,
        )

    def _retraining(self, state: MetaState) -> Iterator[MetaDecision]:
        r = self.rules
        elapsed = _hours_since(state.last_retrain_time, state.now)
        interval = r.rl_retrain_interval_hours
        if elapsed is None or reaches(elapsed, interval):
            inputs = {"rl_retrain_interval_hours": interval}
            if elapsed is None:
                why = "No RL retraining is on record"
            else:
                inputs["hours_since_retrain"] = elapsed
                why = (
                    f"The RL models were last retrained {elapsed:.1f} h ago, at or past the "
                    f"{interval:g} h interval"
                )
            yield decision(
                "retrain_interval",
                DecisionType.RETRAIN_MODELS,
                f"{why}: retrain them.",
                inputs,
                margin=1.0 if elapsed is None else (elapsed - interval) / interval,
            )
            return
        if not (state.regime_changed and r.rl_retrain_on_regime_change):
            return
        inputs = {"regime_changed": 1.0, "hours_since_retrain": elapsed}
        if elapsed < r.rl_retrain_min_gap_hours:
            yield decision(
                "retrain_cooldown",
                DecisionType.HOLD,
                f"The regime changed, but the RL models were retrained only {elapsed:.1f} h ago "
                f"(minimum gap {r.rl_retrain_min_gap_hours:g} h): hold.",
                {**inputs, "rl_retrain_min_gap_hours": r.rl_retrain_min_gap_hours},
            )
            return
        yield decision(
            "retrain_regime_change",
            DecisionType.RETRAIN_MODELS,
            "The market regime changed, so what the RL models learned may no longer hold: "
            "retrain them.",
            inputs,
            margin=0.6,
        )

    def _shadows(self, state: MetaState) -> Iterator[MetaDecision]:
        yield from shadow_decisions(state.shadow_candidates, self.rules)

    def _exploration(self, state: MetaState) -> Iterator[MetaDecision]:
        r = self.rules
        current = state.exploration_rate
        target = state.target_performance or r.target_performance
        recommended = (
            recommended_exploration(state.performance, target, r)
            if self._enough_data(state)
            else None
        )
        # After a regime change exploration has a floor; without enough data only the floor acts.
        floor = r.regime_exploration_rate if state.regime_changed else None
        if recommended is None and floor is None:
            return
        proposed = max(x for x in (recommended, floor) if x is not None)
        by_regime = floor is not None and (recommended is None or floor > recommended)
        inputs = {"exploration_rate": current, "exploration_hysteresis": r.exploration_hysteresis}
        if recommended is not None:
            inputs |= {
                "performance": state.performance,
                "target_performance": target,
                "recommended_exploration_rate": recommended,
            }
        if floor is not None:
            inputs |= {"regime_changed": 1.0, "regime_exploration_rate": floor}
        step = max(r.exploration_hysteresis, EPS)
        change = f"from {current:.1%} to {proposed:.1%}"
        if reaches(proposed - current, step):
            if by_regime:
                rule, why = (
                    "explore_on_regime_change",
                    f"The market regime changed, so old experience counts for less: raise "
                    f"exploration {change}.",
                )
            else:
                rule, why = (
                    "explore_below_target",
                    f"Performance {state.performance:.2f} is below the target {target:.2f}: "
                    f"raise exploration {change}.",
                )
            kind = DecisionType.SWITCH_TO_EXPLORE
        elif (
            recommended is not None
            and reaches(state.performance, target)
            and reaches(current - proposed, step)
        ):
            # Only at the target: below it, exploration above the policy's curve is the OS's
            # own adaptation (its range may reach higher), and exploiting there would undo it.
            rule, why = (
                "exploit_near_target",
                f"Performance {state.performance:.2f} reached the target of {target:.2f}: "
                f"lower exploration {change}.",
            )
            kind = DecisionType.SWITCH_TO_EXPLOIT
        else:
            return
        yield decision(
            rule,
            kind,
            why,
            inputs,
            margin=relative(abs(proposed - current), step),
            proposed={"rl_exploration_rate": proposed},
        )

    def _risk(self, state: MetaState) -> Iterator[MetaDecision]:
        r = self.rules
        current = state.risk_multiplier
        drop = relative_drop(state) if self._enough_data(state) else None
        streak = state.streak
        if streak <= -r.losing_streak_length:
            rule = "risk_down_on_losing_streak"
            why = f"A run of {-streak} losing trades (threshold {r.losing_streak_length})"
            inputs = {
                "streak": float(streak),
                "losing_streak_length": float(r.losing_streak_length),
            }
            margin = (-streak - r.losing_streak_length) / r.losing_streak_length
        elif drop is not None and reaches(drop, r.risk_drop_threshold):
            rule = "risk_down_on_performance_drop"
            why = (
                f"Performance {state.performance:.2f} is {drop:.1%} below its baseline "
                f"{state.baseline_performance:.2f} (threshold {r.risk_drop_threshold:.0%})"
            )
            inputs = {"relative_drop": drop, "risk_drop_threshold": r.risk_drop_threshold}
            margin = (
                (drop - r.risk_drop_threshold) / r.risk_drop_threshold
                if r.risk_drop_threshold
                else 1.0
            )
        elif streak >= r.winning_streak_length:
            rule = "risk_up_on_winning_streak"
            why = f"A run of {streak} winning trades (threshold {r.winning_streak_length})"
            inputs = {
                "streak": float(streak),
                "winning_streak_length": float(r.winning_streak_length),
            }
            margin = (streak - r.winning_streak_length) / r.winning_streak_length
        else:
            return
        up = rule == "risk_up_on_winning_streak"
        factor = 1 + r.risk_step if up else 1 - r.risk_step
        proposed = min(r.risk_multiplier_max, max(r.risk_multiplier_min, current * factor))
        inputs = {
            **inputs,
            "risk_multiplier": current,
            "risk_step": r.risk_step,
            "risk_multiplier_min": r.risk_multiplier_min,
            "risk_multiplier_max": r.risk_multiplier_max,
        }
        moves = proposed > current + EPS if up else proposed < current - EPS
        if not moves:
            bound = r.risk_multiplier_max if up else r.risk_multiplier_min
            yield decision(
                "risk_at_bound",
                DecisionType.HOLD,
                f"{why}, but the risk multiplier {current:.2f} is already at "
                f"its bound {bound:g}: hold.",
                inputs,
            )
            return
        verb = "raise" if up else "lower"
        yield decision(
            rule,
            DecisionType.INCREASE_RISK if up else DecisionType.DECREASE_RISK,
            f"{why}: {verb} the risk multiplier by {r.risk_step:.0%}, from "
            f"{current:.2f} to {proposed:.2f} "
            f"(bounds {r.risk_multiplier_min:g}..{r.risk_multiplier_max:g}).",
            inputs,
            margin=margin,
            proposed={"risk_multiplier": proposed},
        )

    def _mutation(self, state: MetaState) -> Iterator[MetaDecision]:
        proposal = state.mutation
        if proposal is None or proposal.proposed == proposal.current:
            return
        reason = proposal.reason or (
            f"The SESA tuner proposes {proposal.proposed} instead of {proposal.current}."
        )
        yield MetaDecision(
            type=DecisionType.ADJUST_MUTATION,
            rule="mutation_tuner",
            inputs={
                "sesa_mutation_rate": proposal.current.rate,
                "sesa_mutation_magnitude": proposal.current.magnitude,
                **proposal.evidence,
            },
            rationale=reason,
            proposed={
                "sesa_mutation_rate": proposal.proposed.rate,
                "sesa_mutation_magnitude": proposal.proposed.magnitude,
            },
            confidence=proposal.confidence,
        )

    def _weights(self, state: MetaState) -> Iterator[MetaDecision]:
        proposed = _normalised(state.proposed_strategy_weights)
        if not proposed:
            return
        deployed = _normalised(state.strategy_weights)
        if not deployed:
            # Without the deployed weights there is no drift to measure, and recommending the
            # full proposal every cycle would overrule whoever owns the deployed ones.
            return
        names = sorted(set(proposed) | set(deployed))
        distance = 0.5 * sum(abs(proposed.get(n, 0.0) - deployed.get(n, 0.0)) for n in names)
        threshold = self.rules.reweight_threshold
        if not reaches(distance, threshold):
            return
        moved = max(names, key=lambda n: abs(proposed.get(n, 0.0) - deployed.get(n, 0.0)))
        yield decision(
            "reweight_on_drift",
            DecisionType.REWEIGHT_STRATEGIES,
            f"The proposed weights of {len(proposed)} strategies are {distance:.1%} (total "
            f"variation) from the deployed weights, at or above {threshold:.0%}; the largest "
            f"move is {moved} {deployed.get(moved, 0.0):.1%} -> "
            f"{proposed.get(moved, 0.0):.1%}: reweight.",
            {"total_variation": distance, "reweight_threshold": threshold},
            margin=(distance - threshold) / threshold if threshold else 1.0,
            proposed=proposed,
        )

    def _hold(self, state: MetaState) -> MetaDecision:
        return decision(
            "hold",
            DecisionType.HOLD,
            f"No rule called for a change at performance {state.performance:.2f}, streak "
            f"{state.streak}, exploration {state.exploration_rate:.1%} and risk multiplier "
            f"{state.risk_multiplier:.2f}: hold.",
            {
                "performance": state.performance,
                "streak": float(state.streak),
                "exploration_rate": state.exploration_rate,
                "risk_multiplier": state.risk_multiplier,
            },
        )


def _normalised(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in sorted(weights.items())} if total > 0 else {}
