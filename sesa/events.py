"""The evolution event log as subscribers see it: every event is stored, then offered to each
subscriber's bounded queue.

Appending never waits for a subscriber: a subscriber whose queue is full is cut off (it resumes
from the store with the last sequence it received) instead of slowing the evolutions or holding
more than ``queue_size`` events. Appends are serialized, so events are offered in sequence
order. ``drain`` (shutdown) ends every subscription; events appended after it are still stored.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from sesa.store import EvolutionStore, StoredEvent


class Subscription:
    """One subscriber's queue. ``overflowed``/``closed`` say why it ended."""

    def __init__(self, queue_size: int) -> None:
        self._events: collections.deque[StoredEvent] = collections.deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    @property
    def ended(self) -> bool:
        return self.overflowed or self.closed

    def offer(self, event: StoredEvent) -> bool:
        """Queues ``event``; False (and the subscription ends) when the queue is full."""
        if self.ended:
            return False
        if len(self._events) >= self._queue_size:
            self.overflowed = True
            self._events.clear()
        else:
            self._events.append(event)
        self._wake.set()
        return not self.overflowed

    def discard_while(self, predicate: Callable[[StoredEvent], bool]) -> None:
        """Drops queued events from the oldest on while ``predicate`` holds for them."""
        while self._events and predicate(self._events[0]):
            self._events.popleft()

    def close(self) -> None:
        self.closed = True
        self._events.clear()
        self._wake.set()

    async def next(self) -> StoredEvent | None:
        """The next event, or None once the subscription ended (overflow or close)."""
        while not self._events:
            if self.ended:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._events.popleft()


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
        self._subscriptions: set[Subscription] = set()
        self._appending = asyncio.Lock()
        self.draining = False

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
            for subscription in list(self._subscriptions):
                if not subscription.offer(event):
                    self._subscriptions.discard(subscription)
        return event

    def subscribe(self) -> Subscription:
        subscription = Subscription(self.queue_size)
        if self.draining:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def drain(self) -> None:
        """Ends every subscription (shutdown); later appends are stored, not offered."""
        self.draining = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def __len__(self) -> int:
        return len(self._subscriptions)
