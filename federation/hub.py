"""Fan-out of plan events to subscribers, each with a bounded queue of its own.

Publishing never waits: an event is offered to every subscriber's queue, and a subscriber
whose queue is full is cut off (told the sequence to resume after) instead of slowing the
publisher or the other subscribers. Memory stays within ``queue_size`` events per subscriber.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's queue. ``overflowed``/``closed`` say why it ended."""

    def __init__(self, queue_size: int) -> None:
        self._queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=queue_size)
        self.overflowed = False
        self.closed = False

    def offer(self, event: T) -> bool:
        """Queues ``event``; False (and the subscription ends) when the queue is full."""
        if self.overflowed or self.closed:
            return False
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            self._wake()
            return False
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # Make room for the end marker so a waiting reader wakes up now.
        while True:
            try:
                self._queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def next(self) -> T | None:
        """The next event, or None once the subscription ended (overflow or close)."""
        if self.overflowed or self.closed:
            return None
        event = await self._queue.get()
        if event is None or self.overflowed or self.closed:
            return None
        return event


class Hub(Generic[T]):
    def __init__(self, *, queue_size: int) -> None:
        self.queue_size = queue_size
        self._subscriptions: set[Subscription[T]] = set()

    def subscribe(self) -> Subscription[T]:
        subscription: Subscription[T] = Subscription(self.queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[T]) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: T) -> None:
        for subscription in list(self._subscriptions):
            if not subscription.offer(event):
                self._subscriptions.discard(subscription)

    def close_all(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def __len__(self) -> int:
        return len(self._subscriptions)
