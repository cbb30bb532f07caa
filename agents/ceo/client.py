"""Async client of the CEO, returning the same domain objects as the in-process one."""

from __future__ import annotations

import grpc

from agents.ceo import _convert as convert
from agents.ceo.engine import ModeReport
from qtmesh.api.ceo.v1 import ceo_pb2 as pb
from qtmesh.api.ceo.v1 import ceo_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub


class CeoClient:
    """Calls CeoService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.CeoServiceStub, channel)

    async def mode(self) -> ModeReport:
        response = await self._stub.GetMode(pb.GetModeRequest())
        return convert.report_from_proto(response)
