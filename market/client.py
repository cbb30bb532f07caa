"""Async client of the market service, returning the same domain objects as the replay engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import numpy as np

from market import _convert as convert
from market.fleet import Candidate, ClosedTrades, FleetChange, FleetReport, Trade
from market.replay import AdvanceResult, IngestResult
from qtmesh.api.market.v1 import market_pb2 as pb
from qtmesh.api.market.v1 import market_pb2_grpc as pb_grpc
from qtmesh.base.bars import COLUMNS, Bar, BarSeries, Snapshot, SymbolInfo, make_series
from qtmesh.base.convert import (
    bar_from_proto,
    genome_to_proto,
    series_from_proto,
    series_to_proto,
    snapshot_from_proto,
    symbol_info_from_proto,
    time_from_proto,
)
from qtmesh.runtime.status import mesh_stub


class MarketClient:
    """Calls MarketService over ``channel``; failures raise the server's MeshError subclass."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = mesh_stub(pb_grpc.MarketServiceStub, channel)

    async def list_symbols(self, sector: str = "") -> list[SymbolInfo]:
        infos: list[SymbolInfo] = []
        token = ""
        while True:
            response = await self._stub.ListSymbols(
                pb.ListSymbolsRequest(sector=sector, page_token=token)
            )
            infos += [symbol_info_from_proto(s) for s in response.symbols]
            token = response.next_page_token
            if not token:
                return infos

    async def bars(
        self,
        symbol: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        lookback: int = 0,
    ) -> BarSeries:
        """Every bar of the window (all pages), as one series."""
        request = pb.GetBarsRequest(symbol=symbol, lookback=lookback)
        if start_time is not None:
            request.start_time.CopyFrom(convert.timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(convert.timestamp(end_time))
        pages: list[BarSeries] = []
        while True:
            response = await self._stub.GetBars(request)
            pages.append(series_from_proto(response.bars))
            if not response.next_page_token:
                break
            request = pb.GetBarsRequest(symbol=symbol, page_token=response.next_page_token)
        if len(pages) == 1:
            return pages[0]
        return make_series(
            pages[0].symbol,
            pages[0].sector,
            **{c: np.concatenate([getattr(p, c) for p in pages]) for c in COLUMNS},
        )

    async def snapshot(self, symbols: Sequence[str] = ()) -> Snapshot:
        response = await self._stub.Snapshot(pb.SnapshotRequest(symbols=symbols))
        return snapshot_from_proto(response.snapshot)

    async def advance(self, steps: int) -> AdvanceResult:
        response = await self._stub.Advance(pb.AdvanceRequest(steps=steps))
        return AdvanceResult(
            response.position,
            time_from_proto(response.clock_time, field="clock_time"),
            response.revealed_bars,
            response.at_end,
        )

    async def stream_bars(
        self, symbols: Sequence[str] = (), *, after_position: int | None = None
    ) -> AsyncIterator[tuple[int, int, list[Bar]]]:
        """Yields ``(position, clock_time, bars)`` per clock step, from ``after_position`` on."""
        request = pb.StreamBarsRequest(symbols=symbols)
        if after_position is not None:
            request.after_position = after_position
        call = self._stub.StreamBars(request)
        try:
            async for message in call:
                yield (
                    message.position,
                    time_from_proto(message.clock_time, field="clock_time"),
                    [bar_from_proto(b) for b in message.bars],
                )
        finally:
            call.cancel()

    async def ingest(self, series: Sequence[BarSeries]) -> IngestResult:
        response = await self._stub.IngestBars(
            pb.IngestBarsRequest(series=[series_to_proto(s) for s in series]),
        )
        return IngestResult(response.bars_added, tuple(response.new_symbols), response.length)

    async def fleet(
        self,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        sector: str = "",
        curve_points: int = 0,
    ) -> FleetReport:
        """The paper fleet accounted over a window of bar times (inclusive; unset: from the
        deployment, up to the clock), with at most ``curve_points`` samples of its equity curve
        beside an equal-weight buy and hold of its symbols."""
        request = pb.GetFleetRequest(sector=sector, curve_points=curve_points)
        if start_time is not None:
            request.start_time.CopyFrom(convert.timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(convert.timestamp(end_time))
        response = await self._stub.GetFleet(request)
        return convert.fleet_from_proto(response.fleet)

    async def add_shadows(
        self,
        candidates: Sequence[Candidate],
        *,
        evolution_id: str,
        trials: int,
        action_key: str,
        action_id: str = "",
        plan_sequence: int = 0,
    ) -> tuple[FleetChange, bool]:
        """Adds an evolution's candidates to the book as shadows, once per ``action_key``;
        (the change that added them, False if the key was seen before)."""
        response = await self._stub.AddShadows(
            pb.AddShadowsRequest(
                evolution_id=evolution_id,
                candidates=[
                    pb.ShadowCandidate(
                        strategy_id=c.strategy_id,
                        sector=c.sector,
                        genome=genome_to_proto(c.genome),
                    )
                    for c in candidates
                ],
                trials=trials,
                action_key=action_key,
                action_id=action_id,
                plan_sequence=plan_sequence,
            )
        )
        change = convert.change_from_proto(response.change)
        return change, response.applied

    async def apply_meta_parameters(
        self, *, version: int, risk_multiplier: float, position_size_scale: float
    ) -> tuple[FleetChange, bool]:
        """Scales every position by meta's parameters of ``version`` from the next bar, once per
        version; (the change, False if the version was applied before)."""
        response = await self._stub.ApplyMetaParameters(
            pb.ApplyMetaParametersRequest(
                version=version,
                risk_multiplier=risk_multiplier,
                position_size_scale=position_size_scale,
            )
        )
        return convert.change_from_proto(response.change), response.applied

    async def trades_page(
        self,
        *,
        sector: str = "",
        strategy_id: str = "",
        start_time: int | None = None,
        end_time: int | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[Trade], str]:
        """One page of the fleet's trades and the next page's token ("" after the last)."""
        request = pb.ListTradesRequest(
            sector=sector, strategy_id=strategy_id, page_size=page_size, page_token=page_token
        )
        if start_time is not None:
            request.start_time.CopyFrom(convert.timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(convert.timestamp(end_time))
        response = await self._stub.ListTrades(request)
        return [convert.trade_from_proto(t) for t in response.trades], response.next_page_token

    async def trades(
        self,
        *,
        sector: str = "",
        strategy_id: str = "",
        start_time: int | None = None,
        end_time: int | None = None,
    ) -> list[Trade]:
        """Every trade matching the filters (all pages)."""
        trades: list[Trade] = []
        token = ""
        while True:
            page, token = await self.trades_page(
                sector=sector,
                strategy_id=strategy_id,
                start_time=start_time,
                end_time=end_time,
                page_token=token,
            )
            trades += page
            if not token:
                return trades

    async def watch_trades(
        self, *, after: tuple[int, str] | None = None
    ) -> AsyncIterator[ClosedTrades]:
        """The fleet's closed trades in the order they closed, after the cursor ``after`` (exit
        time, strategy id; unset: from the first), then live as the clock moves."""
        request = pb.WatchTradesRequest(after=convert.cursor_to_proto(after))
        call = self._stub.WatchTrades(request)
        try:
            async for message in call:
                yield ClosedTrades(
                    trades=tuple(convert.trade_from_proto(t) for t in message.trades),
                    cursor=(
                        time_from_proto(message.cursor.exit_time, field="exit_time"),
                        message.cursor.strategy_id,
                    )
                    if message.HasField("cursor")
                    else None,
                    clock_time=time_from_proto(message.clock_time, field="clock_time"),
                    position=message.position,
                    caught_up=message.caught_up,
                )
        finally:
            call.cancel()
