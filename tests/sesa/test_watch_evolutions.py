"""WatchEvolutions over real market, meta and SESA servers (port 0): every evolution (Evolve
calls and RUN_EVOLUTION actions) streams its start, generations and end; a resume gets exactly
the rest, once, also after a restart; the log is bounded; drain and slow subscribers end the
stream with the sequence to resume after."""

from __future__ import annotations

import asyncio
import contextlib
import math
from pathlib import Path

import grpc
import pytest

import sesa.service
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.config import MetaConfig
from meta.service import APP as META
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2_grpc
from qtmesh.base.contract import Action, ExecutionState, Priority, RunEvolution
from qtmesh.base.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app
from sesa.client import SesaClient, bar_source
from sesa.config import SesaConfig
from sesa.events import EventLog
from sesa.store import ENDED, GENERATION, STARTED, EvolutionStore

QUICK = pb.EvolutionConfig(
    num_generations=2, num_mutations_per_parent=4, evaluation_lookback_days=3
)
EVENTS_PER_QUICK = 1 + 3 + 1  # started, generations 0..2, ended
TIMEOUT = 60


async def take(stream, count: int) -> list[pb.WatchEvolutionsResponse]:
    async def read() -> list[pb.WatchEvolutionsResponse]:
        events = []
        async for event in stream:
            events.append(event)
            if len(events) == count:
                break
        return events

    async with contextlib.aclosing(stream):
        return await asyncio.wait_for(read(), timeout=TIMEOUT)


async def until_ended(stream) -> list[pb.WatchEvolutionsResponse]:
    async def read() -> list[pb.WatchEvolutionsResponse]:
        events = []
        async for event in stream:
            events.append(event)
            if event.HasField("ended"):
                break
        return events

    async with contextlib.aclosing(stream):
        return await asyncio.wait_for(read(), timeout=TIMEOUT)


def kinds(events) -> list[str]:
    return [e.WhichOneof("event") for e in events]


@contextlib.asynccontextmanager
async def market_server(tmp_path: Path):
    async with serving_app(
        MARKET, MarketConfig(synthetic_days=8, seed=5, data_dir=tmp_path / "market")
    ) as market:
        yield market


@contextlib.asynccontextmanager
async def sesa_server(tmp_path: Path, addresses: dict[str, str], **settings):
    alone = {"record_to_memory": False, "recall_from_memory": False}  # no memory is served
    config = SesaConfig(data_dir=tmp_path / "sesa", **(alone | settings))
    channels = ChannelConfig(addresses=addresses)
    async with serving_app(sesa.service.APP, config, channel_config=channels) as served:
        yield served


async def evolve(client: SesaClient, seed: int = 7) -> pb.EvolutionResult:
    events = [
        e async for e in client.evolve(bars=bar_source(symbol="NOVA"), config=QUICK, seed=seed)
    ]
    return events[-1]


