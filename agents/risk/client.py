"""Async client of the risk officer, returning the same domain objects as the in-process one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from agents.risk import _convert as convert
from agents.risk.assessment import RiskReport
from agents.risk.limits import Halt, RiskPolicy
from qtmesh.api.risk.v1 import risk_pb2 as pb
from qtmesh.api.risk.v1 import risk_pb2_grpc as pb_grpc
from qtmesh.base.convert import limits_from_proto
from qtmesh.runtime.status import mesh_stub


class RiskClient:
    """Calls RiskService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.RiskServiceStub, channel)

    async def assess(
        self, returns: Mapping[str, tuple[Sequence[float], float]] | None = None
    ) -> RiskReport:
        """The fleet's risk report, or that of ``sector -> (returns, exposure)``."""
        request = pb.AssessRiskRequest(
            sector_returns={
                sector: pb.ReturnSeries(returns=list(r), exposure=exposure)
                for sector, (r, exposure) in (returns or {}).items()
            }
        )
        response = await self._stub.AssessRisk(request)
        return convert.report_from_proto(response.report)

    async def limits(self) -> tuple[RiskPolicy, tuple[Halt, ...]]:
        """The limits the officer owns, and the fleet's halts as the officer last read them (the
        portfolio's first)."""
        response = await self._stub.GetLimits(pb.GetLimitsRequest())
        return (
            RiskPolicy(limits=limits_from_proto(response.limits, field="limits")),
            tuple(convert.halt_from_proto(h) for h in response.halts),
        )

    async def resume(self, scope: str, reason: str) -> tuple[bool, tuple[Halt, ...]]:
        """Releases the kill switch on ``scope``: (whether it was halted, the halts left)."""
        response = await self._stub.ResumeTrading(
            pb.ResumeTradingRequest(scope=scope, reason=reason)
        )
        return response.resumed, tuple(convert.halt_from_proto(h) for h in response.halts)
