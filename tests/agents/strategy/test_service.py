"""The strategy officer over gRPC with real market and SESA servers: the book reflects the fleet
and pages, actions change it once per key and survive a restart, its disable recommendations
agree with the fleet's own numbers, and a shadow is promoted only once it passes the gates on
the replay clock."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import grpc
import numpy as np
import pytest
from scipy import stats

from agents.strategy.client import StrategyOfficerClient
from agents.strategy.config import StrategyConfig
from agents.strategy.service import APP
from backtest.metrics import probabilistic_sharpe
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.api.strategy.v1 import strategy_officer_pb2, strategy_officer_pb2_grpc
from qtmesh.base.contract import (
    Action,
    AgentContext,
    DisableStrategy,
    EnableStrategy,
    HaltTrading,
    Priority,
    PromoteStrategy,
    ReweightStrategies,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage
from qtmesh.base.paging import encode_token
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app
from sesa.config import SesaConfig
from sesa.service import APP as SESA

HOUR = 3600 * 10**9


def officer_config(tmp_path: Path, **overrides) -> StrategyConfig:
    return StrategyConfig(data_dir=tmp_path / "strategy", **overrides)


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path, config: StrategyConfig | None = None):
    market_config = MarketConfig(
        synthetic_days=3, seed=5, data_dir=tmp_path / "market", fleet_warmup_bars=600
    )
    async with serving_app(MARKET, market_config) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(SESA, SesaConfig(), channel_config=channels) as sesa:
            addresses = {"market": market.address, "sesa": sesa.address}
            async with officer(config or officer_config(tmp_path), addresses) as strategy:
                yield market, strategy, addresses


@contextlib.asynccontextmanager
async def officer(config: StrategyConfig, addresses: dict[str, str]):
    channels = ChannelConfig(addresses=addresses)
    async with serving_app(APP, config, channel_config=channels) as strategy:
        yield strategy


def action(key: str, parameters, *, action_id: str = "a1") -> Action:
    return Action(
        id=action_id,
        priority=Priority.MEDIUM,
        target="strategies",
        parameters=parameters,
        confidence=0.9,
        rationale="test",
        idempotency_key=key,
    )


def shadow_genome(strategy_id: str):
    return dataclasses.replace(
        Policy().default_genome(StrategyFamily.MEAN_REVERSION), id=strategy_id
    )


async def test_the_book_is_the_fleet_listed_in_pages(tmp_path):
    async with mesh(tmp_path) as (market, strategy, _):
        client = StrategyOfficerClient(strategy.channel)
        fleet = await MarketClient(market.channel).fleet()
        first, token = await client.page(page_size=10)
        assert len(first) == 10
        rest = await client.book()
        assert [e.strategy_id for e, _ in rest[:10]] == [e.strategy_id for e, _ in first]
        assert len(rest) == 27
        assert {e.strategy_id for e, _ in rest} == {s.strategy.id for s in fleet.strategies}
        assert all(e.in_fleet and e.producing for e, _ in rest)
        assert sum(e.weight for e, _ in rest) == pytest.approx(1.0)
        keys = [(e.record.sector, e.strategy_id) for e, _ in rest]
        assert keys == sorted(keys)
        tech = await client.book(sector="Tech")
        assert {e.record.sector for e, _ in tech} == {"Tech"}
        stub = strategy_officer_pb2_grpc.StrategyOfficerServiceStub(strategy.channel)
        for request, field in (
            (strategy_officer_pb2.ListStrategiesRequest(sector="Mining"), "sector"),
            (
                strategy_officer_pb2.ListStrategiesRequest(sector="Tech", page_token=token),
                "page_token",
            ),
            (strategy_officer_pb2.ListStrategiesRequest(page_size=-1), "page_size"),
            # Well-formed tokens of the wrong shape must not fail inside the server.
            *(
                (
                    strategy_officer_pb2.ListStrategiesRequest(
                        page_token=encode_token(sector="", **fields)
                    ),
                    "page_token",
                )
                for fields in ({}, {"after": []}, {"after": "Tech"}, {"after": ["Tech", 3]})
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.ListStrategies(request)
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(error.value).metadata["field"] == field


async def test_disable_recommendations_agree_with_the_fleets_own_numbers(tmp_path):
    async with mesh(tmp_path) as (market, strategy, _):
        client = MarketClient(market.channel)
        await client.advance(24 * 60)
        rows = await StrategyOfficerClient(strategy.channel).book()
        recommendations = await AgentClient(strategy.channel, name="strategy").recommend(
            AgentContext(cycle_id="c1")
        )
        fleet = await client.fleet()
        windows = [
            await client.fleet(
                start_time=fleet.deployment_time + k * HOUR + 1,
                end_time=fleet.deployment_time + (k + 1) * HOUR,
            )
            for k in range(24)
        ]
    returns = np.array([[s.roi for s in w.strategies] for w in windows])
    trades = np.array([[s.trade_count for s in w.strategies] for w in windows]).sum(axis=0)
    expected = set()
    for j, s in enumerate(fleet.strategies):
        r = returns[:, j]
        psr = probabilistic_sharpe(
            r.mean() / r.std(ddof=1), 0.0, 24, stats.skew(r), stats.kurtosis(r)
        )
        if np.prod(1 + r) < 1 and psr < 0.05 and trades[j] >= 10:
            expected.add(s.strategy.id)
    disabled = {
        r.parameters.strategy_id
        for r in recommendations
        if isinstance(r.parameters, DisableStrategy)
    }
    assert disabled
    assert disabled <= expected  # the last strategy of a sector is kept
    measured = {e.strategy_id: p for e, p in rows}
    for sid in disabled:
        assert measured[sid].psr < 0.05
        assert measured[sid].observations == 24
    (reweight,) = [r for r in recommendations if isinstance(r.parameters, ReweightStrategies)]
    assert sum(reweight.parameters.weights.values()) == pytest.approx(1.0)
    assert all(reweight.parameters.weights[sid] == 0 for sid in disabled)


async def test_actions_change_the_book_once_per_key_and_survive_a_restart(tmp_path):
    config = officer_config(tmp_path)
    async with mesh(tmp_path, config) as (market, strategy, addresses):
        agent = AgentClient(strategy.channel, name="strategy")
        fleet = await MarketClient(market.channel).fleet()
        loser = fleet.strategies[0].strategy.id
        added = await agent.execute(
            action(
                "p1/enable",
                EnableStrategy(strategy_id="NOVA/g7", sector="Tech", genome=shadow_genome("g7")),
            ),
            plan_sequence=1,
        )
        assert added.applied
        assert "added as a shadow on NOVA" in added.detail
        assert (
            await agent.execute(action("p1/disable", DisableStrategy(loser)), plan_sequence=1)
        ).applied
        again = await agent.execute(action("p1/disable", DisableStrategy(loser)), plan_sequence=1)
        assert not again.applied
        with pytest.raises(FailedPrecondition):
            await agent.execute(action("p1/promote", PromoteStrategy("g-unknown")), plan_sequence=1)
        for parameters, field in (
            (ReweightStrategies({loser: 1.0}), f"reweight_strategies.weights[{loser}]"),
            (ReweightStrategies({"NOVA/g7": 1.0}), "reweight_strategies.weights[NOVA/g7]"),
            (EnableStrategy(strategy_id="g8", sector="Mining"), "enable_strategy.genome"),
            (DisableStrategy("g-unknown"), "disable_strategy.strategy_id"),
        ):
            with pytest.raises(InvalidArgument) as error:
                await agent.execute(action("p1/bad", parameters), plan_sequence=1)
            assert error.value.field == f"action.parameters.{field}"
        with pytest.raises(InvalidArgument) as error:
            await agent.execute(action("p1/halt", HaltTrading()), plan_sequence=1)
        assert error.value.field == "action.type"

        async with officer(config, addresses) as restarted:
            book = {
                e.strategy_id: e for e, _ in await StrategyOfficerClient(restarted.channel).book()
            }
            assert len(book) == 28
            assert book["NOVA/g7"].record.stage is StrategyStage.SHADOW
            assert book["NOVA/g7"].record.symbol == "NOVA"
            assert not book["NOVA/g7"].in_fleet
            assert book["NOVA/g7"].record.since == fleet.clock_time
            assert not book[loser].record.enabled
            assert book[loser].weight == 0
            assert sum(e.weight for e in book.values()) == pytest.approx(1.0)
            agent = AgentClient(restarted.channel, name="strategy")
            assert not (
                await agent.execute(action("p1/disable", DisableStrategy(loser)), plan_sequence=1)
            ).applied
            promoted = await agent.execute(
                action("p2/promote", PromoteStrategy("NOVA/g7")), plan_sequence=2
            )
            assert promoted.detail == "NOVA/g7 promoted to production on NOVA"


async def test_a_shadow_is_promoted_once_its_test_period_has_passed_on_the_replay_clock(tmp_path):
    # Half a day of shadow trading and one trade; Sharpe and deflated Sharpe gates opened, so
    # the days gate decides, measured on the replay clock.
    config = officer_config(
        tmp_path,
        shadow_min_test_days=0.5,
        shadow_min_trades=1,
        shadow_required_sharpe=-1e9,
        shadow_required_deflated_sharpe=0.0,
    )
    async with mesh(tmp_path, config) as (market, strategy, _):
        client = MarketClient(market.channel)
        agent = AgentClient(strategy.channel, name="strategy")
        enable = EnableStrategy(strategy_id="ORBT/g1", sector="Tech", genome=shadow_genome("g1"))
        assert (await agent.execute(action("p1/enable", enable), plan_sequence=1)).applied
        await client.advance(11 * 60)
        rows = await StrategyOfficerClient(strategy.channel).book()
        shadow = next(p for e, p in rows if e.strategy_id == "ORBT/g1")
        assert shadow.source == "sesa"
        assert shadow.observations == 11 * 60
        assert shadow.deflated_sharpe is not None
        recommendations = await agent.recommend(AgentContext(cycle_id="c1"))
        assert not any(isinstance(r.parameters, PromoteStrategy) for r in recommendations)
        await client.advance(60)
        await StrategyOfficerClient(strategy.channel).book()
        recommendations = await agent.recommend(AgentContext(cycle_id="c2"))
        (promote,) = [r for r in recommendations if isinstance(r.parameters, PromoteStrategy)]
        assert promote.parameters.strategy_id == "ORBT/g1"
        assert "0.5 days >= 0.5" in promote.rationale
        assert (
            await agent.execute(action("p2/promote", promote.parameters), plan_sequence=2)
        ).applied
        book = {e.strategy_id: e for e, _ in await StrategyOfficerClient(strategy.channel).book()}
        assert book["ORBT/g1"].producing
        assert book["ORBT/g1"].weight > 0
