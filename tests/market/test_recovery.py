"""The market killed (SIGKILL) and started again on the same data: a StreamBars resumed after
the last position received gets the rest once, with no gap and no duplicate, and the same bars
an uninterrupted stream gives, on SQLite and PostgreSQL (the fleet's store)."""

from __future__ import annotations

import sys

import pytest

from market.client import MarketClient
from qtmesh.runtime.channels import open_channel
from tests.helpers.processes import kill, service_process
from tests.helpers.streams import take


async def steps(client: MarketClient, *, after: int, count: int) -> list[tuple[int, int, list]]:
    return await take(client.stream_bars(after_position=after), count)


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child process")
async def test_a_bar_stream_resumed_across_a_killed_market_has_no_gap_and_no_duplicate(
    tmp_path, database_url
):
    env = {
        "QTMESH_MARKET_DATABASE_URL": database_url,
        "QTMESH_MARKET_SYNTHETIC_DAYS": "2",
        "QTMESH_MARKET_SEED": "5",
        "QTMESH_MARKET_FLEET_WARMUP_BARS": "600",
    }
    log = tmp_path / "market.log"
    async with (
        service_process("market", env=env, log_path=log) as market,
        open_channel(market.address) as channel,
    ):
        client = MarketClient(channel)
        start = (await client.snapshot()).position
        await client.advance(10)
        before = await steps(client, after=start, count=10)
        await kill(market)
    async with (
        service_process("market", env=env, log_path=log) as market,
        open_channel(market.address) as channel,
    ):
        client = MarketClient(channel)
        assert (await client.snapshot()).position == start  # the replay starts where it did
        await client.advance(15)
        resumed = await steps(client, after=before[-1][0], count=5)
        whole = await steps(client, after=start, count=15)
    assert [p for p, _, _ in before + resumed] == list(range(start + 1, start + 16))
    assert before + resumed == whole
