"""What SESA remembers of its evolutions, and how what it remembers changes what it asks for.

**Writing.** Every evolution that finishes (a RUN_EVOLUTION's, an Evolve stream's) becomes one
episode of the memory engine (:func:`evolution_episode`):

* ``sector`` is the evolution's *subject*, ``evolution/<symbol>`` (:func:`subject`), not a market
  sector: recall can ask for one symbol's evolutions, and the memory agent, which advises only
  on the market's sectors, never mixes them with plan outcomes;
* ``features`` describe the market the evolution ran in, as SESA reads it when the evolution
  ends (:func:`context_features`): :func:`memory.context.sector_features` of the symbol's sector
  (the names and scales every writer uses) plus the symbol's own 24 h return and annualised
  24 h volatility (``symbol_return_24h``, ``symbol_volatility_24h``). Evolutions on bars given
  inline, or on a symbol the market does not quote, ran on no market context and are not
  remembered;
* ``decision`` is ``run_evolution generations=<n>``; ``time`` the end of its bars (market time);
* ``outcome`` is the best out-of-sample Sharpe ratio among the evolution's selected top (0
  when it selected none);
* ``tags`` hold the rest: its settings (``generations``, ``population``, ``mutation_rate``,
  ``mutation_magnitude``, ``evaluation``, ``lookback_days``), ``trials``, ``candidates`` (how many
  of the top passed every gate out of sample), ``shadows`` (how many the market's book took as
  shadows), ``best`` (the best genomes' ids), the best one's ``best_sharpe``,
  ``best_deflated_sharpe``, ``best_win_rate``, ``best_trades`` and ``best_composite``, and where
  it came from (``evolution_id``, ``started_by``, ``plan_sequence``, ``meta_version``).

The episode's id is ``sesa-<evolution id>``, so a retried store is recognised (ALREADY_EXISTS).
Storing goes through :class:`memory.recorder.Recorder`: an evolution never waits for memory.

**Recalling.** Before SESA recommends RUN_EVOLUTION (:meth:`EvolutionMemory.review`), it recalls,
per symbol it would evolve, the :data:`RECALL_K` past evolutions on that symbol whose market
context is most like today's (the same features, read from the market now). Those at similarity
>= :data:`MIN_SIMILARITY` are *similar*; a similar one is *productive* when at least one of its
candidates passed every gate out of sample. With n similar evolutions, p productive of them
(similarity-weighted share s = p/n) and at least :data:`MIN_SUPPORT` similar ones:

* none productive (p = 0): SESA does not recommend an evolution. Evolving again where the last
  n found nothing would spend every core to learn nothing new; meta's evolution interval still
  asks for one when it is due, so a symbol is never left unevolved for good;
* otherwise the confidence moves from SESA's own toward the recalled hit rate,
  ``c' = c (1 - w) + s w`` with ``w = n / (n + MIN_SUPPORT)`` (the more evidence, the more it
  counts), and the priority rises to MEDIUM when s >= 1/2; the rationale says what was recalled
  and the evidence carries ``memory_similar``, ``memory_productive`` and
  ``memory_best_sharpe``.

Fewer similar evolutions than :data:`MIN_SUPPORT`, an empty memory, or memory or the market
unreachable within the recall's deadline leave the recommendation as it was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import structlog

from memory.context import sector_features
from memory.episodes import Episode, Recalled
from memory.recorder import Recorder
from qtmesh.base.bars import Snapshot
from qtmesh.base.contract import AgentContext, Priority, Recommendation, RunEvolution
from qtmesh.base.errors import InvalidArgument, MeshError
from sesa.agent import FinishedEvolution, book_candidates
from sesa.evolution import EvolutionConfig

SUBJECT_PREFIX = "evolution/"
RECALL_K = 20
MIN_SIMILARITY = 0.5
MIN_SUPPORT = 2
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_.:/\-]")
_MAX_TAG = 200
_log = structlog.get_logger("sesa.memory")


class MarketSnapshots(Protocol):
    async def snapshot(self) -> Snapshot: ...


class EpisodeRecall(Protocol):
    """Recall of the memory engine (implemented by MemoryClient)."""

    async def recall(
        self, features: Mapping[str, float], *, k: int, regime: str = "", sector: str = ""
    ) -> list[Recalled]: ...


def subject(symbol: str) -> str:
    """The episode ``sector`` under which the evolutions on ``symbol`` are remembered."""
    return (SUBJECT_PREFIX + _NOT_A_NAME.sub("_", symbol))[:64]


def context_features(snapshot: Snapshot, symbol: str) -> dict[str, float] | None:
    """The market context of ``symbol`` (see the module); None when the market has no quote
    of it."""
    quote = next((q for q in snapshot.quotes if q.bar.symbol == symbol), None)
    if quote is None:
        return None
    return sector_features(snapshot, quote.sector) | {
        "symbol_return_24h": quote.return_24h,
        "symbol_volatility_24h": quote.volatility_24h,
    }


def evolution_episode(
    finished: FinishedEvolution,
    config: EvolutionConfig,
    *,
    features: Mapping[str, float],
    origin: Mapping[str, str],
) -> Episode:
    """The episode of a finished evolution (see the module); ``origin`` adds where it came
    from (``started_by``, ``plan_sequence``, ``meta_version``)."""
    result = finished.result
    top = result.top
    best = top[0] if top else None
    book = finished.shadow_book
    tags = {
        "source": "sesa",
        "symbol": finished.symbol,
        "evolution_id": finished.evolution_id,
        "generations": str(config.num_generations),
        "population": str(config.population),
        "mutation_rate": f"{config.mutation_rate:g}",
        "mutation_magnitude": f"{config.mutation_magnitude:g}",
        "evaluation": config.evaluation_type.name.lower(),
        "lookback_days": str(config.evaluation_lookback_days),
        "trials": str(result.trials),
        "candidates": str(len(book_candidates(result))),
        "shadows": str(len(book.strategy_ids) if book is not None and book.applied else 0),
        "best": _joined(j.genome_id for j in top[:5]),
    }
    if best is not None:
        oos = best.evaluation.out_of_sample
        tags |= {
            "best_sharpe": f"{oos.sharpe_ratio:.4g}",
            "best_deflated_sharpe": f"{oos.deflated_sharpe_ratio:.4g}",
            "best_win_rate": f"{oos.win_rate:.4g}",
            "best_trades": str(oos.trade_count),
            "best_composite": f"{best.evaluation.composite_score:.4g}",
        }
    tags |= {k: v[:_MAX_TAG] for k, v in origin.items() if v}
    outcome = best.evaluation.out_of_sample.sharpe_ratio if best is not None else 0.0
    name = (
        finished.evolution_id
        or hashlib.blake2b(
            f"{finished.symbol}\0{finished.finished_time}".encode(), digest_size=8
        ).hexdigest()
    )
    return Episode(
        id=f"sesa-{name}"[:64],
        time=finished.finished_time,
        features=features,
        decision=f"run_evolution generations={config.num_generations}",
        outcome=float(outcome) if math.isfinite(outcome) else 0.0,
        sector=subject(finished.symbol),
        tags={k: v for k, v in tags.items() if v},
    )


@dataclasses.dataclass(frozen=True)
class Recollection:
    """What memory recalled of the evolutions on some symbols in contexts like today's."""

    similar: int
    productive: int
    hit_rate: float  # similarity-weighted share of the similar ones that were productive
    best_sharpe: float  # the best outcome among the similar ones (0 with none)


