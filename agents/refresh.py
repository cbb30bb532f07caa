"""Background refreshes of an agent's cached state, driven by the market's replay clock.

Recommend must answer within its deadline, so the officers precompute what they recommend. A
:class:`Refresher` runs an agent's refresh in one task: requests made while a refresh runs are
coalesced into the next one, and callers that need fresh state await a refresh that started
after they asked. :func:`follow_clock` subscribes to the market's bar stream and calls back on
every clock step, resuming after the last position it saw and reconnecting with exponential
backoff when the market goes away, so a restarted market is picked up again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from qtmesh.base.bars import Bar
from qtmesh.base.errors import InvalidArgument, MeshError

_log = structlog.get_logger("agents.refresh")


class ClockStream(Protocol):
    """The market's bar stream (implemented by MarketClient)."""

    def stream_bars(
        self, symbols: Sequence[str] = (), *, after_position: int | None = None
    ) -> AsyncIterator[tuple[int, int, list[Bar]]]: ...


class Refresher:
    """Runs ``refresh`` in one background task, never two at once."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], *, name: str) -> None:
        self._refresh = refresh
        self._name = name
        self._wake = asyncio.Event()
        self._next: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error: MeshError | None = None

    def request(self) -> asyncio.Future[None]:
        """The refresh that will start next (one not started yet), starting the task if needed."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._wake.set()
        return self._next

    async def fresh(self) -> None:
        """Waits for a refresh that started after this call; raises what it raised. Cancelling
        the caller leaves the refresh running for the others that wait for it."""
        await asyncio.shield(self.request())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            future, self._next = self._next, None
            if future is None:
                continue
            try:
                await self._refresh()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except MeshError as exc:
                self.last_error = exc
                _log.warning("refresh failed", agent=self._name, error=str(exc))
                future.set_exception(exc)
                future.exception()  # retrieved: waiters see it, nobody else must
            except Exception as exc:
                _log.exception("refresh crashed", agent=self._name)
                future.set_exception(exc)
                future.exception()
            else:
                self.last_error = None
                future.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._next is not None and not self._next.done():
            self._next.cancel()


async def follow_clock(
    market: ClockStream,
    on_step: Callable[[int, int], None],
    *,
    symbols: Sequence[str] = (),
    backoff: tuple[float, float] = (0.1, 5.0),
) -> None:
    """Calls ``on_step(position, clock_time)`` for every step of the market's clock, forever.

    Reconnects after ``backoff[0]`` seconds, doubling up to ``backoff[1]``, and resumes after the
    last position seen; when the market no longer has that position (it restarted), it follows
    from the market's current clock. Cancel the task to stop.
    """
    after: int | None = None
    delay = backoff[0]
    while True:
        try:
            async for position, clock_time, _bars in market.stream_bars(
                symbols, after_position=after
            ):
                after = position
                delay = backoff[0]
                on_step(position, clock_time)
        except InvalidArgument as exc:
            if exc.field != "after_position":
                raise
            after = None  # the market restarted behind us: follow it from its clock
            continue
        except MeshError as exc:
            _log.info("market stream interrupted", error=str(exc), retry_seconds=delay)
        await asyncio.sleep(delay)  # backoff before reconnecting (not a test wait)
        delay = min(delay * 2, backoff[1])
