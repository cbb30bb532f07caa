"""Meta learns from SESA: it follows SESA's stream of evolutions (WatchEvolutions) and hands
what each ended evolution found to the meta-learning OS as evaluations, on the market clock.

Rules:

* **What counts.** The end of an evolution whose last generation ran (its end carries a
  summary: outcome FINISHED, or FAILED when the market's book then refused the candidates).
  Each selected candidate, or with none the best strategy, becomes one
  :class:`meta.model.Evaluation`: its strategy id in the market's book (``<symbol>/<genome
  id>``, the id the fleet trades it under and the promotion gates name), composite score,
  out-of-sample Sharpe ratio, deflated Sharpe ratio (when SESA counted trials), trade count,
  stage, and the evolution's trial count. The end's summary names no family or generation: they
  are read from the run's generation events, whose top strategies carry their genomes; a genome
  no generation listed gets its family from its id's prefix and generation 0, so it is not taken
  for an offspring (not credited to a mutation trial). An evaluation meta would refuse is logged
  and skipped, so it cannot stall the stream.
* **When.** At the market time the evolution ran on, the last bar of its window
  (``EvolutionStarted.bars_end_time`` of its run, found by ``start_sequence``), never the wall
  clock (``event_time`` is SESA's wall clock). The evaluations are made at that time and the
  update runs at it, so the OS also adapts there when it is due and the window holds enough
  trades; a version it makes names its cause, :data:`CAUSE`. An end whose start meta never read
  (dropped from SESA's bounded log first) or whose start has no ``bars_end_time`` counts
  nothing, with a warning.
* **The evolution interval.** A finished evolution is recorded with
  :meth:`MetaEngine.record_evolution` at that time, which restarts the policy's evolution
  interval (a time no later than the one on record changes nothing).
* **Resuming.** Each update stores the stream's cursor in the same transaction as the
  evaluations: the end it counted, and the sequence to read on after (one before the start of
  the oldest run still open, so a reader sees that run's start again). An end at or before the
  one counted is never counted again; the evolution is recorded after the update, and recording
  it again changes nothing, so a restart between the two loses nothing and counts nothing twice.
  Events dropped from SESA's bounded log (FAILED_PRECONDITION with ``oldest_sequence``) are
  skipped with a warning: the follower resumes from the oldest kept. A log behind the cursor
  (INVALID_ARGUMENT on ``after_sequence``: SESA's store was replaced) is followed from its start,
  with a warning. :func:`~qtmesh.base.reconnect.follow_forever` reconnects with backoff while
  SESA is away.

No gRPC here: the stream's client (``meta.client.SesaEvolutionsClient``) is passed in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import structlog

from meta.engine import MetaEngine
from meta.model import Evaluation, validate_evaluations
from meta.store import SequenceCursor
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import SHORT_NAMES, StrategyFamily, StrategyStage
from qtmesh.base.reconnect import follow_forever

_log = structlog.get_logger("meta.sesa_evaluations")

# The stream's name in the store, and the cause of the versions its evaluations make.
STREAM = "sesa/evolutions"
CAUSE = "sesa evaluations"

_FAMILY_OF_PREFIX = {prefix: family for family, prefix in SHORT_NAMES.items()}


class Outcome(enum.Enum):
    """How an evolution ended (``EvolutionOutcome``)."""

    UNSPECIFIED = 0
    FINISHED = 1
    FAILED = 2
    CANCELLED = 3
    INTERRUPTED = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Started:
    """An evolution began on the bars of ``symbol`` up to ``bars_end_time`` (market time; None
    when the event does not say)."""

    symbol: str
    bars_end_time: int | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Genome:
    """Who a strategy SESA evaluated is: its family and the generation that created it."""

    genome_id: str
    family: StrategyFamily | None
    generation: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Generation:
    """A generation ran; ``top`` are the genomes of its best strategies."""

    top: tuple[Genome, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """One strategy of an evolution's result with its out-of-sample numbers
    (``CandidateSummary``)."""

    genome_id: str
    strategy_id: str
    stage: StrategyStage | None
    composite_score: float
    sharpe_ratio: float
    deflated_sharpe_ratio: float
    trade_count: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ended:
    """An evolution ended; ``summarized`` when its last generation ran, then ``candidates`` are
    its selected strategies (or its best alone) and ``trials`` the genomes SESA had tried."""

    outcome: Outcome
    summarized: bool
    trials: int = 0
    candidates: tuple[Candidate, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvolutionEvent:
    """One event of SESA's log; ``event`` is None for a kind this meta does not know."""

    sequence: int
    start_sequence: int
    evolution_id: str
    event: Started | Generation | Ended | None