def productive(episode: Episode) -> bool:
    """Whether a remembered evolution found something: a candidate that passed every gate."""
    try:
        return int(episode.tags.get("candidates", "0")) > 0
    except ValueError:
        return False


def recollect(
    recalled: Sequence[Recalled], *, min_similarity: float = MIN_SIMILARITY
) -> Recollection:
    similar = [r for r in recalled if r.similarity >= min_similarity]
    if not similar:
        return Recollection(0, 0, 0.0, 0.0)
    weights = [r.similarity for r in similar]
    hits = [w for r, w in zip(similar, weights, strict=True) if productive(r.episode)]
    return Recollection(
        similar=len(similar),
        productive=len(hits),
        hit_rate=sum(hits) / sum(weights),
        best_sharpe=max(r.episode.outcome for r in similar),
    )


def review(
    recommendation: Recommendation,
    recollection: Recollection,
    symbols: Sequence[str],
    *,
    min_support: int = MIN_SUPPORT,
) -> Recommendation | None:
    """The recommendation as memory changes it (see the module); None: do not evolve now."""
    n, p = recollection.similar, recollection.productive
    if n < min_support:
        return recommendation
    if p == 0:
        return None
    on = ", ".join(symbols)
    weight = n / (n + min_support)
    confidence = recommendation.confidence * (1 - weight) + recollection.hit_rate * weight
    priority = Priority.MEDIUM if recollection.hit_rate >= 0.5 else recommendation.priority
    said = (
        f" Memory: {p} of the {n} evolutions on {on} recalled in similar market contexts "
        f"found candidates that passed every gate out of sample (best out-of-sample Sharpe "
        f"{recollection.best_sharpe:.2f})."
    )
    return dataclasses.replace(
        recommendation,
        priority=max(priority, recommendation.priority),
        confidence=float(min(max(confidence, 0.0), 1.0)),
        rationale=recommendation.rationale + said,
        evidence={
            **recommendation.evidence,
            "memory_similar": float(n),
            "memory_productive": float(p),
            "memory_best_sharpe": recollection.best_sharpe,
        },
    )


