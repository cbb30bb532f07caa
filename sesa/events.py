"""The evolution event log as subscribers see it: every event is stored, then offered to each
subscriber through :class:`qtmesh.base.hub.Hub` (bounded queues; a subscriber whose queue is
full is cut off and resumes from the store with the last sequence it received).

Appends are serialized, so events are offered in sequence order. ``drain`` (shutdown) ends every
subscription, and any taken after it; events appended after it are still stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from qtmesh.base.hub import Hub, Subscription
from sesa.store import EvolutionStore, StoredEvent


class EventLog:
    """Stores evolution events and fans them out to subscribers."""

    def __init__(
        self,
        store: EvolutionStore,
        *,
        queue_size: int,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self._clock = clock
        self._hub: Hub[StoredEvent] = Hub(queue_size=queue_size)
        self._appending = asyncio.Lock()

    async def append(
        self, evolution_id: str, kind: int, payload: bytes, *, start_sequence: int = 0
    ) -> StoredEvent:
        """Stores the event (its time is now), then offers it to every subscriber."""
        async with self._appending:
            event = await self.store.run_short(
                lambda: self.store.append(
                    evolution_id, kind, self._clock(), payload, start_sequence=start_sequence
                )
            )
            self._hub.publish(event)
        return event

    async def bounds(self) -> tuple[int, int]:
        return await self.store.run(self.store.bounds)

    async def page(self, after: int, limit: int) -> tuple[int, list[StoredEvent]]:
        return await self.store.run(self.store.page, after, limit)

    @property
    def draining(self) -> bool:
        return self._hub.closed

    def subscribe(self) -> Subscription[StoredEvent]:
        return self._hub.subscribe()

    def unsubscribe(self, subscription: Subscription[StoredEvent]) -> None:
        self._hub.unsubscribe(subscription)

    def drain(self) -> None:
        """Ends every subscription (shutdown); later appends are stored, not offered."""
        self._hub.close_all()

    def __len__(self) -> int:
        return len(self._hub)
