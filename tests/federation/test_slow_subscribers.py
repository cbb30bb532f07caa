"""Slow consumers cannot exhaust the federation's memory: hundreds of plan-stream subscribers in
a process that stops reading (SIGSTOP, so nothing leaves the sockets) while plans of about
20 KB keep coming. Each one's buffer is capped (``subscriber_queue``): the federation's memory
stays bounded, other calls are answered meanwhile, every stalled subscriber is told
RESOURCE_EXHAUSTED with the sequence to resume after, and memory returns near its baseline once
they are gone."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federation.client import FederationClient
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.channels import open_channel
from qtmesh.testing import serving
from tests.helpers import stalled_subscribers
from tests.helpers.federation import rec
from tests.helpers.processes import service_process

SUBSCRIBERS = 300
PLANS = 150
QUEUE = 32
# Far above what the capped queues and the streams' transport windows can hold, far below
# what buffering every plan for every subscriber would take (150 x 20 KB x 300 = 900 MB).
GROWTH_BOUND_MB = 150
SETTLED_BOUND_MB = 60


class Advisor:
    """Recommends 20 actions with long rationales: plans of about 20 KB."""

    name = "advisor"

    async def recommend(self, context: c.AgentContext) -> list[c.Recommendation]:
        return [
            rec(f"r{i}", c.AdjustExposure(sector=f"S{i}", factor=1.1), priority=c.Priority.LOW)
            for i in range(20)
        ]

    async def execute(self, action: c.Action, *, plan_sequence: int) -> c.ExecutionResult:
        raise AssertionError("plans are not executed here")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.skipif(sys.platform != "linux", reason="SIGSTOP and /proc")
async def test_stalled_subscribers_are_cut_off_and_memory_stays_bounded(tmp_path):
    async with serving([agent_service(Advisor())]) as advisor:
        env = {
            "QTMESH_FEDERATION_DATA_DIR": str(tmp_path / "federation"),
            "QTMESH_FEDERATION_AGENTS": "advisor",
            "QTMESH_FEDERATION_GAP_UPDATE_INTERVAL_SECONDS": "0",
            "QTMESH_FEDERATION_RECORD_TO_MEMORY": "false",
            "QTMESH_FEDERATION_SUBSCRIBER_QUEUE": str(QUEUE),
            "QTMESH_ADDRESSES": f"advisor={advisor.address},market=127.0.0.1:1",
        }
        log = tmp_path / "federation.log"
        async with (
            service_process("federation", env=env, log_path=log) as federation,
            open_channel(federation.address) as channel,
        ):
            client = FederationClient(channel)
            await client.generate_plan()  # every code path warm before the baseline
            consumers = await asyncio.create_subprocess_exec(
                sys.executable,
                stalled_subscribers.__file__,
                federation.address,
                str(SUBSCRIBERS),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert consumers.stdin is not None
            assert consumers.stdout is not None
            assert (await consumers.stdout.readline()).strip() == b"ready"
            consumers.send_signal(signal.SIGSTOP)
            baseline = rss_mb(federation.pid)
            for _ in range(PLANS):
                plan = await client.generate_plan()
                # Other calls are answered while the subscribers stall.
                assert (await client.get_plan(plan.sequence)).id == plan.id
            grown = rss_mb(federation.pid) - baseline
            consumers.send_signal(signal.SIGCONT)
            consumers.stdin.write(b"go\n")
            await consumers.stdin.drain()
            ends = json.loads(await consumers.stdout.readline())
            await consumers.wait()
            # Their calls are gone: what they held is released.
            await client.generate_plan()
            settled = rss_mb(federation.pid) - baseline
    assert len(ends) == SUBSCRIBERS
    assert {e["code"] for e in ends} == {"RESOURCE_EXHAUSTED"}
    # Each was cut off where its queue overflowed, and told where to resume.
    assert all(1 <= int(e["resume_after_sequence"]) < plan.sequence for e in ends)
    assert grown < GROWTH_BOUND_MB, f"grew {grown:.0f} MB"
    assert settled < SETTLED_BOUND_MB, f"still {settled:.0f} MB above the baseline"
