"""The meta gRPC service: a thin adapter from MetaService and AgentService to the meta engine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from market.client import MarketClient
from memory.client import MemoryClient
from memory.recorder import Recorder
from meta import _convert as convert
from meta.agent import EXECUTES, MetaAgent
from meta.client import SesaEvolutionsClient
from meta.config import ENV_PREFIX, MetaConfig
from meta.engine import Clock, MetaEngine
from meta.fleet_scale import publish_scale
from meta.fleet_trades import learn_from_fleet
from meta.memory import DecisionMemory
from meta.model import SCALARS
from meta.regimes import follow_regimes
from meta.sesa_evaluations import learn_from_sesa
from meta.store import MetaStore
from qtmesh.api.meta.v1 import meta_pb2 as pb
from qtmesh.api.meta.v1 import meta_pb2_grpc as pb_grpc
from qtmesh.base import paging
from qtmesh.base.convert import optional_time_from_proto
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service
from world_model.client import WorldModelClient

HISTORY_BATCH = 100


def _followers() -> tuple[tuple[str, str, type[Any], Callable[..., Awaitable[None]]], ...]:
    """What meta follows, each until shutdown when its setting is on: (the setting, the service,
    its client, the follower); each reconnects with the configured backoff. Read when meta is
    built, so the followers are looked up then."""
    return (
        ("scale_fleet", "market", MarketClient, publish_scale),
        ("learn_from_fleet", "market", MarketClient, learn_from_fleet),
        ("learn_from_sesa", "sesa", SesaEvolutionsClient, learn_from_sesa),
        ("follow_regimes", "world-model", WorldModelClient, follow_regimes),
    )


class MetaServicer(pb_grpc.MetaServiceServicer):
    def __init__(self, engine: MetaEngine) -> None:
        self._engine = engine

    def drain(self) -> None:
        """Ends open parameter streams so their clients resume elsewhere."""
        self._engine.signal.drain()

    async def MetaUpdate(
        self, request: pb.MetaUpdateRequest, context: grpc.aio.ServicerContext
    ) -> pb.MetaUpdateResponse:
        now = self._engine.now(optional_time_from_proto(request, "now"))
        trades = [convert.trade_from_proto(t) for t in request.trades]
        evaluations = [
            convert.evaluation_from_proto(e, field=f"evaluations[{i}]", now=now)
            for i, e in enumerate(request.evaluations)
        ]
        result = await self._engine.update(
            trades, evaluations, now=now, caller=convert.caller_state_from_proto(request.state)
        )
        return pb.MetaUpdateResponse(
            parameters=convert.parameters_to_proto(result.parameters),
            changes=convert.changes_map(result.changes),
            parameter_changes=[convert.change_to_proto(c) for c in result.changes],
            decisions=[convert.decision_to_proto(d) for d in result.decisions],
            adapted=result.adapted,
            detail=result.detail,
        )

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        state = convert.state_from_proto(request.state, now=self._engine.now(None))
        decisions = self._engine.decide(state, dict(request.rule_overrides))
        return pb.DecideResponse(decisions=[convert.decision_to_proto(d) for d in decisions])

    async def GetParameters(
        self, request: pb.GetParametersRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetParametersResponse:
        return pb.GetParametersResponse(
            parameters=convert.parameters_to_proto(self._engine.parameters)
        )

    async def WatchParameters(
        self, request: pb.WatchParametersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchParametersResponse]:
        signal = self._engine.signal
        latest = self._engine.current.version
        if request.HasField("after_version"):
            cursor = request.after_version
            if not 0 <= cursor <= latest:
                raise InvalidArgument(
                    "after_version", f"must be in 0..{latest}, the latest version (got {cursor})"
                )
        else:
            cursor = latest - 1
        # Headers now, so a subscriber knows it is connected before the next version exists.
        await context.send_initial_metadata(())
        while True:
            # Taken before reading, so a version written after the read still wakes us.
            written = signal.current()
            batch = await self._engine.history(cursor, HISTORY_BATCH)
            for record in batch:
                cursor = record.version
                yield pb.WatchParametersResponse(
                    parameters=convert.parameters_to_proto(record.parameters),
                    changes=convert.changes_map(record.changes),
                    parameter_changes=[convert.change_to_proto(c) for c in record.changes],
                )
            if batch:
                continue
            if signal.draining:
                raise Unavailable(f"server is shutting down; resume with after_version={cursor}")
            await written.wait()

    async def ListSesaTrials(
        self, request: pb.ListSesaTrialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSesaTrialsResponse:
        size = paging.page_size(request.page_size, default=100, maximum=1000)
        offset = 0
        if request.page_token:
            fields = paging.decode_token(request.page_token, expect={"list": "sesa_trials"})
            issued = fields.get("o")
            # bool is an int to Python, but no token this server issued holds one.
            if not (isinstance(issued, int) and not isinstance(issued, bool) and issued >= 0):
                raise InvalidArgument("page_token", "is not a token this server issued")
            offset = issued
        log = await self._engine.trial_log(offset=offset, limit=size)
        more = offset + len(log.trials) < log.total_trials
        return pb.ListSesaTrialsResponse(
            trials=[convert.trial_to_proto(t) for t in log.trials],
            next_page_token=paging.encode_token(list="sesa_trials", o=offset + size)
            if more
            else "",
            total_trials=log.total_trials,
            total_evaluations=log.total_evaluations,
        )


def wall_clock() -> int:
    """The server's clock, used only when a request carries no time of its own."""
    return time.time_ns()


