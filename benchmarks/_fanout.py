"""The reference of benchmarks.subscribers: a bare grpc.aio server-stream fan-out.

    python -m benchmarks._fanout [--ready-fd N]

One process, one plain ``grpc.aio`` server with no interceptors, no store and no conversion:
``Publish`` hands its bytes to every subscriber's queue, and ``Subscribe`` streams its queue's
bytes as they come. The subscribers benchmark sends it payloads of a plan's size at the same
rate and to as many subscribers as it sends the federation's plans, so the ratio of the two
latencies is what the federation adds over gRPC itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import grpc

SERVICE = "bench.Fanout"
SUBSCRIBE = f"/{SERVICE}/Subscribe"
PUBLISH = f"/{SERVICE}/Publish"


def _raw(body: bytes) -> bytes:
    return body


class Fanout:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[bytes]] = set()

    async def subscribe(self, _request: bytes, context: Any) -> Any:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queues.add(queue)
        # Headers go out once the queue is in place, so a subscriber that has them misses nothing.
        await context.send_initial_metadata(())
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)

    async def publish(self, payload: bytes, _context: Any) -> bytes:
        for queue in self._queues:
            queue.put_nowait(payload)
        return str(len(self._queues)).encode()


async def serve(ready_fd: int | None) -> None:
    fanout = Fanout()
    handlers = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Subscribe": grpc.unary_stream_rpc_method_handler(
                fanout.subscribe, request_deserializer=_raw, response_serializer=_raw
            ),
            "Publish": grpc.unary_unary_rpc_method_handler(
                fanout.publish, request_deserializer=_raw, response_serializer=_raw
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    line = f"127.0.0.1:{port}\n"
    if ready_fd is not None:
        os.write(ready_fd, line.encode())
        os.close(ready_fd)
    else:
        print(line, end="", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-fd", type=int)
    asyncio.run(serve(parser.parse_args().ready_fd))


if __name__ == "__main__":
    main()
