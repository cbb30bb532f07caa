"""The meta layer's domain types: trades and evaluations in, parameters and decisions out.

Times are Unix nanoseconds. Validation lives here, not in the gRPC adapter, so an in-process
caller is held to the same rules; errors name the field like ``trades[3].return_fraction``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.frozen import frozen_map
from qtmesh.base.genome import StrategyFamily, StrategyStage

NANOS_PER_HOUR = 3600 * 10**9
NANOS_PER_DAY = 24 * NANOS_PER_HOUR
# A trade's return is a fraction of the capital it used: it can lose all of it, and gains above
# 1000% in one trade are taken for a units mistake rather than a result.
RETURN_RANGE = (-1.0, 10.0)
MAX_TRADES = 100_000
MAX_EVALUATIONS = 10_000


class DecisionType(enum.Enum):
    RUN_EVOLUTION = 1
    RETRAIN_MODELS = 2
    PROMOTE_SHADOW = 3
    KEEP_SHADOW = 4
    SWITCH_TO_EXPLORE = 5
    SWITCH_TO_EXPLOIT = 6
    INCREASE_RISK = 7
    DECREASE_RISK = 8
    ADJUST_MUTATION = 9
    REWEIGHT_STRATEGIES = 10
    HOLD = 11


# Decisions that ask someone to change something; the others explain why nothing changes.
ACTIONABLE = frozenset(DecisionType) - {DecisionType.HOLD, DecisionType.KEEP_SHADOW}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trade:
    """One closed trade, identified by strategy, symbol, entry and exit time."""

    strategy_id: str
    symbol: str = ""
    sector: str = ""
    entry_time: int
    exit_time: int
    return_fraction: float
    # The strategy's family (its model, for the model weights) when the trade's source knows it;
    # an evaluation's family of the same strategy takes precedence.
    family: StrategyFamily | None = None

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.strategy_id, self.symbol, self.entry_time, self.exit_time)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Evaluation:
    """What the meta layer reads of a SESA StrategyEvaluation."""

    strategy_id: str
    family: StrategyFamily | None = None
    generation: int = 0
    composite_score: float
    sharpe_ratio: float = 0.0
    # A probability (0..1); None when SESA did not compute it (no trial count).
    deflated_sharpe_ratio: float | None = None
    trade_count: int = 0
    stage: StrategyStage | None = None
    # Genomes SESA had tried when it computed the deflated Sharpe ratio (0: not computed).
    trials: int = 0
    evaluated_time: int

    @property
    def is_offspring(self) -> bool:
        """Created by mutation, so the mutation setting in use shaped it (seeds are gen 0)."""
        return self.generation >= 1


@dataclasses.dataclass(frozen=True)
class MutationSetting:
    rate: float
    magnitude: float

    def __str__(self) -> str:
        return f"rate {self.rate:.2f}/magnitude {self.magnitude:.2f}"


# The scalar parameters, by the names TuneLearning and ParameterChange use.
SCALARS = (
    "rl_learning_rate",
    "rl_exploration_rate",
    "rl_discount",
    "risk_multiplier",
    "position_size_scale",
    "sesa_mutation_rate",
    "sesa_mutation_magnitude",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaParameters:
    """The adapted parameters; ``version`` grows by one with every change."""

    rl_learning_rate: float
    rl_exploration_rate: float
    rl_discount: float
    strategy_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    model_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    risk_multiplier: float = 1.0
    position_size_scale: float = 1.0
    sesa_mutation_rate: float
    sesa_mutation_magnitude: float
    retrain_requested_time: int = 0
    version: int = 0
    update_time: int = 0
    cause: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy_weights", frozen_map(self.strategy_weights))
        object.__setattr__(self, "model_weights", frozen_map(self.model_weights))

    @property
    def mutation(self) -> MutationSetting:
        return MutationSetting(self.sesa_mutation_rate, self.sesa_mutation_magnitude)

    def values(self) -> dict[str, float]:
        """Every adapted number by name, weights as ``strategy_weights[id]``."""
        values = {name: getattr(self, name) for name in SCALARS}
        for group in ("strategy_weights", "model_weights"):
            for key, weight in sorted(getattr(self, group).items()):
                values[f"{group}[{key}]"] = weight
        return values

    def to_json(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SCALARS},
            "strategy_weights": dict(self.strategy_weights),
            "model_weights": dict(self.model_weights),
            "retrain_requested_time": self.retrain_requested_time,
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, version: int, update_time: int, cause: str
    ) -> MetaParameters:
        return cls(**data, version=version, update_time=update_time, cause=cause)


@dataclasses.dataclass(frozen=True)
class ParameterChange:
    name: str
    old_value: float
    new_value: float
    reason: str


def changes_between(
    old: MetaParameters, new: MetaParameters, reasons: Mapping[str, str]
) -> tuple[ParameterChange, ...]:
    """What moved from ``old`` to ``new``; a name's reason is ``reasons[name]`` or, for a map
    entry, ``reasons[group]``."""
    before, after = old.values(), new.values()
    changes = []
    for name in [*before, *(n for n in after if n not in before)]:
        was, now = before.get(name, 0.0), after.get(name, 0.0)
        if was != now:
            group = name.split("[", 1)[0]
            changes.append(
                ParameterChange(name, was, now, reasons.get(name, reasons.get(group, "")))
            )
    return tuple(changes)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaDecision:
    type: DecisionType
    rule: str
    inputs: Mapping[str, float]
    rationale: str
    strategy_id: str = ""
    proposed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    confidence: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", frozen_map(self.inputs))
        object.__setattr__(self, "proposed", frozen_map(self.proposed))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowCandidate:
    strategy_id: str
    days_in_test: float
    trade_count: int
    sharpe_ratio: float
    deflated_sharpe_ratio: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MutationProposal:
    """The tuner's next SESA setting, with the numbers behind it."""

    current: MutationSetting
    proposed: MutationSetting
    evidence: Mapping[str, float] = dataclasses.field(default_factory=dict)
    reason: str = ""
    confidence: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", frozen_map(self.evidence))


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetaState:
    """What the meta policy decides on. ``performance`` is a Sharpe ratio; ``streak`` counts
    consecutive wins (positive) or losses (negative); unknown times are None."""

    now: int
    last_evolution_time: int | None = None
    last_retrain_time: int | None = None
    performance: float = 0.0
    baseline_performance: float = 0.0
    target_performance: float | None = None
    regime_changed: bool = False
    shadow_candidates: tuple[ShadowCandidate, ...] = ()
    streak: int = 0
    exploration_rate: float = 0.2
    risk_multiplier: float = 1.0
    sample_count: int | None = None
    strategy_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    proposed_strategy_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)
    mutation: MutationProposal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy_weights", frozen_map(self.strategy_weights))
        object.__setattr__(
            self, "proposed_strategy_weights", frozen_map(self.proposed_strategy_weights)
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallerState:
    """What a MetaUpdate caller may add to the state the OS measures itself."""

    target_performance: float | None = None
    regime_changed: bool = False
    shadow_candidates: tuple[ShadowCandidate, ...] | None = None
    last_evolution_time: int | None = None
    last_retrain_time: int | None = None
    strategy_weights: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy_weights", frozen_map(self.strategy_weights))


# -- validation -------------------------------------------------------------------------------


def _number(
    value: float, field: str, *, low: float | None = None, high: float | None = None
) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"{value} is not a finite number")
    if low is not None and value < low:
        raise InvalidArgument(field, f"{value} is below {low}")
    if high is not None and value > high:
        raise InvalidArgument(field, f"{value} is above {high}")


