"""Meta killed (SIGKILL) and started again: every version it acknowledged is still there, and a
WatchParameters resumed after the last version received gets the rest once, with no gap, on
SQLite and PostgreSQL."""

from __future__ import annotations

import sys

import pytest

from meta.client import MetaClient
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import open_channel
from tests.helpers.processes import kill, service_process
from tests.helpers.streams import take


def tune(key: str, rate: float) -> c.Action:
    return c.Action(
        id=key,
        priority=c.Priority.MEDIUM,
        target="meta",
        parameters=c.TuneLearning(parameters={"rl_exploration_rate": rate}),
        confidence=0.7,
        rationale="test",
        idempotency_key=key,
    )


async def versions(client: MetaClient, *, after: int, count: int) -> list[int]:
    return [p.version for p, _ in await take(client.watch(after_version=after), count)]


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child process")
async def test_a_watch_resumed_across_a_killed_meta_has_no_gap_and_no_duplicate(
    tmp_path, database_url
):
    env = {
        "QTMESH_META_DATABASE_URL": database_url,
        "QTMESH_META_LEARN_FROM_FLEET": "false",
        "QTMESH_META_LEARN_FROM_SESA": "false",
        "QTMESH_META_FOLLOW_REGIMES": "false",
        "QTMESH_META_RECORD_TO_MEMORY": "false",
        "QTMESH_META_SCALE_FLEET": "false",
        "QTMESH_ADDRESSES": "market=127.0.0.1:1",
    }
    log = tmp_path / "meta.log"
    async with (
        service_process("meta", env=env, log_path=log) as meta,
        open_channel(meta.address) as channel,
    ):
        agent = AgentClient(channel, name="meta")
        for i, rate in enumerate((0.25, 0.3), start=1):
            assert (await agent.execute(tune(f"k{i}", rate), plan_sequence=i)).applied
        before = await versions(MetaClient(channel), after=0, count=3)
        await kill(meta)
    async with (
        service_process("meta", env=env, log_path=log) as meta,
        open_channel(meta.address) as channel,
    ):
        agent = AgentClient(channel, name="meta")
        # Acknowledged before the kill: applied once, not again.
        assert not (await agent.execute(tune("k2", 0.3), plan_sequence=2)).applied
        for i, rate in enumerate((0.35, 0.4), start=3):
            assert (await agent.execute(tune(f"k{i}", rate), plan_sequence=i)).applied
        after = await versions(MetaClient(channel), after=before[-1], count=2)
        current = await MetaClient(channel).parameters()
    assert before == [1, 2, 3]
    assert after == [4, 5]
    assert current.version == 5
    assert current.rl_exploration_rate == pytest.approx(0.4)
