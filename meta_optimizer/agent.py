"""The meta optimizer as an agent of the federation: the latest cycle's proposals that are still
PROPOSED and within their deadline become recommendations, so they reach the Global Action Plan.
Once applied, rejected or expired (:mod:`meta_optimizer.lifecycle`) a proposal is no longer
offered.

What each proposal becomes (target; priority):

- REINFORCEMENT: AdjustExposure(sector, 1.2) (market/fleet/<sector>; MEDIUM)
- RISK_MITIGATION: AdjustExposure(sector, 0.5) (market/fleet/<sector>; HIGH: cutting a losing
  sector should not wait)
- ARB_MISSION: SpawnArbMission(long, short, allocation) (market/fleet/arb/<long>-<short>; LOW:
  a new, speculative position)

Confidence is the proposal's (1 - p of its test), the rationale its sentence, the evidence its
numbers, and ``as_of_time`` the market time of the data it rests on (the end of the newest
trading day audited). The meta optimizer executes nothing itself: the federation sends these
actions to the market's AgentService, which owns the fleet and records every change with its
action.
"""

from __future__ import annotations

from meta_optimizer.audit import ProposalType
from meta_optimizer.engine import MetaOptimizer
from meta_optimizer.ledger import Proposal, ProposalState
from meta_optimizer.lifecycle import AGENT, intent_key_of
from qtmesh.base.contract import (
    Action,
    ActionType,
    AdjustExposure,
    AgentContext,
    ExecutionResult,
    Priority,
    Recommendation,
    SpawnArbMission,
)
from qtmesh.base.errors import InvalidArgument

EXECUTES: tuple[ActionType, ...] = ()


def recommendation_of(p: Proposal) -> Recommendation:
    evidence = {
        "p_value": p.p_value,
        "ledger_index": float(p.ledger_index),
        "report_count": float(len(p.report_ids)),
    }
    if p.type is ProposalType.ARB_MISSION:
        parameters: AdjustExposure | SpawnArbMission = SpawnArbMission(
            long_sector=p.target_sector, short_sector=p.counter_sector, allocation=p.allocation
        )
        target = f"market/fleet/arb/{p.target_sector}-{p.counter_sector}"
        priority = Priority.LOW
        evidence["allocation"] = p.allocation
    else:
        parameters = AdjustExposure(sector=p.target_sector, factor=p.factor)
        target = f"market/fleet/{p.target_sector}"
        priority = Priority.HIGH if p.type is ProposalType.RISK_MITIGATION else Priority.MEDIUM
        evidence["factor"] = p.factor
    return Recommendation(
        id=f"meta-optimizer/{p.id}",
        priority=priority,
        target=target,
        parameters=parameters,
        confidence=p.confidence,
        rationale=p.rationale,
        evidence=evidence,
        intent_key=intent_key_of(p),
        as_of_time=p.as_of_time,
    )


def offered(p: Proposal, market_time: int) -> bool:
    """Whether the agent still offers ``p`` at ``market_time`` (0: unknown, no deadline)."""
    if p.state is not ProposalState.PROPOSED:
        return False
    return not (market_time and p.expire_time and market_time >= p.expire_time)


class MetaOptimizerAgent:
    """Implements :class:`qtmesh.base.contract.Agent` over a :class:`MetaOptimizer`."""

    name = AGENT

    def __init__(self, optimizer: MetaOptimizer) -> None:
        self._optimizer = optimizer

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """The latest cycle's proposals still PROPOSED and before their deadline at the context's
        market time; none before the first cycle."""
        cycle = await self._optimizer.last_cycle()
        if cycle is None:
            return []
        return [recommendation_of(p) for p in cycle.proposals if offered(p, context.as_of_time)]

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        raise InvalidArgument(
            "action.type", "the meta optimizer executes nothing; the market's fleet does"
        )
