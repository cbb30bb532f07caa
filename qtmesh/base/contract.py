"""The agent contract in domain terms: what agents recommend, the actions they execute, and the
``Agent`` protocol that in-process agents and remote clients both implement.

Mirrors ``qtmesh.api.agent.v1`` and ``qtmesh.api.common.v1`` without importing protobuf, so the
federation and every agent reason about plain frozen dataclasses (the converters are in
:mod:`qtmesh.base.convert`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Protocol, TypeGuard, runtime_checkable

from qtmesh.base.errors import InvalidArgument
from qtmesh.base.frozen import frozen_map
from qtmesh.base.genome import StrategyGenome


class ActionType(enum.Enum):
    HALT_TRADING = 1
    ADJUST_EXPOSURE = 2
    ADJUST_RISK_LIMITS = 3
    SWITCH_MODE = 4
    ENABLE_STRATEGY = 5
    DISABLE_STRATEGY = 6
    REWEIGHT_STRATEGIES = 7
    PROMOTE_STRATEGY = 8
    RUN_EVOLUTION = 9
    TUNE_LEARNING = 10
    SPAWN_ARB_MISSION = 11
    RESUME_TRADING = 12


class Priority(enum.IntEnum):
    """Ordered: CRITICAL > HIGH > MEDIUM > LOW. Windows: now, 1 min, 5 min, when convenient."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


class ActionStatus(enum.Enum):
    PENDING = 1
    EXECUTING = 2
    COMPLETED = 3
    FAILED = 4
    BLOCKED = 5
    SUPERSEDED = 6
    HELD = 7
    EXPIRED = 8


class StrategicMode(enum.Enum):
    EXPANSION = 1
    NORMAL = 2
    DEFENSIVE = 3
    CAPITAL_PRESERVATION = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """Fractions of equity; 0 leaves a limit unchanged when used in AdjustRiskLimits."""

    max_var_95: float = 0.0
    max_drawdown: float = 0.0
    max_gross_exposure: float = 0.0
    max_sector_exposure: float = 0.0
    sector_exposure_limits: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sector_exposure_limits", frozen_map(self.sector_exposure_limits))


# -- action parameters, one kind per action type ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class HaltTrading:
    action_type: ClassVar[ActionType] = ActionType.HALT_TRADING
    scope: str = "portfolio"


@dataclasses.dataclass(frozen=True)
class ResumeTrading:
    action_type: ClassVar[ActionType] = ActionType.RESUME_TRADING
    scope: str = "portfolio"


@dataclasses.dataclass(frozen=True)
class AdjustExposure:
    """Multiply a sector's (or, with sector "", the portfolio's) exposure by ``factor``."""

    action_type: ClassVar[ActionType] = ActionType.ADJUST_EXPOSURE
    sector: str
    factor: float


@dataclasses.dataclass(frozen=True)
class AdjustRiskLimits:
    action_type: ClassVar[ActionType] = ActionType.ADJUST_RISK_LIMITS
    limits: RiskLimits


@dataclasses.dataclass(frozen=True)
class SwitchMode:
    action_type: ClassVar[ActionType] = ActionType.SWITCH_MODE
    mode: StrategicMode


@dataclasses.dataclass(frozen=True)
class EnableStrategy:
    action_type: ClassVar[ActionType] = ActionType.ENABLE_STRATEGY
    strategy_id: str
    sector: str = ""
    genome: StrategyGenome | None = None
    weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class DisableStrategy:
    action_type: ClassVar[ActionType] = ActionType.DISABLE_STRATEGY
    strategy_id: str


@dataclasses.dataclass(frozen=True)
class ReweightStrategies:
    action_type: ClassVar[ActionType] = ActionType.REWEIGHT_STRATEGIES
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", frozen_map(self.weights))


