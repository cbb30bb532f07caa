"""The fleet trades the book: each strategy action, a halt and a resume, and an evolution's
shadows change what the paper fleet trades from the next bar, once per key, across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.fleet import Candidate, FleetReport
from market.service import APP
from qtmesh.base.contract import (
    Action,
    DisableStrategy,
    EnableStrategy,
    HaltTrading,
    Priority,
    PromoteStrategy,
    ResumeTrading,
    ReweightStrategies,
)
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyStage, make_genome
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.testing import serving_app


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


def strategy(fleet: FleetReport, strategy_id: str):
    return next(s for s in fleet.strategies if s.strategy.id == strategy_id)


def a_busy_strategy(fleet: FleetReport, sector: str = "Tech") -> str:
    """A strategy of ``sector`` that trades: the one with the most trades so far."""
    members = [
        s for s in fleet.strategies if s.strategy.sector == sector and s.origin == "deployment"
    ]
    return max(members, key=lambda s: (s.trade_count, s.strategy.id)).strategy.id


async def window_after(client: MarketClient, time: int, bars: int) -> FleetReport:
    await client.advance(bars)
    return await client.fleet(start_time=time + 1)


async def test_a_disabled_strategy_is_flat_from_the_next_bar_and_its_capital_goes_to_its_peers(
    market,
):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(300)
    fleet = await client.fleet()
    target = a_busy_strategy(fleet)
    peers = [s for s in fleet.strategies if s.strategy.sector == "Tech"]
    assert strategy(fleet, target).weight == pytest.approx(0.25 / len(peers))
    result = await agent.execute(
        action("off", DisableStrategy(strategy_id=target)), plan_sequence=7
    )
    assert result.applied
    assert f"{target} disabled" in result.detail
    assert result.outcome == {"fleet_change": "1"}
    executed_at = fleet.clock_time
    later = await window_after(client, executed_at, 240)
    off = strategy(later, target)
    assert not off.enabled
    assert off.weight == 0
    assert off.position == 0
    # It earns the gap to the next open, where it is flattened at the fill cost, then nothing.
    after_exit = await client.fleet(start_time=later.start_time + 1)
    assert strategy(after_exit, target).pnl == 0
    for peer in peers:
        if peer.strategy.id != target:
            assert strategy(later, peer.strategy.id).weight == pytest.approx(
                0.25 / (len(peers) - 1)
            )
    # No trade of it starts after the bar it was disabled at.
    trades = await client.trades(strategy_id=target)
    assert all(t.entry_time <= executed_at for t in trades)
    assert later.changes == ()  # made before the window
    (change,) = (await client.fleet()).changes
    assert (change.cause.action_id, change.cause.plan_sequence) == ("a1", 7)


async def test_reweighting_moves_capital_inside_a_sector(market):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(300)
    fleet = await client.fleet()
    tech = sorted(s.strategy.id for s in fleet.strategies if s.strategy.sector == "Tech")
    heavy, rest = tech[0], tech[1:]
    result = await agent.execute(
        action("rw", ReweightStrategies(weights={heavy: float(len(rest))})), plan_sequence=2
    )
    assert result.applied
    later = await window_after(client, fleet.clock_time, 60)
    assert strategy(later, heavy).weight == pytest.approx(0.25 / 2)
    assert sum(strategy(later, s).weight for s in rest) == pytest.approx(0.25 / 2)
    # Weight for a strategy that carries none is refused, naming it.
    with pytest.raises(InvalidArgument) as bad:
        await agent.execute(
            action("rw2", ReweightStrategies(weights={"NOPE/x": 1.0})), plan_sequence=3
        )
    assert bad.value.field.endswith("weights[NOPE/x]")


async def test_a_halt_flattens_at_the_next_open_keeps_allocations_and_a_resume_restores(market):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(300)
    before = await client.fleet()
    assert any(s.position != 0 for s in before.strategies)
    halted = await agent.execute(action("halt", HaltTrading(scope="portfolio")), plan_sequence=1)
    assert "portfolio halted" in halted.detail
    during = await window_after(client, before.clock_time, 120)
    assert all(s.halted for s in during.sectors)
    assert [s.allocation for s in during.sectors] == [s.allocation for s in before.sectors]
    assert all(s.position == 0 and s.weight == 0 for s in during.strategies)
    assert all(s.gross_exposure == 0 for s in during.sectors)
    # Only the gap to the next open is earned after the halt: after that, equity stands still.
    flat = await client.fleet(start_time=during.start_time + 60 * 10**9)
    assert flat.pnl == pytest.approx(0.0, abs=1e-6)
    resumed = await agent.execute(
        action("resume", ResumeTrading(scope="portfolio"), action_id="a2"), plan_sequence=2
    )
    assert "portfolio resumed" in resumed.detail
    after = await window_after(client, during.clock_time, 240)
    assert not any(s.halted for s in after.sectors)
    assert any(s.position != 0 for s in after.strategies)
    assert after.pnl != pytest.approx(0.0, abs=1e-6)
    assert [c.halted for c in (await client.fleet()).changes] == [
        frozenset({"portfolio"}),
        frozenset(),
    ]


async def test_a_sector_halt_stops_only_that_sector(market):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(300)
    await agent.execute(action("h", HaltTrading(scope="Crypto")), plan_sequence=1)
    fleet = await window_after(client, (await client.fleet()).clock_time, 120)
    by_sector = {s.sector: s for s in fleet.sectors}
    assert by_sector["Crypto"].halted
    assert by_sector["Crypto"].gross_exposure == 0
    assert not by_sector["Tech"].halted
    with pytest.raises(InvalidArgument) as bad:
        await agent.execute(action("h2", HaltTrading(scope="Metals")), plan_sequence=2)
    assert bad.value.field.endswith("halt_trading.scope")


def _genome(seed: int):
    policy = Policy()
    defaults = policy.default_genome(StrategyFamily.MA_CROSSOVER).parameters
    parameters = {**defaults, "fast": 5 + seed, "slow": 30 + seed}
    return make_genome(StrategyFamily.MA_CROSSOVER, parameters, origin="test")


async def test_an_evolutions_candidates_paper_trade_as_shadows_and_a_promoted_one_trades(
    tmp_path,
):
    async with serving_app(APP, config(tmp_path)) as market:
        client = MarketClient(market.channel)
        agent = AgentClient(market.channel, name="market")
        await client.advance(120)
        start = await client.fleet()
        symbol = next(s.strategy.symbol for s in start.strategies if s.strategy.sector == "Tech")
        candidates = [Candidate(f"{symbol}/evo-{i}", "Tech", _genome(i)) for i in range(2)]
        change, applied = await client.add_shadows(
            candidates, evolution_id="evo-1", trials=400, action_key="sesa/evo-1"
        )
        assert applied
        assert "2 shadows added" in change.detail
        _, again = await client.add_shadows(
            candidates, evolution_id="evo-1", trials=400, action_key="sesa/evo-1"
        )
        assert not again
        later = await window_after(client, start.clock_time, 600)
        shadow = strategy(later, f"{symbol}/evo-0")
        assert shadow.stage is StrategyStage.SHADOW
        assert shadow.origin == "evolution/evo-1"
        assert shadow.trials == 400
        assert shadow.weight == 0
        assert shadow.pnl == 0  # no capital
        assert shadow.record is not None
        assert shadow.record.bar_count == 600
        assert shadow.record.trade_count > 0
        assert shadow.record.deflated_sharpe is not None
        trades = await client.trades(strategy_id=shadow.strategy.id)
        assert trades
        assert all(t.entry_time > start.clock_time for t in trades)
        # Promoting it in place of a deployed strategy moves that one's capital to it.
        replaced = a_busy_strategy(later)
        weight = strategy(later, replaced).weight
        result = await agent.execute(
            action(
                "promote",
                PromoteStrategy(strategy_id=shadow.strategy.id, replaces=replaced),
            ),
            plan_sequence=9,
        )
        assert f"replacing {replaced}" in result.detail
        promoted_at = later.clock_time
        after = await window_after(client, promoted_at, 120)
        now = strategy(after, shadow.strategy.id)
        assert now.stage is StrategyStage.PRODUCTION
        assert now.weight == pytest.approx(weight)
        assert now.pnl != 0
        assert now.record is not None
        assert now.record.start_time == promoted_at
        assert strategy(after, replaced).weight == 0
        # Promoting a strategy the book does not hold says what to do first.
        with pytest.raises(FailedPrecondition, match="must be a shadow first"):
            await agent.execute(
                action("p2", PromoteStrategy(strategy_id="TECH/none")), plan_sequence=10
            )
        book = [(s.strategy.id, s.stage, s.enabled, s.weight) for s in after.strategies]
    async with serving_app(APP, config(tmp_path)) as market:
        client = MarketClient(market.channel)
        await client.advance(120 + 600 + 120)
        restarted = await client.fleet()
        assert [(s.strategy.id, s.stage, s.enabled, s.weight) for s in restarted.strategies] == (
            book
        )


async def test_enabling_a_new_strategy_adds_a_shadow_with_a_valid_genome(market):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(120)
    result = await agent.execute(
        action(
            "en",
            EnableStrategy(strategy_id="NEWS/ma-x", sector="Energy", genome=_genome(3)),
        ),
        plan_sequence=1,
    )
    assert "added as a shadow" in result.detail
    fleet = await window_after(client, (await client.fleet()).clock_time, 60)
    added = strategy(fleet, "NEWS/ma-x")
    assert added.stage is StrategyStage.SHADOW
    assert added.strategy.symbol in {
        s.strategy.symbol for s in fleet.strategies if s.strategy.sector == "Energy"
    }
    with pytest.raises(InvalidArgument) as bad:
        await agent.execute(
            action("en2", EnableStrategy(strategy_id="X/y", sector="Energy")), plan_sequence=2
        )
    assert bad.value.field.endswith("enable_strategy.genome")


async def test_a_strategy_enabled_again_trades_from_the_next_bar(market):
    client = MarketClient(market.channel)
    agent = AgentClient(market.channel, name="market")
    await client.advance(300)
    fleet = await client.fleet()
    target = a_busy_strategy(fleet)
    weight = strategy(fleet, target).weight
    await agent.execute(action("off", DisableStrategy(strategy_id=target)), plan_sequence=1)
    off = await window_after(client, fleet.clock_time, 120)
    assert strategy(off, target).weight == 0
    result = await agent.execute(
        action("on", EnableStrategy(strategy_id=target), action_id="a2"), plan_sequence=2
    )
    assert f"{target} enabled" in result.detail
    on = await window_after(client, off.clock_time, 600)
    assert strategy(on, target).weight == pytest.approx(weight)
    assert strategy(on, target).pnl != 0
    trades = await client.trades(strategy_id=target)
    assert any(t.entry_time > off.clock_time for t in trades)
