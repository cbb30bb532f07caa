"""The Global Action Plan stream under load: 1,000 subscribers, 10 plans a second; then the
same run with one subscriber that never reads; and, as the reference measured in the same run,
a bare grpc.aio server-stream fan-out of payloads of a plan's size to as many subscribers.

    python -m benchmarks.subscribers [--subscribers 1000] [--seconds 10]

The federation (`qtmesh serve federation`, one agent) runs in its own process; the subscribers
and the plan generator run here. Delivery latency is the time from a plan's creation (its
create_time, same machine clock) to its arrival at a subscriber. A subscriber that misses a
plan counts it as lost. The stalled subscriber has its own connection and reads nothing, so it
fills its stream's flow-control window and then its queue at the federation.

The reference (benchmarks._fanout, its own process too) has no interceptors, store or
conversion; ``p50_ratio`` and ``p99_ratio`` are the federation's latencies over its.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc

from benchmarks import _fanout
from benchmarks._federation import federation_with_agents
from benchmarks._report import emit, percentiles_ms
from federation.client import FederationClient
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.runtime.channels import open_channel

STREAMS_PER_CHANNEL = 100
RATE = 10.0  # plans per second


async def run_once(address: str, subscribers: int, seconds: float, stalled: bool) -> dict:
    plans = int(seconds * RATE)
    channels = [open_channel(address) for _ in range(-(-subscribers // STREAMS_PER_CHANNEL))]
    latencies: list[float] = []
    sizes: list[int] = []
    received = [0] * subscribers
    start_sequence = 0
    async with open_channel(address) as control:
        client = FederationClient(control)
        start_sequence = (await client.generate_plan()).sequence
        ready = asyncio.Event()
        connected = 0

        async def subscriber(index: int) -> None:
            nonlocal connected
            stub = pb_grpc.FederationServiceStub(channels[index // STREAMS_PER_CHANNEL])
            call = stub.SubscribePlans(pb.SubscribePlansRequest(after_sequence=start_sequence))
            await call.initial_metadata()
            connected += 1
            if connected == subscribers:
                ready.set()
            async for event in call:
                if event.HasField("plan"):
                    sizes.append(event.plan.ByteSize())
                    latencies.append(time.time_ns() - event.plan.create_time.ToNanoseconds())
                    received[index] += 1
                    if received[index] == plans:
                        call.cancel()
                        return

        tasks = [asyncio.ensure_future(subscriber(i)) for i in range(subscribers)]
        stalled_call = None
        if stalled:
            own = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
            stalled_call = pb_grpc.FederationServiceStub(own).SubscribePlans(
                pb.SubscribePlansRequest(after_sequence=start_sequence)
            )
            await stalled_call.initial_metadata()
        await asyncio.wait_for(ready.wait(), timeout=60)
        began = time.perf_counter()
        for i in range(plans):
            # Paced to RATE plans a second against the start, so slow cycles do not drift.
            await asyncio.sleep(max(0.0, began + i / RATE - time.perf_counter()))
            await client.generate_plan()
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        except TimeoutError:
            for task in tasks:
                task.cancel()
        if stalled_call is not None:
            stalled_call.cancel()
            await own.close()
    for channel in channels:
        await channel.close()
    lost = sum(plans - r for r in received)
    p50, p99 = percentiles_ms([latency / 1e9 for latency in latencies], 50, 99)
    plan_bytes = round(sum(sizes) / len(sizes)) if sizes else 0
    return {"p50_ms": p50, "p99_ms": p99, "lost": lost, "plans": plans, "plan_bytes": plan_bytes}


async def run_bare(address: str, subscribers: int, seconds: float, payload_bytes: int) -> dict:
    """The same fan-out over a bare grpc.aio server: each payload carries its send time."""
    messages = int(seconds * RATE)
    channels = [
        grpc.aio.insecure_channel(address) for _ in range(-(-subscribers // STREAMS_PER_CHANNEL))
    ]
    latencies: list[float] = []
    received = [0] * subscribers
    ready = asyncio.Event()
    connected = 0

    async def subscriber(index: int) -> None:
        nonlocal connected
        subscribe = channels[index // STREAMS_PER_CHANNEL].unary_stream(
            _fanout.SUBSCRIBE, request_serializer=_raw, response_deserializer=_raw
        )
        call = subscribe(b"")
        await call.initial_metadata()
        connected += 1
        if connected == subscribers:
            ready.set()
        async for payload in call:
            latencies.append(time.time_ns() - int.from_bytes(payload[:8], "big"))
            received[index] += 1
            if received[index] == messages:
                call.cancel()
                return

    async with grpc.aio.insecure_channel(address) as control:
        publish = control.unary_unary(
            _fanout.PUBLISH, request_serializer=_raw, response_deserializer=_raw
        )
        tasks = [asyncio.ensure_future(subscriber(i)) for i in range(subscribers)]
        await asyncio.wait_for(ready.wait(), timeout=60)
        padding = bytes(max(0, payload_bytes - 8))
        began = time.perf_counter()
        for i in range(messages):
            await asyncio.sleep(max(0.0, began + i / RATE - time.perf_counter()))
            await publish(time.time_ns().to_bytes(8, "big") + padding)
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        except TimeoutError:
            for task in tasks:
                task.cancel()
    for channel in channels:
        await channel.close()
    lost = sum(messages - r for r in received)
    p50, p99 = percentiles_ms([latency / 1e9 for latency in latencies], 50, 99)
    return {"p50_ms": p50, "p99_ms": p99, "lost": lost}


def _raw(body: bytes) -> bytes:
    return body


async def run(subscribers: int, seconds: float) -> dict[str, object]:
    async with federation_with_agents(count=1) as running:
        address = running.federation.address
        normal = await run_once(address, subscribers, seconds, stalled=False)
        with_stalled = await run_once(address, subscribers, seconds, stalled=True)
        reference = await running.spawn("fanout", ["-m", "benchmarks._fanout"])
        bare = await run_bare(reference.address, subscribers, seconds, normal["plan_bytes"])
    return {
        "subscribers": subscribers,
        "plans_per_second": RATE,
        "plans": normal["plans"],
        "p50_ms": normal["p50_ms"],
        "p99_ms": normal["p99_ms"],
        "lost": normal["lost"],
        "stalled_p50_ms": with_stalled["p50_ms"],
        "stalled_p99_ms": with_stalled["p99_ms"],
        "stalled_run_lost": with_stalled["lost"],
        "plan_bytes": normal["plan_bytes"],
        "bare_p50_ms": bare["p50_ms"],
        "bare_p99_ms": bare["p99_ms"],
        "bare_lost": bare["lost"],
        "p50_ratio": round(normal["p50_ms"] / bare["p50_ms"], 2) if bare["p50_ms"] else None,
        "p99_ratio": round(normal["p99_ms"] / bare["p99_ms"], 2) if bare["p99_ms"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    connections = -(-args.subscribers // STREAMS_PER_CHANNEL)
    print(
        f"workload: {args.subscribers} subscribers on {connections} connections, {RATE:.0f} "
        f"plans/s for {args.seconds:.0f} s, federation in its own process; then the same with "
        "one extra subscriber that never reads; then a bare grpc.aio fan-out of as many "
        "payloads of a plan's size"
    )
    emit(asyncio.run(run(args.subscribers, args.seconds)))


if __name__ == "__main__":
    main()
