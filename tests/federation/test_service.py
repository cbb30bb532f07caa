"""The federation over gRPC with real agent servers on port 0: fan-out outcomes, execution
(critical first, windows and staleness on the market clock, owners' outcomes), the resumable
stream (disconnects, restarts, stalled subscribers, filters), and history."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from federation.client import FederationClient
from federation.config import FederationConfig
from federation.plan import CallOutcome, Plan, StatusUpdate
from federation.store import PlanStore
from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.base import contract as c
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.status import error_info
from tests.helpers.federation import (
    DAY,
    EVOLVE,
    MARKET,
    TUNE,
    FakeAgent,
    MarketClock,
    mesh,
    rec,
    served_federation,
)


async def read_all(stream, into: list) -> None:
    """Appends every event of ``stream`` to ``into`` until the stream ends or fails."""
    async for event in stream:
        into.append(event)


async def take(stream, count: int) -> list:
    events = []
    async for event in stream:
        events.append(event)
        if len(events) == count:
            break
    return events


async def test_a_slow_dead_or_failing_agent_costs_its_vote_not_the_plan(tmp_path):
    good = FakeAgent("good", [rec("r1", EVOLVE, 0.9, c.Priority.HIGH)])
    slow = FakeAgent("slow", block=True)
    broken = FakeAgent("broken", error=RuntimeError("boom"))
    invalid = FakeAgent("invalid", [rec("x", EVOLVE, 0.5, depends_on=("x",))])
    killed = FakeAgent("killed", [rec("k", EVOLVE, 0.9)])
    async with mesh(
        tmp_path,
        [good, slow, broken, invalid],
        dead=("dead",),
        killed=(killed,),
        # Long enough that the agents that answer at once do so on a busy machine.
        agent_timeout_seconds=1.0,
    ) as fed:
        plan = await FederationClient(fed.channel).generate_plan()
        await asyncio.wait_for(slow.cancelled.wait(), timeout=10)
    outcomes = {r.agent: r for r in plan.agents}
    assert outcomes["good"].outcome is CallOutcome.OK
    assert outcomes["slow"].outcome is CallOutcome.TIMED_OUT
    assert 0.95 <= outcomes["slow"].latency_seconds < 5.0
    assert outcomes["dead"].outcome is CallOutcome.UNAVAILABLE
    assert outcomes["dead"].attempts == 2
    assert outcomes["killed"].outcome is CallOutcome.UNAVAILABLE
    assert outcomes["broken"].outcome is CallOutcome.ERROR
    assert outcomes["invalid"].outcome is CallOutcome.ERROR
    assert "is not another recommendation" in outcomes["invalid"].detail
    assert [a.action_type for a in plan.actions] == [c.ActionType.RUN_EVOLUTION]
    assert plan.actions[0].source_agents == ("good",)
    # Five of the six agents asked gave no vote: each counts as a zero-confidence one.
    assert plan.confidence == pytest.approx(0.9 / 6)


async def test_execution_is_streamed_and_stored_and_applied_once(tmp_path):
    owner = FakeAgent(
        "owner",
        [
            rec("tune", TUNE, 0.6, c.Priority.LOW),
            rec("evolve", EVOLVE, 0.8, c.Priority.HIGH, ("tune",)),
        ],
    )
    async with mesh(tmp_path, [owner]) as fed:
        client = FederationClient(fed.channel)
        # after_sequence=0: from the (empty) start of history, so nothing can be missed.
        plan_task = asyncio.ensure_future(take(client.subscribe(after_sequence=0), 5))
        plan = await client.generate_plan(execute=True)
        events = await asyncio.wait_for(plan_task, timeout=10)
        stored = await client.get_plan(plan.sequence)
    sequences = [s for s, _ in events]
    assert sequences == sorted(sequences)
    assert isinstance(events[0][1], Plan)
    assert events[0][0] == plan.sequence
    updates = [e for _, e in events[1:]]
    assert all(isinstance(u, StatusUpdate) for u in updates)
    tune_id = next(a.id for a in plan.actions if a.action_type is c.ActionType.TUNE_LEARNING)
    evolve_id = next(a.id for a in plan.actions if a.action_type is c.ActionType.RUN_EVOLUTION)
    order = [(u.action_id, u.status) for u in updates]
    # The dependency (tune) completes before its dependent (evolve) starts.
    assert order.index((tune_id, c.ActionStatus.COMPLETED)) < order.index(
        (evolve_id, c.ActionStatus.EXECUTING)
    )
    assert {a.status for a in stored.actions} == {c.ActionStatus.COMPLETED}
    assert sorted(owner.executed) == sorted(a.idempotency_key for a in plan.actions)


async def test_an_intent_offered_every_cycle_is_applied_once(tmp_path):
    proposal = dataclasses.replace(rec("p", EVOLVE, 0.8), intent_key="proposal-9")
    owner = FakeAgent("owner", [proposal])
    async with mesh(tmp_path, [owner]) as fed:
        client = FederationClient(fed.channel)
        stream = asyncio.ensure_future(take(client.subscribe(after_sequence=0), 6))
        plans = [await client.generate_plan(execute=True) for _ in range(2)]
        events = await asyncio.wait_for(stream, timeout=10)
    assert [p.actions[0].idempotency_key for p in plans] == ["owner/proposal-9"] * 2
    completed = [
        e.detail
        for _, e in events
        if isinstance(e, StatusUpdate) and e.status is c.ActionStatus.COMPLETED
    ]
    assert len(completed) == 2
    assert owner.executed == ["owner/proposal-9"]  # the second plan's action changed nothing
    assert sum("already applied" in d for d in completed) == 1


async def test_a_reconnecting_subscriber_gets_everything_after_its_sequence_exactly_once(tmp_path):
    agent = FakeAgent("owner", [rec("e", EVOLVE)])
    async with mesh(tmp_path, [agent]) as fed:
        client = FederationClient(fed.channel)
        first = [await client.generate_plan() for _ in range(3)]
        seen = await take(client.subscribe(after_sequence=0), 2)
        assert [s for s, _ in seen] == [first[0].sequence, first[1].sequence]
        more = [await client.generate_plan() for _ in range(3)]
        resumed = client.subscribe(after_sequence=seen[-1][0])
        history = await take(resumed, 4)
        live_task = asyncio.ensure_future(take(resumed, 1))
        latest = await client.generate_plan()
        (live,) = await asyncio.wait_for(live_task, timeout=10)
    assert [s for s, _ in history] == [p.sequence for p in (first[2], *more)]
    assert live[0] == latest.sequence


async def test_a_restart_in_the_middle_of_a_stream_loses_nothing(tmp_path):
    agent = FakeAgent("owner", [rec("e", EVOLVE)])
    async with mesh(tmp_path, [agent]) as fed:
        client = FederationClient(fed.channel)
        before = await client.generate_plan()
        stream = client.subscribe(after_sequence=0)
        first_sequence, _ = await stream.__anext__()
        stopping = asyncio.ensure_future(fed.server.stop())
        with pytest.raises(Unavailable, match="resume with after_sequence"):
            await stream.__anext__()
        await stopping
        received = [first_sequence]
    assert received == [before.sequence]
    async with mesh(tmp_path, [agent]) as fed:  # same history, a new process in effect
        client = FederationClient(fed.channel)
        after = [await client.generate_plan() for _ in range(2)]
        resumed = await take(client.subscribe(after_sequence=received[-1]), 2)
    assert [s for s, _ in resumed] == [p.sequence for p in after]
    assert after[0].sequence > before.sequence


async def test_a_stalled_subscriber_is_cut_off_without_slowing_anyone(tmp_path):
    # Plans of ~40 KB: a reader that stops reading fills its stream's flow-control window after
    # a couple of them; from then on the server cannot deliver to it and its queue fills.
    bulky = dataclasses.replace(rec("e", EVOLVE), rationale="x" * 40_000)
    async with mesh(tmp_path, [FakeAgent("owner", [bulky])], subscriber_queue=4) as fed:
        client = FederationClient(fed.channel)
        # Its own connection, without bandwidth probing, keeps the 64 KB default window: on a
        # shared, busy connection gRPC grows windows to megabytes.
        own = grpc.aio.insecure_channel(fed.address, options=[("grpc.http2.bdp_probe", 0)])
        stub = pb_grpc.FederationServiceStub(own)
        stalled = stub.SubscribePlans(pb.SubscribePlansRequest(after_sequence=0))
        await stalled.initial_metadata()
        healthy = asyncio.ensure_future(take(client.subscribe(after_sequence=0), 40))
        plans = [await client.generate_plan() for _ in range(40)]
        delivered = await asyncio.wait_for(healthy, timeout=30)
        assert [s for s, _ in delivered] == [p.sequence for p in plans]
        events: list = []
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await read_all(stalled, events)
        received = [e.sequence for e in events]
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        resume_after = int(error_info(failure.value).metadata["resume_after_sequence"])
        assert resume_after < plans[-1].sequence, "the stalled subscriber must have been cut off"
        assert received == [p.sequence for p in plans if p.sequence <= resume_after]
        rest = await take(client.subscribe(after_sequence=resume_after), len(plans) - len(received))
        assert [s for s, _ in rest] == [p.sequence for p in plans if p.sequence > resume_after]
        await own.close()


async def test_filters_by_priority_and_action_type(tmp_path):
    agent = FakeAgent(
        "owner",
        [
            rec("low", TUNE, 0.5, c.Priority.LOW),
            rec("crit", c.HaltTrading(), 0.9, c.Priority.CRITICAL),
        ],
    )
    async with mesh(
        tmp_path, [agent], owners={"HALT_TRADING": "owner", "TUNE_LEARNING": "owner"}
    ) as fed:
        client = FederationClient(fed.channel)
        critical = client.subscribe(after_sequence=0, min_priority=c.Priority.CRITICAL)
        tuning = client.subscribe(after_sequence=0, action_types=[c.ActionType.TUNE_LEARNING])
        plan = await client.generate_plan(execute=True)
        (_, only_critical), *critical_updates = await take(critical, 3)
        (_, only_tuning), *tuning_updates = await take(tuning, 3)
    assert [a.action_type for a in only_critical.actions] == [c.ActionType.HALT_TRADING]
    assert [a.action_type for a in only_tuning.actions] == [c.ActionType.TUNE_LEARNING]
    assert {u.action_type for _, u in critical_updates} == {c.ActionType.HALT_TRADING}
    assert {u.action_type for _, u in tuning_updates} == {c.ActionType.TUNE_LEARNING}
    assert len(plan.actions) == 2


async def test_a_final_status_is_final_and_a_repeated_report_changes_nothing(tmp_path):
    agent = FakeAgent("owner", [rec("e", EVOLVE)])
    async with mesh(tmp_path, [agent]) as fed:
        client = FederationClient(fed.channel)
        plan = await client.generate_plan()
        action_id = plan.actions[0].id
        executing = await client.report_status(plan.sequence, action_id, c.ActionStatus.EXECUTING)
        again = await client.report_status(plan.sequence, action_id, c.ActionStatus.EXECUTING)
        assert again == executing  # the update that set it; nothing new recorded
        done = await client.report_status(plan.sequence, action_id, c.ActionStatus.COMPLETED)
        assert (
            await client.report_status(plan.sequence, action_id, c.ActionStatus.COMPLETED) == done
        )
        for status in (c.ActionStatus.EXECUTING, c.ActionStatus.FAILED):
            with pytest.raises(FailedPrecondition, match=f"action {action_id} of plan"):
                await client.report_status(plan.sequence, action_id, status)
        events = await take(client.subscribe(after_sequence=plan.sequence), 2)
        later = asyncio.ensure_future(take(client.subscribe(after_sequence=done), 1))
        newer = await client.generate_plan()
        (next_event,) = await asyncio.wait_for(later, timeout=10)
    assert [s for s, _ in events] == [executing, done]
    assert next_event[0] == newer.sequence  # no event between the completion and the next plan


async def test_history_pages_and_reports(tmp_path):
    agent = FakeAgent("owner", [rec("e", EVOLVE, 0.7, c.Priority.HIGH)])
    async with mesh(tmp_path, [agent]) as fed:
        client = FederationClient(fed.channel)
        plans = [await client.generate_plan() for _ in range(7)]
        listed = [p async for p in client.list_plans(page_size=3)]
        assert [p.sequence for p in listed] == [p.sequence for p in plans]
        critical = [p async for p in client.list_plans(min_priority=c.Priority.CRITICAL)]
        assert critical == []
        window = [
            p
            async for p in client.list_plans(
                start_time=plans[2].create_time, end_time=plans[4].create_time
            )
        ]
        assert [p.sequence for p in window] == [plans[2].sequence, plans[3].sequence]

        target = plans[0]
        action_id = target.actions[0].id
        await client.report_status(target.sequence, action_id, c.ActionStatus.EXECUTING, "outside")
        await client.report_status(target.sequence, action_id, c.ActionStatus.COMPLETED, "done")
        assert (await client.get_plan(target.sequence)).action(
            action_id
        ).status is c.ActionStatus.COMPLETED

        with pytest.raises(NotFound):
            await client.get_plan(10_000)
        with pytest.raises(InvalidArgument) as failure:
            await client.report_status(target.sequence, "nope", c.ActionStatus.FAILED)
        assert failure.value.field == "action_id"
        with pytest.raises(InvalidArgument) as failure:
            await client.report_status(target.sequence, action_id, c.ActionStatus.SUPERSEDED)
        assert failure.value.field == "status"
        stub = pb_grpc.FederationServiceStub(fed.channel)
        for request, field in (
            (pb.ListPlansRequest(page_size=-1), "page_size"),
            (pb.ListPlansRequest(min_priority=9), "min_priority"),
            (pb.ListPlansRequest(page_token="garbage!"), "page_token"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raw:
                await stub.ListPlans(request)
            assert error_info(raw.value).metadata["field"] == field
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await take(stub.SubscribePlans(pb.SubscribePlansRequest(after_sequence=10**9)), 1)
        assert error_info(raw.value).metadata["field"] == "after_sequence"
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            await take(
                stub.SubscribePlans(
                    pb.SubscribePlansRequest(action_types=[agent_pb2.ACTION_TYPE_UNSPECIFIED])
                ),
                1,
            )
        assert error_info(raw.value).metadata["field"] == "action_types[0]"


class _PausedStore(PlanStore):
    """Holds the next history read at ``pause`` until ``resume`` is set."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.armed = False
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()
        self.caught_up = asyncio.Event()  # a history read found nothing more

    async def run(self, work, *args):
        reading = getattr(work, "__name__", "") == "events_after"
        if self.armed and reading:
            self.armed = False
            self.paused.set()
            await self.resume.wait()
        result = await super().run(work, *args)
        if reading and not result:
            self.caught_up.set()
        return result


