"""The market service over gRPC: bars, snapshot, the replay clock, streaming, ingestion, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP
from market.sources import save_bars
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.api.market.v1 import market_pb2, market_pb2_grpc
from qtmesh.base.bars import make_series
from qtmesh.base.config import ConfigError
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.paging import encode_token
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

MINUTE = 60 * 10**9
SMALL = MarketConfig(synthetic_days=2, seed=11, replay_start=0.5)


@pytest.fixture
async def market():
    async with serving_app(APP, SMALL) as running:
        yield running


async def test_symbols_cover_several_sectors(market):
    client = MarketClient(market.channel)
    infos = await client.list_symbols()
    assert {i.sector for i in infos} == {"Tech", "Energy", "Crypto", "Financials"}
    assert all(i.bar_count == 1440 for i in infos)
    assert [i.symbol for i in await client.list_symbols("Crypto")] == ["BTCX", "ETHX"]
    with pytest.raises(InvalidArgument, match="unknown sector 'Metals'"):
        await client.list_symbols("Metals")


async def test_get_bars_pages_through_a_window_up_to_the_clock(market):
    client = MarketClient(market.channel)
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    expected = generate(SyntheticMarketSpec(seed=11, days=2)).series[0]

    first = await stub.GetBars(
        market_pb2.GetBarsRequest(symbol="ORBT", lookback=1000, page_size=400)
    )
    assert len(first.bars.close) == 400
    assert first.next_page_token
    bars = await client.bars("ORBT", lookback=1000)
    assert len(bars) == 1000
    assert bars.equals(expected.slice(440, 1440))

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetBars(
            market_pb2.GetBarsRequest(symbol="NOVA", page_token=first.next_page_token)
        )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == "page_token"


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("ListSymbols", market_pb2.ListSymbolsRequest(page_token=encode_token(sector=""))),
        ("ListSymbols", market_pb2.ListSymbolsRequest(page_token=encode_token(sector="", o=-5))),
        ("ListSymbols", market_pb2.ListSymbolsRequest(page_token=encode_token(sector="", o="1"))),
        ("ListSymbols", market_pb2.ListSymbolsRequest(page_token=encode_token(sector="", o=True))),
        (
            "GetBars",
            market_pb2.GetBarsRequest(symbol="ORBT", page_token=encode_token(symbol="ORBT")),
        ),
        (
            "GetBars",
            market_pb2.GetBarsRequest(
                symbol="ORBT", page_token=encode_token(symbol="ORBT", first=10)
            ),
        ),
        (
            "GetBars",
            market_pb2.GetBarsRequest(
                symbol="ORBT", page_token=encode_token(symbol="ORBT", first=-400, stop=10)
            ),
        ),
        (
            "GetBars",
            market_pb2.GetBarsRequest(
                symbol="ORBT", page_token=encode_token(symbol="ORBT", first=20, stop=10)
            ),
        ),
        (
            "GetBars",
            market_pb2.GetBarsRequest(
                symbol="ORBT", page_token=encode_token(symbol="ORBT", first=0.5, stop=10)
            ),
        ),
        # Past the clock: the bars after it are never served through a token either.
        (
            "GetBars",
            market_pb2.GetBarsRequest(
                symbol="ORBT", page_token=encode_token(symbol="ORBT", first=1439, stop=2880)
            ),
        ),
    ],
)
async def test_page_tokens_the_server_never_issued_name_page_token(market, method, request_message):
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    client = MarketClient(market.channel)
    before = await client.snapshot()
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(stub, method)(request_message)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == "page_token"
    # Nothing moved, and honest pages are still served.
    assert (await client.snapshot()).position == before.position
    assert len(await client.bars("ORBT", lookback=1000)) == 1000


@pytest.mark.parametrize(
    ("request_fields", "field", "problem"),
    [
        ({"symbol": "NOPE"}, "symbol", "unknown symbol 'NOPE'"),
        ({"symbol": "ORBT", "lookback": 5000}, "lookback", "5000 bars requested"),
        ({"symbol": "ORBT", "lookback": -1}, "lookback", "must not be negative"),
        ({"symbol": "ORBT", "page_size": -3}, "page_size", "must not be negative"),
    ],
)
async def test_get_bars_validation(market, request_fields, field, problem):
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.GetBars(market_pb2.GetBarsRequest(**request_fields))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field
    assert problem in failure.value.details()


async def test_a_window_past_the_clock_is_rejected(market):
    client = MarketClient(market.channel)
    snapshot = await client.snapshot()
    with pytest.raises(InvalidArgument, match="after the replay clock") as failure:
        await client.bars("ORBT", end_time=snapshot.clock_time + MINUTE)
    assert failure.value.field == "end_time"


async def test_snapshot_advance_and_the_end_of_the_data(market):
    client = MarketClient(market.channel)
    before = await client.snapshot()
    assert (before.position, before.length) == (1440, 2880)
    assert len(before.quotes) == 9
    assert {s.sector for s in before.sectors} == {"Tech", "Energy", "Crypto", "Financials"}
    assert all(q.bar.time == before.clock_time for q in before.quotes)
    assert all(q.volatility_24h > 0 for q in before.quotes)

    result = await client.advance(60)
    assert (result.position, result.revealed_bars, result.at_end) == (1500, 9 * 60, False)
    after = await client.snapshot(["BTCX"])
    assert after.clock_time == before.clock_time + 60 * MINUTE
    assert [q.bar.symbol for q in after.quotes] == ["BTCX"]

    with pytest.raises(InvalidArgument, match="1380 remain") as failure:
        await client.advance(2000)
    assert failure.value.field == "steps"
    with pytest.raises(InvalidArgument) as failure:
        await client.snapshot(["BTCX", "NOPE"])
    assert failure.value.field == "symbols[1]"
    assert (await client.advance(1380)).at_end


async def test_stream_delivers_each_step_once_and_resumes_exactly(market):
    client = MarketClient(market.channel)
    start = (await client.snapshot()).position
    received: list[int] = []
    three = asyncio.Event()

    async def consume(after: int | None, until: int) -> None:
        async for position, _clock, bars in client.stream_bars(
            ["ORBT", "BANK"], after_position=after
        ):
            assert [b.symbol for b in bars] == ["ORBT", "BANK"]
            received.append(position)
            if len(received) == 3:
                three.set()
            if position == until:
                return

    consumer = asyncio.ensure_future(consume(start, start + 3))
    for _ in range(3):
        await client.advance(1)
    await asyncio.wait_for(consumer, timeout=10)
    assert received == [start + 1, start + 2, start + 3]

    # A subscriber that saw start+1 and reconnects gets everything after it, once, then live.
    received.clear()
    resumed = asyncio.ensure_future(consume(start + 1, start + 5))
    await asyncio.wait_for(three.wait(), timeout=10)
    await client.advance(2)
    await asyncio.wait_for(resumed, timeout=10)
    assert received == [start + 2, start + 3, start + 4, start + 5]

    with pytest.raises(InvalidArgument) as failure:
        async for _ in client.stream_bars(after_position=10**9):
            pass
    assert failure.value.field == "after_position"


async def test_streams_end_with_unavailable_when_the_server_shuts_down():
    async with serving_app(APP, SMALL) as running:
        client = MarketClient(running.channel)
        stub = market_pb2_grpc.MarketServiceStub(running.channel)
        call = stub.StreamBars(market_pb2.StreamBarsRequest())
        await asyncio.wait_for(call.wait_for_connection(), timeout=10)
        position = (await client.snapshot()).position
        stopping = asyncio.ensure_future(running.server.stop())
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for _ in call:
                pass
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"resume with after_position={position}" in failure.value.details()
        await stopping


async def test_ingest_validates_everything_and_keeps_stored_bars(market):
    client = MarketClient(market.channel)
    stub = market_pb2_grpc.MarketServiceStub(market.channel)
    snapshot = await client.snapshot()
    t0 = snapshot.clock_time + MINUTE
    before = await client.bars("ORBT")

    def bars(symbol: str, sector: str = "Metals", **override):
        columns = {
            "time": t0 + np.arange(5) * MINUTE,
            "open": np.full(5, 10.0),
            "high": np.full(5, 11.0),
            "low": np.full(5, 9.0),
            "close": np.full(5, 10.5),
            "volume": np.full(5, 100.0),
        }
        columns.update(override)
        return make_series(symbol, sector, **columns)

    cases = [
        (bars("GOLD", close=np.array([10.5, np.nan, 10.5, 10.5, 10.5])), "series[0].close[1]"),
        (bars("GOLD", low=np.array([9, 9, 12.0, 9, 9])), "series[0].high[2]"),
        (bars("GOLD", open=np.array([10, -1.0, 10, 10, 10])), "series[0].open[1]"),
        (
            bars("GOLD", time=t0 + np.array([0, 2, 1, 3, 4]) * MINUTE),
            "series[0].time_unix_nanos[2]",
        ),
        (
            bars("GOLD", time=t0 + np.array([0, 1, 1, 3, 4]) * MINUTE),
            "series[0].time_unix_nanos[2]",
        ),
        (bars("GOLD", sector=""), "series[0].sector"),
        (
            bars("ORBT", sector="Tech", time=t0 - 10 * MINUTE + np.arange(5) * MINUTE),
            "series[0].time_unix_nanos[0]",
        ),
        (bars("bad symbol!"), "series[0].symbol"),
    ]
    for series, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.IngestBars(
                market_pb2.IngestBarsRequest(
                    series=[
                        market_pb2.BarSeries(
                            symbol="SILV",
                            sector="Metals",
                            time_unix_nanos=[t0],
                            open=[1],
                            high=[1],
                            low=[1],
                            close=[1],
                            volume=[1],
                        ),
                        _proto(series),
                    ]
                )
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error_info(failure.value).metadata["field"] == field.replace("[0]", "[1]", 1)

    unequal = market_pb2.BarSeries(
        symbol="GOLD",
        sector="Metals",
        time_unix_nanos=[t0, t0 + MINUTE],
        open=[1, 1],
        high=[1, 1],
        low=[1],
        close=[1, 1],
        volume=[1, 1],
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.IngestBars(market_pb2.IngestBarsRequest(series=[unequal]))
    assert "has 1 values but time has 2" in failure.value.details()

    # Nothing of the rejected batches was stored.
    assert "SILV" not in {i.symbol for i in await client.list_symbols()}
    assert (await client.snapshot()).length == snapshot.length
    assert (await client.bars("ORBT")).equals(before)

    result = await client.ingest([bars("GOLD")])
    assert result.new_symbols == ("GOLD",)
    await client.advance(5)
    gold = await client.bars("GOLD")
    assert gold.equals(bars("GOLD"))


def _proto(series) -> market_pb2.BarSeries:
    from qtmesh.base.convert import series_to_proto

    return series_to_proto(series)


async def test_the_service_serves_a_csv_file(tmp_path: Path):
    spec = SyntheticMarketSpec(seed=2, days=1)
    original = list(generate(spec).series)
    path = tmp_path / "bars.csv"
    save_bars(original, path)
    async with serving_app(APP, MarketConfig(data_path=path, replay_start=1.0)) as running:
        client = MarketClient(running.channel)
        for series in original:
            assert (await client.bars(series.symbol)).equals(series)


async def test_a_paced_market_moves_its_clock_by_itself_and_stops_at_the_end_of_its_data(tmp_path):
    config = MarketConfig(
        synthetic_days=1, seed=3, replay_start=0.99, data_dir=tmp_path, pace_bars_per_second=200
    )
    async with serving_app(APP, config) as served:
        client = MarketClient(served.channel)
        start = await client.snapshot()
        # The stream shows every step the clock took by itself, up to the last bar of the data.
        positions = []
        async for position, _clock, _bars in client.stream_bars(after_position=start.position):
            positions.append(position)
            if position == start.length:
                break
        assert positions[-1] == start.length
        assert positions == sorted(positions)
        with pytest.raises(InvalidArgument, match="pass the end of the data"):
            await client.advance(1)


def test_a_pace_out_of_range_names_its_setting(tmp_path):
    with pytest.raises(ConfigError, match="pace_bars_per_second"):
        MarketConfig(data_dir=tmp_path, pace_bars_per_second=-1)