async def test_an_evolve_evolution_streams_its_start_generations_and_end(tmp_path):
    async with (
        market_server(tmp_path) as market,
        sesa_server(tmp_path, {"market": market.address}) as served,
    ):
        client = SesaClient(served.channel)
        watching = asyncio.ensure_future(take(client.watch_evolutions(after_sequence=0), 5))
        result = await evolve(client)
        events = await watching
    assert kinds(events) == ["started", "generation", "generation", "generation", "ended"]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]
    assert {e.evolution_id for e in events} == {result.evolution_id}
    assert {e.start_sequence for e in events} == {1}
    assert all(e.event_time.seconds > 0 for e in events)
    started = events[0].started
    assert started.symbol == "NOVA"
    assert started.sector
    assert started.config.num_generations == 2
    assert started.config.num_mutations_per_parent == 4
    assert started.config.top_k == 5
    assert started.config.costs.commission_bps == 1.0
    assert started.seed == 7
    assert started.bar_count == 3 * 1440
    assert started.WhichOneof("origin") == "evolve"
    assert started.evolve.peer
    assert started.evolve.request_id
    assert [e.generation.generation for e in events[1:4]] == [0, 1, 2]
    assert events[3].generation.trials == result.trials
    ended = events[-1].ended
    assert ended.outcome == pb.EVOLUTION_OUTCOME_FINISHED
    assert ended.summary.trials == result.trials
    assert ended.summary.generations == 3
    chosen = [e for e in result.top if e.passed_gates]
    assert [c.genome_id for c in ended.summary.candidates] == [e.genome.id for e in chosen]
    for summary, evaluation in zip(ended.summary.candidates, chosen, strict=True):
        assert summary.strategy_id == f"NOVA/{evaluation.genome.id}"
        oos = evaluation.out_of_sample_metrics
        assert summary.sharpe_ratio == oos.sharpe_ratio
        assert summary.win_rate == oos.win_rate
        assert summary.trade_count == oos.trade_count
    if not chosen:
        assert ended.summary.best.genome_id == result.top[0].genome.id
        assert ended.summary.best.gate_failures
    assert not ended.summary.HasField("shadow_book")
    # Each candidate carries its out-of-sample walk-forward folds (three of the four).
    for summary in [*ended.summary.candidates, ended.summary.best]:
        if summary.genome_id:
            assert len(summary.fold_sharpe_ratios) == 3
            assert all(math.isfinite(s) for s in summary.fold_sharpe_ratios)


async def test_an_evolve_call_closed_early_ends_its_evolution_cancelled(tmp_path):
    async with (
        market_server(tmp_path) as market,
        sesa_server(tmp_path, {"market": market.address}) as served,
    ):
        client = SesaClient(served.channel)
        watching = asyncio.ensure_future(until_ended(client.watch_evolutions(after_sequence=0)))
        # Far more generations than can run before the cancel arrives, however slow the machine.
        endless = pb.EvolutionConfig()
        endless.CopyFrom(QUICK)
        endless.num_generations = 500
        events = client.evolve(bars=bar_source(symbol="NOVA"), config=endless, seed=7)
        async with contextlib.aclosing(events):
            async for _ in events:
                break  # generation 0 seen: the caller goes away
        seen = await watching
    started, ended = seen[0], seen[-1]
    assert started.WhichOneof("event") == "started"
    # Generation 0, and perhaps the next one, ran before the cancel reached the server.
    assert set(kinds(seen[1:-1])) == {"generation"}
    assert ended.ended.outcome == pb.EVOLUTION_OUTCOME_CANCELLED
    assert ended.start_sequence == started.sequence


def run_evolution(key: str) -> Action:
    return Action(
        id="evolve",
        priority=Priority.LOW,
        target="sesa/evolution",
        parameters=RunEvolution(symbols=("ORBT",), generations=2),
        confidence=0.6,
        rationale="test",
        idempotency_key=key,
    )


async def test_a_run_evolution_actions_evolution_streams_with_the_action_that_started_it(
    tmp_path,
):
    async with market_server(tmp_path) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        async with (
            serving_app(
                META,
                MetaConfig(
                    data_dir=tmp_path / "meta",
                    learn_from_sesa=False,
                    follow_regimes=False,
                    record_to_memory=False,
                ),
                channel_config=channels,
            ) as meta,
            sesa_server(tmp_path, {"market": market.address, "meta": meta.address}) as served,
        ):
            watching = asyncio.ensure_future(
                take(SesaClient(served.channel).watch_evolutions(after_sequence=0), 5)
            )
            agent = AgentClient(served.channel, name="sesa")
            result = await agent.execute(run_evolution("plan-3/evolve"), plan_sequence=3)
            events = await watching
    assert kinds(events) == ["started", "generation", "generation", "generation", "ended"]
    assert {e.evolution_id for e in events} == {result.outcome["evolution_id"]}
    started = events[0].started
    assert started.symbol == "ORBT"
    assert started.sector == result.outcome["sectors"]
    assert started.WhichOneof("origin") == "action"
    origin = started.action
    assert (origin.action_key, origin.action_id, origin.plan_sequence) == (
        "plan-3/evolve",
        "evolve",
        3,
    )
    assert list(origin.symbols) == ["ORBT"]
    assert origin.book_key == "plan-3/evolve"
    assert origin.meta_version == result.outcome["meta_version"]
    assert started.config.mutation_rate == float(result.outcome["mutation_rate"])
    ended = events[-1].ended
    assert ended.outcome == pb.EVOLUTION_OUTCOME_FINISHED
    assert str(ended.summary.trials) == result.outcome["trials"]
    candidates = [c.strategy_id for c in ended.summary.candidates]
    assert ",".join(candidates) == result.outcome["candidates"]
    assert list(ended.summary.shadow_book.strategy_ids) == candidates
    assert str(ended.summary.shadow_book.change_sequence) == result.outcome["fleet_change"]


