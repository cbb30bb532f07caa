"""A process of plan-stream subscribers that stop reading: run as a script by
tests/federation/test_slow_subscribers.py.

    python stalled_subscribers.py ADDRESS COUNT

Subscribes COUNT times (live), prints "ready" once every stream is open, then waits for a line
on stdin: the test stops the process meanwhile (SIGSTOP), so nothing is read, down to the
socket. Then it reads every stream to its end and prints one JSON line: how each ended
(status code name, and the ``resume_after_sequence`` its error carried)."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc

from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.runtime.status import error_info

STREAMS_PER_CHANNEL = 100


async def drain(call) -> dict[str, str]:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        info = error_info(exc)
        resume = info.metadata.get("resume_after_sequence", "") if info is not None else ""
        return {"code": exc.code().name, "resume_after_sequence": resume}
    return {"code": "OK", "resume_after_sequence": ""}


async def main(address: str, count: int) -> None:
    channels = [grpc.aio.insecure_channel(address) for _ in range(-(-count // STREAMS_PER_CHANNEL))]
    calls = [
        pb_grpc.FederationServiceStub(channels[i // STREAMS_PER_CHANNEL]).SubscribePlans(
            pb.SubscribePlansRequest()
        )
        for i in range(count)
    ]
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    ends = await asyncio.gather(*(drain(call) for call in calls))
    print(json.dumps(ends), flush=True)
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
