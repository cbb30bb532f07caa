"""Fan-out of a service's events to its live subscribers, each with a bounded queue of its own:
the federation's plans, SESA's evolutions, the world model's regimes and the meta optimizer's
ledger.

Publishing never waits: an event is offered to every subscriber's queue, and a subscriber
whose queue is full is cut off (told the sequence to resume after) instead of slowing the
publisher or the other subscribers. Memory stays within ``queue_size`` events per subscriber.
Every user stores its events before publishing them, so a stream replays from its store what a
queue did not hold. :meth:`Hub.close_all` (on drain) ends every subscription, and any taken
after it.

A queue is a deque plus one future to wake its reader, bound to the event loop once at
subscription: ``asyncio.Queue`` looks the running loop up on every ``get``, which costs a system
call, and a plan is delivered to every subscriber.

:func:`replay_then_follow` is the resumable stream over a :class:`ResumableLog` (SESA's
evolutions, the world model's regimes): every kept event after the caller's sequence, then the
live ones, each once and in order. Its errors: INVALID_ARGUMENT for a sequence outside
0..last; FAILED_PRECONDITION (metadata ``oldest_sequence``) when events after it were dropped
from a bounded log, at the start or while the subscriber read; RESOURCE_EXHAUSTED (metadata
``resume_after_sequence``) for a live subscriber that fell a queue behind; UNAVAILABLE (the same
metadata) when the log drains for shutdown.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from qtmesh.base.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable

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

    def __len__(self) -> int:
        """Events queued, not yet taken."""
        return len(self._events)

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

    def backlog(self) -> int:
        """Events queued for the subscriber furthest behind (0 with none). Safe to call from
        another thread: the set is copied in one step under the GIL."""
        return max(map(len, tuple(self._subscriptions)), default=0)


class Sequenced(Protocol):
    @property
    def sequence(self) -> int: ...


E = TypeVar("E", bound=Sequenced)


class ResumableLog(Protocol[E]):
    """Kept events, oldest first, with a hub that offers each new one once it is kept."""

    @property
    def queue_size(self) -> int: ...

    @property
    def draining(self) -> bool: ...

    def subscribe(self) -> Subscription[E]: ...

    def unsubscribe(self, subscription: Subscription[E]) -> None: ...

    async def bounds(self) -> tuple[int, int]:
        """The oldest kept and the last sequence (0, 0 for an empty log)."""
        ...

    async def page(self, after: int, limit: int) -> tuple[int, Sequence[E]]:
        """The oldest kept sequence and up to ``limit`` events after ``after``."""
        ...


async def replay_then_follow(
    log: ResumableLog[E],
    after_sequence: int | None,
    *,
    page_size: int,
    connected: Callable[[], Awaitable[None]],
) -> AsyncGenerator[E, None]:
    """Every kept event after ``after_sequence`` (None: live events only), then each live one
    (module docstring); awaits ``connected`` once the request is known to be good. Close it
    (``contextlib.aclosing``) to unsubscribe at once."""
    # Subscribed before reading the log, so no event falls between the two.
    subscription = log.subscribe()
    try:
        oldest, last = await log.bounds()
        if after_sequence is None:
            after = last
        else:
            after = after_sequence
            if not 0 <= after <= last:
                raise InvalidArgument(
                    "after_sequence", f"must be in 0..{last}, the last sequence (got {after})"
                )
            check_kept(after, oldest)
        if log.draining:
            raise draining(after)
        await connected()
        while True:
            oldest, page = await log.page(after, page_size)
            check_kept(after, oldest)  # dropped while this subscriber read
            missed = False
            for event in page:
                after = event.sequence
                yield event

                def delivered(e: E, last: int = after) -> bool:
                    return e.sequence <= last

                # Live events the log has delivered need no room in the queue.
                subscription.discard_while(delivered)
                if subscription.overflowed:
                    # Every event it missed is kept (kept before it is offered), so reading
                    # on from the log loses nothing; the new subscription has none of them.
                    log.unsubscribe(subscription)
                    subscription = log.subscribe()
                    missed = True
            if len(page) < page_size and not missed:
                break
        while True:
            live = await subscription.next()
            if live is None:
                if subscription.overflowed:
                    raise ResourceExhausted(
                        f"subscriber fell {log.queue_size} events behind; resume with "
                        f"after_sequence={after}",
                        metadata={"resume_after_sequence": str(after)},
                    )
                raise draining(after)
            if live.sequence <= after:
                continue  # already delivered from the log
            after = live.sequence
            yield live
    finally:
        log.unsubscribe(subscription)


def check_kept(after: int, oldest: int) -> None:
    """Refuses a resume from before the oldest kept event (events after it were dropped)."""
    if oldest and after < oldest - 1:
        raise FailedPrecondition(
            f"after_sequence: events {after + 1}..{oldest - 1} were dropped from the bounded log; "
            f"the oldest available is sequence {oldest} (resume with after_sequence >= "
            f"{oldest - 1})",
            metadata={"field": "after_sequence", "oldest_sequence": str(oldest)},
        )


def draining(after: int) -> Unavailable:
    """The error a stream ends with when its server shuts down."""
    return Unavailable(
        f"server is shutting down; resume with after_sequence={after}",
        metadata={"resume_after_sequence": str(after)},
    )
