"""Meta learns from the fleet: it follows the market's closed trades, adapts on the market clock
at its interval once the 24 h window holds 20 trades (not before), names the fleet as the cause,
and resumes after the last trade it counted when it restarts, counting none twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from market.client import MarketClient
from market.config import MarketConfig
from market.fleet import ClosedTrades
from market.fleet import Trade as FleetTrade
from market.service import APP as MARKET
from meta.client import MetaClient
from meta.config import MetaConfig
from meta.engine import MetaEngine
from meta.fleet_trades import CAUSE, STREAM, FleetLearner, learn_from_fleet
from meta.service import app, build_engine
from qtmesh.base.genome import StrategyFamily
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app

T0 = 1_767_571_200 * 10**9
MINUTE = 60 * 10**9
# The wall clock the meta server is given: never what an update from the fleet runs at.
WALL = T0 + 10_000 * 60 * MINUTE


def market_config(data_dir: Path) -> MarketConfig:
    return MarketConfig(
        synthetic_days=3, seed=5, replay_start=0.5, data_dir=data_dir, fleet_warmup_bars=600
    )


def meta_config(data_dir: Path, **settings) -> MetaConfig:
    return MetaConfig(
        data_dir=data_dir,
        scale_fleet=False,
        learn_from_sesa=False,
        follow_regimes=False,
        record_to_memory=False,
        **settings,
    )


def fleet_trade(i: int, exit_time: int, value: float) -> FleetTrade:
    return FleetTrade(
        strategy_id=f"S{i % 3}/ma",
        sector="Tech",
        symbol=f"S{i % 3}",
        side=1,
        entry_time=exit_time - 5 * MINUTE,
        exit_time=exit_time,
        bar_count=5,
        return_fraction=value,
        pnl=value * 1000,
        family=StrategyFamily.MA_CROSSOVER,
    )


def message(trades: list[FleetTrade], clock: int) -> ClosedTrades:
    last = trades[-1].cursor if trades else None
    return ClosedTrades(tuple(trades), last, clock, 0, True)


async def test_the_os_adapts_on_the_fleet_clock_at_its_interval_once_20_trades_are_in(tmp_path):
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    learner = FleetLearner(engine)
    values = np.random.default_rng(3).normal(0.0005, 0.01, 40)
    trades = [fleet_trade(i, T0 + (i + 1) * MINUTE, float(values[i])) for i in range(40)]
    try:
        # 19 closed trades: the window is short of 20, nothing adapts however late the clock.
        await learner.learn(message(trades[:19], T0 + 30 * MINUTE))
        assert engine.parameters.version == 1
        assert await learner.cursor() == trades[18].cursor
        # The 20th: the OS adapts at its exit time, the market's, and names the fleet.
        await learner.learn(message(trades[19:21], T0 + 30 * MINUTE))
        adapted = engine.parameters
        assert (adapted.version, adapted.cause) == (2, CAUSE)
        assert adapted.update_time == trades[19].exit_time
        assert engine.current.changes
        assert "model_weights[MA_CROSSOVER]" in adapted.values()
        # Within the 60-minute interval more trades only count; the first one after it adapts.
        await learner.learn(message(trades[21:40], T0 + 59 * MINUTE))
        assert engine.parameters.version == 2
        late = fleet_trade(40, T0 + 20 * MINUTE + 60 * MINUTE, 0.001)
        await learner.learn(message([late], late.exit_time))
        assert engine.parameters.version == 3
        assert engine.parameters.update_time == late.exit_time
        # A clock step that closed nothing still adapts when the interval has passed.
        await learner.learn(message([], late.exit_time + 61 * MINUTE))
        assert engine.parameters.version == 4
        assert engine.parameters.update_time == late.exit_time + 61 * MINUTE
    finally:
        await engine.store.run(engine.store.close)


class FakeMarket:
    """The market's WatchTrades over fixed clock steps (a double of MarketClient): each
    message after ``after``, then nothing more (``drained`` is set once every message was
    taken in)."""

    def __init__(self, messages: list[ClosedTrades]) -> None:
        self.messages = messages
        self.reads: list[tuple[int, str] | None] = []
        self.drained = asyncio.Event()

    async def watch_trades(
        self, *, after: tuple[int, str] | None = None
    ) -> AsyncIterator[ClosedTrades]:
        self.reads.append(after)
        for m in self.messages:
            if after is None or m.cursor is None or m.cursor > after:
                yield m
        self.drained.set()
        await asyncio.Event().wait()  # live: the clock stands still


async def test_following_the_stream_adapts_every_60_market_minutes_while_20_trades_are_in(
    tmp_path,
):
    # One trade every 5 minutes for 8 hours, then only the clock moves, hourly, for a day.
    values = np.random.default_rng(4).normal(0.0005, 0.01, 96)
    trades = [fleet_trade(i, T0 + 5 * (i + 1) * MINUTE, float(values[i])) for i in range(96)]
    steps = [message([t], t.exit_time) for t in trades]
    quiet = [T0 + (540 + 60 * k) * MINUTE for k in range(25)]
    steps += [ClosedTrades((), trades[-1].cursor, at, 0, True) for at in quiet]
    engine = await build_engine(meta_config(tmp_path), clock=lambda: WALL)
    market = FakeMarket(steps)
    task = asyncio.ensure_future(
        learn_from_fleet(engine, market, initial_backoff=0.01, max_backoff=0.01)
    )
    try:
        await asyncio.wait_for(market.drained.wait(), 60)
        versions = [r.parameters for r in await engine.history(1)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await engine.store.run(engine.store.close)
    assert market.reads == [None]
    assert {p.cause for p in versions} == {CAUSE}
    minutes = [(p.update_time - T0) // MINUTE for p in versions]
    # Not before the 20th trade (minute 100), though nothing had adapted yet; then every 60
    # minutes of market time. Once trades stop, the clock's hourly steps adapt while the 24 h
    # window still holds 20 of them (its start passes the 77th trade, minute 385, at 1825).
    assert minutes == [*range(100, 461, 60), *range(540, 1801, 60)]
    assert all(later - earlier >= 60 for earlier, later in itertools.pairwise(minutes))


async def until_caught_up(stream: AsyncIterator[ClosedTrades], position: int) -> list[FleetTrade]:
    trades: list[FleetTrade] = []
    async for m in stream:
        trades += m.trades
        if m.caught_up and m.position >= position:
            return trades
    raise AssertionError("the stream ended")


async def test_meta_following_the_market_moves_to_a_version_caused_by_fleet_trades(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path / "market")) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        config = meta_config(
            tmp_path / "meta", reconnect_initial_seconds=0.01, reconnect_max_seconds=0.01
        )
        async with serving_app(app(clock=lambda: WALL), config, channel_config=channels) as meta:
            versions = MetaClient(meta.channel).watch(after_version=1)
            client = MarketClient(market.channel)
            await client.advance(120)
            parameters, changes = await anext(versions)
            await versions.aclose()
            closed = sorted(
                (t for t in await client.trades() if t.exit_time is not None),
                key=lambda t: (t.exit_time, t.strategy_id),
            )
    # The first adaptation: when the 20th trade closed, on the market's clock, not before.
    assert (parameters.version, parameters.cause) == (2, CAUSE)
    assert parameters.update_time == closed[19].exit_time
    assert changes


async def test_a_restarted_meta_resumes_after_the_last_trade_it_counted(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path / "market")) as market:
        client = MarketClient(market.channel)
        config = meta_config(tmp_path / "meta")

        async def follow(engine: MetaEngine, position: int) -> list[FleetTrade]:
            """Feeds the stream from the stored cursor up to the clock at ``position``."""
            learner = FleetLearner(engine)
            stream = client.watch_trades(after=await learner.cursor())
            received: list[FleetTrade] = []
            async for m in stream:
                received += m.trades
                await learner.learn(m)
                if m.caught_up and m.position >= position:
                    break
            await stream.aclose()
            return received

        first = await build_engine(config, clock=lambda: WALL)
        moved = await client.advance(120)
        before = await follow(first, moved.position)
        # 120 one-minute bars: the OS adapted when the 20th trade closed, then 60 minutes on.
        adapted = [r.parameters for r in await first.history(1)]
        assert [p.cause for p in adapted] == [CAUSE, CAUSE]
        assert adapted[0].update_time == before[19].exit_time
        assert adapted[1].update_time >= adapted[0].update_time + 60 * MINUTE
        await first.store.run(first.store.close)

        moved = await client.advance(240)
        second = await build_engine(config, clock=lambda: WALL)
        after = await follow(second, moved.position)
        every = await until_caught_up(client.watch_trades(), moved.position)
        # It resumed after the last trade it counted: the rest, each once.
        assert before + after == every
        stored = await second.store.run(second.store.stream_cursor, STREAM)
        assert stored is not None
        assert (stored.exit_time, stored.strategy_id) == every[-1].cursor
        # The window holds every trade once (the fleet's trades all closed within 24 h).
        context = await second.store.run(
            lambda: second.store.read_context(
                window_start=every[-1].exit_time - 24 * 60 * MINUTE,
                now=every[-1].exit_time,
                scores_since=0,
            )
        )
        assert sorted(t.key for t in context.window_trades) == sorted(
            (t.strategy_id, t.symbol, t.entry_time, t.exit_time) for t in every
        )
        assert second.parameters.version > 3
        await second.store.run(second.store.close)
