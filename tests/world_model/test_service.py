"""The world model over gRPC, reading a real market server: regimes of a market with planted
switches, recommendations from precomputed models, refits, scenarios, validation, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from federation.plan import AgentAnswer, AgentReport, CallOutcome, build_plan
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from market.sources import save_bars
from qtmesh.api.worldmodel.v1 import world_model_pb2, world_model_pb2_grpc
from qtmesh.base.bars import make_series
from qtmesh.base.concurrency import Cancelled
from qtmesh.base.contract import Action, ActionStatus, AdjustExposure, AgentContext, Priority
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving, serving_app
from world_model import engine
from world_model.client import WorldModelClient
from world_model.config import WorldModelConfig
from world_model.engine import WorldModel
from world_model.service import APP, services

DAY = 1440
BARS = 4 * DAY + 1
T0 = 1_767_571_200 * 10**9  # 2026-01-05T00:00:00Z
# The regime watcher is off: these tests count and script fits (tests/world_model/
# test_regimes_stream.py runs it).
CONFIG = WorldModelConfig(bars_per_step=15, warm_up=False, refit_bars=30, watch_regimes=False)


def _planted_series(
    symbol: str, sector: str, rng: np.random.Generator, early: float, late: float, drift: float
):
    """Three calm-or-wild days, then a day of the other kind: the switch the model must find."""
    returns = np.concatenate([rng.normal(0, early, 3 * DAY), rng.normal(drift, late, DAY)])
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(returns)]))
    open_ = np.concatenate([[100.0], close[:-1]])
    return make_series(
        symbol,
        sector,
        time=T0 + np.arange(BARS, dtype=np.int64) * 60 * 10**9,
        open=open_,
        high=np.maximum(open_, close) * 1.0001,
        low=np.minimum(open_, close) * 0.9999,
        close=close,
        volume=np.full(BARS, 1000.0),
    )


@pytest.fixture(scope="module")
def planted_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Storm turns four times as volatile on its last day; Calm calms down and trends up."""
    rng = np.random.default_rng(21)
    series = [
        _planted_series("STRM", "Storm", rng, 5e-4, 2e-3, -1e-4),
        _planted_series("GALE", "Storm", rng, 5e-4, 2e-3, -1e-4),
        _planted_series("STIL", "Calm", rng, 1.5e-3, 4e-4, 4e-5),
        _planted_series("HUSH", "Calm", rng, 1.5e-3, 4e-4, 4e-5),
    ]
    path = tmp_path_factory.mktemp("market") / "planted.csv"
    save_bars(series, path)
    return path


@contextlib.asynccontextmanager
async def mesh(data: Path, config: WorldModelConfig = CONFIG):
    async with serving_app(MARKET, MarketConfig(data_path=data, replay_start=0.95)) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(APP, config, channel_config=channels) as world:
            yield market, world


async def test_the_planted_switches_are_found(planted_market):
    async with mesh(planted_market) as (market, world):
        client = WorldModelClient(world.channel)
        clock = (await MarketClient(market.channel).snapshot()).clock_time
        storm = await client.detect_regime(sector="Storm")
        assert (storm.sector, storm.symbol) == ("Storm", "")
        assert storm.regime == "volatile"
        assert storm.probability > 0.95
        assert storm.labels == ("calm", "normal", "volatile")
        assert list(storm.stddevs) == sorted(storm.stddevs)
        # Per bar; the index averages two independent members, so its vol is 2e-3 / sqrt(2).
        assert storm.stddevs[2] == pytest.approx(2e-3 / np.sqrt(2), rel=0.2)
        assert storm.as_of_time == clock
        assert storm.bars_per_step == 15
        assert storm.observations == (round(BARS * 0.95) - 1) // 15
        rows = np.reshape(storm.transition, (3, 3))
        np.testing.assert_allclose(rows.sum(axis=1), 1.0)

        calm = await client.detect_regime(sector="Calm")
        assert calm.regime == "calm"
        gale = await client.detect_regime(symbol="GALE")
        assert (gale.symbol, gale.sector, gale.regime) == ("GALE", "", "volatile")