def _not_after(time: int | None, now: int, field: str) -> None:
    if time is not None and time > now:
        raise InvalidArgument(field, "is after the clock the request runs at (now)")


def validate_trades(trades: Sequence[Trade], *, now: int, field: str = "trades") -> None:
    if len(trades) > MAX_TRADES:
        raise InvalidArgument(field, f"{len(trades)} trades; at most {MAX_TRADES} per request")
    seen: set[tuple[str, str, int, int]] = set()
    for i, t in enumerate(trades):
        where = f"{field}[{i}]"
        if not t.strategy_id:
            raise InvalidArgument(f"{where}.strategy_id", "must not be empty")
        if t.entry_time <= 0:
            raise InvalidArgument(f"{where}.entry_time", "must be set")
        if t.exit_time < t.entry_time:
            raise InvalidArgument(f"{where}.exit_time", "is before entry_time")
        _not_after(t.exit_time, now, f"{where}.exit_time")
        _number(
            t.return_fraction, f"{where}.return_fraction", low=RETURN_RANGE[0], high=RETURN_RANGE[1]
        )
        if t.key in seen:
            raise InvalidArgument(
                where, f"repeats the trade of {t.strategy_id} in {t.symbol!r} with the same times"
            )
        seen.add(t.key)


def validate_evaluations(
    evaluations: Sequence[Evaluation], *, now: int, field: str = "evaluations"
) -> None:
    if len(evaluations) > MAX_EVALUATIONS:
        raise InvalidArgument(
            field, f"{len(evaluations)} evaluations; at most {MAX_EVALUATIONS} per request"
        )
    seen: set[tuple[str, int]] = set()
    for i, e in enumerate(evaluations):
        where = f"{field}[{i}]"
        if not e.strategy_id:
            raise InvalidArgument(f"{where}.genome.id", "must not be empty")
        if e.generation < 0:
            raise InvalidArgument(f"{where}.genome.generation", "must not be negative")
        _number(e.composite_score, f"{where}.composite_score", low=0.0, high=1.0)
        _number(e.sharpe_ratio, f"{where}.metrics.sharpe_ratio")
        if e.deflated_sharpe_ratio is not None:
            _number(
                e.deflated_sharpe_ratio, f"{where}.metrics.deflated_sharpe_ratio", low=0.0, high=1.0
            )
        if e.trade_count < 0:
            raise InvalidArgument(f"{where}.metrics.trade_count", "must not be negative")
        _not_after(e.evaluated_time, now, f"{where}.evaluated_time")
        key = (e.strategy_id, e.evaluated_time)
        if key in seen:
            raise InvalidArgument(where, f"repeats the evaluation of {e.strategy_id} at that time")
        seen.add(key)