class _StreamContext:
    async def send_initial_metadata(self, metadata) -> None:
        return None


async def test_a_subscriber_reading_history_is_not_cut_off_by_live_events_meanwhile(tmp_path):
    from federation.engine import Federation
    from federation.service import FederationServicer

    agent = FakeAgent("owner", [rec("e", EVOLVE)])
    store = _PausedStore(create_engine(sqlite_url(tmp_path / "federation.db")))
    config = FederationConfig(
        agents=("owner",),
        owners={"RUN_EVOLUTION": "owner"},
        data_dir=tmp_path,
        subscriber_queue=2,
        history_page=1,
    )
    fed = Federation(config=config, agents={"owner": agent}, owners={}, store=store)
    history = [await fed.generate_plan() for _ in range(3)]
    stream = FederationServicer(fed).SubscribePlans(
        pb.SubscribePlansRequest(after_sequence=0), _StreamContext()
    )
    received = [pb.SubscribePlansResponse.FromString(await anext(stream))]
    store.armed = True
    following = asyncio.ensure_future(anext(stream))
    await store.paused.wait()
    live = [await fed.generate_plan() for _ in range(4)]  # twice the subscriber's queue
    store.resume.set()
    received.append(pb.SubscribePlansResponse.FromString(await following))
    while len(received) < len(history) + len(live):
        received.append(pb.SubscribePlansResponse.FromString(await anext(stream)))
    # Caught up, the stream goes on live instead of cutting off a subscriber that kept up.
    following = asyncio.ensure_future(anext(stream))
    await store.caught_up.wait()
    latest = await fed.generate_plan()
    received.append(pb.SubscribePlansResponse.FromString(await following))
    await stream.aclose()
    await fed.close()
    assert [e.sequence for e in received] == [p.sequence for p in (*history, *live, latest)]


