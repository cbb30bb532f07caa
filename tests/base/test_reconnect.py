"""Following a stream forever: waits between attempts are drawn with full jitter under a bound
that doubles to its maximum and starts over once the other service answered (virtual time: the
sleeps are recorded, never slept)."""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog

from qtmesh.base.errors import Unavailable
from qtmesh.base.reconnect import follow_forever


async def run(attempts: int, *, answered_at: frozenset[int] = frozenset()) -> list[float]:
    waits: list[float] = []
    tried = 0

    async def follow(connected) -> None:
        nonlocal tried
        tried += 1
        if tried > attempts:
            raise asyncio.CancelledError  # the service stops following
        if tried in answered_at:
            connected()
        raise Unavailable("the other service restarted")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    with pytest.raises(asyncio.CancelledError):
        await follow_forever(
            follow,
            initial_backoff=0.5,
            max_backoff=4.0,
            log=structlog.get_logger("test"),
            what="following",
            sleep=sleep,
            rng=random.Random(7),
        )
    return waits


async def test_each_wait_is_drawn_below_a_doubling_bound():
    waits = await run(8)
    bounds = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert len(waits) == 8
    assert all(0 <= w <= b for w, b in zip(waits, bounds, strict=True))
    expected = random.Random(7)
    assert waits == [expected.uniform(0.0, b) for b in bounds]  # the rng given draws them
    assert len(set(waits)) == len(waits)  # jittered, not the bound itself


async def test_an_answer_starts_the_bound_over():
    waits = await run(6, answered_at=frozenset({4}))
    expected = random.Random(7)
    assert waits == [expected.uniform(0.0, b) for b in (0.5, 1.0, 2.0, 0.5, 1.0, 2.0)]