async def test_recommendations_come_from_the_fitted_sector_models(planted_market):
    async with mesh(planted_market) as (_market, world):
        client = WorldModelClient(world.channel)
        storm = await client.detect_regime(sector="Storm")
        await client.detect_regime(sector="Calm")
        recommendations = await AgentClient(world.channel, name="world-model").recommend(
            AgentContext(cycle_id="c1")
        )
        by_target = {r.target: r for r in recommendations}
        assert set(by_target) == {"sector/Storm", "sector/Calm"}

        cut = by_target["sector/Storm"]
        assert isinstance(cut.parameters, AdjustExposure)
        assert cut.parameters.sector == "Storm"
        assert 0.5 <= cut.parameters.factor < 0.9
        assert cut.priority is Priority.HIGH
        assert cut.confidence == pytest.approx(storm.probability)
        assert "volatile regime" in cut.rationale
        assert cut.evidence["p_volatile"] == pytest.approx(storm.probability)

        raise_ = by_target["sector/Calm"]
        assert raise_.parameters.factor > 1.1
        assert raise_.priority is Priority.LOW
        assert "trends" in raise_.rationale
        assert cut.as_of_time == storm.as_of_time > 0  # when its regime was computed


async def test_a_recommendation_from_a_model_the_market_has_moved_past_shows_its_age(
    planted_market,
):
    async with mesh(planted_market) as (market, world):
        client = WorldModelClient(world.channel)
        prices = MarketClient(market.channel)
        storm = await client.detect_regime(sector="Storm")
        await client.detect_regime(sector="Calm")
        await prices.advance(10)  # fewer bars than refit_bars: the cached models stand
        clock = (await prices.snapshot()).clock_time
        context = AgentContext(cycle_id="c1", as_of_time=clock)
        recommendations = await AgentClient(world.channel, name="world-model").recommend(context)
    stamped = {r.target: r.as_of_time for r in recommendations}
    assert stamped["sector/Storm"] == storm.as_of_time == clock - 10 * 60 * 10**9
    # A federation that allows less than those ten minutes of market time supersedes them.
    answer = AgentAnswer(
        AgentReport("world-model", CallOutcome.OK, 0.0, 1, len(recommendations)),
        tuple(recommendations),
    )
    plan = build_plan(
        [answer],
        plan_id="gap-1",
        sequence=1,
        now=clock,
        context=context,
        min_consensus_for_critical=0.8,
        owners={},
        max_age=5 * 60 * 10**9,
    )
    assert {a.status for a in plan.actions} == {ActionStatus.SUPERSEDED}
    assert all("10m of market time before" in a.status_detail for a in plan.actions)


async def test_recommend_answers_from_the_cache_and_refreshes_in_the_background(planted_market):
    async with serving_app(
        MARKET, MarketConfig(data_path=planted_market, replay_start=0.95)
    ) as market:
        model = WorldModel(MarketClient(market.channel), CONFIG)
        async with serving(services(model)) as world:
            agent = AgentClient(world.channel, name="world-model")
            assert await agent.recommend(AgentContext(cycle_id="cold")) == []
            await model.refresh_in_background()  # the refresh the cold call started
            warm = await agent.recommend(AgentContext(cycle_id="warm"))
            assert {r.target for r in warm} == {"sector/Storm", "sector/Calm"}
        await model.close()


async def test_models_are_refitted_once_the_market_moved_enough(planted_market):
    async with mesh(planted_market) as (market, world):
        client = WorldModelClient(world.channel)
        prices = MarketClient(market.channel)
        first = await client.detect_regime(sector="Storm")
        await prices.advance(10)
        assert (await client.detect_regime(sector="Storm")).as_of_time == first.as_of_time
        await prices.advance(20)  # 30 bars: refit_bars
        refitted = await client.detect_regime(sector="Storm")
        assert refitted.as_of_time == first.as_of_time + 30 * 60 * 10**9


