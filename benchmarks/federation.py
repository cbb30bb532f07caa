"""One Global Action Plan cycle with 7 agent servers, against a bare grpc.aio fan-out to the
same 7 servers, measured in the same run.

    python -m benchmarks.federation [--cycles 500]

The agents live in one process, the federation in another (`qtmesh serve federation`, SQLite
history), the client in this one. A GAP cycle is one GeneratePlan call: fan-out under the
deadline budget, consensus and conflicts, the plan appended to the history and published. The
bare fan-out is seven concurrent Recommend calls from this process, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks._federation import federation_with_agents
from benchmarks._report import emit, percentiles_ms
from federation.client import FederationClient
from qtmesh.api.agent.v1 import agent_pb2, agent_pb2_grpc
from qtmesh.runtime.channels import open_channel

AGENTS = 7


async def run(cycles: int) -> dict[str, object]:
    owners = ",".join(f"{t}=agent-0" for t in ("ADJUST_EXPOSURE", "RUN_EVOLUTION"))
    async with federation_with_agents(
        count=AGENTS, settings={"QTMESH_FEDERATION_OWNERS": owners}
    ) as running:
        return await measure(running.federation.address, list(running.agents.values()), cycles)


async def measure(federation: str, agents: list[str], cycles: int) -> dict[str, object]:
    channels = [open_channel(a) for a in agents]
    stubs = [agent_pb2_grpc.AgentServiceStub(ch) for ch in channels]
    request = agent_pb2.RecommendRequest(context=agent_pb2.AgentContext(cycle_id="bare"))
    async with open_channel(federation) as channel:
        client = FederationClient(channel)
        for _ in range(50):  # warm up connections and code paths
            await client.generate_plan()
            await asyncio.gather(*(s.Recommend(request, timeout=10) for s in stubs))
        gap, bare = [], []
        plan = None
        for _ in range(cycles):  # interleaved, so both see the same machine state
            start = time.perf_counter()
            plan = await client.generate_plan()
            gap.append(time.perf_counter() - start)
            start = time.perf_counter()
            await asyncio.gather(*(s.Recommend(request, timeout=10) for s in stubs))
            bare.append(time.perf_counter() - start)
    for ch in channels:
        await ch.close()
    p50, p99 = percentiles_ms(gap, 50, 99)
    bare50, bare99 = percentiles_ms(bare, 50, 99)
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "bare_p50_ms": bare50,
        "bare_p99_ms": bare99,
        "p50_ratio": round(p50 / bare50, 2),
        "p99_ratio": round(p99 / bare99, 2),
        "agents": AGENTS,
        "cycles": cycles,
        "actions_per_plan": len(plan.actions) if plan else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=500)
    args = parser.parse_args()
    print(
        f"workload: {args.cycles} GeneratePlan cycles, {AGENTS} agent servers (2 "
        "recommendations each, conflicting exposure stances), SQLite history; interleaved with "
        f"{args.cycles} bare fan-outs of {AGENTS} Recommend calls to the same servers"
    )
    emit(asyncio.run(run(args.cycles)))


if __name__ == "__main__":
    main()
