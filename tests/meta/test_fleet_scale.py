"""Meta's scale reaches the fleet: a tuned risk multiplier or position-size scale is pushed to the
market (once per changed version, again after the market was away), and the market's fleet
scales every position by their product from the next bar, naming the version."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.config import MetaConfig
from meta.service import app
from qtmesh.api.market.v1 import market_pb2, market_pb2_grpc
from qtmesh.base.contract import Action, Priority, TuneLearning
from qtmesh.base.errors import InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import Service
from qtmesh.testing import serving, serving_app


class RecordingFleet(market_pb2_grpc.MarketServiceServicer):
    """A market that only records ApplyMetaParameters (and is away while ``away`` is set)."""

    def __init__(self) -> None:
        self.calls: list[market_pb2.ApplyMetaParametersRequest] = []
        self.called = asyncio.Event()
        self.away = 0

    async def ApplyMetaParameters(self, request, context):
        if self.away:
            self.away -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        self.calls.append(request)
        self.called.set()
        return market_pb2.ApplyMetaParametersResponse(applied=True)


def tune(key: str, parameters: dict[str, float]) -> Action:
    return Action(
        id=key,
        priority=Priority.MEDIUM,
        target="meta",
        parameters=TuneLearning(parameters=parameters),
        confidence=0.9,
        rationale="test",
        idempotency_key=key,
    )


async def test_a_changed_scale_is_pushed_once_per_version_and_retried_while_the_market_is_away(
    tmp_path: Path,
):
    fleet = RecordingFleet()
    fleet.away = 1
    market = Service.of(
        fleet,
        market_pb2_grpc.add_MarketServiceServicer_to_server,
        market_pb2.DESCRIPTOR.services_by_name["MarketService"],
    )
    async with serving([market]) as fake:
        channels = ChannelConfig(addresses={"market": fake.address})
        # This fake market streams no trades: meta only publishes to it.
        config = MetaConfig(
            data_dir=tmp_path,
            reconnect_initial_seconds=0.01,
            reconnect_max_seconds=0.01,
            learn_from_fleet=False,
            learn_from_sesa=False,
            follow_regimes=False,
            record_to_memory=False,
        )
        async with serving_app(app(), config, channel_config=channels) as meta:
            agent = AgentClient(meta.channel, name="meta")
            # The seed's scales are the fleet's own: nothing is pushed for them.
            assert fleet.calls == []
            await agent.execute(tune("t1", {"rl_learning_rate": 0.005}), plan_sequence=1)
            assert fleet.calls == []
            tuned = await agent.execute(tune("t2", {"risk_multiplier": 1.2}), plan_sequence=2)
            # The action says who reads what it changed.
            assert "read by the fleet's position scale, from its next bar" in tuned.detail
            await fleet.called.wait()
            (call,) = fleet.calls
            assert (call.version, call.risk_multiplier, call.position_size_scale) == (3, 1.2, 1.0)


async def test_the_fleet_scales_every_position_from_the_next_bar_naming_the_version(tmp_path):
    config = MarketConfig(
        synthetic_days=3, seed=5, replay_start=0.5, data_dir=tmp_path, fleet_warmup_bars=600
    )
    async with serving_app(MARKET, config) as market:
        client = MarketClient(market.channel)
        await client.advance(300)
        before = await client.fleet()
        change, applied = await client.apply_meta_parameters(
            version=4, risk_multiplier=1.2, position_size_scale=0.5
        )
        assert applied
        assert change.scale == pytest.approx(0.6)
        assert "meta parameters v4" in change.detail
        _, again = await client.apply_meta_parameters(
            version=4, risk_multiplier=1.2, position_size_scale=0.5
        )
        assert not again
        await client.advance(60)
        after = await client.fleet(start_time=before.clock_time + 1)
        assert after.scale == pytest.approx(0.6)
        for old in before.strategies:
            new = next(s for s in after.strategies if s.strategy.id == old.strategy.id)
            assert new.weight == pytest.approx(0.6 * old.weight)
        assert (await client.fleet()).changes[-1].cause.action_id == "meta-v4"
        with pytest.raises(InvalidArgument) as bad:
            await client.apply_meta_parameters(
                version=5, risk_multiplier=-1.0, position_size_scale=1.0
            )
        assert bad.value.field == "risk_multiplier"
