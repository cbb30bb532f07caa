"""The CEO over gRPC with real market and world-model servers: the regime planted in a market is
read into the mode, the CEO decides without a world model and says so, recommends a switch at
HIGH priority, owns the mode (once per key, across restarts) and rejects what it does not own."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import numpy as np
import pytest

from agents.ceo.client import CeoClient
from agents.ceo.config import CeoConfig
from agents.ceo.service import APP
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from market.sources import save_bars
from qtmesh.base.bars import make_series
from qtmesh.base.contract import (
    Action,
    AgentContext,
    HaltTrading,
    Priority,
    StrategicMode,
    SwitchMode,
)
from qtmesh.base.errors import InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from world_model.config import WorldModelConfig
from world_model.service import APP as WORLD_MODEL

DAY = 1440
T0 = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z
HOUR = 3600 * 10**9


def _series(symbol: str, sector: str, rng: np.random.Generator, late: float) -> object:
    """Three quiet days, then a day of ``late`` per-bar volatility and a falling drift."""
    bars = 4 * DAY + 1
    returns = np.concatenate([rng.normal(0, 4e-4, 3 * DAY), rng.normal(-2e-4, late, DAY)])
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    open_ = np.concatenate([[100.0], close[:-1]])
    return make_series(
        symbol,
        sector,
        time=T0 + np.arange(bars, dtype=np.int64) * 60 * 10**9,
        open=open_,
        high=np.maximum(open_, close) * 1.0001,
        low=np.minimum(open_, close) * 0.9999,
        close=close,
        volume=np.full(bars, 1000.0),
    )


@pytest.fixture(scope="module")
def stormy_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both sectors turn five times as volatile on the last day."""
    rng = np.random.default_rng(8)
    series = [
        _series("STRM", "Storm", rng, 2e-3),
        _series("GALE", "Storm", rng, 2e-3),
        _series("WAVE", "Surf", rng, 2e-3),
        _series("TIDE", "Surf", rng, 2e-3),
    ]
    path = tmp_path_factory.mktemp("market") / "stormy.csv"
    save_bars(series, path)
    return path


def ceo_config(tmp_path: Path, **overrides) -> CeoConfig:
    return CeoConfig(data_dir=tmp_path / "ceo", min_observations=3, **overrides)


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


@contextlib.asynccontextmanager
async def synthetic_market(tmp_path: Path):
    config = MarketConfig(
        synthetic_days=3, seed=5, data_dir=tmp_path / "market", fleet_warmup_bars=600
    )
    async with serving_app(MARKET, config) as market:
        yield market


@contextlib.asynccontextmanager
async def ceo_server(config: CeoConfig, addresses: dict[str, str]):
    channels = ChannelConfig(addresses=addresses, retry_unavailable=False)
    async with serving_app(APP, config, channel_config=channels) as ceo:
        yield ceo


def switch(key: str, mode: StrategicMode, *, action_id: str = "a1") -> Action:
    return Action(
        id=action_id,
        priority=Priority.HIGH,
        target="mode",
        parameters=SwitchMode(mode=mode),
        confidence=0.8,
        rationale="test",
        idempotency_key=key,
    )


async def test_a_planted_volatile_regime_and_falling_pnl_point_to_capital_preservation(
    stormy_market, tmp_path
):
    market_config = MarketConfig(
        data_path=stormy_market, replay_start=0.8, data_dir=tmp_path / "market"
    )
    async with serving_app(MARKET, market_config) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        world_config = WorldModelConfig(warm_up=False, bars_per_step=15, restarts=0)
        async with serving_app(WORLD_MODEL, world_config, channel_config=channels) as world:
            addresses = {"market": market.address, "world-model": world.address}
            # Judge by the regime alone, so the test reads what the world model found.
            only_regime = ceo_config(
                tmp_path, weight_drawdown=0, weight_volatility=0, weight_trend=0
            )
            async with ceo_server(only_regime, addresses) as ceo:
                client = MarketClient(market.channel)
                await client.advance(6 * 60)
                report = await CeoClient(ceo.channel).mode()
                deployed = (await client.fleet()).deployment_time
    assert report.mode is StrategicMode.NORMAL
    assert report.missing == ()
    assert report.inputs["p_volatile"] > 0.9
    assert report.inputs["regime_stress"] > 0.9
    assert report.indicated is StrategicMode.CAPITAL_PRESERVATION
    assert report.target is StrategicMode.CAPITAL_PRESERVATION
    assert report.confirmations == 2
    assert report.evaluated_time == deployed + 6 * HOUR
    assert "regime stress" in report.rationale


