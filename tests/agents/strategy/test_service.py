"""The strategy officer over gRPC with a real market server: its book is the fleet's (what GetFleet
shows, a shadow an evolution added included) listed in pages; its recommendations, executed by
the market, change the book, and the officer sees the change at its next refresh (and after a
restart, since it stores nothing); its disable recommendations agree with the fleet's own
numbers; a shadow is promoted on its paper record once it passes the gates on the replay
clock; and it executes nothing itself."""

from __future__ import annotations

import contextlib
import dataclasses

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
from market.fleet import Candidate, FleetReport
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
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage, make_genome
from qtmesh.base.paging import encode_token
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

HOUR = 3600 * 10**9


@contextlib.asynccontextmanager
async def mesh(tmp_path, config: StrategyConfig | None = None):
    market_config = MarketConfig(
        synthetic_days=3, seed=5, data_dir=tmp_path / "market", fleet_warmup_bars=600
    )
    async with (
        serving_app(MARKET, market_config) as market,
        officer(config or StrategyConfig(), market.address) as strategy,
    ):
        yield market, strategy


@contextlib.asynccontextmanager
async def officer(config: StrategyConfig, market_address: str):
    channels = ChannelConfig(addresses={"market": market_address})
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


def executed(r, key: str) -> Action:
    """A recommendation as the federation would hand it to the market."""
    return dataclasses.replace(
        action(key, r.parameters, action_id=r.id), priority=r.priority, target=r.target
    )


def candidate_genome(seed: int):
    defaults = Policy().default_genome(StrategyFamily.MA_CROSSOVER).parameters
    parameters = {**defaults, "fast": 5 + seed, "slow": 30 + seed}
    return make_genome(StrategyFamily.MA_CROSSOVER, parameters, origin="test")


def shadow_genome(strategy_id: str):
    return dataclasses.replace(
        Policy().default_genome(StrategyFamily.MEAN_REVERSION), id=strategy_id
    )


def by_id(fleet: FleetReport):
    return {s.strategy.id: s for s in fleet.strategies}


def assert_shows_the_fleet(rows, fleet: FleetReport) -> None:
    """ListStrategies' rows are GetFleet's strategies: the same book, weights as shares of the
    capital the fleet trades."""
    strategies = by_id(fleet)
    assert {e.strategy_id for e, _ in rows} == set(strategies)
    total = sum(s.weight for s in fleet.strategies)
    for e, _ in rows:
        s = strategies[e.strategy_id]
        assert (e.record.sector, e.record.symbol, e.record.genome) == (
            s.strategy.sector,
            s.strategy.symbol,
            s.strategy.genome,
        )
        assert (e.record.stage, e.record.enabled, e.record.since) == (s.stage, s.enabled, s.since)
        assert e.in_fleet == (s.origin == "deployment")
        assert e.weight == pytest.approx(s.weight / total)


async def test_the_book_is_the_fleets_listed_in_pages_with_an_evolutions_shadows(tmp_path):
    async with mesh(tmp_path) as (market, strategy):
        client = StrategyOfficerClient(strategy.channel)
        markets = MarketClient(market.channel)
        await markets.advance(120)
        fleet = await markets.fleet()
        first, token = await client.page(page_size=10)
        assert len(first) == 10
        rest = await client.book()
        assert [e.strategy_id for e, _ in rest[:10]] == [e.strategy_id for e, _ in first]
        assert len(rest) == 27
        assert_shows_the_fleet(rest, fleet)
        assert all(e.in_fleet and e.producing for e, _ in rest)
        assert sum(e.weight for e, _ in rest) == pytest.approx(1.0)
        keys = [(e.record.sector, e.strategy_id) for e, _ in rest]
        assert keys == sorted(keys)
        tech = await client.book(sector="Tech")
        assert {e.record.sector for e, _ in tech} == {"Tech"}

        # An evolution's candidates join the fleet's book as shadows: the officer lists them
        # at its next refresh (the first page of ListStrategies refreshes).
        symbol = next(s.strategy.symbol for s in fleet.strategies if s.strategy.sector == "Tech")
        candidates = [Candidate(f"{symbol}/evo-{i}", "Tech", candidate_genome(i)) for i in (0, 1)]
        _, applied = await markets.add_shadows(
            candidates, evolution_id="evo-1", trials=400, action_key="sesa/evo-1"
        )
        assert applied
        rows = await client.book()
        assert len(rows) == 29
        assert_shows_the_fleet(rows, await markets.fleet())
        shadows = {e.strategy_id: (e, p) for e, p in rows if not e.in_fleet}
        assert set(shadows) == {c.strategy_id for c in candidates}
        shadow, measured = shadows[f"{symbol}/evo-0"]
        assert shadow.record.stage is StrategyStage.SHADOW
        assert shadow.record.symbol == symbol
        assert shadow.record.since == fleet.clock_time
        assert shadow.weight == 0
        assert not shadow.producing
        assert measured is None  # no bar since it entered the book

        # Its performance is its paper record in the fleet.
        await markets.advance(60)
        rows = await client.book()
        later = await markets.fleet()
        assert_shows_the_fleet(rows, later)
        record = by_id(later)[f"{symbol}/evo-0"].record
        assert record is not None
        assert record.bar_count == 60
        measured = dict((e.strategy_id, p) for e, p in rows)[f"{symbol}/evo-0"]
        assert measured is not None
        assert measured.source == "record"
        assert measured.observations == record.bar_count
        assert measured.total_return == pytest.approx(record.total_return)
        assert measured.sharpe == pytest.approx(record.sharpe)
        assert measured.trade_count == record.trade_count
        assert measured.psr == pytest.approx(record.probabilistic_sharpe)
        assert measured.deflated_sharpe == pytest.approx(record.deflated_sharpe)

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