class EvolutionMemory:
    """SESA's side of the memory engine: records finished evolutions through ``recorder``
    (None: records nothing) and, with ``recall``, reviews RUN_EVOLUTION recommendations."""

    def __init__(
        self,
        *,
        market: MarketSnapshots,
        memory: EpisodeRecall,
        recorder: Recorder | None,
        recall: bool,
        timeout: float,
    ) -> None:
        self._market = market
        self._memory = memory
        self._recorder = recorder
        self.recalls = recall
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._recording: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._recorder is not None and self._recording is None:
            self._recording = asyncio.ensure_future(self._recorder.run())

    def record(
        self, finished: FinishedEvolution, config: EvolutionConfig, origin: Mapping[str, str]
    ) -> None:
        """Remembers ``finished`` in the background: never waits, never raises."""
        if self._recorder is None:
            return
        task = asyncio.ensure_future(self._record(finished, config, origin))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(
        self, finished: FinishedEvolution, config: EvolutionConfig, origin: Mapping[str, str]
    ) -> None:
        assert self._recorder is not None
        try:
            snapshot = await self._market.snapshot()
        except MeshError as exc:
            _log.warning(
                "market unavailable: the evolution is not remembered",
                evolution_id=finished.evolution_id,
                error=exc.message,
            )
            return
        features = context_features(snapshot, finished.symbol)
        if features is None:
            _log.info(
                "the market has no quote of the symbol: the evolution is not remembered",
                evolution_id=finished.evolution_id,
                symbol=finished.symbol,
            )
            return
        self._recorder.record(evolution_episode(finished, config, features=features, origin=origin))

    async def review(
        self, recommendation: Recommendation, context: AgentContext
    ) -> Recommendation | None:
        """``recommendation`` (a RunEvolution) as what memory recalls changes it."""
        if not self.recalls or not isinstance(recommendation.parameters, RunEvolution):
            return recommendation
        symbols = recommendation.parameters.symbols
        try:
            async with asyncio.timeout(self._timeout):
                recalled = await self._recall(symbols)
        except (MeshError, TimeoutError) as exc:
            _log.info("memory not recalled; SESA recommends on its own", error=str(exc))
            return recommendation
        return review(recommendation, recollect(recalled), symbols)

    async def _recall(self, symbols: Sequence[str]) -> list[Recalled]:
        snapshot = await self._market.snapshot()
        recalled: list[Recalled] = []
        for symbol in symbols:
            features = context_features(snapshot, symbol)
            if features is None:
                continue
            try:
                recalled += await self._memory.recall(features, k=RECALL_K, sector=subject(symbol))
            except InvalidArgument as exc:
                if exc.field != "sector":
                    raise
                # Memory holds no evolution on this symbol yet.
        return recalled

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._recording] if self._recording else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _joined(values: Iterable[str]) -> str:
    """Comma-separated, as many as fit in a tag."""
    text = ""
    for value in values:
        more = f"{text},{value}" if text else value
        if len(more) > _MAX_TAG:
            break
        text = more
    return text