class _FlakyMarket:
    """A market whose first snapshot fails with a bug, not a MeshError."""

    def __init__(self) -> None:
        self.calls = 0
        self.followed = asyncio.Event()

    async def snapshot(self):
        self.calls += 1
        if self.calls == 1:
            raise ValueError("malformed snapshot")
        return dataclasses.make_dataclass("Snapshot", ["clock_time", "position", "quotes"])(
            1234, 7, ()
        )

    async def stream_bars(self, symbols=(), *, after_position):
        self.followed.set()
        await asyncio.Event().wait()
        yield  # pragma: no cover


async def test_the_market_clock_is_followed_again_after_an_unexpected_error():
    from federation.service import MarketClockWatcher

    market = _FlakyMarket()
    watcher = MarketClockWatcher(market, backoff=0.0)
    running = asyncio.ensure_future(watcher.run())
    await asyncio.wait_for(market.followed.wait(), timeout=10)
    assert watcher.latest() == (1234, 7)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def take_until(stream, done) -> list:
    """Events of ``stream`` up to and including the first (sequence, event) ``done`` accepts."""
    events = []
    async for event in stream:
        events.append(event)
        if done(event):
            break
    return events


def settles(action_id: str):
    """Accepts the status update that ends ``action_id``."""
    final = (c.ActionStatus.COMPLETED, c.ActionStatus.FAILED, c.ActionStatus.EXPIRED)

    def done(event) -> bool:
        update = event[1]
        return (
            isinstance(update, StatusUpdate)
            and update.action_id == action_id
            and (update.status in (*final, c.ActionStatus.BLOCKED))
        )

    return done


