"""The paper fleet as an agent of the federation: it executes the GAP actions that reshape the
fleet (ADJUST_EXPOSURE scales a sector's allocation, SPAWN_ARB_MISSION opens a long-short sector
pair) and recommends nothing itself; the meta optimizer proposes, the fleet executes."""

from __future__ import annotations

from market.fleet.engine import FleetEngine
from qtmesh.base.contract import Action, ActionType, AgentContext, ExecutionResult, Recommendation

EXECUTES = (ActionType.ADJUST_EXPOSURE, ActionType.SPAWN_ARB_MISSION)


class FleetAgent:
    """Implements :class:`qtmesh.base.contract.Agent` over a :class:`FleetEngine`."""

    name = "market"

    def __init__(self, engine: FleetEngine) -> None:
        self._engine = engine

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """Always empty: the fleet is an executor; its changes come from other agents' proposals."""
        return []

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        return await self._engine.execute(action, plan_sequence=plan_sequence)
