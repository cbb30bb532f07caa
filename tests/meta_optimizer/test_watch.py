"""The ledger's stream (WatchLedger) over real servers on port 0: a cycle's proposals and then the
cycle as RunOptimizationCycle writes them, replays that read as the live events did, resuming
after a sequence (also after a restart, and on a database written before the stream existed),
bad requests, a subscriber that falls behind, and drain. Lifecycle transitions on the stream are
in test_lifecycle_service.py, which has a federation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from pathlib import Path

import pytest

from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.config import AlphaReportingConfig
from alpha_reporting.service import app as alpha_app
from meta_optimizer.client import MetaOptimizerClient
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.ledger import EventKind, ProposalState
from meta_optimizer.service import app as metaopt_app
from meta_optimizer.store import events as event_table
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2_grpc as pb_grpc
from qtmesh.base.config import Secret
from qtmesh.base.errors import InvalidArgument, ResourceExhausted, Unavailable
from qtmesh.base.storage import create_engine, sqlite_url
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from tests.helpers.meta_optimizer import Watcher, noise, planted

KEYS = f"k1:{base64.b64encode(b'1' * 32).decode()}"
T0 = 1_800_000_000 * 10**9
ALPHAS = {
    "Tech": noise(1, 0.010, 0.003),
    "Energy": noise(2, -0.008, 0.003),
    "Crypto": noise(3, 0.000, 0.003),
    "Financials": noise(4, 0.001, 0.003),
}
PROPOSAL, CYCLE = EventKind.PROPOSAL, EventKind.CYCLE


class Ticks:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        self.now += 10**9
        return self.now


@contextlib.asynccontextmanager
async def services(tmp_path: Path, *, submit: bool = True, **settings):
    """Alpha-reporting (with the planted reports unless it has them) and the meta optimizer,
    both keeping their state under ``tmp_path`` across restarts; yields (client, running)."""
    alpha_config = AlphaReportingConfig(
        data_dir=tmp_path / "alpha", keyring=Secret(KEYS), watch_market=False
    )
    async with serving_app(alpha_app(), alpha_config) as alpha:
        if submit:
            client = AlphaReportingClient(alpha.channel)
            for sector, values in ALPHAS.items():
                for report in planted(sector, values):
                    await client.submit(report)
        config = MetaOptimizerConfig(
            data_dir=tmp_path / "metaopt",
            keyring=Secret(KEYS),
            auto_window_days=0,
            follow_plans=False,
            **settings,
        )
        channels = ChannelConfig(addresses={"alpha-reporting": alpha.address})
        async with serving_app(
            metaopt_app(clock=Ticks()), config, channel_config=channels
        ) as running:
            yield MetaOptimizerClient(running.channel), running


@contextlib.asynccontextmanager
async def watching(client: MetaOptimizerClient, *, after_sequence: int | None):
    watcher = Watcher(client, after_sequence=after_sequence)
    try:
        yield watcher
    finally:
        await watcher.close()


def as_written(cycle) -> list[tuple]:
    """The events a cycle writes: its proposals in ledger order, then it."""
    return [(PROPOSAL, p) for p in cycle.proposals] + [(CYCLE, cycle)]


def seen(watcher: Watcher) -> list[tuple]:
    return [(e.kind, e.cycle if e.kind is CYCLE else e.proposal) for e in watcher.events]


async def test_a_subscriber_sees_each_cycle_s_proposals_then_the_cycle_as_it_is_written(tmp_path):
    async with (
        services(tmp_path) as (client, _),
        watching(client, after_sequence=0) as live,
    ):
        first = await client.run_cycle(start_date="2026-02-04", end_date="2026-02-10")
        assert len(first.proposals) == 3
        await live.reach(4)
        assert seen(live) == as_written(first)
        assert live.sequences == [1, 2, 3, 4]
        assert {e.proposal.state for e in live.events[:3]} == {ProposalState.PROPOSED}

        second = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-11")
        end = 4 + len(second.proposals) + 1
        await live.reach(end)
        assert seen(live) == as_written(first) + as_written(second)
        assert live.sequences == list(range(1, end + 1))

        # Read back from the store, the events are the ones delivered live.
        async with watching(client, after_sequence=0) as replay:
            await replay.reach(end)
            assert replay.events == live.events


async def test_resuming_after_a_sequence_yields_every_later_event_once_then_live_ones(tmp_path):
    async with services(tmp_path) as (client, running):
        stub = pb_grpc.MetaOptimizerServiceStub(running.channel)
        first = await client.run_cycle(start_date="2026-02-04", end_date="2026-02-10")
        second = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-11")
        written = as_written(first) + as_written(second)
        async with watching(client, after_sequence=2) as resumed:
            await resumed.reach(len(written))
            assert seen(resumed) == written[2:]
            third = await client.run_cycle()
            total = len(written) + len(third.proposals) + 1
            await resumed.reach(total)
            assert resumed.sequences == list(range(3, total + 1))
            assert seen(resumed) == (written + as_written(third))[2:]

        # Unset: only what comes after the subscription (connected once the headers are in).
        call = stub.WatchLedger(pb.WatchLedgerRequest())
        try:
            await asyncio.wait_for(call.wait_for_connection(), timeout=10)
            fourth = await client.run_cycle(start_date="2026-02-06", end_date="2026-02-11")
            fresh = []
            async for message in call:
                fresh.append(message)
                if len(fresh) == len(fourth.proposals) + 1:
                    break
        finally:
            call.cancel()
        assert [m.sequence for m in fresh] == list(range(total + 1, len(fresh) + total + 1))
        assert [m.WhichOneof("event") for m in fresh][-1] == "cycle"
        assert fresh[-1].cycle.id == fourth.id


async def test_the_stream_resumes_after_a_restart(tmp_path):
    async with services(tmp_path) as (client, _):
        first = await client.run_cycle(start_date="2026-02-04", end_date="2026-02-10")
        second = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-11")
        async with watching(client, after_sequence=0) as before:
            written = as_written(first) + as_written(second)
            await before.reach(len(written))
    async with (
        services(tmp_path, submit=False) as (client, _),
        watching(client, after_sequence=3) as after,
    ):
        await after.reach(len(written))
        assert after.events == before.events[3:]
        third = await client.run_cycle()
        assert third.sequence == 3
        await after.reach(len(written) + len(third.proposals) + 1)
        assert seen(after) == (written + as_written(third))[3:]
        assert after.sequences == list(range(4, len(written) + len(third.proposals) + 2))


async def test_a_database_written_before_the_stream_gets_its_events_once_on_open(tmp_path):
    async with services(tmp_path) as (client, _):
        first = await client.run_cycle(start_date="2026-02-04", end_date="2026-02-10")
        second = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-11")
        async with watching(client, after_sequence=0) as before:
            await before.reach(len(as_written(first) + as_written(second)))
    engine = create_engine(sqlite_url(tmp_path / "metaopt" / "metaopt.db"))
    with engine.begin() as c:
        c.execute(event_table.delete())
    engine.dispose()
    for _ in range(2):  # the second open finds them and adds none
        async with (
            services(tmp_path, submit=False) as (client, _),
            watching(client, after_sequence=0) as after,
        ):
            await after.reach(len(before.events))
            assert after.events == before.events


async def test_a_bad_after_sequence_is_refused_naming_the_field(tmp_path):
    async with services(tmp_path) as (client, _):
        cycle = await client.run_cycle()
        last = len(cycle.proposals) + 1
        for bad in (-1, last + 1):
            with pytest.raises(InvalidArgument) as failure:
                async for _ in client.watch(after_sequence=bad):
                    pass
            assert failure.value.field == "after_sequence"
            assert f"must be in 0..{last}" in failure.value.message
        # The server keeps serving.
        async with watching(client, after_sequence=last - 1) as watcher:
            await watcher.reach(last)
            assert [e.kind for e in watcher.events] == [CYCLE]


async def test_a_subscriber_that_falls_behind_ends_with_resource_exhausted(tmp_path):
    # A queue of one live event: a cycle of three proposals writes four at once, so a subscriber
    # waiting on its queue when a cycle is written falls behind (one catching up from the store
    # is not cut off: it reads on from there).
    async with services(tmp_path, watch_queue_events=1) as (client, _):
        watcher = Watcher(client, after_sequence=0)
        cycles = []
        try:
            for _ in range(20):
                cycles.append(await client.run_cycle())
                if watcher.done:
                    break
            error = await watcher.ended()
        finally:
            await watcher.close()
        assert isinstance(error, ResourceExhausted)
        resume = int(error.metadata["resume_after_sequence"])
        assert watcher.sequences == list(range(1, resume + 1))
        assert f"resume with after_sequence={resume}" in error.message
        # The cycles went on meanwhile; resuming gets the rest once.
        total = 4 * len(cycles)
        async with watching(client, after_sequence=resume) as resumed:
            await resumed.reach(total)
            assert resumed.sequences == list(range(resume + 1, total + 1))
        assert seen(watcher) + seen(resumed) == [x for c in cycles for x in as_written(c)]


async def test_drain_ends_the_stream_with_unavailable_naming_the_resume_sequence(tmp_path):
    async with services(tmp_path) as (client, running):
        cycle = await client.run_cycle()
        last = len(cycle.proposals) + 1
        watcher = Watcher(client, after_sequence=0)
        try:
            await watcher.reach(last)
            await running.server.stop()
            error = await watcher.ended()
        finally:
            await watcher.close()
        assert isinstance(error, Unavailable)
        assert error.metadata["resume_after_sequence"] == str(last)
        assert f"resume with after_sequence={last}" in error.message