async def test_simulate_is_reproducible_and_regime_conditioned(planted_market):
    async with mesh(planted_market) as (_market, world):
        client = WorldModelClient(world.channel)
        request = {"sector": "Storm", "horizon": 60, "num_paths": 2000, "seed": 3}
        one = await client.simulate(**request)
        two = await client.simulate(**request)
        assert one.terminal_returns == two.terminal_returns
        assert one.quantiles == (0.05, 0.25, 0.5, 0.75, 0.95)
        assert list(one.terminal_returns) == sorted(one.terminal_returns)
        assert (one.regime, one.block_size, one.paths) == ("volatile", 60, None)

        with_paths = await client.simulate(**request, include_paths=True, quantiles=(0.1, 0.9))
        assert with_paths.paths.shape == (2000, 60)
        np.testing.assert_allclose(
            np.quantile(with_paths.paths[:, -1], [0.1, 0.9]), with_paths.terminal_returns
        )

        conditioned = await client.simulate(**request, regime_conditioned=True)
        assert conditioned.history < one.history
        spread = one.terminal_returns[-1] - one.terminal_returns[0]
        conditioned_spread = conditioned.terminal_returns[-1] - conditioned.terminal_returns[0]
        # The volatile day alone: the index's per-bar vol 2e-3 / sqrt(2) over 60 bars, so a 90%
        # range of 2 x 1.645 standard deviations.
        expected = 2 * 1.645 * 2e-3 / np.sqrt(2) * np.sqrt(60)
        assert conditioned_spread == pytest.approx(expected, rel=0.2)
        assert conditioned_spread > 1.3 * spread


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({}, "symbol", "give either a symbol or a sector"),
        ({"symbol": "STRM", "sector": "Storm"}, "sector", "give either"),
        ({"symbol": "NOPE"}, "symbol", "unknown symbol 'NOPE'"),
        ({"sector": "Metals"}, "sector", "unknown sector 'Metals'"),
        ({"symbol": "STRM", "lookback": -1}, "lookback", "must not be negative"),
        ({"symbol": "STRM", "lookback": 100}, "lookback", "too few"),
        ({"symbol": "STRM", "lookback": 10_000}, "lookback", "10000 bars requested but STRM has"),
        ({"symbol": "STRM", "lookback": 300_000}, "lookback", "must be at most 200000"),
    ],
)
async def test_detect_regime_validation(planted_market, fields, field, problem):
    async with mesh(planted_market) as (_market, world):
        stub = world_model_pb2_grpc.WorldModelServiceStub(world.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.DetectRegime(world_model_pb2.DetectRegimeRequest(**fields))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == field
        assert problem in failure.value.details()


@pytest.mark.parametrize(
    ("fields", "field", "problem"),
    [
        ({"horizon": 0}, "horizon", "must be in 1..43200"),
        ({"horizon": 50_000}, "horizon", "must be in 1..43200"),
        ({"num_paths": 0}, "num_paths", "must be in 1..10000"),
        ({"num_paths": 10_001}, "num_paths", "must be in 1..10000"),
        ({"num_paths": 10_000, "horizon": 10_000}, "num_paths", "exceeds 20000000"),
        ({"num_paths": 1000, "horizon": 2000, "include_paths": True}, "include_paths", "exceed"),
        ({"block_size": -2}, "block_size", "must not be negative"),
        ({"block_size": 100_000}, "block_size", "longer than"),
        ({"quantiles": [0.5, 1.0]}, "quantiles[1]", "is not in (0, 1)"),
        ({"quantiles": [float("nan")]}, "quantiles[0]", "is not in (0, 1)"),
        ({"quantiles": [0.5] * 100}, "quantiles", "at most 99"),
        ({"sector": "Metals", "symbol": ""}, "sector", "unknown sector"),
    ],
)
async def test_simulate_validation(planted_market, fields, field, problem):
    async with mesh(planted_market) as (_market, world):
        stub = world_model_pb2_grpc.WorldModelServiceStub(world.channel)
        request = {"symbol": "STRM", "horizon": 10, "num_paths": 10} | fields
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Simulate(world_model_pb2.SimulateRequest(**request))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == field
        assert problem in failure.value.details()


async def test_a_market_without_enough_history_is_a_failed_precondition(planted_market):
    config = WorldModelConfig(
        bars_per_step=15, warm_up=False, states=3, lookback_bars=200, watch_regimes=False
    )
    async with mesh(planted_market, config) as (_market, world):
        with pytest.raises(FailedPrecondition, match="needs 451"):
            await WorldModelClient(world.channel).detect_regime(symbol="STRM")


async def test_the_world_model_executes_no_actions(planted_market):
    async with mesh(planted_market) as (_market, world):
        action = Action(
            id="a1",
            priority=Priority.HIGH,
            target="sector/Storm",
            parameters=AdjustExposure(sector="Storm", factor=0.5),
            confidence=0.9,
            rationale="storm",
            idempotency_key="k1",
        )
        agent = AgentClient(world.channel, name="world-model")
        with pytest.raises(InvalidArgument, match="it executes: none") as failure:
            await agent.execute(action, plan_sequence=1)
        assert failure.value.field == "action.type"


async def test_a_cancelled_simulation_stops_its_work(planted_market, monkeypatch):
    loop = asyncio.get_running_loop()
    started, stopped = asyncio.Event(), asyncio.Event()
    real = engine.simulate_terminal

    def traced(*args, cancel, **kwargs):
        loop.call_soon_threadsafe(started.set)
        try:
            return real(*args, cancel=cancel, **kwargs)
        except Cancelled:
            loop.call_soon_threadsafe(stopped.set)
            raise

    monkeypatch.setattr(engine, "simulate_terminal", traced)
    async with mesh(planted_market) as (_market, world):
        stub = world_model_pb2_grpc.WorldModelServiceStub(world.channel)
        await WorldModelClient(world.channel).detect_regime(symbol="STRM")  # fit first
        call = stub.Simulate(
            world_model_pb2.SimulateRequest(symbol="STRM", horizon=2000, num_paths=10_000)
        )
        await started.wait()
        call.cancel()
        await asyncio.wait_for(stopped.wait(), timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_a_cancelled_detect_regime_stops_its_fit(planted_market, monkeypatch):
    loop = asyncio.get_running_loop()
    started, stopped = asyncio.Event(), asyncio.Event()
    real = engine.fit_regimes

    def endless(*args, cancel, **kwargs):
        """Refits until cancelled: a fit that would not finish before the caller gives up."""
        loop.call_soon_threadsafe(started.set)
        try:
            while True:
                real(*args, cancel=cancel, **kwargs)
        except Cancelled:
            loop.call_soon_threadsafe(stopped.set)
            raise

    monkeypatch.setattr(engine, "fit_regimes", endless)
    async with mesh(planted_market) as (_market, world):
        stub = world_model_pb2_grpc.WorldModelServiceStub(world.channel)
        call = stub.DetectRegime(world_model_pb2.DetectRegimeRequest(sector="Storm"))
        await started.wait()
        call.cancel()
        await asyncio.wait_for(stopped.wait(), timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_the_reported_regime_keeps_hysteresis_across_refits(planted_market, monkeypatch):
    """Each refit's current probabilities are scripted; the report follows the Schmitt trigger."""
    scripted = iter(
        [
            [0.90, 0.05, 0.05],  # calm
            [0.40, 0.10, 0.50],  # volatile leads, below 0.7, calm above 0.3: still calm
            [0.20, 0.10, 0.70],  # volatile reaches 0.7: volatile
            [0.35, 0.05, 0.60],  # calm leads nowhere near 0.7, volatile above 0.3: volatile
            [0.45, 0.30, 0.25],  # volatile below 0.3: the most likely, calm
        ]
    )
    real = engine.fit_regimes

    def scripted_fit(*args, **kwargs):
        model = real(*args, **kwargs)
        return dataclasses.replace(model, probabilities=np.array(next(scripted)))

    monkeypatch.setattr(engine, "fit_regimes", scripted_fit)
    async with mesh(planted_market) as (market, world):
        client = WorldModelClient(world.channel)
        prices = MarketClient(market.channel)
        reported = []
        for _ in range(5):
            reported.append((await client.detect_regime(sector="Storm")).regime)
            await prices.advance(30)  # refit_bars: the next call refits
        assert reported == ["calm", "calm", "volatile", "volatile", "calm"]


async def test_a_fit_started_on_stale_data_is_not_joined(planted_market, monkeypatch):
    loop = asyncio.get_running_loop()
    first_started, release = asyncio.Event(), threading.Event()
    fitted_until = []
    real = engine.fit_regimes

    def held_first(times, closes, **kwargs):
        fitted_until.append(int(times[-1]))
        if len(fitted_until) == 1:  # hold the first fit until the market has moved on
            loop.call_soon_threadsafe(first_started.set)
            release.wait(timeout=30)
        return real(times, closes, **kwargs)

    monkeypatch.setattr(engine, "fit_regimes", held_first)
    async with mesh(planted_market) as (market, world):
        client = WorldModelClient(world.channel)
        old = asyncio.ensure_future(client.detect_regime(sector="Storm"))
        await first_started.wait()
        await MarketClient(market.channel).advance(30)
        fresh = await client.detect_regime(sector="Storm")
        release.set()
        # The older fit finishing last neither replaces the newer model nor is reported.
        assert (await old).as_of_time == fresh.as_of_time
        assert (await client.detect_regime(sector="Storm")).as_of_time == fresh.as_of_time
        assert fitted_until == [fresh.as_of_time - 30 * 60 * 10**9, fresh.as_of_time]