async def test_a_resume_gets_exactly_the_rest_once_then_live_events(tmp_path):
    async with (
        market_server(tmp_path) as market,
        sesa_server(tmp_path, {"market": market.address}) as served,
    ):
        client = SesaClient(served.channel)
        first = await evolve(client, seed=1)
        # Resumed after the second event: the other three, then the next evolution live.
        resumed = asyncio.ensure_future(take(client.watch_evolutions(after_sequence=2), 3 + 5))
        # Live only: from the next event on (headers say it is subscribed).
        stub = sesa_pb2_grpc.SesaServiceStub(served.channel)
        live = stub.WatchEvolutions(pb.WatchEvolutionsRequest())
        await asyncio.wait_for(live.initial_metadata(), timeout=TIMEOUT)
        second = await evolve(client, seed=2)
        events = await resumed
        live_events = [await asyncio.wait_for(live.read(), timeout=TIMEOUT) for _ in range(5)]
        live.cancel()
    assert [e.sequence for e in events] == list(range(3, 11))
    assert [e.evolution_id for e in events] == [first.evolution_id] * 3 + [second.evolution_id] * 5
    assert [e.start_sequence for e in events] == [1] * 3 + [6] * 5
    assert [e.sequence for e in live_events] == list(range(6, 11))
    assert kinds(live_events) == kinds(events[3:])


async def test_a_resume_survives_a_restart_and_an_unended_run_is_recorded_interrupted(tmp_path):
    async with market_server(tmp_path) as market:
        addresses = {"market": market.address}
        async with sesa_server(tmp_path, addresses) as served:
            result = await evolve(SesaClient(served.channel))
        # A SESA that crashed mid-evolution left a started event and no end.
        path = tmp_path / "sesa" / "sesa.db"
        store = EvolutionStore(create_engine(sqlite_url(path)), keep=100)
        started = pb.WatchEvolutionsResponse(
            evolution_id="evo-000000000000", started=pb.EvolutionStarted(symbol="ORBT")
        )
        store.append("evo-000000000000", STARTED, 1, started.SerializeToString())
        store.close()
        async with sesa_server(tmp_path, addresses) as served:
            events = await take(SesaClient(served.channel).watch_evolutions(after_sequence=3), 4)
    assert [e.sequence for e in events] == [4, 5, 6, 7]
    assert kinds(events) == ["generation", "ended", "started", "ended"]
    assert events[1].evolution_id == result.evolution_id
    assert events[1].ended.outcome == pb.EVOLUTION_OUTCOME_FINISHED
    assert events[3].evolution_id == "evo-000000000000"
    assert events[3].start_sequence == 6
    assert events[3].ended.outcome == pb.EVOLUTION_OUTCOME_INTERRUPTED


async def test_the_log_is_bounded_and_refuses_a_resume_before_its_oldest_event(tmp_path):
    async with (
        market_server(tmp_path) as market,
        sesa_server(tmp_path, {"market": market.address}, kept_events=3) as served,
    ):
        client = SesaClient(served.channel)
        await evolve(client)  # events 1..5: 3..5 are kept
        with pytest.raises(FailedPrecondition) as refused:
            await take(client.watch_evolutions(after_sequence=1), 1)
        assert refused.value.metadata["field"] == "after_sequence"
        assert refused.value.metadata["oldest_sequence"] == "3"
        assert "the oldest available is sequence 3" in refused.value.message
        kept = await take(client.watch_evolutions(after_sequence=2), 3)
        assert [e.sequence for e in kept] == [3, 4, 5]
        for bad in (-1, 6):
            with pytest.raises(InvalidArgument) as invalid:
                await take(client.watch_evolutions(after_sequence=bad), 1)
            assert invalid.value.field == "after_sequence"


async def test_drain_ends_the_stream_with_unavailable_and_the_resume_sequence(tmp_path):
    async with (
        market_server(tmp_path) as market,
        sesa_server(tmp_path, {"market": market.address}) as served,
    ):
        await evolve(SesaClient(served.channel))
        stub = sesa_pb2_grpc.SesaServiceStub(served.channel)
        call = stub.WatchEvolutions(pb.WatchEvolutionsRequest(after_sequence=0))
        received = [await asyncio.wait_for(call.read(), timeout=TIMEOUT) for _ in range(5)]
        stopping = asyncio.ensure_future(served.server.stop())
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await asyncio.wait_for(call.read(), timeout=TIMEOUT)
        await stopping
    assert [e.sequence for e in received] == [1, 2, 3, 4, 5]
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "resume with after_sequence=5" in failure.value.details()
    assert error_info(failure.value).metadata["resume_after_sequence"] == "5"


class _Context:
    """Says when the stream sent its headers: it has subscribed by then."""

    def __init__(self) -> None:
        self.subscribed = asyncio.Event()

    async def send_initial_metadata(self, metadata) -> None:
        self.subscribed.set()


def _message(name: str, generation: int) -> bytes:
    return pb.WatchEvolutionsResponse(
        evolution_id=name, generation=pb.GenerationStats(generation=generation)
    ).SerializeToString()


class _WatchedLog(EventLog):
    """Counts the pages read that reached the log's end: the reader waits on its live queue
    right after one (nothing in between awaits)."""

    def __init__(self, tmp_path: Path) -> None:
        store = EvolutionStore(create_engine(sqlite_url(tmp_path / "log.db")), keep=100)
        super().__init__(store, queue_size=2)
        self.ends_read = 0
        self._read = asyncio.Condition()

    async def page(self, after: int, limit: int):
        oldest, events = await super().page(after, limit)
        if len(events) < limit:
            async with self._read:
                self.ends_read += 1
                self._read.notify_all()
        return oldest, events

    async def ends_reached(self, count: int) -> None:
        async with self._read:
            await self._read.wait_for(lambda: self.ends_read >= count)


def _watch(log: EventLog, tmp_path: Path, after_sequence: int | None = None):
    servicer = sesa.service.SesaServicer(
        config=SesaConfig(data_dir=tmp_path),
        market=None,
        events=log,  # type: ignore[arg-type]
    )
    request = pb.WatchEvolutionsRequest()
    if after_sequence is not None:
        request.after_sequence = after_sequence
    return servicer.WatchEvolutions(request, _Context())


async def test_a_slow_subscriber_is_cut_off_with_the_sequence_to_resume_after(tmp_path):
    log = _WatchedLog(tmp_path)
    slow, fast = _watch(log, tmp_path), _watch(log, tmp_path)
    first = asyncio.ensure_future(slow.__anext__())
    fast_first = asyncio.ensure_future(fast.__anext__())
    await log.ends_reached(2)  # both follow their live queues now
    await log.append("evo-a", STARTED, _message("evo-a", 0))
    assert (await first).sequence == 1
    assert (await fast_first).sequence == 1
    # The slow one reads nothing while three more are appended: its queue of 2 overflows, and
    # appending never waited for it.
    for generation in range(3):
        await log.append("evo-a", GENERATION, _message("evo-a", generation), start_sequence=1)
        assert (await fast.__anext__()).sequence == generation + 2
    with pytest.raises(ResourceExhausted) as cut:
        await slow.__anext__()
    assert cut.value.metadata["resume_after_sequence"] == "1"
    assert "resume with after_sequence=1" in cut.value.message
    await fast.aclose()


