"""The meta optimizer's demo section runs against real servers and prints the cycle."""

from __future__ import annotations

import io

from rich.console import Console

from alpha_reporting.config import AlphaReportingConfig
from alpha_reporting.service import APP as ALPHA
from examples import _meta_optimizer_section
from market.config import MarketConfig
from market.service import APP as MARKET
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.service import APP as METAOPT
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app


async def test_the_section_replays_days_runs_a_cycle_and_applies_it(tmp_path):
    keys = tmp_path / "keys" / "alpha-keyring"
    # Seed 2's first four days after the deployment call for risk mitigation and an arb-mission.
    market_config = MarketConfig(synthetic_days=8, seed=2, replay_start=0.25, data_dir=tmp_path)
    async with serving_app(MARKET, market_config) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        alpha_config = AlphaReportingConfig(data_dir=tmp_path, keyring_file=keys)
        async with serving_app(ALPHA, alpha_config, channel_config=channels) as alpha:
            channels = channels.with_addresses({"alpha-reporting": alpha.address})
            # Only the section's own cycle, so the ledger holds exactly its proposals.
            # No federation here: it must not follow one at the default address either.
            config = MetaOptimizerConfig(
                data_dir=tmp_path, keyring_file=keys, auto_window_days=0, follow_plans=False
            )
            async with serving_app(METAOPT, config, channel_config=channels) as optimizer:
                addresses = {
                    "market": market.address,
                    "alpha-reporting": alpha.address,
                    "meta-optimizer": optimizer.address,
                }
                output = io.StringIO()
                console = Console(file=output, width=160)
                cycle = await _meta_optimizer_section.show(console, addresses, days=4)
    text = output.getvalue()
    assert cycle.reports_audited == 16
    assert cycle.status.name == "SUCCEEDED"
    assert {a.report_count for a in cycle.sectors} == {4}
    assert f"Alpha-dominant sector: {cycle.dominant_sector}" in text
    for sector in ("Tech", "Energy", "Crypto", "Financials"):
        assert sector in text
    assert "16 end-of-day reports" in text
    assert f"Ledger intact: {len(cycle.proposals)} entries" in text
    kinds = {p.type.name for p in cycle.proposals}
    assert kinds == {"RISK_MITIGATION", "ARB_MISSION"}
    flat = " ".join(text.split())
    for p in cycle.proposals:
        assert p.id in flat
    assert "an arb-mission" in flat
    # Executed on the fleet: halved allocations and an open arb-mission.
    assert "Paper fleet allocations" in text
    assert "│ 25.0% │ 12.5% │" in flat
    assert f"arb {cycle.gap_test.best_sector}/{cycle.gap_test.worst_sector}" in text
