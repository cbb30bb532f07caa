"""The memory gRPC server: MemoryService (Store, Recall, Summarize) and AgentService."""

from __future__ import annotations

import asyncio
import time

import grpc

from market.client import MarketClient
from memory import _convert as convert
from memory.config import ENV_PREFIX, MemoryConfig
from memory.engine import MemoryEngine
from memory.store import EpisodeStore
from qtmesh.api.memory.v1 import memory_pb2 as pb
from qtmesh.api.memory.v1 import memory_pb2_grpc as pb_grpc
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.server import Service


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, store: EpisodeStore) -> None:
        self._store = store

    async def Store(
        self, request: pb.StoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoreResponse:
        result = await self._store.store(convert.episode_from_proto(request.episode))
        return pb.StoreResponse(id=result.id, evicted=result.evicted)

    async def Recall(
        self, request: pb.RecallRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecallResponse:
        recalled = await self._store.recall(
            dict(request.features), k=request.k, regime=request.regime, sector=request.sector
        )
        return pb.RecallResponse(episodes=[convert.recalled_to_proto(r) for r in recalled])

    async def Summarize(
        self, request: pb.SummarizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SummarizeResponse:
        summaries = await self._store.summarize(regime=request.regime, sector=request.sector)
        return pb.SummarizeResponse(summaries=[convert.summary_to_proto(s) for s in summaries])


def services(engine: MemoryEngine) -> list[Service]:
    """The memory engine's two gRPC services; it executes no actions (see README)."""
    return [
        Service.of(
            MemoryServicer(engine.store),
            pb_grpc.add_MemoryServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["MemoryService"],
        ),
        agent_service(engine, executes=()),
    ]


def open_store(config: MemoryConfig) -> EpisodeStore:
    return EpisodeStore.open(
        config.url,
        clock=time.time_ns,
        max_episodes=config.max_episodes,
        max_k=config.max_k,
        max_feature_names=config.max_feature_names,
        limits=config.limits,
    )


async def build(ctx: Context[MemoryConfig]) -> Built:
    config = ctx.config
    store = await asyncio.to_thread(open_store, config)
    engine = MemoryEngine(
        store, ctx.client("market", MarketClient), policy=config.advice, k=config.recommend_k
    )

    async def close() -> None:
        await asyncio.to_thread(store.close)

    return Built(services=services(engine), close=close)


# Episodes are small (names of 64 characters, texts of 200): a larger request is refused by
# gRPC before any of it reaches Python (a 15 MiB Store used to cost the server about 45 MB).
MAX_REQUEST_BYTES = 1 << 20

APP = App(
    name="memory",
    summary="episodic and semantic memory with similarity recall",
    config_type=MemoryConfig,
    env_prefix=ENV_PREFIX,
    build=build,
    uses=(Uses(service="market", client=MarketClient),),
    max_request_bytes=MAX_REQUEST_BYTES,
)