def validate_candidates(candidates: Sequence[ShadowCandidate], *, field: str) -> None:
    ids: set[str] = set()
    for i, c in enumerate(candidates):
        where = f"{field}[{i}]"
        if not c.strategy_id:
            raise InvalidArgument(f"{where}.strategy_id", "must not be empty")
        if c.strategy_id in ids:
            raise InvalidArgument(f"{where}.strategy_id", f"{c.strategy_id!r} is listed twice")
        ids.add(c.strategy_id)
        _number(c.days_in_test, f"{where}.days_in_test", low=0.0)
        if c.trade_count < 0:
            raise InvalidArgument(f"{where}.trade_count", "must not be negative")
        _number(c.sharpe_ratio, f"{where}.sharpe_ratio")
        if c.deflated_sharpe_ratio is not None:
            _number(c.deflated_sharpe_ratio, f"{where}.deflated_sharpe_ratio", low=0.0, high=1.0)


def validate_weights(weights: Mapping[str, float], *, field: str) -> None:
    for key, weight in weights.items():
        if not key:
            raise InvalidArgument(field, "has an empty strategy id")
        _number(weight, f"{field}[{key}]", low=0.0)


def validate_caller_state(state: CallerState, *, now: int, field: str = "state") -> None:
    if state.target_performance is not None:
        _number(state.target_performance, f"{field}.target_performance", low=0.0)
    _not_after(state.last_evolution_time, now, f"{field}.last_evolution_time")
    _not_after(state.last_retrain_time, now, f"{field}.last_retrain_time")
    validate_candidates(state.shadow_candidates or (), field=f"{field}.shadow_candidates")
    validate_weights(state.strategy_weights, field=f"{field}.strategy_weights")


def validate_state(state: MetaState, *, field: str = "state") -> None:
    _not_after(state.last_evolution_time, state.now, f"{field}.last_evolution_time")
    _not_after(state.last_retrain_time, state.now, f"{field}.last_retrain_time")
    _number(state.performance, f"{field}.performance")
    _number(state.baseline_performance, f"{field}.baseline_performance")
    if state.target_performance is not None:
        _number(state.target_performance, f"{field}.target_performance", low=0.0)
    validate_candidates(state.shadow_candidates, field=f"{field}.shadow_candidates")
    _number(state.exploration_rate, f"{field}.exploration_rate", low=0.0, high=1.0)
    _number(state.risk_multiplier, f"{field}.risk_multiplier", low=0.0, high=100.0)
    if state.sample_count is not None and state.sample_count < 0:
        raise InvalidArgument(f"{field}.sample_count", "must not be negative")
    validate_weights(state.strategy_weights, field=f"{field}.strategy_weights")
    validate_weights(state.proposed_strategy_weights, field=f"{field}.proposed_strategy_weights")
    if state.mutation is not None:
        for name, setting in (
            ("current_mutation", state.mutation.current),
            ("proposed_mutation", state.mutation.proposed),
        ):
            _number(setting.rate, f"{field}.{name}.rate", low=0.0, high=1.0)
            _number(setting.magnitude, f"{field}.{name}.magnitude", low=0.0, high=1.0)
