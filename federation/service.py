"""The federation gRPC service: planning on demand and on a timer, history, and the resumable
Global Action Plan stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import random
import signal
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Iterator
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message
from opentelemetry import trace

from federation import _convert as convert
from federation.config import ENV_PREFIX, FederationConfig
from federation.engine import Federation, Observer
from federation.lease import Lease, follow_history
from federation.memory import PlanOutcomes
from federation.plan import Event, Plan, StatusUpdate
from federation.store import PlanStore
from market.client import MarketClient
from memory.client import MemoryClient
from memory.recorder import Recorder
from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.api.federation.v1 import federation_pb2_grpc as pb_grpc
from qtmesh.base import paging
from qtmesh.base.contract import ActionType, Priority
from qtmesh.base.convert import enum_from_proto, optional_time_from_proto
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.base.hub import Subscription, replay_then_follow
from qtmesh.base.reconnect import follow_forever
from qtmesh.base.signal import ChangeSignal
from qtmesh.base.storage import create_engine
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.interceptors import request_scope
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service

_CACHED_MESSAGES = 512
_CACHED_PLANS = 64
_log = structlog.get_logger("federation")
# The health name SERVING while this replica leads the history (federation/lease.py).
LEADER_ROLE = "federation.leader"


class _Filter:
    """A subscriber's filter: actions of at least ``min_priority`` and of ``types``."""

    def __init__(self, min_priority: Priority | None, types: Collection[ActionType]) -> None:
        self.min_priority = min_priority
        self.types = frozenset(types)
        self.key = (int(min_priority or 0), tuple(sorted(t.value for t in self.types)))

    @property
    def active(self) -> bool:
        return self.min_priority is not None or bool(self.types)

    def accepts(self, action_type: ActionType, priority: Priority) -> bool:
        if self.min_priority is not None and priority < self.min_priority:
            return False
        return not self.types or action_type in self.types


class _PlanLog:
    """The plan stream's events as a :class:`~qtmesh.base.hub.ResumableLog`: the store keeps
    every event (a write commits before it is published), and the hub offers the new ones."""

    def __init__(self, federation: Federation, *, draining: Callable[[], bool]) -> None:
        self._store = federation.store
        self._hub = federation.hub
        self._draining = draining

    @property
    def queue_size(self) -> int:
        return self._hub.queue_size

    @property
    def draining(self) -> bool:
        return self._draining()

    def subscribe(self) -> Subscription[Event]:
        return self._hub.subscribe()

    def unsubscribe(self, subscription: Subscription[Event]) -> None:
        self._hub.unsubscribe(subscription)

    async def bounds(self) -> tuple[int, int]:
        return 0, await self._store.run(self._store.last_sequence)  # nothing is dropped

    async def page(self, after: int, limit: int) -> tuple[int, list[Event]]:
        return 0, await self._store.run(self._store.events_after, after, limit)


