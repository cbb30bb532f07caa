"""Async client of the memory engine, returning the same domain objects as the store."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from agents.memory import _convert as convert
from agents.memory.episodes import Episode, Recalled
from agents.memory.store import StoreResult
from agents.memory.summaries import SemanticSummary
from qtmesh.api.memory.v1 import memory_pb2 as pb
from qtmesh.api.memory.v1 import memory_pb2_grpc as pb_grpc
from qtmesh.status import raising_mesh_errors


class MemoryClient:
    """Calls MemoryService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float | None = 30.0) -> None:
        self._stub = pb_grpc.MemoryServiceStub(channel)
        self._timeout = timeout

    async def store(self, episode: Episode) -> StoreResult:
        with raising_mesh_errors():
            response = await self._stub.Store(
                pb.StoreRequest(episode=convert.episode_to_proto(episode)), timeout=self._timeout
            )
        return StoreResult(response.id, response.evicted)

    async def recall(
        self, features: Mapping[str, float], *, k: int, regime: str = "", sector: str = ""
    ) -> list[Recalled]:
        with raising_mesh_errors():
            response = await self._stub.Recall(
                pb.RecallRequest(features=dict(features), k=k, regime=regime, sector=sector),
                timeout=self._timeout,
            )
        return [convert.recalled_from_proto(r) for r in response.episodes]

    async def summarize(self, *, regime: str = "", sector: str = "") -> list[SemanticSummary]:
        with raising_mesh_errors():
            response = await self._stub.Summarize(
                pb.SummarizeRequest(regime=regime, sector=sector), timeout=self._timeout
            )
        return [convert.summary_from_proto(s) for s in response.summaries]
