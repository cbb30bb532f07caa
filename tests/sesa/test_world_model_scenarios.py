"""SESA's forward evaluation on the world model's scenarios: with a world model running, a
SIMULATION evolution's paths are its regime-conditioned ones (the started event says so, and
they are not the bootstrap's); with it off, away or given inline bars, SESA's own bootstrap runs
and the event says why. The world model's paths become valid bars that continue the window."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import numpy as np
import pytest

import sesa.service
from backtest.indicators import BarData
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.bars import make_series, validate_bars
from qtmesh.base.concurrency import CancelToken
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig
from sesa.forward import Origin, call_seed, draw_scenarios, world_model_bars
from sesa.scenarios import BlockBootstrap, series_from_log_returns
from world_model.client import WorldModelClient
from world_model.config import WorldModelConfig
from world_model.service import APP as WORLD_MODEL

SIMULATION = pb.EvolutionConfig(
    num_generations=1,
    num_mutations_per_parent=2,
    evaluation_lookback_days=3,
    evaluation_type=pb.EVALUATION_TYPE_SIMULATION,
    scenario_paths=2,
)
BARS = 3 * 1440


def dead_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def test_log_return_paths_become_bars_that_continue_the_history():
    history = generate(SyntheticMarketSpec(seed=3, days=2)).series[0]
    rng = np.random.default_rng(0)
    paths = np.cumsum(rng.normal(0, 1e-3, (3, 500)), axis=1)
    series = series_from_log_returns(history, paths, rng=np.random.default_rng(1))
    assert len(series) == 3
    last = history.close[-1]
    upper = set(np.round(history.high / np.maximum(history.open, history.close), 12))
    for path, bars in zip(paths, series, strict=True):
        validate_bars(bars, lambda column, index: f"{column}[{index}]")
        np.testing.assert_allclose(bars.close, last * np.exp(path))
        assert bars.open[0] == last
        np.testing.assert_array_equal(bars.open[1:], bars.close[:-1])
        assert np.all(np.diff(bars.time) == 60 * 10**9)
        assert bars.time[0] == history.time[-1] + 60 * 10**9
        # The wicks are history's, not zero: intrabar ranges keep their size.
        wicks = np.round(bars.high / np.maximum(bars.open, bars.close), 12)
        assert set(wicks) <= upper
        assert np.any(bars.high > np.maximum(bars.open, bars.close))
        assert (bars.symbol, bars.sector) == (history.symbol, history.sector)


def test_the_wicks_of_a_path_come_from_the_same_time_of_day():
    """A history whose wicks grow with the minute of the day: the path's follow the same cycle."""
    n = 2 * 1440
    minute = np.arange(n) % 1440
    close = np.full(n, 100.0)
    history = make_series(
        "X",
        "S",
        time=np.arange(n, dtype=np.int64) * 60 * 10**9,
        open=close,
        high=close * (1 + 1e-6 * (minute + 1)),
        low=close * (1 - 1e-6),
        close=close,
        volume=np.ones(n),
    )
    (bars,) = series_from_log_returns(history, np.zeros((1, 1440)), rng=np.random.default_rng(2))
    np.testing.assert_allclose(bars.high / bars.close - 1, 1e-6 * (np.arange(1440) + 1))


@contextlib.asynccontextmanager
async def market_server():
    async with serving_app(MARKET, MarketConfig(synthetic_days=8, seed=5)) as market:
        yield market


@contextlib.asynccontextmanager
async def world_model(market_address: str, **settings):
    channels = ChannelConfig(addresses={"market": market_address})
    config = WorldModelConfig(warm_up=False, watch_regimes=False, **settings)
    async with serving_app(WORLD_MODEL, config, channel_config=channels) as world:
        yield world


@contextlib.asynccontextmanager
async def sesa_server(tmp_path: Path, addresses: dict[str, str], **settings):
    config = SesaConfig(data_dir=tmp_path / "sesa", **settings)
    channels = ChannelConfig(addresses=addresses)
    async with serving_app(sesa.service.APP, config, channel_config=channels) as served:
        yield served


async def evolve_and_watch(served, bars: pb.BarSource, seed: int = 11):
    """The evolution's result and its started event."""
    client = SesaClient(served.channel)
    events = [e async for e in client.evolve(bars=bars, config=SIMULATION, seed=seed)]
    stream = client.watch_evolutions(after_sequence=0)
    async with contextlib.aclosing(stream):
        first = await asyncio.wait_for(anext(stream), timeout=30)
    assert first.WhichOneof("event") == "started"
    return events[-1], first.started


