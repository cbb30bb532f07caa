"""Fan-out of a service's events to its live subscribers, each with a bounded queue of its own:
the federation's plans, SESA's evolutions and the meta optimizer's ledger.

Publishing never waits: an event is offered to every subscriber's queue, and a subscriber
whose queue is full is cut off (told the sequence to resume after) instead of slowing the
publisher or the other subscribers. Memory stays within ``queue_size`` events per subscriber.
Every user stores its events before publishing them, so a stream replays from its store what a
queue did not hold. :meth:`Hub.close_all` (on drain) ends every subscription, and any taken
after it.

A queue is a deque plus one future to wake its reader, bound to the event loop once at
subscription: ``asyncio.Queue`` looks the running loop up on every ``get``, which costs a system
call, and a plan is delivered to every subscriber.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's queue. ``overflowed``/``closed`` say why it ended."""

    def __init__(self, queue_size: int, loop: asyncio.AbstractEventLoop) -> None:
        self._events: collections.deque[T] = collections.deque()
        self._queue_size = queue_size
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closed = False

    @property
    def ended(self) -> bool:
        return self.overflowed or self.closed

    def offer(self, event: T) -> bool:
        """Queues ``event``; False (and the subscription ends) when the queue is full."""
        if self.ended:
            return False
        if len(self._events) >= self._queue_size:
            self.overflowed = True
            self._events.clear()
        else:
            self._events.append(event)
        self._wake()
        return not self.overflowed

    def discard_while(self, predicate: Callable[[T], bool]) -> None:
        """Drops queued events from the oldest on while ``predicate`` holds for them."""
        while self._events and predicate(self._events[0]):
            self._events.popleft()

    def close(self) -> None:
        self.closed = True
        self._events.clear()
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> T | None:
        """The next event, or None once the subscription ended (overflow or close)."""
        while not self._events:
            if self.ended:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        return self._events.popleft()


class Hub(Generic[T]):
    def __init__(self, *, queue_size: int) -> None:
        self.queue_size = queue_size
        self.closed = False
        self._subscriptions: set[Subscription[T]] = set()

    def subscribe(self) -> Subscription[T]:
        """A new subscription (already ended once the hub is closed); call from the event loop
        its reader runs on."""
        subscription: Subscription[T] = Subscription(self.queue_size, asyncio.get_running_loop())
        if self.closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription[T]) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: T) -> None:
        for subscription in list(self._subscriptions):
            if not subscription.offer(event):
                self._subscriptions.discard(subscription)

    def close_all(self) -> None:
        self.closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()

    def __len__(self) -> int:
        return len(self._subscriptions)
