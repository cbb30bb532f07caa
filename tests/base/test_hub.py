"""The subscriber hub: delivery in order, bounded queues that cut off only the slow reader,
and readers woken when their subscription ends."""

from __future__ import annotations

import asyncio

from qtmesh.base.hub import Hub


async def test_every_subscriber_gets_every_event_in_order():
    hub: Hub[int] = Hub(queue_size=8)
    subscriptions = [hub.subscribe() for _ in range(3)]
    for event in range(5):
        hub.publish(event)
    for subscription in subscriptions:
        assert [await subscription.next() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_a_waiting_reader_wakes_on_publish():
    hub: Hub[str] = Hub(queue_size=2)
    subscription = hub.subscribe()
    reader = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)  # let the reader start waiting
    assert not reader.done()
    hub.publish("plan")
    assert await reader == "plan"


async def test_a_full_queue_cuts_off_only_its_subscriber():
    hub: Hub[int] = Hub(queue_size=2)
    slow, fast = hub.subscribe(), hub.subscribe()
    hub.publish(1)
    hub.publish(2)
    assert await fast.next() == 1
    assert await fast.next() == 2
    hub.publish(3)  # slow still holds 1 and 2: its queue is full
    assert slow.overflowed
    assert not fast.overflowed
    assert await slow.next() is None  # its queued events are dropped: it resumes from history
    assert await fast.next() == 3
    assert len(hub) == 1
    hub.publish(4)
    assert await fast.next() == 4


async def test_closing_wakes_waiting_readers_with_the_end():
    hub: Hub[int] = Hub(queue_size=4)
    subscriptions = [hub.subscribe() for _ in range(2)]
    readers = [asyncio.create_task(s.next()) for s in subscriptions]
    await asyncio.sleep(0)
    hub.close_all()
    assert await asyncio.gather(*readers) == [None, None]
    assert all(s.closed for s in subscriptions)
    assert len(hub) == 0
    assert not subscriptions[0].offer(1)


async def test_a_cancelled_reader_leaves_the_subscription_usable():
    hub: Hub[int] = Hub(queue_size=4)
    subscription = hub.subscribe()
    reader = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    hub.publish(7)
    assert await subscription.next() == 7
