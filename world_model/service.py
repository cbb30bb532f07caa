"""The world-model gRPC server: WorldModelService (DetectRegime, Simulate) and AgentService."""

from __future__ import annotations

import grpc

from market.client import MarketClient
from qtmesh.api.worldmodel.v1 import world_model_pb2 as pb
from qtmesh.api.worldmodel.v1 import world_model_pb2_grpc as pb_grpc
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service
from world_model import _convert as convert
from world_model.config import ENV_PREFIX, WorldModelConfig
from world_model.engine import Subject, WorldModel


class WorldModelServicer(pb_grpc.WorldModelServiceServicer):
    def __init__(self, model: WorldModel) -> None:
        self._model = model

    async def DetectRegime(
        self, request: pb.DetectRegimeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetectRegimeResponse:
        subject = Subject(symbol=request.symbol, sector=request.sector)
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


def services(model: WorldModel) -> list[Service]:
    """The world model's two gRPC services; it executes no actions (see README)."""
    return [
        Service.of(
            WorldModelServicer(model),
            pb_grpc.add_WorldModelServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["WorldModelService"],
        ),
        agent_service(model, executes=()),
    ]


async def build(ctx: Context[WorldModelConfig]) -> Built:
    model = WorldModel(ctx.client("market", MarketClient), ctx.config)
    if ctx.config.warm_up:
        model.refresh_in_background()
    return Built(services=services(model), close=model.close)


APP = App(
    name="world-model",
    summary="regime detection and forward scenarios",
    config_type=WorldModelConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=(Uses(service="market", client=MarketClient),),
)