@dataclasses.dataclass(frozen=True)
class PromoteStrategy:
    action_type: ClassVar[ActionType] = ActionType.PROMOTE_STRATEGY
    strategy_id: str
    genome: StrategyGenome | None = None
    sector: str = ""
    # A production strategy of the same sector it replaces: it takes that one's weight, and
    # that one is disabled by the same change.
    replaces: str = ""


@dataclasses.dataclass(frozen=True)
class RunEvolution:
    action_type: ClassVar[ActionType] = ActionType.RUN_EVOLUTION
    symbols: tuple[str, ...] = ()
    generations: int = 0


@dataclasses.dataclass(frozen=True)
class TuneLearning:
    action_type: ClassVar[ActionType] = ActionType.TUNE_LEARNING
    parameters: Mapping[str, float] = dataclasses.field(default_factory=dict)
    retrain_models: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", frozen_map(self.parameters))


@dataclasses.dataclass(frozen=True)
class SpawnArbMission:
    action_type: ClassVar[ActionType] = ActionType.SPAWN_ARB_MISSION
    long_sector: str
    short_sector: str
    allocation: float


ActionParameters = (
    HaltTrading
    | AdjustExposure
    | AdjustRiskLimits
    | SwitchMode
    | EnableStrategy
    | DisableStrategy
    | ReweightStrategies
    | PromoteStrategy
    | RunEvolution
    | TuneLearning
    | SpawnArbMission
    | ResumeTrading
)

PARAMETER_TYPES: Mapping[ActionType, type] = {
    cls.action_type: cls
    for cls in (
        HaltTrading,
        AdjustExposure,
        AdjustRiskLimits,
        SwitchMode,
        EnableStrategy,
        DisableStrategy,
        ReweightStrategies,
        PromoteStrategy,
        RunEvolution,
        TuneLearning,
        SpawnArbMission,
        ResumeTrading,
    )
}


# -- what agents exchange with the federation -------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentContext:
    """What a planning cycle tells every agent. ``as_of_time`` is in Unix nanoseconds."""

    cycle_id: str
    as_of_time: int = 0
    market_position: int = 0
    hints: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hints", MappingProxyType(dict(self.hints)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recommendation:
    """One proposed action with the agent's confidence (0..1) and the reasons for it.

    ``intent_key`` names the intent across cycles: an agent that offers the same proposal every
    cycle gives it the same key, and the federation applies it once, not once per plan.
    """

    id: str
    priority: Priority
    target: str
    parameters: ActionParameters
    confidence: float
    rationale: str
    depends_on: tuple[str, ...] = ()
    evidence: Mapping[str, float] = dataclasses.field(default_factory=dict)
    intent_key: str = ""
    # Market time (Unix ns) of the data it was computed from; 0: the cycle's as_of_time.
    as_of_time: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", frozen_map(self.evidence))

    @property
    def action_type(self) -> ActionType:
        return self.parameters.action_type


MAX_INTENT_KEY = 256


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action:
    """An action of a Global Action Plan."""

    id: str
    priority: Priority
    target: str
    parameters: ActionParameters
    confidence: float
    rationale: str
    depends_on: tuple[str, ...] = ()
    status: ActionStatus = ActionStatus.PENDING
    status_detail: str = ""
    source_agents: tuple[str, ...] = ()
    superseded_by: str = ""
    owner: str = ""
    idempotency_key: str = ""
    attempts: int = 0
    execute_by_time: int = 0
    update_time: int = 0
    consensus: float = 1.0
    outcome: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", MappingProxyType(dict(self.outcome)))

    @property
    def action_type(self) -> ActionType:
        return self.parameters.action_type


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """``applied`` is False when the idempotency key was seen before and nothing changed."""

    applied: bool
    detail: str
    # Machine-readable results by name (e.g. "evolution_id", "candidates", "meta_version").
    outcome: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", MappingProxyType(dict(self.outcome)))


