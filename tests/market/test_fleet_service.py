"""The paper fleet over gRPC: books per sector and strategy, paged trades, allocations changed
only by executed actions (once per key, across restarts), and bad requests."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP
from qtmesh.api.market.v1 import market_pb2, market_pb2_grpc
from qtmesh.base.contract import (
    Action,
    AdjustExposure,
    AgentContext,
    DisableStrategy,
    Execution,
    ExecutionState,
    HaltTrading,
    Priority,
    SpawnArbMission,
    StrategicMode,
    SwitchMode,
)
from qtmesh.base.convert import timestamp
from qtmesh.base.errors import InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.server import ServerConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

HOUR = 3600 * 10**9


def config(data_dir: Path) -> MarketConfig:
    return MarketConfig(
        synthetic_days=3, seed=5, replay_start=0.5, data_dir=data_dir, fleet_warmup_bars=600
    )


def action(key: str, parameters, *, action_id: str = "a1") -> Action:
    return Action(
        id=action_id,
        priority=Priority.MEDIUM,
        target="market/fleet",
        parameters=parameters,
        confidence=0.9,
        rationale="test",
        idempotency_key=key,
    )


@pytest.fixture
async def market(tmp_path):
    async with serving_app(APP, config(tmp_path)) as running:
        yield running


async def test_the_fleet_books_sectors_and_strategies_over_a_window(market):
    client = MarketClient(market.channel)
    await client.advance(600)
    fleet = await client.fleet()
    assert fleet.bar_count == 600
    assert fleet.position == (await client.snapshot()).position
    assert [s.sector for s in fleet.sectors] == ["Crypto", "Energy", "Financials", "Tech"]
    assert len(fleet.strategies) == 27
    assert fleet.pnl == pytest.approx(sum(s.pnl for s in fleet.sectors))
    assert all(s.allocation == 0.25 for s in fleet.sectors)
    assert {s.position for s in fleet.strategies} <= {-1, 0, 1}
    assert sum(s.trade_count for s in fleet.sectors) == len(await client.trades())
    window = await client.fleet(
        start_time=fleet.start_time + HOUR, end_time=fleet.start_time + 2 * HOUR - 1, sector="Tech"
    )
    assert window.bar_count == 60
    assert [s.sector for s in window.sectors] == ["Tech"]
    assert {s.strategy.sector for s in window.strategies} == {"Tech"}
    tech = await client.trades(sector="Tech")
    assert tech
    assert {t.sector for t in tech} == {"Tech"}
    one = tech[0].strategy_id
    assert {t.strategy_id for t in await client.trades(strategy_id=one)} == {one}
    curve = (await client.fleet(curve_points=7)).curve
    assert len(curve) == 7
    assert curve[-1].equity == pytest.approx(fleet.equity)
    with pytest.raises(InvalidArgument, match="10000") as refused:
        await client.fleet(curve_points=10_001)
    assert refused.value.field == "curve_points"


async def test_trade_pages_are_stable_while_the_clock_moves(market):
    client = MarketClient(market.channel)
    await client.advance(900)
    first, token = await client.trades_page(page_size=7)
    assert len(first) == 7
    assert token
    issued = token
    await client.advance(300)  # new trades only ever come after the old ones
    rest = []
    while token:
        page, token = await client.trades_page(page_size=7, page_token=token)
        rest += page
    everything = await client.trades()
    assert [t.trade_id for t in first + rest] == [t.trade_id for t in everything]
    keys = [(t.entry_time, t.strategy_id) for t in everything]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert any(t.exit_time is None for t in everything)
    # A token serves only the query it was issued for.
    with pytest.raises(InvalidArgument) as bad:
        await client.trades_page(sector="Tech", page_size=7, page_token=issued)
    assert bad.value.field == "page_token"


async def test_actions_change_allocations_once_and_survive_a_restart(tmp_path):
    async with serving_app(APP, config(tmp_path)) as market:
        client = MarketClient(market.channel)
        agent = AgentClient(market.channel, name="market")
        assert await agent.recommend(AgentContext(cycle_id="c1")) == []
        await client.advance(120)
        result = await agent.execute(
            action("k1", AdjustExposure(sector="Tech", factor=1.2)), plan_sequence=3
        )
        assert result.applied
        assert "Tech 25.00% -> 30.00%" in result.detail
        again = await agent.execute(
            action("k1", AdjustExposure(sector="Tech", factor=1.2)), plan_sequence=3
        )
        assert not again.applied
        arb = await agent.execute(
            action("k2", SpawnArbMission("Tech", "Energy", 0.1), action_id="a2"), plan_sequence=4
        )
        assert arb.applied
        await client.advance(60)
        fleet = await client.fleet()
        tech = next(s for s in fleet.sectors if s.sector == "Tech")
        assert tech.allocation == pytest.approx(0.3)
        assert [c.cause.action_id for c in fleet.changes] == ["a1", "a2"]
        assert fleet.changes[0].cause.plan_sequence == 3
        # A window reports the changes made in it, so period-by-period readers get each once.
        made = fleet.changes[0].time
        assert (await client.fleet(start_time=made, end_time=made)).changes == fleet.changes
        assert (await client.fleet(end_time=made - 1)).changes == ()
        assert (await client.fleet(start_time=made + 1)).changes == ()
        # The curve's static fleet is the deployment without these changes: the same up to them.
        curve = (await client.fleet(curve_points=10_000)).curve
        assert all(c.static_equity == pytest.approx(c.equity) for c in curve if c.time <= made)
        assert curve[-1].static_equity != pytest.approx(curve[-1].equity)
        (mission,) = fleet.missions
        assert (mission.mission.long_sector, mission.mission.short_sector) == ("Tech", "Energy")
        assert mission.active
        assert mission.pnl != 0
        before = fleet
    async with serving_app(APP, config(tmp_path)) as market:
        client = MarketClient(market.channel)
        agent = AgentClient(market.channel, name="market")
        await client.advance(180)
        after = await client.fleet()
        assert after.changes == before.changes
        assert after.sectors == before.sectors  # same data, same changes, same P&L
        assert after.missions == before.missions
        # The key was applied before the restart: nothing changes now.
        replay = await agent.execute(
            action("k1", AdjustExposure(sector="Tech", factor=1.2)), plan_sequence=3
        )
        assert not replay.applied
        assert "already applied as fleet change 1" in replay.detail
        # Asked by key after the restart, it says what it applied, as ExecuteAction said then.
        known = await agent.execution("k1")
        assert known == Execution(ExecutionState.APPLIED, result.detail, result.outcome)
        assert (await agent.execution("k-never")).state is ExecutionState.NOT_APPLIED
    # Other data is another deployment, with its own allocations.
    other = MarketConfig(synthetic_days=4, seed=5, data_dir=tmp_path, fleet_warmup_bars=600)
    async with serving_app(APP, other) as market:
        fleet = await MarketClient(market.channel).fleet()
        assert fleet.changes == ()
        assert all(s.allocation == 0.25 for s in fleet.sectors)


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        (AdjustExposure(sector="Metals", factor=1.2), "adjust_exposure.sector"),
        (AdjustExposure(sector="Tech", factor=50.0), "adjust_exposure.factor"),
        (SpawnArbMission("Tech", "Tech", 0.1), "spawn_arb_mission.short_sector"),
        (SpawnArbMission("Tech", "Gold", 0.1), "spawn_arb_mission.short_sector"),
        (HaltTrading(scope="Metals"), "halt_trading.scope"),
        (DisableStrategy(strategy_id="NOPE/ma-1"), "disable_strategy.strategy_id"),
        (SwitchMode(mode=StrategicMode.DEFENSIVE), "action.type"),
    ],
)
async def test_bad_actions_are_refused_and_change_nothing(market, parameters, field):
    agent = AgentClient(market.channel, name="market")
    with pytest.raises(InvalidArgument) as bad:
        await agent.execute(action("bad", parameters), plan_sequence=1)
    assert bad.value.field.endswith(field)
    fleet = await MarketClient(market.channel).fleet()
    assert fleet.changes == ()


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"sector": "Metals"}, "sector"),
        ({"end_time": timestamp(4_000_000_000 * 10**9)}, "end_time"),
        (
            {"start_time": timestamp(1_800_000_000 * 10**9), "end_time": timestamp(10**18)},
            "start_time",
        ),
    ],
)
async def test_bad_fleet_requests_name_the_field(market, request_fields, field):
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetFleet(market_pb2.GetFleetRequest(**request_fields))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"sector": "Metals"}, "sector"),
        ({"strategy_id": "NOPE/ma-0"}, "strategy_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
        ({"start_time": timestamp(2 * 10**18), "end_time": timestamp(10**18)}, "start_time"),
    ],
)
async def test_bad_trade_requests_name_the_field(market, request_fields, field):
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ListTrades(market_pb2.ListTradesRequest(**request_fields))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field


async def test_the_fleets_equity_and_drawdown_per_sector_are_exported(tmp_path):
    served = ServerConfig(port=0, metrics_port=0, grace_seconds=1.0)
    async with serving_app(APP, config(tmp_path), server_config=served) as market:
        client = MarketClient(market.channel)
        agent = AgentClient(market.channel, name="market")

        def scrape() -> dict[tuple[str, str], float]:
            url = f"http://{market.server.endpoints['metrics']}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            return {
                (sample.name, sample.labels["sector"]): sample.value
                for family in text_string_to_metric_families(text)
                if family.name in ("qtmesh_fleet_equity", "qtmesh_fleet_drawdown")
                for sample in family.samples
            }

        def check(fleet, figures: dict[tuple[str, str], float]) -> None:
            assert len(figures) == 2 * len(fleet.sectors)
            for sector in fleet.sectors:
                equity = figures["qtmesh_fleet_equity", sector.sector]
                assert equity == pytest.approx(sector.allocation * fleet.equity, rel=1e-12)
                drawdown = figures["qtmesh_fleet_drawdown", sector.sector]
                # Now below the peak by no more than the deepest fall since the deployment.
                assert 0 <= drawdown <= sector.max_drawdown + 1e-12

        await client.advance(600)
        fleet = await client.fleet()
        figures = await asyncio.to_thread(scrape)
        check(fleet, figures)
        assert any(value > 0 for (name, _), value in figures.items() if "drawdown" in name)
        # An executed action moves the allocation from the clock on.
        result = await agent.execute(
            action("k1", AdjustExposure(sector="Tech", factor=1.2)), plan_sequence=3
        )
        assert result.applied
        fleet = await client.fleet()
        figures = await asyncio.to_thread(scrape)
        check(fleet, figures)
        assert figures["qtmesh_fleet_equity", "Tech"] == pytest.approx(0.3 * fleet.equity)
        # And the clock: the next read of the fleet marks it anew.
        await client.advance(120)
        later = await client.fleet()
        assert later.equity != fleet.equity
        check(later, await asyncio.to_thread(scrape))