def parameter_metrics(metrics: Metrics, engine: MetaEngine) -> None:
    """``qtmesh_meta_parameter{name}``: each adapted scalar of the current version, read at every
    scrape (the current version is an immutable record the engine replaces whole). The weight
    maps are left out: their keys come and go with the strategies and families traded, and
    strategy ids are without bound."""
    gauge = metrics.gauge(
        "qtmesh_meta_parameter",
        "The current value of each adapted meta parameter (GetParameters)",
        ["name"],
    )

    def reader(name: str) -> Callable[[], float]:
        return lambda: float(getattr(engine.parameters, name))

    for name in SCALARS:
        gauge.labels(name).set_function(reader(name))


async def build_engine(config: MetaConfig, *, clock: Clock = wall_clock) -> MetaEngine:
    store = await asyncio.to_thread(config.open, MetaStore)
    engine = MetaEngine(store=store, learning=config.learning, rules=config.rules, clock=clock)
    await engine.start()
    return engine


def app(*, clock: Clock = wall_clock) -> App[MetaConfig]:
    """The meta App; tests inject ``clock`` (the served one uses the wall clock)."""

    async def build(ctx: Context[MetaConfig]) -> Built:
        engine = await build_engine(ctx.config, clock=clock)
        parameter_metrics(ctx.metrics, engine)
        servicer = MetaServicer(engine)
        service = Service.of(
            servicer,
            pb_grpc.add_MetaServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["MetaService"],
        )

        config = ctx.config
        tasks: list[asyncio.Task[None]] = []
        for enabled, service_name, client_type, follow in _followers():
            if getattr(config, enabled):
                tasks.append(
                    asyncio.ensure_future(
                        follow(
                            engine,
                            ctx.client(service_name, client_type),
                            initial_backoff=config.reconnect_initial_seconds,
                            max_backoff=config.reconnect_max_seconds,
                        )
                    )
                )
        if config.record_to_memory:
            recorder = Recorder(ctx.client("memory", MemoryClient), writer="meta")
            tasks.append(asyncio.ensure_future(DecisionMemory(engine, recorder).follow()))

        async def close() -> None:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await engine.store.run(engine.store.close)

        return Built(
            services=[service, agent_service(MetaAgent(engine), executes=EXECUTES)],
            drain=servicer.drain,
            close=close,
        )

    return App(
        name="meta",
        summary="meta-learning OS and meta policy",
        config_type=MetaConfig,
        env_prefix=ENV_PREFIX,
        build=build,
        uses=lambda config: (
            *(
                (Uses(service="market", client=MarketClient),)
                if config.scale_fleet or config.learn_from_fleet
                else ()
            ),
            # Followed: SESA reads meta's parameters (it starts after meta), so SESA is no
            # start-order dependency of meta; the follower reconnects until SESA is up.
            *(
                (Uses(service="sesa", client=SesaEvolutionsClient, followed=True),)
                if config.learn_from_sesa
                else ()
            ),
            # Followed: meta only hears the world model's regime changes and reconnects until
            # it is up.
            *(
                (Uses(service="world-model", client=WorldModelClient, followed=True),)
                if config.follow_regimes
                else ()
            ),
            # Stores each parameter version (meta/memory.py); memory calls only the market.
            *(
                (Uses(service="memory", client=MemoryClient, timeout=5.0),)
                if config.record_to_memory
                else ()
            ),
        ),
    )


APP = app()