async def test_recommendations_executed_by_the_market_change_the_book_the_officer_reads(tmp_path):
    async with mesh(tmp_path) as (market, strategy):
        client = MarketClient(market.channel)
        fleet_agent = AgentClient(market.channel, name="market")
        officer_agent = AgentClient(strategy.channel, name="strategy")
        await client.advance(24 * 60)
        rows = await StrategyOfficerClient(strategy.channel).book()
        recommendations = await officer_agent.recommend(AgentContext(cycle_id="c1"))
        fleet = await client.fleet()
        windows = [
            await client.fleet(
                start_time=fleet.deployment_time + k * HOUR + 1,
                end_time=fleet.deployment_time + (k + 1) * HOUR,
            )
            for k in range(24)
        ]
        # The disables agree with the fleet's own hourly numbers.
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
        disables = [r for r in recommendations if isinstance(r.parameters, DisableStrategy)]
        disabled = {r.parameters.strategy_id for r in disables}
        assert disabled
        assert disabled <= expected  # the last strategy of a sector is kept
        measured = {e.strategy_id: p for e, p in rows}
        for sid in disabled:
            assert measured[sid].source == "fleet"
            assert measured[sid].psr < 0.05
            assert measured[sid].observations == 24
        (reweight,) = [r for r in recommendations if isinstance(r.parameters, ReweightStrategies)]
        weights = reweight.parameters.weights
        assert sum(weights.values()) == pytest.approx(1.0)
        assert all(weights[sid] == 0 for sid in disabled)
        assert all(r.as_of_time == fleet.clock_time for r in recommendations)

        # The market executes them, as the federation routes them (DEFAULT_OWNERS: "market").
        for k, r in enumerate([*disables, reweight]):
            result = await fleet_agent.execute(executed(r, f"plan-1/{k}"), plan_sequence=1)
            assert result.applied, result.detail
        after = await StrategyOfficerClient(strategy.channel).book()
        changed = await client.fleet()
        assert_shows_the_fleet(after, changed)
        book = {e.strategy_id: e for e, _ in after}
        for sid in disabled:
            assert not book[sid].record.enabled
            assert book[sid].weight == 0
        for sid, weight in weights.items():
            if sid not in disabled:
                assert book[sid].record.raw_weight == pytest.approx(weight)
                assert book[sid].weight == pytest.approx(weight)
        # Refreshed on the changed book: nothing left to disable or reweight.
        again = await officer_agent.recommend(AgentContext(cycle_id="c2"))
        assert not any(
            isinstance(r.parameters, DisableStrategy | ReweightStrategies) for r in again
        )

        # Actions the market rejects change nothing the officer reads.
        loser = sorted(disabled)[0]
        for parameters, field in (
            (ReweightStrategies({loser: 1.0}), f"reweight_strategies.weights[{loser}]"),
            (ReweightStrategies({"NOPE/x": 1.0}), "reweight_strategies.weights[NOPE/x]"),
            (ReweightStrategies({}), "reweight_strategies.weights"),
            (EnableStrategy(strategy_id="g8", sector="Tech"), "enable_strategy.genome"),
            (
                EnableStrategy(strategy_id="g8", sector="Mining", genome=shadow_genome("g8")),
                "enable_strategy.sector",
            ),
            (
                EnableStrategy(
                    strategy_id="g8",
                    sector="Tech",
                    genome=dataclasses.replace(shadow_genome("g8"), parameters={"bb_period": 1e9}),
                ),
                "enable_strategy.genome.parameters[bb_period]",
            ),
            (DisableStrategy("g-unknown"), "disable_strategy.strategy_id"),
        ):
            with pytest.raises(InvalidArgument) as error:
                await fleet_agent.execute(action("plan-2/bad", parameters), plan_sequence=2)
            assert error.value.field == f"action.parameters.{field}"
        with pytest.raises(FailedPrecondition, match="must be a shadow first"):
            await fleet_agent.execute(
                action("plan-2/promote", PromoteStrategy("g-unknown")), plan_sequence=2
            )
        unchanged = await StrategyOfficerClient(strategy.channel).book()
        assert [(e, p) for e, p in unchanged] == [(e, p) for e, p in after]

        # The officer stores nothing: a restarted one reads the same book from the market.
        async with officer(StrategyConfig(), market.address) as restarted:
            rebooted = await StrategyOfficerClient(restarted.channel).book()
            assert [e for e, _ in rebooted] == [e for e, _ in after]


