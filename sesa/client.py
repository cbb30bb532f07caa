"""Async client of the SESA service, returning plain messages decoded into domain objects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2_grpc as pb_grpc
from qtmesh.base.bars import BarSeries
from qtmesh.base.convert import genome_from_proto, genome_to_proto, series_to_proto
from qtmesh.base.genome import StrategyGenome
from qtmesh.runtime.status import mesh_stub


def bar_source(
    *, symbol: str = "", lookback: int = 0, bars: BarSeries | None = None
) -> pb.BarSource:
    """Bars inline, or a market window of ``lookback`` bars of ``symbol`` (0: the evolution's
    lookback days) ending at the replay clock."""
    if bars is not None:
        return pb.BarSource(bars=series_to_proto(bars))
    return pb.BarSource(window=pb.BarWindow(symbol=symbol, lookback=lookback))


class SesaClient:
    """Calls SesaService; failures raise the server's MeshError subclass. Results are the
    generated messages (StrategyEvaluation carries every metric by name)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.SesaServiceStub, channel)

    async def evolve(
        self,
        *,
        bars: pb.BarSource,
        seeds: Sequence[StrategyGenome] = (),
        config: pb.EvolutionConfig | None = None,
        seed: int = 0,
        prior_trials: int = 0,
        shadow_book_key: str = "",
    ) -> AsyncIterator[pb.GenerationStats | pb.EvolutionResult]:
        """Yields one GenerationStats per generation, then the EvolutionResult. Closing the
        generator cancels the evolution on the server: wrap the loop in
        ``contextlib.aclosing`` to do so at once when breaking out early. With
        ``shadow_book_key`` the selected candidates join the market's strategy book as
        shadows, once per key (the result's ``shadow_book`` says what the book did)."""
        request = pb.EvolveRequest(
            seeds=[genome_to_proto(g) for g in seeds],
            config=config or pb.EvolutionConfig(),
            bars=bars,
            seed=seed,
            prior_trials=prior_trials,
            shadow_book_key=shadow_book_key,
        )
        call = self._stub.Evolve(request)
        try:
            async for event in call:
                yield event.generation if event.HasField("generation") else event.result
        finally:
            call.cancel()

    async def evaluate(
        self, genomes: Sequence[StrategyGenome], *, bars: pb.BarSource, trials: int = 0
    ) -> list[strategy_pb2.StrategyEvaluation]:
        response = await self._stub.Evaluate(
            pb.EvaluateRequest(
                genomes=[genome_to_proto(g) for g in genomes], bars=bars, trials=trials
            ),
        )
        return list(response.evaluations)

    async def mutate(
        self,
        parents: Sequence[StrategyGenome],
        *,
        operator: pb.MutationOperator,
        count: int,
        magnitude: float = 0.2,
        rate: float = 0.3,
        seed: int = 0,
    ) -> list[StrategyGenome]:
        response = await self._stub.Mutate(
            pb.MutateRequest(
                parents=[genome_to_proto(g) for g in parents],
                operator=operator,
                count=count,
                magnitude=magnitude,
                rate=rate,
                seed=seed,
            ),
        )
        return [genome_from_proto(g, field="children") for g in response.children]

    async def select(
        self,
        evaluations: Sequence[strategy_pb2.StrategyEvaluation],
        *,
        config: pb.SelectionConfig | None = None,
        trials: int = 0,
    ) -> pb.SelectResponse:
        return await self._stub.Select(
            pb.SelectRequest(evaluations=evaluations, config=config, trials=trials),
        )

    async def watch_evolutions(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[pb.WatchEvolutionsResponse]:
        """Yields the events of every evolution SESA runs (Evolve calls and RUN_EVOLUTION
        actions): each with its ``sequence``, ``evolution_id`` and one of ``started``,
        ``generation`` or ``ended``. Without ``after_sequence``, live events only; with it,
        every kept event after it, once, then live ones. To resume after the stream ends
        (UNAVAILABLE on shutdown, RESOURCE_EXHAUSTED when too slow: both name the sequence),
        watch again with the last sequence received."""
        request = pb.WatchEvolutionsRequest()
        if after_sequence is not None:
            request.after_sequence = after_sequence
        call = self._stub.WatchEvolutions(request)
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()
