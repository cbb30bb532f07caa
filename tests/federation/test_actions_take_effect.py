"""Across the real services: a plan's actions change what the market's fleet trades. A risk
officer's CRITICAL halt and a strategy disable go through the federation to the fleet (its
default owner), run before anything else, and the fleet trades accordingly from the next bar,
each change naming its plan and action."""

from __future__ import annotations

from pathlib import Path

from federation.client import FederationClient
from federation.config import FederationConfig
from federation.plan import StatusUpdate
from federation.service import APP as FEDERATION
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving, serving_app
from tests.helpers.federation import FakeAgent


def recommendation(rid: str, priority: c.Priority, target: str, parameters) -> c.Recommendation:
    return c.Recommendation(
        id=rid,
        priority=priority,
        target=target,
        parameters=parameters,
        confidence=0.9,
        rationale="test",
    )


async def test_a_critical_halt_and_a_disable_reach_the_fleet_through_the_federation(
    tmp_path: Path,
):
    market_config = MarketConfig(
        synthetic_days=3, seed=5, replay_start=0.5, data_dir=tmp_path, fleet_warmup_bars=600
    )
    async with serving_app(MARKET, market_config) as market:
        client = MarketClient(market.channel)
        await client.advance(300)
        before = await client.fleet()
        loser = before.strategies[0].strategy.id
        risk = FakeAgent(
            "risk",
            [
                recommendation(
                    "halt",
                    c.Priority.CRITICAL,
                    "sector/Crypto",
                    c.HaltTrading(scope="Crypto"),
                ),
                recommendation(
                    "off", c.Priority.LOW, f"strategy/{loser}", c.DisableStrategy(loser)
                ),
            ],
        )
        async with serving([agent_service(risk, executes=())], name="risk") as served_risk:
            channels = ChannelConfig(
                addresses={"market": market.address, "risk": served_risk.address}
            )
            config = FederationConfig(
                data_dir=tmp_path,
                agents=("risk",),
                gap_update_interval_seconds=0.0,
                record_to_memory=False,
            )
            async with serving_app(FEDERATION, config, channel_config=channels) as federation:
                federation_client = FederationClient(federation.channel)
                plan = await federation_client.generate_plan(execute=True)
                updates = []
                # From the start of history: every status update of the plan, in order.
                stream = federation_client.subscribe(after_sequence=0)
                async for _sequence, event in stream:
                    if isinstance(event, StatusUpdate) and event.status in (
                        c.ActionStatus.COMPLETED,
                        c.ActionStatus.FAILED,
                    ):
                        updates.append(event)
                    if len(updates) == 2:
                        break
                await stream.aclose()
        assert [u.status for u in updates] == [c.ActionStatus.COMPLETED] * 2
        # The critical halt was settled before the low-priority disable was sent.
        assert updates[0].action_type is c.ActionType.HALT_TRADING
        assert updates[0].outcome["fleet_change"] == "1"
        await client.advance(60)
        after = await client.fleet(start_time=before.clock_time + 1)
        crypto = next(s for s in after.sectors if s.sector == "Crypto")
        assert crypto.halted
        assert crypto.gross_exposure == 0
        assert next(s for s in after.strategies if s.strategy.id == loser).enabled is False
        made = (await client.fleet()).changes  # at the clock the plan ran at, before the window
        assert {ch.cause.plan_sequence for ch in made} == {plan.sequence}
        assert [ch.cause.action_id for ch in made] == [
            a.id
            for a in sorted(plan.actions, key=lambda a: -a.priority)
            if a.action_type in (c.ActionType.HALT_TRADING, c.ActionType.DISABLE_STRATEGY)
        ]