class ExecutionState(enum.IntEnum):
    """What an owner knows of an idempotency key (AgentService.GetExecution)."""

    NOT_APPLIED = 1  # nothing applied under it: executing it now applies it
    RUNNING = 2  # an execution under it is under way: executing it again joins it
    APPLIED = 3


@dataclasses.dataclass(frozen=True)
class Execution:
    """An owner's answer for one idempotency key; ``detail`` and ``outcome`` are those its
    ExecuteAction answered when it applied the action."""

    state: ExecutionState
    detail: str = ""
    outcome: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", MappingProxyType(dict(self.outcome)))

    @classmethod
    def applied(cls, result: ExecutionResult) -> Execution:
        return cls(ExecutionState.APPLIED, result.detail, result.outcome)


NOT_APPLIED = Execution(ExecutionState.NOT_APPLIED)


@runtime_checkable
class RecordsExecutions(Protocol):
    """An owner that can say, by idempotency key, whether it applied an action, from a durable
    record (so the answer holds after it restarted). Every executing agent of the mesh is one;
    the AgentService answers GetExecution from it."""

    async def execution(self, idempotency_key: str) -> Execution: ...


@runtime_checkable
class Agent(Protocol):
    """Implemented by every agent in-process and by
    :class:`~qtmesh.runtime.agent_service.AgentClient`."""

    name: str

    async def recommend(self, context: AgentContext) -> list[Recommendation]: ...

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult: ...


class RemoteAgent(Agent, Protocol):
    """An agent behind a call: each call takes the caller's deadline (``timeout`` seconds)."""

    async def recommend(
        self, context: AgentContext, *, timeout: float | None = None
    ) -> list[Recommendation]: ...

    async def execute(
        self, action: Action, *, plan_sequence: int, timeout: float | None = None
    ) -> ExecutionResult: ...


def takes_timeout(agent: Agent) -> TypeGuard[RemoteAgent]:
    """Whether ``agent``'s calls accept ``timeout=`` (seconds), so a caller's deadline travels
    with a remote call instead of ending only the caller's wait. Remote clients say so with a
    true ``takes_timeout`` class attribute; in-process agents have no deadline to pass on."""
    return bool(getattr(agent, "takes_timeout", False))


def validate_recommendations(agent: str, recommendations: list[Recommendation]) -> None:
    """Checks what an agent returned: unique ids and intent keys, confidences in 0..1, known and
    acyclic dependencies."""
    ids = [r.id for r in recommendations]
    intents = [r.intent_key for r in recommendations if r.intent_key]
    for i, r in enumerate(recommendations):
        field = f"{agent}.recommendations[{i}]"
        if not r.id:
            raise InvalidArgument(f"{field}.id", "must not be empty")
        if ids.count(r.id) > 1:
            raise InvalidArgument(f"{field}.id", f"{r.id!r} is used twice")
        if len(r.intent_key) > MAX_INTENT_KEY:
            raise InvalidArgument(f"{field}.intent_key", f"longer than {MAX_INTENT_KEY} characters")
        # Two actions of one plan with the same key would make the second a silent no-op.
        if r.intent_key and intents.count(r.intent_key) > 1:
            raise InvalidArgument(f"{field}.intent_key", f"{r.intent_key!r} is used twice")
        if not (math.isfinite(r.confidence) and 0 <= r.confidence <= 1):
            raise InvalidArgument(f"{field}.confidence", f"{r.confidence} is not in 0..1")
        for dependency in r.depends_on:
            if dependency not in ids or dependency == r.id:
                raise InvalidArgument(
                    f"{field}.depends_on", f"{dependency!r} is not another recommendation here"
                )
    cycle = find_cycle({r.id: r.depends_on for r in recommendations})
    if cycle:
        raise InvalidArgument(
            f"{agent}.recommendations", f"dependencies form a cycle: {' -> '.join(cycle)}"
        )


def find_cycle(edges: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A dependency cycle (as a path that returns to its start), or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []
