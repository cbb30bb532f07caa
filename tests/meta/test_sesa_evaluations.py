"""Meta learns from SESA: it follows WatchEvolutions, counts each ended evolution's candidates as
evaluations at the market time of the evolution's bars (never the wall clock), records each
finished evolution, resumes after the last end it counted (before a run still open), counts
nothing twice, and skips events SESA dropped or a log that was replaced, with a warning.

The follower's rules run on a double of the stream first; then real market, SESA and meta
servers (port 0) carry evolutions started with SESA's Evolve RPC to meta."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from structlog.testing import capture_logs

import sesa.service
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.client import MetaClient, SesaEvolutionsClient
from meta.config import MetaConfig
from meta.engine import MetaEngine
from meta.model import Evaluation, Trade
from meta.service import app, build_engine
from meta.sesa_evaluations import (
    CAUSE,
    STREAM,
    Candidate,
    Ended,
    EvolutionEvent,
    Generation,
    Genome,
    Outcome,
    SesaLearner,
    Started,
    learn_from_sesa,
)
from meta.store import MetaStore, SequenceCursor
from meta.store import evaluations as evaluations_table
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyStage
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig

T0 = 1_767_571_200 * 10**9
MINUTE = 60 * 10**9
# The wall clock the meta engine is given: never what an evaluation from SESA is stamped with.
WALL = T0 + 10_000 * 60 * MINUTE
TIMEOUT = 60


def meta_config(data_dir: Path, **settings) -> MetaConfig:
    return MetaConfig(
        data_dir=data_dir,
        scale_fleet=False,
        learn_from_fleet=False,
        follow_regimes=False,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.05,
        **settings,
    )


# -- the follower on a double of SESA's stream ---------------------------------------------------


def started(sequence: int, evolution: str, at: int | None) -> EvolutionEvent:
    return EvolutionEvent(
        sequence=sequence,
        start_sequence=sequence,
        evolution_id=evolution,
        event=Started(symbol="NOVA", bars_end_time=at),
    )


def generation(sequence: int, start: int, evolution: str, *top: Genome) -> EvolutionEvent:
    return EvolutionEvent(
        sequence=sequence, start_sequence=start, evolution_id=evolution, event=Generation(top=top)
    )


def ended(
    sequence: int,
    start: int,
    evolution: str,
    *candidates: Candidate,
    outcome: Outcome = Outcome.FINISHED,
    summarized: bool = True,
) -> EvolutionEvent:
    return EvolutionEvent(
        sequence=sequence,
        start_sequence=start,
        evolution_id=evolution,
        event=Ended(outcome=outcome, summarized=summarized, trials=40, candidates=candidates),
    )


def candidate(genome_id: str, score: float = 0.6, sharpe: float = 1.4) -> Candidate:
    return Candidate(
        genome_id=genome_id,
        strategy_id=f"NOVA/{genome_id}",
        stage=StrategyStage.SHADOW,
        composite_score=score,
        sharpe_ratio=sharpe,
        deflated_sharpe_ratio=0.97,
        trade_count=31,
    )


class FakeSesa:
    """SESA's WatchEvolutions over a fixed log whose oldest kept event is ``oldest``: the kept
    events after ``after_sequence``, then nothing more (``drained`` is set once every event was
    taken in)."""

    def __init__(self, events: list[EvolutionEvent], *, oldest: int = 1) -> None:
        self.events = events
        self.oldest = oldest
        self.reads: list[int | None] = []
        self.drained = asyncio.Event()

    async def watch_evolutions(
        self, *, after_sequence: int | None = None
    ) -> AsyncIterator[EvolutionEvent]:
        self.reads.append(after_sequence)
        after = after_sequence or 0
        last = self.events[-1].sequence if self.events else 0
        if after > last:
            raise InvalidArgument("after_sequence", f"must be in 0..{last}, the last sequence")
        if after < self.oldest - 1:
            raise FailedPrecondition(
                "after_sequence: events were dropped from the bounded log",
                metadata={"field": "after_sequence", "oldest_sequence": str(self.oldest)},
            )
        for event in self.events:
            if event.sequence > after:
                yield event
        self.drained.set()
        await asyncio.Event().wait()  # live: nothing more happens


async def follow_until_drained(engine: MetaEngine, fake: FakeSesa) -> None:
    task = asyncio.ensure_future(
        learn_from_sesa(engine, fake, initial_backoff=0.01, max_backoff=0.01)
    )
    try:
        await asyncio.wait_for(fake.drained.wait(), TIMEOUT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def feed(learner: SesaLearner, events: list[EvolutionEvent]) -> list[Evaluation]:
    after = await learner.start()
    counted: list[Evaluation] = []
    for event in events:
        if event.sequence > after:
            counted += await learner.learn(event)
    return counted


AT = T0 + 3 * 24 * 60 * MINUTE
OFFSPRING = Genome(genome_id="mr-0a1b2c3d4e5f", family=StrategyFamily.MEAN_REVERSION, generation=2)
SEED = Genome(genome_id="ma-1a2b3c4d5e6f", family=StrategyFamily.MA_CROSSOVER, generation=0)


async def test_an_ended_evolution_becomes_evaluations_at_the_market_time_of_its_bars(tmp_path):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    learner = SesaLearner(engine)
    events = [
        started(1, "evo-a", AT),
        generation(2, 1, "evo-a", SEED),
        generation(3, 1, "evo-a", OFFSPRING, SEED),
        # The best two, and one no generation listed (its family is its id's prefix).
        ended(
            4,
            1,
            "evo-a",
            candidate(OFFSPRING.genome_id, 0.7),
            candidate(SEED.genome_id, 0.6),
            candidate("bo-9f8e7d6c5b4a", 0.5),
            candidate("bo-000000000000", sharpe=math.nan),  # refused by meta: skipped
        ),
    ]
    try:
        with capture_logs() as logs:
            counted = await feed(learner, events)
        assert [(e.strategy_id, e.family, e.generation) for e in counted] == [
            ("NOVA/mr-0a1b2c3d4e5f", StrategyFamily.MEAN_REVERSION, 2),
            ("NOVA/ma-1a2b3c4d5e6f", StrategyFamily.MA_CROSSOVER, 0),
            ("NOVA/bo-9f8e7d6c5b4a", StrategyFamily.BREAKOUT, 0),
        ]
        assert all(e.evaluated_time == AT for e in counted)
        assert counted[0] == Evaluation(
            strategy_id="NOVA/mr-0a1b2c3d4e5f",
            family=StrategyFamily.MEAN_REVERSION,
            generation=2,
            composite_score=0.7,
            sharpe_ratio=1.4,
            deflated_sharpe_ratio=0.97,
            trade_count=31,
            stage=StrategyStage.SHADOW,
            trials=40,
            evaluated_time=AT,
        )
        assert any("cannot count" in entry["event"] for entry in logs)
        # The finished evolution restarts the evolution interval, at the market time.
        assert engine.current.tracked.last_evolution_time == AT
        assert engine.parameters.update_time == AT
        assert engine.parameters.cause == "SESA evolution evo-a finished"
        # Stored with the cursor; the offspring is credited to the running mutation trial.
        assert await engine.sequence_cursor(STREAM) == SequenceCursor(STREAM, 4, 4)
        log = await engine.trial_log(offset=0, limit=10)
        assert log.total_evaluations == 1
        # Shadows in meta's eyes: the policy sees them as shadow candidates.
        decisions = await engine.decisions_at(AT)
        shadows = {
            d.strategy_id for d in decisions if d.type.name in ("KEEP_SHADOW", "PROMOTE_SHADOW")
        }
        assert shadows == {e.strategy_id for e in counted}
    finally:
        await engine.store.run(engine.store.close)


async def test_the_os_adapts_on_sesas_evaluations_when_due_and_names_sesa_as_the_cause(tmp_path):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    trades = [
        Trade(
            strategy_id="NOVA/ma-1a2b3c4d5e6f",
            symbol="NOVA",
            entry_time=AT - (200 - i) * MINUTE,
            exit_time=AT - (199 - i) * MINUTE,
            return_fraction=0.001 * (1 if i % 3 else -1),
        )
        for i in range(25)
    ]
    try:
        first = await engine.update(trades, (), now=AT - 120 * MINUTE)
        assert first.adapted
        # Two hours later on the market clock an evolution ends: the OS is due again, and a
        # strategy SESA judged ready for production earns weight from its composite score.
        ready = dataclasses.replace(candidate(OFFSPRING.genome_id), stage=StrategyStage.PRODUCTION)
        counted = await feed(
            SesaLearner(engine), [started(1, "evo-a", AT), ended(2, 1, "evo-a", ready)]
        )
        assert [e.strategy_id for e in counted] == ["NOVA/mr-0a1b2c3d4e5f"]
        adapted, recorded = [r.parameters for r in await engine.history(2)]
        assert (adapted.cause, adapted.update_time) == (CAUSE, AT)
        assert "NOVA/mr-0a1b2c3d4e5f" in adapted.strategy_weights
        assert (recorded.cause, recorded.update_time) == ("SESA evolution evo-a finished", AT)
    finally:
        await engine.store.run(engine.store.close)


async def test_only_an_evolution_whose_generations_ran_counts_and_only_a_finished_one_records(
    tmp_path,
):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    learner = SesaLearner(engine)
    events = [
        # Cancelled before its last generation: no summary, nothing counts.
        started(1, "evo-c", AT),
        ended(2, 1, "evo-c", outcome=Outcome.CANCELLED, summarized=False),
        # Its generations ran, then the book refused the candidates: they count, the
        # evolution is no evolution run.
        started(3, "evo-f", AT + MINUTE),
        ended(4, 3, "evo-f", candidate(OFFSPRING.genome_id), outcome=Outcome.FAILED),
        # A start that names no market time: nothing is stamped with another clock.
        started(5, "evo-t", None),
        ended(6, 5, "evo-t", candidate(SEED.genome_id)),
    ]
    try:
        with capture_logs() as logs:
            counted = await feed(learner, events)
        assert [(e.strategy_id, e.evaluated_time) for e in counted] == [
            ("NOVA/mr-0a1b2c3d4e5f", AT + MINUTE)
        ]
        assert engine.current.tracked.last_evolution_time is None
        assert engine.parameters.version == 1
        assert any("bars_end_time" in entry["event"] for entry in logs)
        assert await engine.sequence_cursor(STREAM) == SequenceCursor(STREAM, 4, 4)
    finally:
        await engine.store.run(engine.store.close)


async def test_a_restarted_follower_reads_again_from_a_run_still_open_and_counts_nothing_twice(
    tmp_path,
):
    config = meta_config(tmp_path)
    a, b = candidate("mr-aaaaaaaaaaaa"), candidate("ma-bbbbbbbbbbbb")
    genome_a = Genome(genome_id=a.genome_id, family=StrategyFamily.MEAN_REVERSION, generation=3)
    events = [
        started(1, "evo-a", AT),
        started(2, "evo-b", AT + MINUTE),
        generation(3, 1, "evo-a", genome_a),
        generation(4, 2, "evo-b"),
        ended(5, 2, "evo-b", b),
        ended(6, 1, "evo-a", a),
    ]
    first = await build_engine(config, clock=lambda: WALL)
    counted = await feed(SesaLearner(first), events[:5])
    assert [e.strategy_id for e in counted] == [b.strategy_id]
    # evo-a is still open: a reader must see its start (1) again.
    assert await first.sequence_cursor(STREAM) == SequenceCursor(STREAM, 5, 0)
    await first.store.run(first.store.close)

    second = await build_engine(config, clock=lambda: WALL)
    try:
        learner = SesaLearner(second)
        assert await learner.start() == 0
        counted = await feed(learner, events)
        # evo-b's end was counted already; evo-a's counts once, with what its run said.
        assert [(e.strategy_id, e.generation, e.evaluated_time) for e in counted] == [
            (a.strategy_id, 3, AT)
        ]
        assert await second.sequence_cursor(STREAM) == SequenceCursor(STREAM, 6, 6)
        assert second.current.tracked.last_evolution_time == AT + MINUTE
        # A third reader has nothing left to count.
        assert await feed(SesaLearner(second), events) == []
    finally:
        await second.store.run(second.store.close)


async def test_events_sesa_dropped_are_skipped_with_a_warning_and_the_rest_count(tmp_path):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    b = candidate("ma-bbbbbbbbbbbb")
    # SESA kept 4..: evo-a's start (1) is gone, so its end cannot be placed in market time.
    fake = FakeSesa(
        [
            generation(4, 1, "evo-a"),
            ended(5, 1, "evo-a", candidate("mr-aaaaaaaaaaaa")),
            started(6, "evo-b", AT),
            ended(7, 6, "evo-b", b),
        ],
        oldest=4,
    )
    try:
        with capture_logs() as logs:
            await follow_until_drained(engine, fake)
        assert fake.reads == [0, 3]
        problems = [entry["event"] for entry in logs if entry["log_level"] == "warning"]
        assert any("dropped" in p for p in problems)
        assert any("never read" in p for p in problems)
        context = await engine.store.run(
            lambda: engine.store.read_context(window_start=0, now=AT, scores_since=0)
        )
        assert set(context.shadow_latest) == {b.strategy_id}
        assert await engine.sequence_cursor(STREAM) == SequenceCursor(STREAM, 7, 7)
    finally:
        await engine.store.run(engine.store.close)


async def test_a_sesa_log_behind_the_cursor_is_followed_from_its_start(tmp_path):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    old = [started(1, "evo-a", AT), *(generation(i, 1, "evo-a") for i in range(2, 9))]
    old.append(ended(9, 1, "evo-a", candidate("mr-aaaaaaaaaaaa")))
    # SESA's store was replaced: its new log is shorter than meta's cursor.
    new = [started(1, "evo-n", AT + MINUTE), ended(2, 1, "evo-n", candidate("ma-nnnnnnnnnnnn"))]
    try:
        await feed(SesaLearner(engine), old)
        assert await engine.sequence_cursor(STREAM) == SequenceCursor(STREAM, 9, 9)
        fake = FakeSesa(new)
        with capture_logs() as logs:
            await follow_until_drained(engine, fake)
        assert fake.reads == [9, 0]
        assert any("behind" in entry["event"] for entry in logs)
        assert await engine.sequence_cursor(STREAM) == SequenceCursor(STREAM, 2, 2)
        assert engine.current.tracked.last_evolution_time == AT + MINUTE
    finally:
        await engine.store.run(engine.store.close)


# -- real market, SESA and meta servers ----------------------------------------------------------

QUICK = pb.EvolutionConfig(
    num_generations=2, num_mutations_per_parent=4, evaluation_lookback_days=3
)
EVENTS_PER_QUICK = 5  # started, generations 0..2, ended


@contextlib.asynccontextmanager
async def market_and_sesa(tmp_path: Path, **settings):
    config = MarketConfig(synthetic_days=8, seed=5, data_dir=tmp_path / "market")
    async with serving_app(MARKET, config) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        sesa_config = SesaConfig(data_dir=tmp_path / "sesa", **settings)
        async with serving_app(sesa.service.APP, sesa_config, channel_config=channels) as served:
            yield market, served


@contextlib.asynccontextmanager
async def meta_following(tmp_path: Path, sesa_address: str):
    channels = ChannelConfig(addresses={"sesa": sesa_address})
    config = meta_config(tmp_path / "meta")
    async with serving_app(app(clock=lambda: WALL), config, channel_config=channels) as meta:
        yield meta


@dataclasses.dataclass(frozen=True)
class Ran:
    """One evolution as SESA's log shows it, and what meta should count of it."""

    evolution_id: str
    market_time: int
    ended_sequence: int
    expected: dict[str, int]  # strategy id -> generation


async def run_evolution(served, after: int, seed: int) -> Ran:
    """Runs a quick evolution on NOVA with Evolve; reads its events from SESA's log."""
    client = SesaClient(served.channel)
    async for _ in client.evolve(bars=bar_source(symbol="NOVA"), config=QUICK, seed=seed):
        pass
    stream = client.watch_evolutions(after_sequence=after)
    events = []
    async with contextlib.aclosing(stream):
        async for event in stream:
            events.append(event)
            if event.HasField("ended"):
                break
    genomes = {
        e.genome.id: e.genome.generation
        for event in events
        if event.HasField("generation")
        for e in event.generation.top
    }
    summary = events[-1].ended.summary
    assert events[-1].ended.outcome == pb.EVOLUTION_OUTCOME_FINISHED
    chosen = list(summary.candidates) or [summary.best]
    return Ran(
        evolution_id=events[0].evolution_id,
        market_time=events[0].started.bars_end_time.ToNanoseconds(),
        ended_sequence=events[-1].sequence,
        expected={c.strategy_id: genomes.get(c.genome_id, 0) for c in chosen},
    )


def stored_evaluations(data_dir: Path) -> set[tuple[str, int, int]]:
    store = MetaStore(meta_config(data_dir).url)
    try:
        with store.engine.connect() as c:
            return {
                (r.strategy_id, r.evaluated_time, r.generation)
                for r in c.execute(sa.select(evaluations_table))
            }
    finally:
        store.close()


def rows(ran: Ran) -> set[tuple[str, int, int]]:
    return {(sid, ran.market_time, gen) for sid, gen in ran.expected.items()}


async def next_version(meta, after_version: int):
    versions = MetaClient(meta.channel).watch(after_version=after_version)
    async with contextlib.aclosing(versions):
        parameters, _ = await asyncio.wait_for(anext(versions), TIMEOUT)
    return parameters


async def test_an_evolution_run_with_evolve_reaches_meta_and_a_restarted_meta_resumes(tmp_path):
    async with market_and_sesa(tmp_path) as (market, served):
        async with meta_following(tmp_path, served.address) as meta:
            a = await run_evolution(served, 0, seed=7)
            # The finished evolution is recorded at the market time of its bars.
            parameters = await next_version(meta, 1)
            assert parameters.cause == f"SESA evolution {a.evolution_id} finished"
            assert parameters.update_time == a.market_time != WALL
            offspring = sum(1 for generation in a.expected.values() if generation >= 1)
            assert (await MetaClient(meta.channel).trials()).total_evaluations == offspring
        assert stored_evaluations(tmp_path / "meta") == rows(a)

        # While meta is down, the market moves on and SESA runs another evolution.
        await MarketClient(market.channel).advance(120)
        b = await run_evolution(served, a.ended_sequence, seed=8)
        assert b.market_time > a.market_time
        async with meta_following(tmp_path, served.address) as meta:
            parameters = await next_version(meta, 2)
            assert parameters.cause == f"SESA evolution {b.evolution_id} finished"
            assert parameters.update_time == b.market_time
    assert stored_evaluations(tmp_path / "meta") == rows(a) | rows(b)
    store = MetaStore(meta_config(tmp_path / "meta").url)
    try:
        assert store.sequence_cursor(STREAM) == SequenceCursor(
            STREAM, b.ended_sequence, b.ended_sequence
        )
    finally:
        store.close()


