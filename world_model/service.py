"""The world-model gRPC server: WorldModelService (DetectRegime, Simulate, WatchRegimes) and
AgentService."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from market.client import MarketClient
from qtmesh.api.worldmodel.v1 import world_model_pb2 as pb
from qtmesh.api.worldmodel.v1 import world_model_pb2_grpc as pb_grpc
from qtmesh.base.hub import replay_then_follow
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service
from world_model import _convert as convert
from world_model.config import ENV_PREFIX, WorldModelConfig
from world_model.engine import Subject, WorldModel
from world_model.watch import RegimeLog, RegimeWatcher

HISTORY_PAGE = 100  # kept regime events sent at a time when a subscriber resumes


class WorldModelServicer(pb_grpc.WorldModelServiceServicer):
    def __init__(self, model: WorldModel, regimes: RegimeLog | None = None) -> None:
        self._model = model
        # The market's regime changes (world_model/watch.py); a log nobody writes to when the
        # watcher is off, so WatchRegimes then only waits.
        self.regimes = regimes or RegimeLog(keep=1, queue_size=1)

    async def DetectRegime(
        self, request: pb.DetectRegimeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetectRegimeResponse:
        subject = Subject(symbol=request.symbol, sector=request.sector, market=request.market)
        report = await self._model.detect(subject, lookback=request.lookback)
        return pb.DetectRegimeResponse(estimate=convert.report_to_proto(report))

    async def Simulate(
        self, request: pb.SimulateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SimulateResponse:
        summary = await self._model.simulate(
            Subject(symbol=request.symbol, sector=request.sector),
            horizon=request.horizon,
            num_paths=request.num_paths,
            block_size=request.block_size,
            quantiles=tuple(request.quantiles),
            seed=request.seed,
            regime_conditioned=request.regime_conditioned,
            include_paths=request.include_paths,
        )
        return convert.scenario_to_proto(summary)

    async def WatchRegimes(
        self, request: pb.WatchRegimesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchRegimesResponse]:
        after = request.after_sequence if request.HasField("after_sequence") else None
        # Headers once the request is known good, so a subscriber knows it is connected.
        events = replay_then_follow(
            self.regimes,
            after,
            page_size=HISTORY_PAGE,
            connected=lambda: context.send_initial_metadata(()),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                yield convert.change_to_proto(event)


def services(model: WorldModel, regimes: RegimeLog | None = None) -> list[Service]:
    """The world model's two gRPC services; it executes no actions (see README)."""
    return [
        Service.of(
            WorldModelServicer(model, regimes),
            pb_grpc.add_WorldModelServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["WorldModelService"],
        ),
        agent_service(model, executes=()),
    ]


async def build(ctx: Context[WorldModelConfig]) -> Built:
    config = ctx.config
    market = ctx.client("market", MarketClient)
    model = WorldModel(market, config)
    if config.warm_up:
        model.refresh_in_background()
    regimes = RegimeLog(keep=config.kept_regime_events, queue_size=config.watch_queue_events)
    watching: asyncio.Task[None] | None = None
    if config.watch_regimes:
        watcher = RegimeWatcher(model, market, regimes, interval=config.watch_interval_nanos)
        watching = asyncio.ensure_future(
            watcher.run(
                initial_backoff=config.reconnect_initial_seconds,
                max_backoff=config.reconnect_max_seconds,
            )
        )

    async def close() -> None:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await model.close()

    return Built(services=services(model, regimes), drain=regimes.drain, close=close)


APP = App(
    name="world-model",
    summary="regime detection and forward scenarios",
    config_type=WorldModelConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=(Uses(service="market", client=MarketClient),),
)