async def test_an_action_not_started_in_its_market_time_window_expires(tmp_path):
    clock = MarketClock(MARKET)
    gate = asyncio.Event()
    owner = FakeAgent(
        "owner",
        [
            rec("evolve", EVOLVE, 0.9, c.Priority.HIGH),
            rec("tune", TUNE, 0.6, c.Priority.MEDIUM),
            # Its data is five market days old: superseded, never sent.
            rec(
                "up",
                c.AdjustExposure(sector="Crypto", factor=1.3),
                0.9,
                c.Priority.HIGH,
                as_of_time=MARKET - 5 * DAY,
            ),
        ],
        gate=gate,
        gated=(c.ActionType.RUN_EVOLUTION,),
    )
    async with served_federation(
        tmp_path, [owner], market_clock=clock, max_concurrent_actions=1
    ) as (server, _fed):
        client = FederationClient(server.channel)
        plan = await client.generate_plan(execute=True)
        by_type = {a.action_type: a for a in plan.actions}
        evolve = by_type[c.ActionType.RUN_EVOLUTION]
        tune = by_type[c.ActionType.TUNE_LEARNING]
        stale = by_type[c.ActionType.ADJUST_EXPOSURE]
        assert plan.context.as_of_time == MARKET
        assert evolve.execute_by_time == MARKET + 60 * 10**9
        assert tune.execute_by_time == MARKET + 300 * 10**9
        assert stale.status is c.ActionStatus.SUPERSEDED
        assert "5d of market time" in stale.status_detail
        # The evolution holds the only slot while the market moves past the tuning's window.
        await owner.wait_executing(1)
        stream = client.subscribe(after_sequence=plan.sequence)
        clock.now = MARKET + 300 * 10**9 + 1
        gate.set()
        events = await asyncio.wait_for(take_until(stream, settles(tune.id)), timeout=10)
        stored = await client.get_plan(plan.sequence)
        with pytest.raises(FailedPrecondition, match="already expired"):
            await client.report_status(plan.sequence, tune.id, c.ActionStatus.COMPLETED)
    expired = events[-1][1]
    assert expired.status is c.ActionStatus.EXPIRED
    assert expired.detail == (
        "not started by 2027-01-15T08:05:00Z: market clock at 2027-01-15T08:05:00.000000001Z"
    )
    assert stored.action(tune.id).status is c.ActionStatus.EXPIRED
    assert stored.action(evolve.id).status is c.ActionStatus.COMPLETED
    assert owner.executing == [evolve.id]  # never run late, the stale one never sent


