"""One way for long-lived streams to learn that something changed: a signal every waiter sees.

A stream takes :meth:`ChangeSignal.current` *before* it reads, then waits on it: a change made
between the read and the wait sets that event, so no change is missed. ``drain`` wakes every
waiter for the last time when the server shuts down; waiters check ``draining`` and end.
"""

from __future__ import annotations

import asyncio

__all__ = ["ChangeSignal"]


class ChangeSignal:
    """Wakes every waiter when the owner calls :meth:`notify` or :meth:`drain`."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.draining = False

    def current(self) -> asyncio.Event:
        """The event the next notification sets; take it *before* reading, then wait on it."""
        return self._event

    async def wait(self) -> None:
        """Waits for the next notification (for a waiter that reads nothing in between)."""
        await self._event.wait()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    def drain(self) -> None:
        self.draining = True
        self.notify()
