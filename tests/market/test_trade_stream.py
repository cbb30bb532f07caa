"""WatchTrades over gRPC on a real market (port 0): the fleet's closed trades in the order they
closed as the replay clock moves, a resume after a cursor yielding exactly the rest once, closed
trades never changing later, the drain naming where to resume, and a bad cursor refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.fleet import ClosedTrades, Trade
from market.service import APP
from qtmesh.api.market.v1 import market_pb2, market_pb2_grpc
from qtmesh.base.errors import Unavailable
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app


def config(data_dir: Path) -> MarketConfig:
    return MarketConfig(
        synthetic_days=3, seed=5, replay_start=0.5, data_dir=data_dir, fleet_warmup_bars=600
    )


@pytest.fixture
async def market(tmp_path):
    async with serving_app(APP, config(tmp_path)) as running:
        yield running


async def until_caught_up(stream: AsyncIterator[ClosedTrades], position: int) -> list[Trade]:
    """The trades of every message up to the one that caught up with clock ``position``."""
    trades: list[Trade] = []
    async for message in stream:
        trades += message.trades
        if message.caught_up and message.position >= position:
            return trades
    raise AssertionError("the stream ended")


def closed_in_order(trades: list[Trade]) -> list[Trade]:
    closed = [t for t in trades if t.exit_time is not None]
    return sorted(closed, key=lambda t: (t.exit_time, t.strategy_id))


async def test_a_replaying_market_streams_its_closed_trades_in_the_order_they_closed(market):
    client = MarketClient(market.channel)
    stream = client.watch_trades()
    # At the deployment nothing has closed yet: one message, caught up, without trades.
    first = await anext(stream)
    assert (first.trades, first.cursor, first.caught_up) == ((), None, True)
    seen: list[Trade] = []
    for steps in (60, 240):
        moved = await client.advance(steps)
        seen += await until_caught_up(stream, moved.position)
    await stream.aclose()
    clock = (await client.snapshot()).clock_time
    # Every trade closed by the clock, once, by exit time then strategy id, with its family.
    assert len(seen) >= 20
    assert seen == closed_in_order(await client.trades())
    assert all(t.exit_time is not None and t.exit_time <= clock for t in seen)
    assert all(t.family is not None for t in seen)


async def test_a_resume_after_a_cursor_yields_exactly_the_rest_once(market):
    client = MarketClient(market.channel)
    moved = await client.advance(240)
    everything = await until_caught_up(client.watch_trades(), moved.position)
    assert len(everything) > 10
    cut = everything[9]
    assert cut.cursor is not None
    resumed = client.watch_trades(after=cut.cursor)
    assert await until_caught_up(resumed, moved.position) == everything[10:]
    # Live from there: the trades the next steps close, and none of the earlier ones again.
    later = await client.advance(120)
    more = await until_caught_up(resumed, later.position)
    await resumed.aclose()
    assert more
    assert everything + more == closed_in_order(await client.trades())
    # A closed trade never changes as the clock moves on.
    again = await until_caught_up(client.watch_trades(), later.position)
    assert again[: len(everything)] == everything


async def test_a_cursor_past_the_clock_waits_for_the_clock_to_pass_it(tmp_path):
    # A market restarted on its data replays from replay_start again, behind its followers.
    async with serving_app(APP, config(tmp_path / "first")) as first:
        client = MarketClient(first.channel)
        moved = await client.advance(240)
        everything = await until_caught_up(client.watch_trades(), moved.position)
    async with serving_app(APP, config(tmp_path / "second")) as second:
        client = MarketClient(second.channel)
        cut = everything[-3]
        stream = client.watch_trades(after=cut.cursor)
        first_message = await anext(stream)
        assert first_message.trades == ()
        moved = await client.advance(240)
        assert await until_caught_up(stream, moved.position) == everything[-2:]
        await stream.aclose()


async def test_the_stream_ends_on_shutdown_naming_where_to_resume(tmp_path):
    async with serving_app(APP, config(tmp_path)) as running:
        client = MarketClient(running.channel)
        moved = await client.advance(60)
        stream = client.watch_trades()
        trades = await until_caught_up(stream, moved.position)
        await running.server.stop()
        with pytest.raises(Unavailable) as ended:
            await anext(stream)
        last = trades[-1]
        assert f"resume after the trade of {last.strategy_id}" in ended.value.message


async def test_a_cursor_without_its_exit_time_is_refused(market):
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    call = stub.WatchTrades(
        market_pb2.WatchTradesRequest(after=market_pb2.TradeCursor(strategy_id="x"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await call.read()
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value).metadata["field"] == "after.exit_time"