async def test_critical_actions_complete_before_the_others_are_sent(tmp_path):
    gate = asyncio.Event()
    owner = FakeAgent(
        "owner",
        [
            rec("evolve", EVOLVE, 0.9, c.Priority.HIGH),
            rec("tune", TUNE, 0.9, c.Priority.LOW),
            rec("halt", c.HaltTrading(scope="Crypto"), 0.9, c.Priority.CRITICAL),
        ],
        gate=gate,
        gated=(c.ActionType.HALT_TRADING,),
    )
    async with served_federation(tmp_path, [owner], market_clock=MarketClock(MARKET)) as (
        server,
        _fed,
    ):
        client = FederationClient(server.channel)
        stream = client.subscribe(after_sequence=0)
        plan = await client.generate_plan(execute=True)
        halt = next(a for a in plan.actions if a.priority is c.Priority.CRITICAL)
        await owner.wait_executing(1)
        for _ in range(50):
            await asyncio.sleep(0)  # every chance for the others to be sent beside it
        assert owner.executing == [halt.id]
        gate.set()
        events = await asyncio.wait_for(take(stream, 1 + 2 * len(plan.actions)), timeout=10)
    order = [(u.action_id, u.status) for _, u in events[1:]]
    done = order.index((halt.id, c.ActionStatus.COMPLETED))
    others = [a.id for a in plan.actions if a.id != halt.id]
    assert all(order.index((a, c.ActionStatus.EXECUTING)) > done for a in others)