async def test_the_ceo_decides_without_a_world_model_and_says_so(tmp_path):
    async with synthetic_market(tmp_path) as market:
        addresses = {"market": market.address, "world-model": dead_address()}
        async with ceo_server(ceo_config(tmp_path), addresses) as ceo:
            client = MarketClient(market.channel)
            cold = await CeoClient(ceo.channel).mode()
            assert cold.indicated is None
            assert "No evaluation yet" in cold.rationale
            await client.advance(5 * 60)
            report = await CeoClient(ceo.channel).mode()
            fleet = await client.fleet()
    assert report.missing == ("regime",)
    assert "No regime: the world model did not answer" in report.rationale
    assert report.evaluated_time == fleet.deployment_time + 5 * HOUR
    assert set(report.inputs) >= {"drawdown", "volatility", "trend_t", "score"}
    assert "regime_stress" not in report.inputs
    severities = [report.inputs[f"severity.{n}"] for n in ("drawdown", "volatility", "trend")]
    weights = (0.35, 0.25, 0.2)
    assert report.score == pytest.approx(np.dot(severities, weights) / sum(weights))


async def test_a_switch_is_recommended_at_high_priority_executed_once_and_kept(tmp_path):
    # Any volatility at all is extreme under these anchors: the fleet indicates preservation.
    config = ceo_config(
        tmp_path,
        volatility_anchors=(0.0, 1e-9, 2e-9, 3e-9),
        weight_drawdown=0,
        weight_regime=0,
        weight_trend=0,
    )
    async with synthetic_market(tmp_path) as market:
        addresses = {"market": market.address, "world-model": dead_address()}
        async with ceo_server(config, addresses) as ceo:
            await MarketClient(market.channel).advance(4 * 60)
            report = await CeoClient(ceo.channel).mode()
            assert report.target is StrategicMode.CAPITAL_PRESERVATION
            agent = AgentClient(ceo.channel, name="ceo")
            (recommendation,) = await agent.recommend(AgentContext(cycle_id="c1"))
            assert recommendation.priority is Priority.HIGH
            assert recommendation.target == "mode"
            assert recommendation.parameters == SwitchMode(mode=StrategicMode.CAPITAL_PRESERVATION)
            # 1.5 past the normal band (capped at 1), no regime: 1.0 x 0.8.
            assert recommendation.confidence == pytest.approx(0.8)
            assert "switch to CAPITAL_PRESERVATION" in recommendation.rationale
            # Stamped with the market time of the period it was evaluated at (no regime).
            assert recommendation.as_of_time == report.evaluated_time > 0
            result = await agent.execute(
                switch("plan-1/a1", StrategicMode.CAPITAL_PRESERVATION), plan_sequence=1
            )
            assert result.applied
            assert result.detail.startswith("mode NORMAL -> CAPITAL_PRESERVATION (the fleet")
            assert await agent.recommend(AgentContext(cycle_id="c2")) == []
            clock = (await MarketClient(market.channel).snapshot()).clock_time
        async with ceo_server(config, addresses) as ceo:
            agent = AgentClient(ceo.channel, name="ceo")
            report = await CeoClient(ceo.channel).mode()
            assert report.mode is StrategicMode.CAPITAL_PRESERVATION
            assert report.since == clock
            assert "action a1 of plan 1" in report.rationale
            again = await agent.execute(
                switch("plan-1/a1", StrategicMode.CAPITAL_PRESERVATION), plan_sequence=1
            )
            assert not again.applied
            assert await agent.recommend(AgentContext(cycle_id="c3")) == []


async def test_the_ceo_executes_only_mode_switches(tmp_path):
    async with synthetic_market(tmp_path) as market:
        addresses = {"market": market.address, "world-model": dead_address()}
        async with ceo_server(ceo_config(tmp_path), addresses) as ceo:
            agent = AgentClient(ceo.channel, name="ceo")
            halt = Action(
                id="h",
                priority=Priority.CRITICAL,
                target="portfolio",
                parameters=HaltTrading(),
                confidence=1,
                rationale="",
                idempotency_key="k",
            )
            with pytest.raises(InvalidArgument) as error:
                await agent.execute(halt, plan_sequence=1)
            assert error.value.field == "action.type"
            assert (await CeoClient(ceo.channel).mode()).mode is StrategicMode.NORMAL
