"""How a service writes episodes to the memory engine without ever waiting for it.

SESA, meta and the federation record what they did as episodes (who writes what:
``docs/services/memory.md``, "Who writes and who recalls"). Their own work, an evolution, an
adaptation, a plan, must never wait for memory nor fail because it is away, so each hands its
episodes to a :class:`Recorder`:

* :meth:`Recorder.record` never waits and never raises: the episode joins a bounded queue.
  When the queue is full the oldest queued episode is dropped (and counted in ``dropped``):
  memory that was away for long loses its oldest news, not the writer's time.
* One background task (:meth:`Recorder.run`) stores the queued episodes in order through the
  sink (a :class:`memory.client.MemoryClient`). A failure that may pass (UNAVAILABLE,
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is retried after ``initial_backoff`` seconds,
  doubling up to ``max_backoff``, ``attempts`` times in all; then the episode is dropped with a
  warning. ALREADY_EXISTS counts as stored: writers give their episodes stable ids, so it means
  an earlier attempt reached memory after all. Any other refusal (INVALID_ARGUMENT: an episode
  memory will never take) drops the episode at once, with a warning; an unexpected exception is
  logged with its traceback and drops it too, and the task carries on.
* When the writer stops, the task is cancelled; what is still queued is dropped (logged).

No gRPC here: the sink is anything with ``async store(episode)``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from memory.episodes import Episode
from qtmesh.base.errors import (
    AlreadyExists,
    DeadlineExceeded,
    MeshError,
    ResourceExhausted,
    Unavailable,
)
from qtmesh.base.signal import ChangeSignal

_log = structlog.get_logger("memory.recorder")
Sleep = Callable[[float], Awaitable[None]]
# Failures that say "not now" rather than "never".
TRANSIENT: tuple[type[MeshError], ...] = (Unavailable, DeadlineExceeded, ResourceExhausted)


class EpisodeSink(Protocol):
    """Where episodes go (implemented by MemoryClient and EpisodeStore)."""

    async def store(self, episode: Episode) -> object: ...


class Recorder:
    """Stores episodes in the background, in order, retrying what may pass (see the module)."""

    def __init__(
        self,
        sink: EpisodeSink,
        *,
        writer: str,
        queue_size: int = 1000,
        attempts: int = 5,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if queue_size < 1 or attempts < 1:
            raise ValueError("queue_size and attempts must be at least 1")
        self._sink = sink
        self._writer = writer
        self._queue: collections.deque[Episode] = collections.deque()
        self._queue_size = queue_size
        self._attempts = attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._wake = asyncio.Event()
        self.stored = 0
        self.dropped = 0
        # Notified whenever an episode was stored or dropped (``stored``/``dropped`` moved).
        self.settled = ChangeSignal()

    def record(self, episode: Episode) -> None:
        """Queues ``episode`` for storing; never waits, never raises."""
        if len(self._queue) >= self._queue_size:
            lost = self._queue.popleft()
            self.dropped += 1
            _log.warning(
                "memory queue full; the oldest episode is dropped",
                writer=self._writer,
                episode=lost.id,
                queued=len(self._queue),
            )
        self._queue.append(episode)
        self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Stores queued episodes until cancelled."""
        try:
            while True:
                while not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                episode = self._queue.popleft()
                if await self._store(episode):
                    self.stored += 1
                else:
                    self.dropped += 1
                self.settled.notify()
        finally:
            if self._queue:
                _log.warning(
                    "stopping with episodes not stored; they are dropped",
                    writer=self._writer,
                    count=len(self._queue),
                )
                self.dropped += len(self._queue)
                self._queue.clear()

    async def _store(self, episode: Episode) -> bool:
        """True once memory holds ``episode``; False when it is dropped."""
        delay = self._initial_backoff
        for attempt in range(1, self._attempts + 1):
            try:
                await self._sink.store(episode)
                return True
            except AlreadyExists:
                return True  # an earlier attempt landed: the id is the episode's own
            except TRANSIENT as exc:
                if attempt == self._attempts:
                    _log.warning(
                        "memory unavailable; episode dropped",
                        writer=self._writer,
                        episode=episode.id,
                        attempts=attempt,
                        error=exc.message,
                    )
                    return False
                _log.info(
                    "memory unavailable; retrying",
                    writer=self._writer,
                    episode=episode.id,
                    retry_seconds=delay,
                    error=exc.message,
                )
                await self._sleep(delay)
                delay = min(2 * delay, self._max_backoff)
            except MeshError as exc:
                _log.warning(
                    "memory refused an episode; dropped",
                    writer=self._writer,
                    episode=episode.id,
                    code=exc.code,
                    error=exc.message,
                )
                return False
            except Exception:
                _log.exception("storing an episode failed", writer=self._writer, episode=episode.id)
                return False
        return False  # pragma: no cover - the loop returns on its last attempt
