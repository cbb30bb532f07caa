"""Fan-out of the ledger's events to its live subscribers, each with a bounded queue of its own.

Publishing never waits: an event is offered to every subscriber's queue, and a subscriber whose
queue is full is cut off (``overflowed``: the stream tells it the sequence to resume after)
instead of slowing the cycles, the plan follower or the other subscribers. Memory stays within
``queue_size`` events per subscriber. Every event is stored before it is published, so a stream
replays from the store whatever its queue did not hold (a subscriber catching up on a long
history, or a gap). :meth:`EventHub.close` ends every subscription when the server drains, and
any opened after it.
"""

from __future__ import annotations

import asyncio
import collections

from meta_optimizer.ledger import LedgerEvent


class Subscription:
    """One subscriber's queue; ``overflowed`` / ``closed`` say why it ended."""

    def __init__(self, queue_size: int) -> None:
        self._events: collections.deque[LedgerEvent] = collections.deque()
        self._queue_size = queue_size
        self._wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    @property
    def ended(self) -> bool:
        return self.overflowed or self.closed

    def offer(self, event: LedgerEvent) -> bool:
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

    def discard_through(self, sequence: int) -> None:
        """Drops the queued events at or before ``sequence`` (delivered from the store)."""
        while self._events and self._events[0].sequence <= sequence:
            self._events.popleft()

    def close(self) -> None:
        self.closed = True
        self._events.clear()
        self._wake.set()

    async def next(self) -> LedgerEvent | None:
        """The next event, or None once the subscription ended (overflow or close)."""
        while not self._events:
            if self.ended:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._events.popleft()


class EventHub:
    def __init__(self, *, queue_size: int) -> None:
        self.queue_size = queue_size
        self.closed = False
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        """A new subscription (already ended once the hub is closed)."""
        subscription = Subscription(self.queue_size)
        if self.closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, events: list[LedgerEvent]) -> None:
        for event in events:
            for subscription in list(self._subscriptions):
                if not subscription.offer(event):
                    self._subscriptions.discard(subscription)

    def close(self) -> None:
        self.closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def __len__(self) -> int:
        return len(self._subscriptions)
