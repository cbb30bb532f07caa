"""The memory engine over gRPC on each backend: Store, Recall, Summarize, validation, retention,
and recommendations recalled from episodes planted around the current market."""

from __future__ import annotations

import contextlib
import math

import grpc
import numpy as np
import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from memory.client import MemoryClient
from memory.config import MemoryConfig
from memory.context import sector_features
from memory.episodes import Episode
from memory.service import APP, MAX_REQUEST_BYTES
from qtmesh.api.memory.v1 import memory_pb2, memory_pb2_grpc
from qtmesh.base.config import Secret
from qtmesh.base.contract import Action, AdjustExposure, AgentContext, Priority
from qtmesh.base.errors import AlreadyExists, InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

T0 = 1_767_571_200 * 10**9


@contextlib.asynccontextmanager
async def mesh(database_url: str, **settings):
    async with serving_app(MARKET, MarketConfig(synthetic_days=2, seed=11)) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        config = MemoryConfig(database_url=Secret(database_url), **settings)
        async with serving_app(APP, config, channel_config=channels) as memory:
            yield market, memory


def episode(i: int, features: dict[str, float], decision: str, outcome: float, **more) -> Episode:
    fields = {"regime": "calm", "sector": "Tech", "tags": {"source": "test"}} | more
    return Episode(
        id=f"e{i}", time=T0 + i, features=features, decision=decision, outcome=outcome, **fields
    )


async def test_store_recall_and_summarize(database_url):
    async with mesh(database_url) as (_market, memory):
        client = MemoryClient(memory.channel)
        rng = np.random.default_rng(0)
        stored = [
            episode(
                i,
                {"vol": float(rng.normal(0.3, 0.1)), "ret": float(rng.normal(0, 0.02))},
                "hold",
                float(rng.normal(0, 0.01)),
            )
            for i in range(40)
        ]
        stored.append(
            episode(99, {"vol": 0.9, "ret": -0.08}, "halt_trading", 0.03, regime="volatile")
        )
        for e in stored:
            assert (await client.store(e)).evicted == 0

        recalled = await client.recall({"vol": 0.88, "ret": -0.079}, k=3)
        assert recalled[0].episode == stored[-1]
        assert recalled[0].similarity > 0.99
        assert [r.similarity for r in recalled] == sorted(
            (r.similarity for r in recalled), reverse=True
        )
        only_volatile = await client.recall({"vol": 0.1, "ret": 0.0}, k=5, regime="volatile")
        assert [r.episode.id for r in only_volatile] == ["e99"]

        summaries = {(s.regime, s.sector): s for s in await client.summarize()}
        calm = summaries["calm", "Tech"]
        outcomes = np.array([e.outcome for e in stored[:-1]])
        assert calm.episode_count == 40
        assert calm.mean_outcome == pytest.approx(outcomes.mean())
        assert calm.outcome_stddev == pytest.approx(outcomes.std(ddof=1))
        assert dict(summaries["volatile", "Tech"].decision_outcomes) == {"halt_trading": 0.03}


