"""Async client of the world model, returning the same domain objects as the in-process engine."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from qtmesh.api.worldmodel.v1 import world_model_pb2 as pb
from qtmesh.api.worldmodel.v1 import world_model_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub
from world_model import _convert as convert
from world_model.regimes import RegimeReport
from world_model.scenarios import ScenarioSummary


class WorldModelClient:
    """Calls WorldModelService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.WorldModelServiceStub, channel)

    async def detect_regime(
        self, *, symbol: str = "", sector: str = "", lookback: int = 0
    ) -> RegimeReport:
        response = await self._stub.DetectRegime(
            pb.DetectRegimeRequest(symbol=symbol, sector=sector, lookback=lookback),
        )
        return convert.report_from_proto(response.estimate)

    async def simulate(
        self,
        *,
        symbol: str = "",
        sector: str = "",
        horizon: int,
        num_paths: int,
        block_size: int = 0,
        quantiles: Sequence[float] = (),
        seed: int = 0,
        regime_conditioned: bool = False,
        include_paths: bool = False,
    ) -> ScenarioSummary:
        response = await self._stub.Simulate(
            pb.SimulateRequest(
                symbol=symbol,
                sector=sector,
                horizon=horizon,
                num_paths=num_paths,
                block_size=block_size,
                quantiles=quantiles,
                seed=seed,
                regime_conditioned=regime_conditioned,
                include_paths=include_paths,
            ),
        )
        return convert.scenario_from_proto(
            response, symbol=symbol, sector=sector, regime_conditioned=regime_conditioned
        )
