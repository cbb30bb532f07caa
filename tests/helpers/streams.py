"""Reading server streams in tests."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import TypeVar

T = TypeVar("T")


async def take(items: AsyncIterable[T], count: int) -> list[T]:
    """The first ``count`` items of a stream, which is closed then (a client's generator
    cancels its call); fails if it ends before."""
    iterator = aiter(items)
    taken: list[T] = []
    try:
        async for item in iterator:
            taken.append(item)
            if len(taken) == count:
                return taken
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
    raise AssertionError(f"the stream ended after {len(taken)} of {count} items")
