"""The meta service as an agent of the federation: its policy decisions become recommendations,
and it executes the TuneLearning actions that target its own parameters.

What each decision becomes (target; priority; executed by):

- RUN_EVOLUTION: RunEvolution (sesa; HIGH on a drop, else MEDIUM; sesa)
- RETRAIN_MODELS: TuneLearning retrain_models (meta/rl-models; MEDIUM on a regime change, else
  LOW; meta)
- PROMOTE_SHADOW: PromoteStrategy (strategy/<id>; MEDIUM; strategy)
- SWITCH_TO_EXPLORE, SWITCH_TO_EXPLOIT: TuneLearning rl_exploration_rate
  (meta/rl_exploration_rate; LOW; meta)
- INCREASE_RISK, DECREASE_RISK: TuneLearning risk_multiplier (meta/risk_multiplier; LOW up,
  HIGH down; meta)
- ADJUST_MUTATION: TuneLearning sesa_mutation_rate and _magnitude (meta/sesa_mutation; LOW; meta)
- REWEIGHT_STRATEGIES: ReweightStrategies (strategies; MEDIUM; strategy)

KEEP_SHADOW and HOLD change nothing and are not recommended. Executing TuneLearning sets the
named parameters (each checked against its bounds) as a new version caused by the action, and
``retrain_models`` records the retraining request, which restarts the retraining interval; the
RL trainer reads it from the parameter stream.

SESA, not meta, runs an evolution. The federation tells every agent when an action type last
completed (the hint ``completed/run_evolution``, market time in Unix nanoseconds); meta records
a later completion of RunEvolution as the last evolution, which restarts the evolution interval.

Actions run on the market clock the decisions were made on: the federation's action times are
its wall clock, which the replayed market does not share, so meta keeps the latest cycle time
it decided at and stamps what it executes with that.
"""

from __future__ import annotations

from meta.engine import MetaEngine, describe_changes
from meta.model import CallerState, DecisionType, MetaDecision
from qtmesh.base.contract import (
    NOT_APPLIED,
    Action,
    ActionParameters,
    ActionType,
    AgentContext,
    Execution,
    ExecutionResult,
    ExecutionState,
    Priority,
    PromoteStrategy,
    Recommendation,
    ReweightStrategies,
    RunEvolution,
    TuneLearning,
)
from qtmesh.base.errors import InvalidArgument

EXECUTES = (ActionType.TUNE_LEARNING,)
# AgentContext hints the meta agent reads.
REGIME_HINT = "regime_changed"
EVOLUTION_HINT = "completed/run_evolution"
_TRUE = {"1", "true", "yes"}


def recommendation_of(decision: MetaDecision) -> Recommendation | None:
    d, kind = decision, decision.type
    priority = Priority.LOW
    parameters: ActionParameters
    match kind:
        case DecisionType.RUN_EVOLUTION:
            parameters, target = RunEvolution(), "sesa"
            drop = d.rule == "evolution_performance_drop"
            priority = Priority.HIGH if drop else Priority.MEDIUM
        case DecisionType.RETRAIN_MODELS:
            parameters, target = TuneLearning(retrain_models=True), "meta/rl-models"
            regime = d.rule == "retrain_regime_change"
            priority = Priority.MEDIUM if regime else Priority.LOW
        case DecisionType.PROMOTE_SHADOW:
            parameters = PromoteStrategy(strategy_id=d.strategy_id)
            target, priority = f"strategy/{d.strategy_id}", Priority.MEDIUM
        case DecisionType.SWITCH_TO_EXPLORE | DecisionType.SWITCH_TO_EXPLOIT:
            parameters, target = TuneLearning(parameters=d.proposed), "meta/rl_exploration_rate"
        case DecisionType.INCREASE_RISK | DecisionType.DECREASE_RISK:
            parameters, target = TuneLearning(parameters=d.proposed), "meta/risk_multiplier"
            if kind is DecisionType.DECREASE_RISK:
                priority = Priority.HIGH
        case DecisionType.ADJUST_MUTATION:
            parameters, target = TuneLearning(parameters=d.proposed), "meta/sesa_mutation"
        case DecisionType.REWEIGHT_STRATEGIES:
            parameters = ReweightStrategies(weights=d.proposed)
            target, priority = "strategies", Priority.MEDIUM
        case _:
            return None
    suffix = f"/{d.strategy_id}" if d.strategy_id else ""
    return Recommendation(
        id=f"meta/{d.rule}{suffix}",
        priority=priority,
        target=target,
        parameters=parameters,
        confidence=d.confidence,
        rationale=d.rationale,
        evidence=d.inputs,
    )


class MetaAgent:
    """Implements :class:`qtmesh.base.contract.Agent` over a :class:`MetaEngine`."""

    name = "meta"

    def __init__(self, engine: MetaEngine) -> None:
        self._engine = engine
        # The latest cycle time decided at; in memory, so after a restart the next cycle sets it.
        self._as_of: int | None = None

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """The policy at the cycle's time on the state the service measures; the hint
        ``regime_changed=true`` tells it the regime changed, ``completed/run_evolution`` when
        an evolution last completed."""
        regime = context.hints.get(REGIME_HINT, "").strip().lower() in _TRUE
        evolved = context.hints.get(EVOLUTION_HINT)
        if evolved:
            await self._engine.record_evolution(_time_hint(EVOLUTION_HINT, evolved))
        at = self._engine.now(context.as_of_time or None)
        decisions = await self._engine.decisions_at(at, CallerState(regime_changed=regime))
        self._as_of = max(at, self._as_of or at)
        return [r for r in map(recommendation_of, decisions) if r is not None]

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        if not isinstance(action.parameters, TuneLearning):
            raise InvalidArgument("action.type", "meta executes only TUNE_LEARNING")
        result = await self._engine.tune(
            action.parameters.parameters,
            retrain_models=action.parameters.retrain_models,
            action_key=action.idempotency_key,
            cause=f"action {action.id} of plan {plan_sequence}",
            now=self._market_time(),
            field="action.parameters.tune_learning.parameters",
        )
        return ExecutionResult(result.applied, result.detail)

    async def execution(self, idempotency_key: str) -> Execution:
        """The parameter version a TUNE_LEARNING under the key wrote, if one did."""
        store = self._engine.store
        seen = await store.run(store.version_of_action, idempotency_key)
        if seen is None:
            return NOT_APPLIED
        moved = describe_changes(seen.changes)
        return Execution(ExecutionState.APPLIED, f"version {seen.version}: {moved}".rstrip(": "))

    def _market_time(self) -> int:
        """The latest cycle time decided at; before the first cycle after a restart, the time of
        the latest version (written on the same clock), and only in a fresh store the engine's
        clock."""
        if self._as_of is not None:
            return self._as_of
        return self._engine.parameters.update_time or self._engine.now(None)


def _time_hint(key: str, value: str) -> int:
    try:
        at = int(value)
    except ValueError:
        at = 0
    if at <= 0:
        raise InvalidArgument(f"context.hints[{key}]", f"{value!r} is not a Unix time in ns")
    return at
