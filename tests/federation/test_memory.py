"""The federation remembers executed plans, over real market, memory, agent and federation
servers (port 0): once the market clock has moved the outcome window past an executed exposure
change or halt, one episode per sector holds the decision, the sector's context at the plan's
time and the return that followed; the memory agent recommends from those episodes, and memory
being away fails no plan. The episode rules themselves run against fakes below."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import pytest

from federation.client import FederationClient
from federation.config import FederationConfig
from federation.engine import FINAL
from federation.memory import Noted, Pending, PlanOutcomes, acted_on, episodes, note
from federation.plan import Event, Plan, StatusUpdate
from federation.service import APP as FEDERATION
from market.client import MarketClient
from market.config import MarketConfig
from market.fleet import Cause, FleetChange, FleetReport, SectorBook
from market.service import APP as MARKET
from memory.advice import parse_decision
from memory.client import MemoryClient
from memory.context import sector_features
from qtmesh.base import contract as c
from qtmesh.base.bars import SectorSummary, Snapshot
from qtmesh.runtime.agent_service import AgentClient, agent_service
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import Running, serving, serving_app
from tests.helpers.federation import FakeAgent
from tests.helpers.memory import TIMEOUT, served_memory

HOUR = 3600 * 10**9
NOWHERE = "127.0.0.1:1"  # nothing listens there


def recommendation(rid: str, target: str, parameters) -> c.Recommendation:
    return c.Recommendation(
        id=rid,
        priority=c.Priority.MEDIUM,
        target=target,
        parameters=parameters,
        confidence=0.9,
        rationale="test",
    )


@contextlib.asynccontextmanager
async def planning(tmp_path: Path, market: Running, memory: str, agent: FakeAgent):
    async with serving([agent_service(agent, executes=())], name=agent.name) as served:
        channels = ChannelConfig(
            addresses={"market": market.address, agent.name: served.address, "memory": memory}
        )
        config = FederationConfig(
            data_dir=tmp_path / "federation",
            agents=(agent.name,),
            gap_update_interval_seconds=0.0,
            memory_outcome_window_hours=1.0,
        )
        async with serving_app(FEDERATION, config, channel_config=channels) as federation:
            yield FederationClient(federation.channel)


async def executed(client: FederationClient) -> Plan:
    """Plans once, executing, and returns the plan once every action completed."""
    plan = await client.generate_plan(execute=True)
    done = 0
    stream = client.subscribe(after_sequence=plan.sequence)
    async with asyncio.timeout(TIMEOUT):
        async for _sequence, event in stream:
            if isinstance(event, StatusUpdate) and event.status in FINAL:
                assert event.status is c.ActionStatus.COMPLETED, event.detail
                done += 1
            if done == len(plan.actions):
                break
    await stream.aclose()
    return plan


@pytest.fixture
async def market(tmp_path):
    config = MarketConfig(
        synthetic_days=3,
        # A market whose hour after the plan sees two sectors gain and two lose.
        seed=7,
        replay_start=0.5,
        data_dir=tmp_path / "market",
        fleet_warmup_bars=600,
    )
    async with serving_app(MARKET, config) as running:
        await MarketClient(running.channel).advance(300)
        yield running


async def test_executed_actions_are_remembered_with_the_return_that_followed(tmp_path, market):
    client = MarketClient(market.channel)
    at_plan = await client.snapshot()
    sectors = [s.sector for s in at_plan.sectors]
    *cut, halted = sectors
    risk = FakeAgent(
        "risk",
        [
            *(
                recommendation(f"cut-{s}", f"sector/{s}", c.AdjustExposure(sector=s, factor=0.5))
                for s in cut
            ),
            recommendation("halt", f"sector/{halted}", c.HaltTrading(scope=halted)),
        ],
    )
    # One plan leaves one episode per sector: the memory agent is set to advise from one.
    async with (
        served_memory(tmp_path, market, min_support=1) as (memory, store),
        served_memory(tmp_path, market, name="empty", min_support=1) as (empty, _),
        planning(tmp_path, market, memory.address, risk) as federation,
    ):
        plan = await executed(federation)
        # The outcome window (one market hour) passes; the federation follows the clock.
        await client.advance(61)
        stored = {e.sector: e for e in await store.wait_for(len(sectors))}

        now = await client.snapshot()
        memory_agent = AgentClient(memory.channel, name="memory")
        context = c.AgentContext(cycle_id="after")
        advised = await memory_agent.recommend(context)
        # The same context, and no memory of it: nothing to recommend.
        assert await AgentClient(empty.channel, name="memory").recommend(context) == []
        similar = {
            s: (await MemoryClient(memory.channel).recall(sector_features(now, s), k=5, sector=s))
            for s in sectors
        }

    assert set(stored) == set(sectors)
    report = await client.fleet()
    made = {
        ch.cause.action_id: ch for ch in report.changes if ch.cause.plan_sequence == plan.sequence
    }
    for action in plan.actions:
        (sector,) = [s for s in sectors if action.target == f"sector/{s}"]
        episode = stored[sector]
        change = made[action.id]
        window = await client.fleet(start_time=change.time + 1, end_time=change.time + HOUR)
        book = next(b for b in window.sectors if b.sector == sector)
        assert episode.decision == (
            "halt_trading" if sector == halted else "adjust_exposure factor=0.5"
        )
        assert dict(episode.features) == sector_features(at_plan, sector)
        assert episode.time == change.time == at_plan.clock_time
        assert episode.outcome == pytest.approx(book.roi)
        assert episode.tags["source"] == "federation"
        assert episode.tags["plan_id"] == plan.id
        assert episode.tags["action_id"] == action.id
        assert episode.tags["fleet_change"] == str(change.sequence)
        assert episode.tags["window_hours"] == "1"

    # The memory agent advises, per sector, what followed well in the contexts it recalls.
    expected = {
        s: parse_decision(stored[s].decision, s)
        for s in sectors
        if stored[s].outcome > 0 and similar[s] and similar[s][0].similarity >= 0.5
    }
    assert set(expected) == {"Crypto", "Energy"}  # the two sectors that gained
    assert {r.target.removeprefix("sector/"): r.parameters for r in advised} == expected
    for r in advised:
        assert f"'{stored[r.target.removeprefix('sector/')].decision}'" in r.rationale
        assert r.as_of_time == now.clock_time


async def test_memory_away_fails_no_plan(tmp_path, market):
    risk = FakeAgent(
        "risk",
        [recommendation("cut", "sector/Tech", c.AdjustExposure(sector="Tech", factor=0.5))],
    )
    async with planning(tmp_path, market, NOWHERE, risk) as federation:
        plan = await executed(federation)
        await MarketClient(market.channel).advance(61)
        # Planning and executing go on as before.
        again = await executed(federation)
    assert len(plan.actions) == len(again.actions) == 1


# -- the rules, against fakes --------------------------------------------------------------------

T = 1_800_000_000 * 10**9
SNAPSHOT = Snapshot(
    position=10,
    length=100,
    clock_time=T,
    quotes=(),
    sectors=(SectorSummary("Tech", 3, 0.01, 0.30), SectorSummary("Energy", 2, -0.02, 0.45)),
)


def action(aid: str, parameters, status=c.ActionStatus.PENDING) -> c.Action:
    return c.Action(
        id=aid,
        priority=c.Priority.MEDIUM,
        target="t",
        parameters=parameters,
        confidence=0.8,
        rationale="r",
        status=status,
        source_agents=("risk",),
    )


def plan_of(*actions: c.Action, hints=None) -> Plan:
    return Plan(
        id="gap-1",
        sequence=7,
        create_time=0,
        confidence=0.8,
        consensus_score=1.0,
        actions=actions,
        agents=(),
        context=c.AgentContext(cycle_id="c", as_of_time=T, hints=hints or {}),
        summary="",
    )


def report(changes=(), total_return=0.004) -> FleetReport:
    def book(sector: str, roi: float) -> SectorBook:
        return SectorBook(sector, 0.5, 2, roi, 0.0, -0.01, 0.2, 0.0, 3, 0.5, 0.5)

    return FleetReport(
        deployment_time=0,
        clock_time=T + 2 * HOUR,
        position=0,
        start_time=None,
        end_time=None,
        bar_count=60,
        capital=1e6,
        equity=1e6,
        total_return=total_return,
        pnl=0.0,
        sectors=(book("Tech", 0.012), book("Energy", -0.03)),
        strategies=(),
        missions=(),
        changes=tuple(changes),
    )


def change(sequence: int, time: int) -> FleetChange:
    return FleetChange(
        sequence=sequence,
        time=time,
        cause=Cause("k", "a1", 7),
        allocations={},
        mission=None,
        detail="",
    )


class FakeMarket:
    def __init__(self, fleet: FleetReport) -> None:
        self.report = fleet
        self.asked: list[tuple[int | None, int | None]] = []

    async def snapshot(self) -> Snapshot:
        return SNAPSHOT

    async def fleet(self, *, start_time=None, end_time=None, sector=""):
        self.asked.append((start_time, end_time))
        return self.report


class Kept:
    """A recorder that keeps what it is given."""

    def __init__(self) -> None:
        self.episodes = []

    def record(self, episode) -> None:
        self.episodes.append(episode)

    async def run(self) -> None:
        await asyncio.Event().wait()


def test_an_action_acts_on_its_sector_or_on_every_sector():
    sectors = ["Tech", "Energy"]
    assert acted_on(action("a", c.AdjustExposure("Tech", 1.5)), sectors) == (["Tech"], False)
    assert acted_on(action("a", c.HaltTrading()), sectors) == (sectors, True)
    assert acted_on(action("a", c.AdjustExposure("", 0.8)), sectors) == (sectors, True)
    mode = c.SwitchMode(c.StrategicMode.DEFENSIVE)
    assert acted_on(action("a", mode), sectors) == (sectors, True)
    # A sector the market does not have: its owner refuses it, nothing to remember.
    assert acted_on(action("a", c.HaltTrading("Metals")), sectors) == ([], False)


def test_a_plan_notes_what_memory_can_recommend_with_the_context_the_memory_agent_reads():
    plan = plan_of(
        action("a1", c.AdjustExposure("Tech", 1.5)),
        action("a2", c.ResumeTrading("Tech")),  # memory could not recommend it again
        action("a3", c.HaltTrading("Energy"), status=c.ActionStatus.SUPERSEDED),  # never runs
        action("a4", c.SwitchMode(c.StrategicMode.DEFENSIVE)),
        hints={"regime.Tech": "calm", "feature.breadth": "0.7", "regime.Energy": "not a name!"},
    )
    noted = {n.action.id: n for n in note(plan, SNAPSHOT)}
    assert set(noted) == {"a1", "a4"}
    tech = noted["a1"]
    assert tech.decision == "adjust_exposure factor=1.5"
    assert not tech.whole_fleet
    assert dict(tech.features["Tech"]) == sector_features(SNAPSHOT, "Tech") | {"breadth": 0.7}
    assert dict(tech.regimes) == {"Tech": "calm"}
    mode = noted["a4"]
    assert mode.decision == "switch_mode mode=defensive"
    assert mode.whole_fleet
    assert set(mode.features) == {"Tech", "Energy"}
    assert "Energy" not in mode.regimes


def test_an_episode_holds_the_sector_return_or_for_the_whole_fleet_the_fleets():
    [tech] = note(plan_of(action("a1", c.AdjustExposure("Tech", 0.5))), SNAPSHOT)
    [mode] = note(plan_of(action("a2", c.SwitchMode(c.StrategicMode.DEFENSIVE))), SNAPSHOT)
    fleet = report()
    [one] = episodes(pending(tech), fleet, window=HOUR)
    assert (one.sector, one.outcome, one.time) == ("Tech", 0.012, T)
    assert one.tags["sector_return"] == "0.012"
    assert one.tags["benchmark_return"] == "-0.01"
    both = {e.sector: e.outcome for e in episodes(pending(mode), fleet, window=HOUR)}
    assert both == {"Tech": 0.004, "Energy": 0.004}
    # Ids are stable: a retried store is recognised.
    assert episodes(pending(tech), fleet, window=HOUR)[0].id == one.id


def pending(noted: Noted) -> Pending:
    return Pending(noted, T, 0, exact=True)


async def test_a_window_runs_from_the_fleet_change_even_when_the_clock_lagged():
    market = FakeMarket(report(changes=[change(3, T)]))
    kept = Kept()
    lagging = [T - 60 * 10**9]
    outcomes = PlanOutcomes(
        market=market, recorder=kept, clock=lambda: (lagging[0], 1), window=HOUR
    )
    plan = plan_of(action("a1", c.AdjustExposure("Tech", 0.5)))
    await outcomes.observe(Event(1, plan=plan))
    done = StatusUpdate(
        sequence=2,
        plan_sequence=7,
        action_id="a1",
        action_type=c.ActionType.ADJUST_EXPOSURE,
        priority=c.Priority.MEDIUM,
        status=c.ActionStatus.COMPLETED,
        detail="",
        attempts=1,
        update_time=0,
        outcome={"fleet_change": "3"},
    )
    await outcomes.observe(Event(2, update=done))
    assert outcomes.pending == 1
    # The estimated window (from the lagging clock) ended, the change's own one has not.
    assert await outcomes.settle(lagging[0] + HOUR) == 0
    assert outcomes.pending == 1
    assert kept.episodes == []
    assert await outcomes.settle(T + HOUR) == 1
    assert market.asked[-1] == (T + 1, T + HOUR)
    [episode] = kept.episodes
    assert (episode.sector, episode.time, episode.outcome) == ("Tech", T, 0.012)
    # Completed once: nothing is left, and a repeated completion records nothing.
    await outcomes.observe(Event(3, update=dataclasses.replace(done, sequence=3)))
    assert outcomes.pending == 0
