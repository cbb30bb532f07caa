"""The paper fleet as an agent of the federation: it executes the GAP actions that reshape what
the fleet trades (ADJUST_EXPOSURE scales a sector's allocation, SPAWN_ARB_MISSION opens a
long-short sector pair, the strategy actions change the book, HALT_TRADING and RESUME_TRADING
stop and restart trading) and recommends nothing itself: the officers and the meta optimizer
propose, the fleet executes."""

from __future__ import annotations

from market.fleet.engine import EXECUTABLE, FleetEngine
from qtmesh.base.contract import Action, AgentContext, Execution, ExecutionResult, Recommendation

EXECUTES = EXECUTABLE


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

    async def execution(self, idempotency_key: str) -> Execution:
        return await self._engine.execution(idempotency_key)