class FederationServicer(pb_grpc.FederationServiceServicer):
    def __init__(self, federation: Federation) -> None:
        self._federation = federation
        # Serialized once per event and filter: with a thousand subscribers, serializing per
        # stream would cost more than the rest of the delivery.
        self._messages: OrderedDict[tuple, bytes | None] = OrderedDict()
        # The newest plans' messages as created: answered and published, converted once.
        self._plans: OrderedDict[int, pb.GlobalActionPlan] = OrderedDict()
        self._draining = False

    def drain(self) -> None:
        self._draining = True
        self._federation.hub.close_all()

    async def GeneratePlan(
        self, request: pb.GeneratePlanRequest, context: grpc.aio.ServicerContext
    ) -> pb.GeneratePlanResponse:
        plan = await self._federation.generate_plan(
            hints=dict(request.hints), execute=request.execute
        )
        return pb.GeneratePlanResponse(plan=self._plan_message(plan))

    async def GetPlan(
        self, request: pb.GetPlanRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPlanResponse:
        if request.sequence <= 0:
            raise InvalidArgument("sequence", "must be positive")
        store = self._federation.store
        plan = await store.run(store.get_plan, request.sequence)
        return pb.GetPlanResponse(plan=convert.plan_to_proto(plan))

    async def ListPlans(
        self, request: pb.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPlansResponse:
        size = paging.page_size(request.page_size, default=50, maximum=500)
        start = optional_time_from_proto(request, "start_time")
        end = optional_time_from_proto(request, "end_time")
        if start is not None and end is not None and end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        priority = _priority(request.min_priority, "min_priority")
        query = {"start": start, "end": end, "priority": int(priority or 0)}
        after = 0
        if request.page_token:
            after = paging.decode_token(request.page_token, expect=query)["after"]
        store = self._federation.store
        plans = await store.run(
            lambda: store.list_plans(
                after_sequence=after,
                limit=size + 1,
                start_time=start,
                end_time=end,
                min_priority=priority,
            )
        )
        more = len(plans) > size
        plans = plans[:size]
        token = paging.encode_token(**query, after=plans[-1].sequence) if more else ""
        return pb.ListPlansResponse(
            plans=[convert.plan_to_proto(p) for p in plans], next_page_token=token
        )

    async def ReportActionStatus(
        self, request: pb.ReportActionStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportActionStatusResponse:
        if request.plan_sequence <= 0:
            raise InvalidArgument("plan_sequence", "must be positive")
        if not request.action_id:
            raise InvalidArgument("action_id", "must not be empty")
        status = enum_from_proto(
            convert.ActionStatus, agent_pb2.ActionStatus, request.status, field="status"
        )
        update = await self._federation.report_status(
            request.plan_sequence, request.action_id, status, request.detail[:2000]
        )
        return pb.ReportActionStatusResponse(sequence=update.sequence)

    async def SubscribePlans(
        self, request: pb.SubscribePlansRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Yields serialized SubscribePlansResponse messages (see ``services_of``)."""
        priority = _priority(request.min_priority, "min_priority")
        types = [
            enum_from_proto(ActionType, agent_pb2.ActionType, t, field=f"action_types[{i}]")
            for i, t in enumerate(request.action_types)
        ]
        filter_ = _Filter(priority, types)
        after = request.after_sequence if request.HasField("after_sequence") else None
        # Headers once the request is known good, so a subscriber knows it is connected.
        events = replay_then_follow(
            _PlanLog(self._federation, draining=lambda: self._draining),
            after,
            page_size=self._federation.config.history_page,
            connected=lambda: context.send_initial_metadata(()),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                message = self._message(event, filter_)
                if message is not None:
                    yield message

    def _plan_message(self, plan: Plan) -> pb.GlobalActionPlan:
        """The message of a plan as created (cached for the newest). Do not modify it."""
        cached = self._plans.get(plan.sequence)
        if cached is not None and cached.id == plan.id:
            return cached
        message = convert.plan_to_proto(plan)
        self._plans[plan.sequence] = message
        while len(self._plans) > _CACHED_PLANS:
            self._plans.popitem(last=False)
        return message

    def _message(self, event: Event, filter_: _Filter) -> bytes | None:
        """The event as this filter sees it; built once per event and filter, for everyone."""
        key = (event.sequence, filter_.key)
        if key in self._messages:
            return self._messages[key]
        message = None
        if event.plan is not None:
            plan = self._plan_message(event.plan)
            if filter_.active:
                filtered = pb.GlobalActionPlan()
                filtered.CopyFrom(plan)
                del filtered.actions[:]
                filtered.actions.extend(
                    a
                    for a, domain in zip(plan.actions, event.plan.actions, strict=True)
                    if filter_.accepts(domain.action_type, domain.priority)
                )
                plan = filtered
            if plan.actions or not filter_.active:
                message = pb.SubscribePlansResponse(sequence=event.sequence, plan=plan)
        elif event.update is not None and filter_.accepts(
            event.update.action_type, event.update.priority
        ):
            message = pb.SubscribePlansResponse(
                sequence=event.sequence, status_update=convert.status_to_proto(event.update)
            )
        serialized = message.SerializeToString() if message is not None else None
        self._messages[key] = serialized
        while len(self._messages) > _CACHED_MESSAGES:
            self._messages.popitem(last=False)
        return serialized


def _priority(value: int, field: str) -> Priority | None:
    if value == 0:
        return None
    return enum_from_proto(Priority, agent_pb2.Priority, value, field=field)


def _uses(config: FederationConfig) -> list[Uses]:
    """An agent client for each agent asked or owning an action type, and the market's clock.
    The federation retries UNAVAILABLE itself, within its budget, and reports the outcome:
    transparent channel retries would turn a dead agent into a timeout."""
    agents = sorted(set(config.asked_agents) | set(config.owners.values()))
    return [
        *(
            Uses(
                service=name,
                client=functools.partial(AgentClient, name=name),
                timeout=config.agent_timeout_seconds,
                retry_unavailable=False,
            )
            for name in agents
        ),
        Uses(service="market", client=MarketClient, timeout=5.0, retry_unavailable=False),
        # Stores plan outcomes (federation/memory.py); its recorder retries, in the background.
        *(
            [Uses(service="memory", client=MemoryClient, timeout=5.0)]
            if config.record_to_memory
            else []
        ),
    ]


async def _wait_for_lease(lease: Lease, *, initial: float = 0.2, most: float = 5.0) -> None:
    """Waits in line for the lease, again (after a backoff) whenever the wait's session fails."""
    delay = initial
    while True:
        try:
            await lease.acquire()
            return
        except Unavailable as exc:
            _log.warning("lost the wait for the lease; waiting again", error=exc.message)
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(most, 2 * delay)


class _Holder:
    """Who holds the lease, as a follower names it: the name last read, read again in the
    background when a follower names it and the name is older than ``max_age`` seconds."""

    def __init__(self, lease: Lease, *, max_age: float = 1.0) -> None:
        self._lease = lease
        self._max_age = max_age
        self._name = "unknown"
        self._read_at = -math.inf
        self._reading: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        self._name = await asyncio.to_thread(self._lease.holder)
        self._read_at = time.monotonic()

    def name(self) -> str:
        stale = time.monotonic() - self._read_at > self._max_age
        if stale and (self._reading is None or self._reading.done()):
            self._reading = asyncio.ensure_future(self.refresh())
        return self._name


def stop_this_process(why: str) -> None:
    """A replica that lost its lease stops (SIGTERM to itself: the server drains); restarted,
    it follows again."""
    os.kill(os.getpid(), signal.SIGTERM)


async def build(ctx: Context[FederationConfig]) -> Built:
    config = ctx.config
    store = await asyncio.to_thread(config.open, lambda url: PlanStore(create_engine(url)))
    clients = {
        name: ctx.client(name, AgentClient)
        for name in set(config.asked_agents) | set(config.owners.values())
    }
    market_clock = MarketClockWatcher(ctx.client("market", MarketClient))
    federation = Federation(
        config=config,
        agents={name: clients[name] for name in config.asked_agents},
        owners={name: clients[name] for name in set(config.owners.values())},
        store=store,
        market_clock=market_clock.latest,
        sync_clock=market_clock.sync,
        observer=CycleObserver(ctx.metrics, ctx.tracer),
    )
    ctx.metrics.read(
        "qtmesh_plan_subscribers",
        "Live subscribers of the plan stream",
        lambda: len(federation.hub),
    )
    ctx.metrics.read(
        "qtmesh_plan_subscriber_lag",
        "Events queued for the live plan-stream subscriber furthest behind",
        federation.hub.backlog,
    )
    servicer = FederationServicer(federation)
    leader_gauge = ctx.metrics.gauge(
        "qtmesh_federation_leader", "1 while this replica leads the federation's history"
    )

    def leading(held: bool) -> None:
        """Told in the gauge and in grpc.health.v1 as ``federation.leader`` (LEADER_ROLE)."""
        leader_gauge.set(1 if held else 0)
        ctx.roles.set(LEADER_ROLE, held)

    leading(False)

    def leader_work() -> list[asyncio.Future[Any]]:
        """What only the leader runs: planning cycles, and recording outcomes to memory."""
        work: list[asyncio.Future[Any]] = []
        if config.gap_update_interval_seconds > 0:
            work.append(asyncio.ensure_future(_after_first_interval(federation)))
        if config.record_to_memory:
            outcomes = PlanOutcomes(
                market=ctx.client("market", MarketClient),
                recorder=Recorder(ctx.client("memory", MemoryClient), writer="federation"),
                clock=market_clock.latest,
                window=config.memory_outcome_window,
            )
            work.append(asyncio.ensure_future(outcomes.follow(federation.hub, market_clock.moved)))
        return work

    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(market_clock.run())]
    lease = None
    if config.elects_leader:
        lease = Lease(config.url, heartbeat_seconds=config.lease_heartbeat_seconds)
        # The first replica leads before it serves; the others follow until the lease is free,
        # publishing what the leader writes from now on (subscribers read the past from the
        # store).
        federation.leading = False
        federation.published = await store.run(store.last_sequence)
        if await lease.try_acquire():
            await federation.take_over()
        tasks.append(
            asyncio.ensure_future(
                _lead(federation, lease, leader_work, tasks, leading, stop_this_process)
            )
        )
    else:
        leading(True)
        # What a crash left executing settles with its owners (federation/execution.py).
        tasks.append(asyncio.ensure_future(federation.resume_executions()))
        tasks += leader_work()

    def drain() -> None:
        for task in tasks:
            task.cancel()
        servicer.drain()

    async def close() -> None:
        for task in tasks:
            task.cancel()
        # Each step runs whatever the one before raised, so the database is released on every
        # shutdown (the runtime closes the channels after this).
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            await federation.close()
        finally:
            # Held until the interrupted actions are recorded: the next leader resumes the rest.
            if lease is not None:
                await lease.release()
            store.close()

    return Built(services=[service_of(servicer)], drain=drain, close=close)


async def _lead(
    federation: Federation,
    lease: Lease,
    leader_work: Callable[[], list[asyncio.Future[Any]]],
    tasks: list[asyncio.Future[Any]],
    leading: Callable[[bool], None],
    lost: Callable[[str], None],
) -> None:
    """Follows the history until this replica holds the lease (unless it does already), then
    leads until it loses it (federation/lease.py)."""
    if not federation.leading:
        holder = _Holder(lease)
        await holder.refresh()
        federation.leader = holder.name
        _log.info("following the federation's history", leader=holder.name())
        following = asyncio.ensure_future(follow_history(lease.url, federation.publish_stored))
        try:
            await _wait_for_lease(lease)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        resumed = await federation.take_over()
        _log.info("took the federation's history over", resumed_executions=resumed)
    leading(True)
    tasks += leader_work()
    why = await lease.hold()
    # Another replica may lead already: write nothing more, and stop.
    federation.leading = False
    leading(False)
    _log.critical("lost the federation's lease; stopping", reason=why)
    lost(why)


class CycleObserver(Observer):
    """The federation's figures, and each planning cycle as one trace: the cycle's span is the
    parent of every agent's Recommend and of every ExecuteAction the cycle starts, and the cycle
    has one request id (the GeneratePlan caller's, or its own on the timer) across its hops."""

    def __init__(self, metrics: Metrics, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._seconds = metrics.histogram(
            "qtmesh_gap_cycle_seconds", "Duration of a planning cycle, to the plan's publication"
        )
        self._plans = metrics.counter("qtmesh_plans_total", "Plans published")
        self._calls = metrics.counter(
            "qtmesh_agent_calls_total",
            "Agents' Recommend calls of the planning cycles, by outcome",
            ("agent", "outcome"),
        )
        self._actions = metrics.counter(
            "qtmesh_actions_total",
            "Actions entering a status (planned ones included), by type and status",
            ("type", "status"),
        )

    @contextlib.contextmanager
    def cycle(self) -> Iterator[object]:
        with request_scope(), self._tracer.start_as_current_span("gap.cycle") as span:
            yield span

    def planned(self, plan: Plan, seconds: float) -> None:
        self._seconds.observe(seconds)
        self._plans.inc()
        for report in plan.agents:
            self._calls.labels(report.agent, report.outcome.name.lower()).inc()
        for action in plan.actions:
            self._actions.labels(action.action_type.name.lower(), action.status.name.lower()).inc()
        trace.get_current_span().set_attributes(
            {
                "qtmesh.plan.sequence": plan.sequence,
                "qtmesh.plan.id": plan.id,
                "qtmesh.plan.actions": len(plan.actions),
            }
        )

    def changed(self, update: StatusUpdate) -> None:
        self._actions.labels(update.action_type.name.lower(), update.status.name.lower()).inc()


def service_of(servicer: FederationServicer) -> Service:
    """FederationService; SubscribePlans has no response serializer: it yields bytes serialized
    once per event, which gRPC sends as they are."""

    def unary(
        method: str, request: type[Message], response: type[Message]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    handlers = {
        "GeneratePlan": unary("GeneratePlan", pb.GeneratePlanRequest, pb.GeneratePlanResponse),
        "GetPlan": unary("GetPlan", pb.GetPlanRequest, pb.GetPlanResponse),
        "ListPlans": unary("ListPlans", pb.ListPlansRequest, pb.ListPlansResponse),
        "ReportActionStatus": unary(
            "ReportActionStatus", pb.ReportActionStatusRequest, pb.ReportActionStatusResponse
        ),
        "SubscribePlans": grpc.unary_stream_rpc_method_handler(
            servicer.SubscribePlans,
            request_deserializer=pb.SubscribePlansRequest.FromString,
            response_serializer=None,
        ),
    }
    descriptor = pb.DESCRIPTOR.services_by_name["FederationService"]
    assert set(handlers) == {m.name for m in descriptor.methods}
    generic = grpc.method_handlers_generic_handler(descriptor.full_name, handlers)
    return Service(descriptor.full_name, lambda server: server.add_generic_rpc_handlers((generic,)))


class MarketClockWatcher:
    """Follows the market's replay clock from its bar stream, so a planning cycle reads the
    clock without a call; reconnects with backoff while the market is away."""

    def __init__(self, market: MarketClient, *, backoff: float = 0.5, max_backoff: float = 10.0):
        self._market = market
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._latest: tuple[int, int] | None = None
        self._symbols: list[str] = []
        self.moved = ChangeSignal()  # notified whenever the clock moves

    def latest(self) -> tuple[int, int] | None:
        """(clock time, position) as last seen, or None if the market was never reached."""
        return self._latest

    async def sync(self) -> None:
        """Reads the clock from the market now (the stream may be behind it)."""
        # Only the clock is wanted: one symbol's quote, once the stream has named one.
        snapshot = await self._market.snapshot(self._symbols)
        self._see(snapshot.clock_time, snapshot.position)

    def _see(self, clock_time: int, position: int) -> None:
        # The stream and sync() race; the clock only moves forward.
        if self._latest is None or position >= self._latest[1]:
            self._latest = (clock_time, position)
            self.moved.notify()

    async def run(self) -> None:
        await follow_forever(
            self._follow,
            initial_backoff=self._backoff,
            max_backoff=self._max_backoff,
            log=_log,
            what="following the market clock",
        )

    async def _follow(self, connected: Callable[[], None]) -> None:
        snapshot = await self._market.snapshot()
        connected()
        self._latest = (snapshot.clock_time, snapshot.position)  # a restarted market may be behind
        self.moved.notify()
        # Only the clock is wanted: one symbol's bars keep each step's message small, so the
        # watcher keeps up when the clock moves thousands of steps at once.
        symbols = self._symbols = [snapshot.quotes[0].bar.symbol] if snapshot.quotes else []
        async for position, clock_time, _bars in self._market.stream_bars(
            symbols, after_position=snapshot.position
        ):
            self._see(clock_time, position)


async def _after_first_interval(federation: Federation) -> None:
    # The first automatic cycle waits one interval, so the agents have started.
    await asyncio.sleep(federation.config.gap_update_interval_seconds)
    await federation.run_cycles()


APP = App(
    name="federation",
    summary="the Global Action Plan: fan-out, consensus, conflicts, execution, the plan stream",
    config_type=FederationConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    # Started after every service it asks or sends actions to, so it learns their addresses.
    uses=_uses,
)