async def test_an_owners_outcome_is_kept_on_the_action_for_subscribers_and_history(tmp_path):
    outcome = {"evolution_id": "evo-9", "candidates": "3"}
    owner = FakeAgent("owner", [rec("evolve", EVOLVE, 0.8)], outcome=outcome)
    async with served_federation(tmp_path, [owner], market_clock=MarketClock(MARKET)) as (
        server,
        _fed,
    ):
        client = FederationClient(server.channel)
        stream = asyncio.ensure_future(take(client.subscribe(after_sequence=0), 3))
        plan = await client.generate_plan(execute=True)
        events = await asyncio.wait_for(stream, timeout=10)
        # A subscriber that sees the completion finds the outcome on the plan's action.
        (_, completed) = events[-1]
        assert completed.status is c.ActionStatus.COMPLETED
        stored = await client.get_plan(completed.plan_sequence)
        listed = [p async for p in client.list_plans()]
    assert dict(stored.action(completed.action_id).outcome) == outcome
    assert [dict(a.outcome) for p in listed for a in p.actions] == [outcome]
    assert dict(plan.actions[0].outcome) == {}  # the plan as created had none yet


async def test_the_completed_status_update_carries_the_outcome_on_the_stream(tmp_path):
    outcome = {"evolution_id": "evo-9"}
    owner = FakeAgent("owner", [rec("evolve", EVOLVE, 0.8)], outcome=outcome)
    async with served_federation(tmp_path, [owner], market_clock=MarketClock(MARKET)) as (
        server,
        _fed,
    ):
        client = FederationClient(server.channel)
        stream = asyncio.ensure_future(take(client.subscribe(after_sequence=0), 3))
        await client.generate_plan(execute=True)
        (_, completed) = (await asyncio.wait_for(stream, timeout=10))[-1]
    assert dict(completed.outcome) == outcome
