"""Agent servers for the federation benchmarks: N AgentService servers in one process, each
answering Recommend at once with a fixed pair of recommendations.

    python -m benchmarks._agents --count 7 [--ready-fd N]

Prints {"name": "host:port", ...} as one JSON line (to the ready descriptor, else stdout) once
every server listens; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal

from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.server import MeshServer, ServerConfig


class Echo:
    """Two recommendations per call: a sector exposure change and an evolution run."""

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        sector = ("Tech", "Energy", "Crypto")[index % 3]
        self._recommendations = [
            c.Recommendation(
                id="exposure",
                priority=c.Priority.MEDIUM,
                target=f"sector/{sector}",
                parameters=c.AdjustExposure(sector=sector, factor=1.1 if index % 2 else 0.9),
                confidence=0.5 + index / 20,
                rationale=f"{name} sees {sector} {'up' if index % 2 else 'down'}",
            ),
            c.Recommendation(
                id="evolve",
                priority=c.Priority.LOW,
                target="sesa/evolution",
                parameters=c.RunEvolution(),
                confidence=0.6,
                rationale=f"{name} wants fresh strategies",
            ),
        ]

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return self._recommendations

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        return c.ExecutionResult(True, f"{self.name} applied {action.id}")


async def serve(count: int, ready_fd: int | None) -> None:
    config = ServerConfig(port=0, log_level="warning", grace_seconds=0.5)
    servers = [
        MeshServer(
            name=f"agent-{i}",
            services=[agent_service(Echo(f"agent-{i}", i), executes=list(c.ActionType))],
            config=config,
        )
        for i in range(count)
    ]
    addresses = {s.name: await s.start() for s in servers}
    # One token, no spaces: the ready line's address (qtmesh.runtime.supervisor.ready_line).
    line = json.dumps(addresses, separators=(",", ":")) + "\n"
    if ready_fd is not None:
        os.write(ready_fd, line.encode())
        os.close(ready_fd)
    else:
        print(line, end="", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.gather(*(s.stop() for s in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=7)
    parser.add_argument("--ready-fd", type=int)
    args = parser.parse_args()
    asyncio.run(serve(args.count, args.ready_fd))


if __name__ == "__main__":
    main()
