"""The demo's officers section runs against real servers and prints every part."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from agents.ceo.config import CeoConfig
from agents.ceo.service import APP as CEO
from agents.risk.config import RiskConfig
from agents.risk.service import APP as RISK
from agents.strategy.config import StrategyConfig
from agents.strategy.service import APP as STRATEGY
from examples._officers_section import show
from market.client import MarketClient
from market.config import MarketConfig
from market.fleet import Candidate
from market.service import APP as MARKET
from qtmesh.base.genome import Policy, StrategyFamily
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from world_model.config import WorldModelConfig
from world_model.service import APP as WORLD_MODEL


async def test_the_section_prints_risk_mode_book_and_recommendations(tmp_path: Path):
    market_config = MarketConfig(synthetic_days=4, seed=3, data_dir=tmp_path)
    async with serving_app(MARKET, market_config) as market:
        client = MarketClient(market.channel)
        await client.advance(23 * 60)
        # An evolution's candidate paper-trades an hour as a shadow of the fleet's book.
        fleet = await client.fleet()
        symbol = next(s.strategy.symbol for s in fleet.strategies if s.strategy.sector == "Tech")
        genome = Policy().default_genome(StrategyFamily.MEAN_REVERSION)
        shadow = f"{symbol}/evo-demo"
        _, applied = await client.add_shadows(
            [Candidate(shadow, "Tech", genome)], evolution_id="demo", trials=50, action_key="demo"
        )
        assert applied
        await client.advance(60)
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(
            WORLD_MODEL, WorldModelConfig(warm_up=False, restarts=0), channel_config=channels
        ) as world:
            addresses = {"market": market.address, "world-model": world.address}
            officers = ChannelConfig(addresses=addresses)
            async with (
                serving_app(RISK, RiskConfig(data_dir=tmp_path), channel_config=officers) as risk,
                serving_app(CEO, CeoConfig(data_dir=tmp_path), channel_config=officers) as ceo,
                serving_app(STRATEGY, StrategyConfig(), channel_config=officers) as strategy,
            ):
                output = io.StringIO()
                await show(
                    Console(file=output, width=200),
                    {
                        **addresses,
                        "risk": risk.address,
                        "ceo": ceo.address,
                        "strategy": strategy.address,
                    },
                )
    text = output.getvalue()
    for expected in (
        "Tail risk per 1 h of the paper fleet, from 24 returns",
        "Exposures and drawdowns against the limits",
        "Mode NORMAL; score",
        "Inputs of the last evaluation",
        "regime_stress",
        "Strategy book: 28 strategies",
        "strategy recommends",
    ):
        assert expected in text
    # The shadow's row: measured by its own paper record in the fleet.
    (row,) = [line for line in text.splitlines() if shadow in line]
    assert "shadow" in row
    assert "0.0%" in row  # no capital
    assert row.rstrip().rstrip("│ ").endswith("record")
    for sector in ("Tech", "Energy", "Crypto", "Financials"):
        assert sector in text
    for officer in ("risk", "ceo"):
        assert f"{officer} recommends" in text