async def test_retention_bounds_the_memory(database_url):
    async with mesh(database_url, max_episodes=5) as (_market, memory):
        client = MemoryClient(memory.channel)
        evicted = [
            (await client.store(episode(i, {"x": float(i)}, "hold", 0.01 * i))).evicted
            for i in range(8)
        ]
        assert evicted == [0, 0, 0, 0, 0, 1, 1, 1]
        recalled = await client.recall({"x": 7.0}, k=10)
        assert sorted(r.episode.id for r in recalled) == ["e3", "e4", "e5", "e6", "e7"]
        [summary] = await client.summarize()
        assert summary.episode_count == 5
        assert summary.mean_outcome == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("request_fields", "field", "problem"),
    [
        ({"features": {"vol": math.nan}, "k": 3}, "features[vol]", "nan is not a finite number"),
        ({"features": {}, "k": 3}, "features", "must not be empty"),
        ({"features": {"vol": 0.2}, "k": 0}, "k", "must be in 1..1000"),
        ({"features": {"vol": 0.2}, "k": -1}, "k", "must be in 1..1000"),
        ({"features": {"vol": 0.2}, "k": 5, "sector": "Metals"}, "sector", "unknown sector"),
        ({"features": {"vol": 0.2}, "k": 5, "regime": "crisis"}, "regime", "unknown regime"),
    ],
)
async def test_recall_validation(database_url, request_fields, field, problem):
    async with mesh(database_url) as (_market, memory):
        await MemoryClient(memory.channel).store(episode(1, {"vol": 0.3}, "hold", 0.0))
        stub = memory_pb2_grpc.MemoryServiceStub(memory.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Recall(memory_pb2.RecallRequest(**request_fields))
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == field
        assert problem in failure.value.details()


async def test_a_rejected_store_changes_nothing(database_url):
    async with mesh(database_url) as (_market, memory):
        client = MemoryClient(memory.channel)
        await client.store(episode(1, {"vol": 0.3}, "hold", 0.01))
        before = await client.summarize()
        stub = memory_pb2_grpc.MemoryServiceStub(memory.channel)
        for fields, field in (
            ({"features": {"vol": math.inf}, "decision": "hold"}, "episode.features[vol]"),
            ({"features": {"vol": 0.2}, "decision": ""}, "episode.decision"),
            (
                {"features": {"vol": 0.2}, "decision": "hold", "outcome": math.nan},
                "episode.outcome",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.Store(memory_pb2.StoreRequest(episode=memory_pb2.Episode(**fields)))
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(failure.value).metadata["field"] == field
        # An oversize request never reaches the service: gRPC refuses it as it arrives.
        huge = memory_pb2.Episode(features={"vol": 0.2}, decision="x" * (15 << 20))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.Store(memory_pb2.StoreRequest(episode=huge))
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(MAX_REQUEST_BYTES) in failure.value.details()
        with pytest.raises(AlreadyExists):
            await client.store(episode(1, {"vol": 0.5}, "hold", -1.0))
        with pytest.raises(InvalidArgument) as failure:
            await client.summarize(sector="Metals")
        assert failure.value.field == "sector"
        assert await client.summarize() == before


async def test_recommend_repeats_what_worked_in_similar_contexts(database_url):
    async with mesh(database_url) as (market, memory):
        agent = AgentClient(memory.channel, name="memory")
        assert await agent.recommend(AgentContext(cycle_id="empty")) == []

        snapshot = await MarketClient(market.channel).snapshot()
        now = sector_features(snapshot, "Tech")
        rng = np.random.default_rng(1)
        client = MemoryClient(memory.channel)

        def around(scale: float) -> dict[str, float]:
            return {n: v + scale * (abs(v) + 0.01) * float(rng.normal()) for n, v in now.items()}

        planted = (
            [("hold", float(rng.normal(0, 0.01)), around(3.0)) for _ in range(30)]
            + [("adjust_exposure factor=0.8", 0.01, around(0.01)) for _ in range(5)]
            + [("adjust_exposure factor=1.25", -0.01, around(0.01)) for _ in range(4)]
        )
        for i, (decision, outcome, features) in enumerate(planted):
            await client.store(episode(i, features, decision, outcome))

        [recommendation] = await agent.recommend(AgentContext(cycle_id="c1"))
        assert recommendation.parameters == AdjustExposure(sector="Tech", factor=0.8)
        assert recommendation.target == "sector/Tech"
        assert recommendation.evidence["support"] == 5
        assert recommendation.evidence["consistency"] == 1.0
        assert recommendation.evidence["mean_similarity"] > 0.95
        assert recommendation.confidence == pytest.approx(
            recommendation.evidence["mean_similarity"] * 5 / 8
        )
        assert recommendation.priority is Priority.MEDIUM
        # Stamped with the market time of the context it was recalled for.
        assert recommendation.as_of_time == snapshot.clock_time > 0
        assert "Avoid" in recommendation.rationale
        assert "'adjust_exposure factor=1.25' (-1.000% over 4, 100% losses)" in (
            recommendation.rationale
        )

        with pytest.raises(InvalidArgument, match="it executes: none"):
            await agent.execute(
                Action(
                    id="a",
                    priority=Priority.LOW,
                    target="sector/Tech",
                    parameters=recommendation.parameters,
                    confidence=0.5,
                    rationale="",
                    idempotency_key="k",
                ),
                plan_sequence=1,
            )