class EvolutionStream(Protocol):
    """What the follower reads (implemented by ``meta.client.SesaEvolutionsClient``)."""

    def watch_evolutions(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[EvolutionEvent]: ...


@dataclasses.dataclass
class _Run:
    """What the follower knows of a run that has not ended yet."""

    evolution_id: str
    started: Started
    genomes: dict[str, Genome] = dataclasses.field(default_factory=dict)


def _family_of(genome_id: str) -> StrategyFamily | None:
    return _FAMILY_OF_PREFIX.get(genome_id.partition("-")[0])


class SesaLearner:
    """Hands one evolution event after another to ``engine`` (see the module's rules).

    Call :meth:`start` before reading a stream (it says where to read from) and :meth:`learn`
    with each event read."""

    def __init__(self, engine: MetaEngine) -> None:
        self.engine = engine
        self._runs: dict[int, _Run] = {}
        self._counted = 0
        # Where the next read may start at the earliest (after events SESA dropped).
        self._floor = 0
        # SESA's log is behind the stored cursor: follow it from its start until counting.
        self._restarted = False

    async def start(self) -> int:
        """The sequence to read after: the stored cursor's (0, every kept event, when there is
        none). What an earlier read had gathered is forgotten: the read sees it again."""
        self._runs.clear()
        stored = None if self._restarted else await self.engine.sequence_cursor(STREAM)
        self._counted = stored.sequence if stored is not None else 0
        return max(stored.resume_after if stored is not None else 0, self._floor)

    def dropped(self, oldest: int) -> int:
        """SESA dropped the events before ``oldest``: the next read starts there."""
        self._floor = max(self._floor, oldest - 1)
        return self._floor

    def restarted(self) -> None:
        """SESA's log is behind the cursor (a new log): the next read starts at its start."""
        self._restarted = True
        self._floor = 0

    async def learn(self, message: EvolutionEvent) -> tuple[Evaluation, ...]:
        """Takes one event in; returns the evaluations an ended evolution handed to the OS."""
        event = message.event
        if isinstance(event, Started):
            self._runs[message.sequence] = _Run(message.evolution_id, event)
        elif isinstance(event, Generation):
            run = self._runs.get(message.start_sequence)
            if run is not None:
                for genome in event.top:
                    run.genomes.setdefault(genome.genome_id, genome)
        elif isinstance(event, Ended):
            run = self._runs.pop(message.start_sequence, None)
            if run is None:
                if message.sequence > self._counted and event.summarized:
                    _log.warning(
                        "an evolution's end whose start meta never read: its market time is "
                        "unknown, its evaluations are not counted",
                        evolution_id=message.evolution_id,
                        sequence=message.sequence,
                    )
                return ()
            at = run.started.bars_end_time
            if at is None:
                if message.sequence > self._counted and event.summarized:
                    _log.warning(
                        "an evolution whose start names no market time "
                        "(EvolutionStarted.bars_end_time): its evaluations are not counted",
                        evolution_id=message.evolution_id,
                        sequence=message.sequence,
                    )
                return ()
            counted: tuple[Evaluation, ...] = ()
            if message.sequence > self._counted and event.summarized:
                counted = await self._count(message, run, event, at)
            if event.outcome is Outcome.FINISHED:
                await self.engine.record_evolution(
                    at, cause=f"SESA evolution {message.evolution_id} finished"
                )
            return counted
        return ()

    async def _count(
        self, message: EvolutionEvent, run: _Run, ended: Ended, at: int
    ) -> tuple[Evaluation, ...]:
        evaluations: dict[str, Evaluation] = {}
        for candidate in ended.candidates:
            evaluation = _evaluation(candidate, run, ended.trials, at)
            if evaluation.strategy_id not in evaluations and _valid(evaluation, message):
                evaluations[evaluation.strategy_id] = evaluation
        # Read on from before the oldest run still open, so its start is seen again.
        opened = [start for start in self._runs if start < message.sequence]
        cursor = SequenceCursor(
            STREAM, message.sequence, min(opened) - 1 if opened else message.sequence
        )
        counted = tuple(evaluations.values())
        result = await self.engine.update((), counted, now=at, cause=CAUSE, cursor=cursor)
        self._counted = message.sequence
        self._restarted = False
        _log.info(
            "SESA's evaluations counted",
            evolution_id=message.evolution_id,
            sequence=message.sequence,
            evaluations=len(counted),
            market_time=at,
            adapted=result.adapted,
            version=result.parameters.version,
        )
        return counted


def _evaluation(candidate: Candidate, run: _Run, trials: int, at: int) -> Evaluation:
    genome = run.genomes.get(candidate.genome_id)
    return Evaluation(
        strategy_id=candidate.strategy_id or candidate.genome_id,
        family=genome.family if genome is not None else _family_of(candidate.genome_id),
        generation=genome.generation if genome is not None else 0,
        composite_score=candidate.composite_score,
        sharpe_ratio=candidate.sharpe_ratio,
        deflated_sharpe_ratio=candidate.deflated_sharpe_ratio if trials > 0 else None,
        trade_count=candidate.trade_count,
        stage=candidate.stage,
        trials=trials,
        evaluated_time=at,
    )


def _valid(evaluation: Evaluation, message: EvolutionEvent) -> bool:
    try:
        validate_evaluations([evaluation], now=evaluation.evaluated_time)
    except InvalidArgument as exc:
        _log.warning(
            "skipping a SESA evaluation meta cannot count",
            evolution_id=message.evolution_id,
            strategy_id=evaluation.strategy_id,
            problem=str(exc),
        )
        return False
    return True


async def learn_from_sesa(
    engine: MetaEngine,
    sesa: EvolutionStream,
    *,
    initial_backoff: float,
    max_backoff: float,
) -> None:
    """Runs until cancelled: follows SESA's evolutions from the stored cursor on."""
    learner = SesaLearner(engine)

    async def follow(connected: Callable[[], None]) -> None:
        while True:
            after = await learner.start()
            try:
                async for message in sesa.watch_evolutions(after_sequence=after):
                    connected()
                    await learner.learn(message)
                return
            except FailedPrecondition as exc:
                oldest = exc.metadata.get("oldest_sequence", "")
                if not oldest.isdigit():
                    raise
                connected()
                _log.warning(
                    "SESA dropped evolution events meta had not read; their evaluations are "
                    "not counted",
                    dropped=f"{after + 1}..{int(oldest) - 1}",
                    resume_after=learner.dropped(int(oldest)),
                )
            except InvalidArgument as exc:
                if exc.field != "after_sequence" or after == 0:
                    raise
                connected()
                _log.warning(
                    "SESA's evolution log is behind meta's cursor (a new log); following it "
                    "from its start",
                    cursor=after,
                    problem=exc.problem,
                )
                learner.restarted()

    await follow_forever(
        follow,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        log=_log,
        what="learning from SESA's evolutions",
    )