async def test_a_reweighting_recommended_while_a_sector_is_halted_is_one_the_market_accepts(
    tmp_path,
):
    async with mesh(tmp_path) as (market, strategy):
        client = MarketClient(market.channel)
        fleet_agent = AgentClient(market.channel, name="market")
        await client.advance(24 * 60)
        halt = action("plan-1/halt", HaltTrading(scope="Crypto"))
        assert "Crypto halted" in (await fleet_agent.execute(halt, plan_sequence=1)).detail
        rows = await StrategyOfficerClient(strategy.channel).book()
        crypto = {e.strategy_id for e, _ in rows if e.record.sector == "Crypto"}
        assert all(e.weight == 0 and e.producing for e, _ in rows if e.strategy_id in crypto)
        recommendations = await AgentClient(strategy.channel, name="strategy").recommend(
            AgentContext(cycle_id="c1")
        )
        (reweight,) = [r for r in recommendations if isinstance(r.parameters, ReweightStrategies)]
        # The halted sector trades nothing: weights of 0 for all of it would be refused.
        assert not set(reweight.parameters.weights) & crypto
        result = await fleet_agent.execute(executed(reweight, "plan-2/reweight"), plan_sequence=2)
        assert result.applied
        assert "strategies reweighted" in result.detail


async def test_the_officer_executes_no_action_itself(tmp_path):
    async with mesh(tmp_path) as (market, strategy):
        agent = AgentClient(strategy.channel, name="strategy")
        fleet = await MarketClient(market.channel).fleet()
        sid = fleet.strategies[0].strategy.id
        for parameters in (
            DisableStrategy(sid),
            EnableStrategy(strategy_id="NOVA/g7", sector="Tech", genome=shadow_genome("g7")),
            ReweightStrategies({sid: 2.0}),
            PromoteStrategy("NOVA/g7"),
        ):
            with pytest.raises(InvalidArgument) as error:
                await agent.execute(action("p1/any", parameters), plan_sequence=1)
            assert error.value.field == "action.type"
        book = {e.strategy_id: e for e, _ in await StrategyOfficerClient(strategy.channel).book()}
        assert len(book) == 27
        assert book[sid].producing


async def test_a_shadow_is_promoted_on_its_record_once_its_test_period_has_passed(tmp_path):
    # Half a day of shadow trading and one trade; Sharpe and deflated Sharpe gates opened, so
    # the days gate decides, measured on the replay clock.
    config = StrategyConfig(
        shadow_min_test_days=0.5,
        shadow_min_trades=1,
        shadow_required_sharpe=-1e9,
        shadow_required_deflated_sharpe=0.0,
    )
    async with mesh(tmp_path, config) as (market, strategy):
        client = MarketClient(market.channel)
        fleet_agent = AgentClient(market.channel, name="market")
        agent = AgentClient(strategy.channel, name="strategy")
        books = StrategyOfficerClient(strategy.channel)
        enable = EnableStrategy(strategy_id="ORBT/g1", sector="Tech", genome=shadow_genome("g1"))
        added = await fleet_agent.execute(action("p1/enable", enable), plan_sequence=1)
        assert "added as a shadow" in added.detail
        entered = (await client.fleet()).clock_time
        await client.advance(11 * 60)
        rows = await books.book()
        (shadow, measured) = next((e, p) for e, p in rows if e.strategy_id == "ORBT/g1")
        assert shadow.record.stage is StrategyStage.SHADOW
        assert shadow.record.since == entered
        assert measured is not None
        assert measured.source == "record"
        assert measured.observations == 11 * 60
        assert measured.trade_count >= 1
        assert measured.deflated_sharpe is not None
        recommendations = await agent.recommend(AgentContext(cycle_id="c1"))
        assert not any(isinstance(r.parameters, PromoteStrategy) for r in recommendations)
        await client.advance(60)
        await books.book()
        recommendations = await agent.recommend(AgentContext(cycle_id="c2"))
        (promote,) = [r for r in recommendations if isinstance(r.parameters, PromoteStrategy)]
        assert promote.parameters.strategy_id == "ORBT/g1"
        assert promote.parameters.sector == "Tech"
        assert "0.5 days >= 0.5" in promote.rationale
        promoted_at = (await client.fleet()).clock_time
        assert promote.as_of_time == promoted_at
        result = await fleet_agent.execute(executed(promote, "p2/promote"), plan_sequence=2)
        assert "ORBT/g1 promoted to production" in result.detail
        await client.advance(30)
        rows = await books.book()
        book = {e.strategy_id: (e, p) for e, p in rows}
        promoted, measured = book["ORBT/g1"]
        assert promoted.producing
        assert promoted.weight > 0
        assert promoted.record.since == promoted_at
        # In production it is measured by its record since the promotion, not the fleet's
        # periods (it was not deployed).
        assert measured is not None
        assert measured.source == "record"
        assert measured.observations == 30
        assert not any(
            isinstance(r.parameters, PromoteStrategy)
            for r in await agent.recommend(AgentContext(cycle_id="c3"))
        )