async def test_with_a_world_model_a_simulation_runs_on_its_regime_conditioned_paths(tmp_path):
    async with market_server() as market, world_model(market.address) as world:
        addresses = {"market": market.address, "world-model": world.address}
        async with sesa_server(tmp_path / "with", addresses) as served:
            result, started = await evolve_and_watch(served, bar_source(symbol="NOVA"))
        regime = (await WorldModelClient(world.channel).detect_regime(symbol="NOVA")).regime
        async with sesa_server(
            tmp_path / "without", addresses, world_model_scenarios=False
        ) as served:
            bootstrapped, started_alone = await evolve_and_watch(served, bar_source(symbol="NOVA"))

        assert started.scenarios.generator == pb.SCENARIO_GENERATOR_WORLD_MODEL
        assert started.scenarios.regime == regime
        assert started.scenarios.fallback_reason == ""
        assert result.top[0].metrics.bar_count == BARS
        assert started_alone.scenarios.generator == pb.SCENARIO_GENERATOR_BLOCK_BOOTSTRAP
        assert "off" in started_alone.scenarios.fallback_reason
        # The same seed and bars, other paths: other scores.
        scores = {e.genome.id: e.composite_score for e in result.top}
        alone = {e.genome.id: e.composite_score for e in bootstrapped.top}
        shared = set(scores) & set(alone)
        assert shared
        assert any(scores[g] != alone[g] for g in shared)


async def test_the_paths_are_the_world_models_and_not_the_bootstrap_of_the_same_seed():
    async with market_server() as market, world_model(market.address) as world:
        client = WorldModelClient(world.channel)
        series = await MarketClient(market.channel).bars("NOVA", lookback=BARS)
        data = BarData(series)
        seed = 11
        drawn = await draw_scenarios(
            client, symbol="NOVA", paths=2, bars=BARS, block_size=60, seed=seed
        )
        assert drawn.source.origin is Origin.WORLD_MODEL
        direct = await client.simulate(
            symbol="NOVA",
            horizon=BARS,
            num_paths=2,
            block_size=60,
            seed=call_seed(seed, 0),
            regime_conditioned=True,
            include_paths=True,
        )
        np.testing.assert_array_equal(drawn.log_paths, direct.paths)
        assert drawn.source.regime == direct.regime
        paths = world_model_bars(drawn.log_paths, data, seed=seed, token=CancelToken())
        for path, log_path in zip(paths, direct.paths, strict=True):
            np.testing.assert_allclose(path.close, series.close[-1] * np.exp(log_path))
        rng = np.random.default_rng([seed, 1])  # the bootstrap's stream for the same seed
        booted = BlockBootstrap(block_size=60).generate(series, count=2, length=BARS, rng=rng)
        for path, boot in zip(paths, booted, strict=True):
            assert not np.allclose(path.close, boot.close)


async def test_more_paths_than_one_call_may_carry_take_several_calls(monkeypatch):
    async with market_server() as market, world_model(market.address) as world:
        client = WorldModelClient(world.channel)
        monkeypatch.setattr("sesa.forward.MAX_VALUES_PER_CALL", 2 * BARS)
        drawn = await draw_scenarios(
            client, symbol="NOVA", paths=5, bars=BARS, block_size=60, seed=3
        )
        assert drawn.log_paths.shape == (5, BARS)
        second = await client.simulate(
            symbol="NOVA",
            horizon=BARS,
            num_paths=2,
            block_size=60,
            seed=call_seed(3, 1),
            regime_conditioned=True,
            include_paths=True,
        )
        np.testing.assert_array_equal(drawn.log_paths[2:4], second.paths)


@pytest.mark.parametrize("why", ["away", "off", "inline", "refuses"])
async def test_without_the_world_models_scenarios_the_bootstrap_runs_and_says_why(tmp_path, why):
    async with market_server() as market, contextlib.AsyncExitStack() as stack:
        addresses = {"market": market.address, "world-model": dead_address()}
        if why in ("inline", "refuses"):
            # Refusing: the evolution's window is longer than the world model's longest horizon.
            limit = {"max_horizon": 1000} if why == "refuses" else {}
            world = await stack.enter_async_context(world_model(market.address, **limit))
            addresses["world-model"] = world.address
        settings = {"world_model_scenarios": False} if why == "off" else {}
        served = await stack.enter_async_context(sesa_server(tmp_path, addresses, **settings))
        bars = bar_source(symbol="NOVA")
        if why == "inline":
            bars = bar_source(bars=generate(SyntheticMarketSpec(seed=3, days=3)).series[0])
        result, started = await evolve_and_watch(served, bars)
    assert started.scenarios.generator == pb.SCENARIO_GENERATOR_BLOCK_BOOTSTRAP
    assert started.scenarios.regime == ""
    expected = {
        "away": "UNAVAILABLE",
        "off": "world_model_scenarios",
        "inline": "inline",
        "refuses": "INVALID_ARGUMENT: horizon",
    }[why]
    assert expected in started.scenarios.fallback_reason
    assert result.top  # the evolution ran, on the bootstrap's paths


def test_sesa_calls_the_world_model_only_when_its_scenarios_are_on():
    uses = {u.service for u in sesa.service.APP.clients(SesaConfig())}
    assert "world-model" in uses
    assert "world-model" in sesa.service.APP.depends_on  # started after it: no cycle
    off = SesaConfig(world_model_scenarios=False)
    assert "world-model" not in {u.service for u in sesa.service.APP.clients(off)}
