"""The demo's world-model and memory section runs against real servers and prints every part."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from examples._agents_section import show
from market.config import MarketConfig
from market.service import APP as MARKET
from memory.config import MemoryConfig
from memory.service import APP as MEMORY
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from world_model.config import WorldModelConfig
from world_model.service import APP as WORLD_MODEL


async def test_the_section_prints_regimes_scenarios_memory_and_recommendations(tmp_path: Path):
    async with serving_app(MARKET, MarketConfig(synthetic_days=4, seed=3)) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        memory_config = MemoryConfig(sqlite_path=tmp_path / "memory.db")
        async with (
            serving_app(MEMORY, memory_config, channel_config=channels) as memory,
            serving_app(
                WORLD_MODEL, WorldModelConfig(warm_up=False), channel_config=channels
            ) as world,
        ):
            addresses = {
                "market": market.address,
                "memory": memory.address,
                "world-model": world.address,
            }
            first, second = io.StringIO(), io.StringIO()
            await show(Console(file=first, width=200), addresses)
            await show(Console(file=second, width=200), addresses)

    text = first.getvalue()
    for expected in (
        "Regimes (Gaussian HMM",
        "One-day scenarios",
        "Backfilled 12 episodes from 2 days of history (12 new)",
        "Semantic memory",
    ):
        assert expected in text
    for sector in ("Tech", "Energy", "Crypto", "Financials"):
        assert sector in text
    assert "world-model recommends" in text
    assert "memory recommends" in text
    # Run again, memory already holds the backfilled episodes.
    assert "(0 new)" in second.getvalue()