async def test_a_restarted_follower_counts_no_evolution_twice(tmp_path):
    config = meta_config(tmp_path / "meta")

    async def follow(engine: MetaEngine, client: SesaEvolutionsClient, until: int) -> list:
        learner = SesaLearner(engine)
        stream = client.watch_evolutions(after_sequence=await learner.start())
        counted: list[tuple[str, int]] = []
        async with contextlib.aclosing(stream):
            async for event in stream:
                counted += [(e.strategy_id, e.evaluated_time) for e in await learner.learn(event)]
                if event.sequence == until:
                    break
        return counted

    async with market_and_sesa(tmp_path) as (market, served):
        client = SesaEvolutionsClient(served.channel)
        a = await run_evolution(served, 0, seed=7)
        first = await build_engine(config, clock=lambda: WALL)
        before = await asyncio.wait_for(follow(first, client, a.ended_sequence), TIMEOUT)
        await first.store.run(first.store.close)

        await MarketClient(market.channel).advance(120)
        b = await run_evolution(served, a.ended_sequence, seed=8)
        second = await build_engine(config, clock=lambda: WALL)
        try:
            after = await asyncio.wait_for(follow(second, client, b.ended_sequence), TIMEOUT)
            assert second.current.tracked.last_evolution_time == b.market_time
        finally:
            await second.store.run(second.store.close)
    assert before == [(sid, a.market_time) for sid in a.expected]
    # The restarted follower counted the second evolution only.
    assert after == [(sid, b.market_time) for sid in b.expected]


async def test_meta_skips_an_evolution_whose_start_sesa_dropped_and_counts_the_next(tmp_path):
    # Six events kept: after two evolutions (10 events) the first one's start is gone.
    async with market_and_sesa(tmp_path, kept_events=6) as (market, served):
        a = await run_evolution(served, 0, seed=7)
        await MarketClient(market.channel).advance(120)
        b = await run_evolution(served, a.ended_sequence, seed=8)
        with capture_logs() as logs:
            async with meta_following(tmp_path, served.address) as meta:
                parameters = await next_version(meta, 1)
        assert parameters.cause == f"SESA evolution {b.evolution_id} finished"
        assert parameters.update_time == b.market_time
    assert any("dropped" in entry["event"] for entry in logs)
    assert stored_evaluations(tmp_path / "meta") == rows(b)
