"""Async client of the world model, returning the same domain objects as the in-process engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from qtmesh.api.worldmodel.v1 import world_model_pb2 as pb
from qtmesh.api.worldmodel.v1 import world_model_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub
from world_model import _convert as convert
from world_model.regimes import RegimeReport
from world_model.scenarios import ScenarioSummary
from world_model.watch import RegimeChange


class WorldModelClient:
    """Calls WorldModelService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.WorldModelServiceStub, channel)

    async def detect_regime(
        self, *, symbol: str = "", sector: str = "", market: bool = False, lookback: int = 0
    ) -> RegimeReport:
        """The regime of a symbol, a sector's index or (``market``) the whole market's."""
        response = await self._stub.DetectRegime(
            pb.DetectRegimeRequest(symbol=symbol, sector=sector, market=market, lookback=lookback),
        )
        return convert.report_from_proto(response.estimate)

    async def watch_regimes(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[RegimeChange]:
        """The market's regime events after ``after_sequence`` (unset: live ones only), each
        once, then every new one as the market clock moves."""
        request = pb.WatchRegimesRequest()
        if after_sequence is not None:
            request.after_sequence = after_sequence
        call = self._stub.WatchRegimes(request)
        try:
            async for message in call:
                yield convert.change_from_proto(message)
        finally:
            call.cancel()

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
