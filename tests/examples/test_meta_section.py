"""The meta section of the demo runs against real market and meta servers and prints the
decisions and the parameters that moved, with their reasons."""

from __future__ import annotations

import io

from rich.console import Console

from examples._meta_section import FLEET, show
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.client import MetaClient
from meta.config import MetaConfig
from meta.service import APP as META
from qtmesh.testing import serving_app


async def test_the_meta_section_shows_one_update_with_reasons(tmp_path):
    async with (
        serving_app(MARKET, MarketConfig(synthetic_days=10, replay_start=0.9)) as market,
        # This meta is given no market address: it neither scales nor follows one.
        serving_app(
            META,
            MetaConfig(
                data_dir=tmp_path,
                scale_fleet=False,
                learn_from_fleet=False,
                learn_from_sesa=False,
                follow_regimes=False,
                record_to_memory=False,
            ),
        ) as meta,
    ):
        addresses = {"market": market.address, "meta": meta.address}
        out = io.StringIO()
        result = await show(Console(file=out, width=200), addresses)
        text = out.getvalue()
        assert result.adapted
        assert (await MetaClient(meta.channel).parameters()).version == 2
        assert "Meta decisions" in text
        assert "Parameters that moved (version 2)" in text
        for decision in result.decisions:
            assert decision.rule in text
        assert "rl_exploration_rate" in text
        assert "moved 1% of the way" in text
        assert f"trades of {len(FLEET)} paper strategies" in text

        # Shown again within the hour: the update records its inputs and says why nothing moved.
        again = io.StringIO()
        second = await show(Console(file=again, width=200), addresses)
        assert not second.adapted
        assert "Parameters that moved" not in again.getvalue()
        assert "not due" in again.getvalue()
