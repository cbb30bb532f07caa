"""A memory engine served on port 0 whose store tells a test when episodes arrive, for the tests
of the services that write to memory (SESA, meta, the federation)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from market.client import MarketClient
from memory.advice import AdvicePolicy
from memory.engine import MemoryEngine
from memory.episodes import Episode
from memory.service import services
from memory.store import EpisodeStore, StoreResult
from qtmesh.base.storage import sqlite_url
from qtmesh.testing import Running, serving

TIMEOUT = 60.0


class WatchedStore(EpisodeStore):
    """An EpisodeStore that keeps the episodes stored through it, and wakes who waits for them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stored: list[Episode] = []
        self._changed = asyncio.Condition()

    async def store(self, episode: Episode) -> StoreResult:
        result = await super().store(episode)
        async with self._changed:
            self.stored.append(episode)
            self._changed.notify_all()
        return result

    async def wait_for(self, count: int, *, timeout: float = TIMEOUT) -> list[Episode]:
        """The episodes stored once there are at least ``count``."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.stored) >= count)
            return list(self.stored)


@contextlib.asynccontextmanager
async def served_memory(
    tmp_path: Path, market: Running, *, name: str = "memory", min_support: int = 3
) -> AsyncIterator[tuple[Running, WatchedStore]]:
    """The memory engine (MemoryService and AgentService) over a WatchedStore, reading the
    market served by ``market``; yields (running server, store)."""
    store = WatchedStore.open(
        sqlite_url(tmp_path / f"{name}.db"), clock=time.time_ns, max_episodes=10_000
    )
    engine = MemoryEngine(
        store, MarketClient(market.channel), policy=AdvicePolicy(min_support=min_support), k=25
    )
    try:
        async with serving(services(engine), name=name) as running:
            yield running, store
    finally:
        store.close()
