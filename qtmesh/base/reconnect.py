"""Following another service's stream for as long as a service runs: reconnect with backoff."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from collections.abc import Awaitable, Callable

from structlog.typing import FilteringBoundLogger

from qtmesh.base.config import require, setting
from qtmesh.base.errors import MeshError

Sleep = Callable[[float], Awaitable[None]]


async def follow_forever(
    follow: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    initial_backoff: float,
    max_backoff: float,
    log: FilteringBoundLogger,
    what: str,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> None:
    """Runs ``follow(connected)`` again each time it ends or fails, until cancelled.

    Between attempts it waits a time drawn uniformly from 0 to a bound that starts at
    ``initial_backoff`` seconds and doubles up to ``max_backoff`` ("full jitter": the followers
    of a restarted service spread out instead of reconnecting in lockstep); ``follow`` calls
    ``connected()`` once the other service answered, which makes the next bound the initial one
    again. ``rng`` draws the waits (a fresh unseeded one when None). A MeshError (the other
    service away or refusing) is logged as a warning; any other exception, a bug, with its
    traceback too: a background loop must outlive any one failure."""
    delay = initial_backoff
    draw = rng or random.Random()

    def connected() -> None:
        nonlocal delay
        delay = initial_backoff

    while True:
        try:
            await follow(connected)
            problem = "the stream ended"
        except MeshError as exc:
            problem = exc.message
        except Exception as exc:
            log.exception(f"{what} failed")
            problem = repr(exc)
        wait = draw.uniform(0.0, delay)
        log.warning(f"{what} interrupted; reconnecting", problem=problem, retry_seconds=wait)
        await sleep(wait)
        delay = min(2 * delay, max_backoff)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReconnectConfig:
    """The backoff settings of a service that follows another service's stream; a config
    inherits them and calls ``check_reconnect`` from its ``__post_init__``."""

    reconnect_initial_seconds: float = setting(
        0.2, help="first wait before reconnecting to a followed stream after it failed"
    )
    reconnect_max_seconds: float = setting(5.0, help="longest wait between reconnections")

    def check_reconnect(self) -> None:
        for name in ("reconnect_initial_seconds", "reconnect_max_seconds"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, name, "must be positive")
        require(
            self.reconnect_initial_seconds <= self.reconnect_max_seconds,
            "reconnect_initial_seconds",
            "must not exceed reconnect_max_seconds",
        )
