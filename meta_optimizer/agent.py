"""The meta optimizer as an agent of the federation: the latest cycle's proposals become
recommendations, so they reach the Global Action Plan.

What each proposal becomes (target; priority):

- REINFORCEMENT: AdjustExposure(sector, 1.2) (market/fleet/<sector>; MEDIUM)
- RISK_MITIGATION: AdjustExposure(sector, 0.5) (market/fleet/<sector>; HIGH: cutting a losing
  sector should not wait)
- ARB_MISSION: SpawnArbMission(long, short, allocation) (market/fleet/arb/<long>-<short>; LOW:
  a new, speculative position)

Confidence is the proposal's (1 - p of its test), the rationale its sentence, and the evidence
its numbers. The meta optimizer executes nothing itself: the federation sends these actions to
the market's AgentService, which owns the fleet and records every change with its action.
"""

from __future__ import annotations

import hashlib

from meta_optimizer.audit import ProposalType
from meta_optimizer.engine import MetaOptimizer
from meta_optimizer.ledger import Proposal
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
    )


def intent_key_of(p: Proposal) -> str:
    """What the proposal asks, on which evidence: its type, sectors and the reports it rests on.

    The latest cycle's proposals are offered in every federation cycle until a newer cycle
    replaces them, and a second cycle over the same reports proposes the same again under new
    ids; one key for one intent on one body of evidence makes the fleet apply it once. New
    reports make a new intent (a sector still losing a day later is cut again)."""
    evidence = hashlib.sha256("\n".join(sorted(p.report_ids)).encode()).hexdigest()[:16]
    sectors = f"{p.target_sector}-{p.counter_sector}" if p.counter_sector else p.target_sector
    return f"{p.type.name.lower()}/{sectors}/{evidence}"


class MetaOptimizerAgent:
    """Implements :class:`qtmesh.base.contract.Agent` over a :class:`MetaOptimizer`."""

    name = "meta-optimizer"

    def __init__(self, optimizer: MetaOptimizer) -> None:
        self._optimizer = optimizer

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """The latest cycle's proposals; none before the first cycle."""
        cycle = await self._optimizer.last_cycle()
        return [recommendation_of(p) for p in cycle.proposals] if cycle else []

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        raise InvalidArgument(
            "action.type", "the meta optimizer executes nothing; the market's fleet does"
        )
