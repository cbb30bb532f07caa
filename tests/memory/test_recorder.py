"""The writers' recorder: it stores in order, retries what may pass, takes ALREADY_EXISTS as
stored, drops what memory refuses, and never lets its queue grow past its bound. Backoffs run
in virtual time (an injected sleep)."""

from __future__ import annotations

import asyncio

import pytest

from memory.episodes import Episode
from memory.recorder import Recorder
from qtmesh.base.errors import AlreadyExists, InvalidArgument, Unavailable


def episode(i: int) -> Episode:
    return Episode(id=f"e{i}", time=1, features={"x": float(i)}, decision="hold", outcome=0.0)


class Sink:
    """Fails each episode with the errors scripted for it, then stores it."""

    def __init__(self, failures: dict[str, list[Exception]] | None = None) -> None:
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.stored: list[str] = []
        self.attempts: list[str] = []

    async def store(self, episode: Episode) -> None:
        self.attempts.append(episode.id)
        pending = self.failures.get(episode.id, [])
        if pending:
            raise pending.pop(0)
        self.stored.append(episode.id)


class VirtualSleep:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


async def drained(recorder: Recorder, count: int) -> None:
    """Runs the recorder until ``count`` episodes were stored or dropped."""
    task = asyncio.ensure_future(recorder.run())
    try:
        async with asyncio.timeout(10):
            while True:
                settled = recorder.settled.current()
                if recorder.stored + recorder.dropped >= count:
                    return
                await settled.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_it_retries_what_may_pass_and_keeps_the_order():
    sink = Sink({"e1": [Unavailable("down"), Unavailable("still down")]})
    sleep = VirtualSleep()
    recorder = Recorder(sink, writer="test", initial_backoff=0.5, max_backoff=0.8, sleep=sleep)
    for i in range(3):
        recorder.record(episode(i))
    await drained(recorder, 3)
    assert sink.stored == ["e0", "e1", "e2"]
    assert sleep.slept == [0.5, 0.8]
    assert (recorder.stored, recorder.dropped) == (3, 0)


async def test_already_stored_counts_as_stored_and_a_refusal_is_dropped():
    sink = Sink({"e0": [AlreadyExists("e0 is stored")], "e1": [InvalidArgument("x", "bad")]})
    recorder = Recorder(sink, writer="test", sleep=VirtualSleep())
    for i in range(3):
        recorder.record(episode(i))
    await drained(recorder, 3)
    assert sink.attempts == ["e0", "e1", "e2"]  # the refused one is not tried again
    assert sink.stored == ["e2"]
    assert (recorder.stored, recorder.dropped) == (2, 1)


async def test_it_gives_up_after_its_attempts():
    sink = Sink({"e0": [Unavailable("down")] * 3})
    sleep = VirtualSleep()
    recorder = Recorder(sink, writer="test", attempts=3, sleep=sleep)
    recorder.record(episode(0))
    recorder.record(episode(1))
    await drained(recorder, 2)
    assert sink.stored == ["e1"]
    assert len(sleep.slept) == 2
    assert (recorder.stored, recorder.dropped) == (1, 1)


def test_a_full_queue_drops_its_oldest_and_recording_never_waits():
    recorder = Recorder(Sink(), writer="test", queue_size=2)
    for i in range(5):
        recorder.record(episode(i))  # no loop runs the recorder: nothing is stored
    assert (recorder.queued, recorder.dropped) == (2, 3)


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        Recorder(Sink(), writer="test", queue_size=0)
