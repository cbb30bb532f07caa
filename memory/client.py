"""Async client of the memory engine, returning the same domain objects as the store."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from memory import _convert as convert
from memory.episodes import Episode, Recalled
from memory.store import StoreResult
from memory.summaries import SemanticSummary
from qtmesh.api.memory.v1 import memory_pb2 as pb
from qtmesh.api.memory.v1 import memory_pb2_grpc as pb_grpc
from qtmesh.runtime.status import mesh_stub


class MemoryClient:
    """Calls MemoryService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.MemoryServiceStub, channel)

    async def store(self, episode: Episode) -> StoreResult:
        response = await self._stub.Store(
            pb.StoreRequest(episode=convert.episode_to_proto(episode))
        )
        return StoreResult(response.id, response.evicted)

    async def recall(
        self, features: Mapping[str, float], *, k: int, regime: str = "", sector: str = ""
    ) -> list[Recalled]:
        response = await self._stub.Recall(
            pb.RecallRequest(features=dict(features), k=k, regime=regime, sector=sector),
        )
        return [convert.recalled_from_proto(r) for r in response.episodes]

    async def summarize(self, *, regime: str = "", sector: str = "") -> list[SemanticSummary]:
        response = await self._stub.Summarize(pb.SummarizeRequest(regime=regime, sector=sector))
        return [convert.summary_from_proto(s) for s in response.summaries]
