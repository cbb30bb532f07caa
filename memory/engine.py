"""The memory engine as an agent: recall what happened in contexts like the current one, and
recommend what worked there (see :mod:`memory.advice`). Its recommendations carry the
market time of the snapshot the current context was read from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from memory.advice import AdvicePolicy, advise
from memory.context import hinted_features, sector_features
from memory.episodes import Recalled
from memory.store import EpisodeStore
from qtmesh.base.bars import Snapshot
from qtmesh.base.contract import Action, AgentContext, ExecutionResult, Recommendation
from qtmesh.base.errors import InvalidArgument

REGIME_HINT = "regime."


class MarketSnapshots(Protocol):
    """What the memory engine reads from the market (implemented by MarketClient)."""

    async def snapshot(self) -> Snapshot: ...


class MemoryEngine:
    """Implements :class:`qtmesh.base.contract.Agent` over an :class:`EpisodeStore`."""

    name = "memory"

    def __init__(
        self, store: EpisodeStore, market: MarketSnapshots, *, policy: AdvicePolicy, k: int
    ) -> None:
        self.store = store
        self._market = market
        self._policy = policy
        self._k = k

    async def recommend(self, context: AgentContext) -> list[Recommendation]:
        """Per sector with episodes in memory: the decision that worked in similar contexts.

        The context of a sector is :func:`memory.context.sector_features` of the current
        market plus any ``feature.<name>`` hints; a ``regime.<sector>`` hint restricts recall
        to episodes of that regime when memory has some.
        """
        extra = hinted_features(context.hints)
        if await self.store.size() == 0:
            return []
        snapshot = await self._market.snapshot()
        # One trip to a worker thread for every sector's recall.
        recalled = await self.store.run(self._recall_sectors, snapshot, extra, context.hints)
        recommendations = []
        for sector, episodes in recalled.items():
            recommendation = advise(sector, episodes, self._policy, as_of_time=snapshot.clock_time)
            if recommendation is not None:
                recommendations.append(recommendation)
        return recommendations

    def _recall_sectors(
        self, snapshot: Snapshot, extra: Mapping[str, float], hints: Mapping[str, str]
    ) -> dict[str, list[Recalled]]:
        known = set(self.store.sectors_now())
        recalled = {}
        for summary in snapshot.sectors:
            sector = summary.sector
            if sector not in known:
                continue
            features = sector_features(snapshot, sector) | dict(extra)
            regime = hints.get(f"{REGIME_HINT}{sector}", "")
            try:
                recalled[sector] = self.store.recall_now(features, self._k, regime, sector)
            except InvalidArgument as exc:
                if exc.field != "regime":
                    raise
                recalled[sector] = self.store.recall_now(features, self._k, "", sector)
        return recalled

    async def execute(self, action: Action, *, plan_sequence: int) -> ExecutionResult:
        raise InvalidArgument("action.type", "the memory engine executes no actions")
