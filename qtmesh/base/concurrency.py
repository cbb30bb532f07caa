"""CPU-heavy work off the event loop, stopped when the awaiting task (the RPC) is cancelled.

The work runs in a thread and polls a :class:`CancelToken`; cancelling the awaiting task sets
the token and waits for the thread to notice, so a cancelled RPC leaves no work running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """Raised inside work whose token was cancelled."""


class CancelToken:
    """Set from the event loop, polled by the worker thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


async def run_cancellable(work: Callable[[CancelToken], T]) -> T:
    """Runs ``work(token)`` in a thread; cancellation sets the token and waits for it to stop."""
    token = CancelToken()
    future = asyncio.get_running_loop().run_in_executor(None, work, token)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        token.cancel()
        with contextlib.suppress(Cancelled):
            await future
        raise
