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
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service
from world_model import _convert as convert
from world_model.config import ENV_PREFIX, WorldModelConfig
from world_model.engine import Subject, WorldModel
from world_model.watch import RegimeChange, RegimeLog, RegimeWatcher

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
        log = self.regimes
        # Subscribed before reading the log: an event logged meanwhile is in the queue too.
        subscription = log.subscribe()
        try:
            last = log.last_sequence
            if request.HasField("after_sequence"):
                after = request.after_sequence
                if not 0 <= after <= last:
                    raise InvalidArgument(
                        "after_sequence", f"must be in 0..{last}, the last sequence (got {after})"
                    )
                _check_kept(after, log.oldest_sequence)
            else:
                after = last
            if log.draining:
                raise _draining(after)
            # Headers now, so a subscriber knows it is connected before the next event.
            await context.send_initial_metadata(())
            while True:
                _check_kept(after, log.oldest_sequence)  # dropped while this subscriber read
                page = log.after(after, HISTORY_PAGE)
                if not page:
                    break
                for event in page:
                    after = event.sequence
                    yield convert.change_to_proto(event)

                    def delivered(e: RegimeChange, last: int = after) -> bool:
                        return e.sequence <= last

                    subscription.discard_while(delivered)
                    if subscription.overflowed:
                        # Every event it missed is in the log: reading on from it loses nothing.
                        log.unsubscribe(subscription)
                        subscription = log.subscribe()
            while True:
                live = await subscription.next()
                if live is None:
                    if subscription.overflowed:
                        raise ResourceExhausted(
                            f"subscriber fell {log.queue_size} events behind; resume with "
                            f"after_sequence={after}",
                            metadata={"resume_after_sequence": str(after)},
                        )
                    raise _draining(after)
                if live.sequence <= after:
                    continue  # already delivered from the log
                after = live.sequence
                yield convert.change_to_proto(live)
        finally:
            log.unsubscribe(subscription)


def _check_kept(after: int, oldest: int) -> None:
    """Refuses a resume from before the oldest kept event (events after it were dropped)."""
    if oldest and after < oldest - 1:
        raise FailedPrecondition(
            f"after_sequence: events {after + 1}..{oldest - 1} were dropped from the bounded log; "
            f"the oldest available is sequence {oldest} (resume with after_sequence >= "
            f"{oldest - 1})",
            metadata={"field": "after_sequence", "oldest_sequence": str(oldest)},
        )


def _draining(after: int) -> Unavailable:
    return Unavailable(
        f"server is shutting down; resume with after_sequence={after}",
        metadata={"resume_after_sequence": str(after)},
    )


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
