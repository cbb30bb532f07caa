"""Conversions between bar series, bars, snapshots and symbol infos and their
``qtmesh.api.market.v1`` messages."""

from __future__ import annotations

import numpy as np

from qtmesh.api.market.v1 import market_pb2 as pb
from qtmesh.base.bars import Bar, BarSeries, Quote, SectorSummary, Snapshot, SymbolInfo, make_series
from qtmesh.base.convert._values import time_from_proto, timestamp


def series_to_proto(series: BarSeries) -> pb.BarSeries:
    return pb.BarSeries(
        symbol=series.symbol,
        sector=series.sector,
        time_unix_nanos=series.time.tolist(),
        open=series.open.tolist(),
        high=series.high.tolist(),
        low=series.low.tolist(),
        close=series.close.tolist(),
        volume=series.volume.tolist(),
    )


def series_from_proto(message: pb.BarSeries) -> BarSeries:
    """Columns of unequal length are kept as given; validation reports them."""
    return make_series(
        message.symbol,
        message.sector,
        time=np.fromiter(message.time_unix_nanos, np.int64, len(message.time_unix_nanos)),
        open=np.fromiter(message.open, np.float64, len(message.open)),
        high=np.fromiter(message.high, np.float64, len(message.high)),
        low=np.fromiter(message.low, np.float64, len(message.low)),
        close=np.fromiter(message.close, np.float64, len(message.close)),
        volume=np.fromiter(message.volume, np.float64, len(message.volume)),
    )


def bar_to_proto(bar: Bar) -> pb.Bar:
    return pb.Bar(
        symbol=bar.symbol,
        time=timestamp(bar.time),
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=bar.volume,
    )


def bar_from_proto(message: pb.Bar, *, field: str = "bar") -> Bar:
    return Bar(
        message.symbol,
        time_from_proto(message.time, field=f"{field}.time"),
        message.open,
        message.high,
        message.low,
        message.close,
        message.volume,
    )


def snapshot_to_proto(snapshot: Snapshot) -> pb.MarketSnapshot:
    return pb.MarketSnapshot(
        position=snapshot.position,
        length=snapshot.length,
        clock_time=timestamp(snapshot.clock_time),
        quotes=[
            pb.SymbolQuote(
                sector=q.sector,
                bar=bar_to_proto(q.bar),
                return_24h=q.return_24h,
                volatility_24h=q.volatility_24h,
            )
            for q in snapshot.quotes
        ],
        sectors=[
            pb.SectorSummary(
                sector=s.sector,
                symbol_count=s.symbol_count,
                return_24h=s.return_24h,
                volatility_24h=s.volatility_24h,
            )
            for s in snapshot.sectors
        ],
    )


def snapshot_from_proto(message: pb.MarketSnapshot) -> Snapshot:
    return Snapshot(
        position=message.position,
        length=message.length,
        clock_time=time_from_proto(message.clock_time, field="clock_time"),
        quotes=tuple(
            Quote(q.sector, bar_from_proto(q.bar), q.return_24h, q.volatility_24h)
            for q in message.quotes
        ),
        sectors=tuple(
            SectorSummary(s.sector, s.symbol_count, s.return_24h, s.volatility_24h)
            for s in message.sectors
        ),
    )


def symbol_info_to_proto(info: SymbolInfo) -> pb.SymbolInfo:
    return pb.SymbolInfo(
        symbol=info.symbol,
        sector=info.sector,
        bar_count=info.bar_count,
        first_time=timestamp(info.first_time),
        last_time=timestamp(info.last_time),
    )


def symbol_info_from_proto(message: pb.SymbolInfo) -> SymbolInfo:
    return SymbolInfo(
        message.symbol,
        message.sector,
        message.bar_count,
        time_from_proto(message.first_time, field="first_time"),
        time_from_proto(message.last_time, field="last_time"),
    )