async def test_a_subscriber_that_falls_behind_while_reading_history_misses_nothing(tmp_path):
    log = EventLog(
        EvolutionStore(create_engine(sqlite_url(tmp_path / "log.db")), keep=100), queue_size=2
    )
    await log.append("evo-a", STARTED, _message("evo-a", 0))
    for generation in range(4):
        await log.append("evo-a", GENERATION, _message("evo-a", generation), start_sequence=1)
    reader = _watch(log, tmp_path, after_sequence=0)
    seen = [(await reader.__anext__()).sequence]
    # Three more while it holds the first of the history: its live queue of 2 overflows, and
    # the log it reads on from has them all.
    for generation in range(4, 7):
        await log.append("evo-a", GENERATION, _message("evo-a", generation), start_sequence=1)
    seen += [(await reader.__anext__()).sequence for _ in range(7)]
    assert seen == list(range(1, 9))
    # Then live, from the queue that replaced the overflowed one.
    await log.append("evo-a", GENERATION, _message("evo-a", 7), start_sequence=1)
    assert (await reader.__anext__()).sequence == 9
    await reader.aclose()


def test_the_store_keeps_the_newest_events_on_both_backends(database_url):
    store = EvolutionStore(create_engine(database_url), keep=3)
    try:
        started = store.append("evo-a", STARTED, 10, b"s")
        assert started.start_sequence == started.sequence
        store.append("evo-a", GENERATION, 11, b"g", start_sequence=started.sequence)
        assert store.unended() == [(started.sequence, "evo-a")]
        for i in range(2):
            store.append("evo-a", GENERATION, 12 + i, b"g", start_sequence=started.sequence)
        end = store.append("evo-a", ENDED, 20, b"e", start_sequence=started.sequence)
        oldest, last = store.bounds()
        assert last == end.sequence
        assert oldest == last - 2
        got_oldest, page = store.page(0, 10)
        assert got_oldest == oldest
        assert [e.sequence for e in page] == [oldest, oldest + 1, last]
        assert page[-1].payload == b"e"
        assert {e.start_sequence for e in page} == {started.sequence}
        assert store.unended() == []
        assert store.page(last, 10)[1] == []
    finally:
        store.close()


async def test_after_a_restart_an_evolutions_key_reads_applied_only_if_it_finished(tmp_path):
    async with market_server(tmp_path) as market:
        addresses = {"market": market.address}
        async with sesa_server(tmp_path, addresses) as served:
            agent = AgentClient(served.channel, name="sesa")
            result = await agent.execute(run_evolution("plan-3/evolve"), plan_sequence=3)
        # A SESA that crashed while the evolution of plan 4 ran.
        store = EvolutionStore(create_engine(sqlite_url(tmp_path / "sesa" / "sesa.db")), keep=100)
        origin = pb.ActionOrigin(action_key="plan-4/evolve", symbols=["ORBT"])
        started = pb.WatchEvolutionsResponse(
            evolution_id="evo-4", started=pb.EvolutionStarted(symbol="ORBT", action=origin)
        )
        store.append("evo-4", STARTED, 1, started.SerializeToString())
        store.close()
        async with sesa_server(tmp_path, addresses) as served:
            agent = AgentClient(served.channel, name="sesa")
            finished = await agent.execution("plan-3/evolve")
            interrupted = await agent.execution("plan-4/evolve")
            never = await agent.execution("plan-5/evolve")
            again = await agent.execute(run_evolution("plan-3/evolve"), plan_sequence=3)
            stored = EvolutionStore(
                create_engine(sqlite_url(tmp_path / "sesa" / "sesa.db")), keep=9
            )
            runs = [e for e in stored.lifecycle() if e.kind == STARTED]
            stored.close()
    assert not again.applied
    assert again.detail.startswith("already ran: finished before SESA restarted")
    assert len(runs) == 2  # plan 3's and plan 4's: plan 3's did not run again
    assert finished.state is ExecutionState.APPLIED
    assert finished.outcome["evolution_id"] == result.outcome["evolution_id"]
    assert finished.detail == f"finished before SESA restarted: {result.outcome['evolution_id']}"
    assert interrupted.state is ExecutionState.NOT_APPLIED  # it runs again when asked to
    assert never.state is ExecutionState.NOT_APPLIED
