"""Async client of the strategy officer, returning the same domain objects as the in-process one."""

from __future__ import annotations

import grpc

from agents.strategy import _convert as convert
from agents.strategy.book import Entry
from agents.strategy.performance import Performance
from qtmesh.api.strategy.v1 import strategy_officer_pb2 as pb
from qtmesh.api.strategy.v1 import strategy_officer_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub


class StrategyOfficerClient:
    """Calls StrategyOfficerService; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.StrategyOfficerServiceStub, channel)

    async def page(
        self, *, sector: str = "", page_size: int = 0, page_token: str = ""
    ) -> tuple[list[tuple[Entry, Performance | None]], str]:
        response = await self._stub.ListStrategies(
            pb.ListStrategiesRequest(sector=sector, page_size=page_size, page_token=page_token),
        )
        return [convert.record_from_proto(r) for r in response.strategies], response.next_page_token

    async def book(self, *, sector: str = "") -> list[tuple[Entry, Performance | None]]:
        """Every strategy of the book (all pages)."""
        rows: list[tuple[Entry, Performance | None]] = []
        token = ""
        while True:
            page, token = await self.page(sector=sector, page_token=token)
            rows += page
            if not token:
                return rows
