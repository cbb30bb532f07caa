"""The market gRPC service: a thin adapter from MarketService to the replay engine."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeGuard

import grpc
import sqlalchemy as sa
import structlog

from market import _convert as convert
from market.config import ENV_PREFIX, MarketConfig
from market.fleet import (
    EXECUTES,
    FleetAgent,
    FleetEngine,
    FleetRun,
    FleetStore,
    TradeQuery,
    deploy,
)
from market.replay import AdvanceResult, Replay
from market.sources import load_bars
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.api.market.v1 import market_pb2 as pb
from qtmesh.api.market.v1 import market_pb2_grpc as pb_grpc
from qtmesh.base import paging
from qtmesh.base.bars import format_time
from qtmesh.base.config import ConfigError
from qtmesh.base.convert import (
    bar_to_proto,
    optional_time_from_proto,
    series_from_proto,
    series_to_proto,
    snapshot_to_proto,
    symbol_info_to_proto,
    time_from_proto,
)
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.base.signal import ChangeSignal
from qtmesh.base.storage import redact
from qtmesh.runtime.agent_service import agent_service
from qtmesh.runtime.app import App, Built, Context
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service

_log = structlog.get_logger("market")

DEFAULT_PAGE = 50_000
MAX_PAGE = 500_000
DEFAULT_TRADE_PAGE = 500
MAX_TRADE_PAGE = 5_000
# Closed trades per WatchTrades message.
WATCH_BATCH = 1_000


class MarketServicer(pb_grpc.MarketServiceServicer):
    def __init__(self, replay: Replay, fleet: FleetEngine) -> None:
        self._replay = replay
        self._fleet = fleet
        self._signal = ChangeSignal()

    def drain(self) -> None:
        """Ends open streams so their clients resume elsewhere (called when shutdown begins)."""
        self._signal.drain()

    async def ListSymbols(
        self, request: pb.ListSymbolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSymbolsResponse:
        size = paging.page_size(request.page_size, default=1000, maximum=10_000)
        offset = 0
        if request.page_token:
            token = paging.decode_token(request.page_token, expect={"sector": request.sector})
            issued = token.get("o")
            if not (_is_int(issued) and issued >= 0):
                raise InvalidArgument("page_token", "is not a token this server issued")
            offset = issued
        infos = self._replay.symbol_infos(request.sector)
        page = infos[offset : offset + size]
        more = offset + size < len(infos)
        return pb.ListSymbolsResponse(
            symbols=[symbol_info_to_proto(i) for i in page],
            next_page_token=paging.encode_token(sector=request.sector, o=offset + size)
            if more
            else "",
        )

    async def GetBars(
        self, request: pb.GetBarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBarsResponse:
        size = paging.page_size(request.page_size, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        if request.page_token:
            token = paging.decode_token(request.page_token, expect={"symbol": request.symbol})
            first, stop = token.get("first"), token.get("stop")
            if not (_is_int(first) and _is_int(stop) and 0 <= first < stop):
                raise InvalidArgument("page_token", "is not a token this server issued")
        else:
            first, stop = self._replay.window(
                request.symbol,
                start_time=time_from_proto(request.start_time, field="start_time")
                if request.HasField("start_time")
                else None,
                end_time=optional_time_from_proto(request, "end_time"),
                lookback=request.lookback,
            )
        end = min(first + size, stop)
        try:
            series = self._replay.bars(request.symbol, first, end)
        except InvalidArgument as exc:
            # Only a token can carry a range; it no longer fits when the market restarted on
            # fewer bars than the token was issued over.
            if exc.field != "range":
                raise
            raise InvalidArgument("page_token", f"{exc.problem}; start again without it") from None
        return pb.GetBarsResponse(
            bars=series_to_proto(series),
            next_page_token=paging.encode_token(symbol=request.symbol, first=end, stop=stop)
            if end < stop
            else "",
        )

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> pb.SnapshotResponse:
        snapshot = self._replay.snapshot(list(request.symbols))
        return pb.SnapshotResponse(snapshot=snapshot_to_proto(snapshot))

    @property
    def bars_left(self) -> int:
        """Steps the clock can still move."""
        return self._replay.length - self._replay.position

    def advance(self, steps: int) -> AdvanceResult:
        """Moves the clock and wakes the streams (Advance, and the market's own pace)."""
        result = self._replay.advance(steps)
        self._signal.notify()
        return result

    async def Advance(
        self, request: pb.AdvanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdvanceResponse:
        result = self.advance(request.steps)
        return pb.AdvanceResponse(
            position=result.position,
            clock_time=convert.timestamp(result.clock_time),
            revealed_bars=result.revealed_bars,
            at_end=result.at_end,
        )

    async def StreamBars(
        self, request: pb.StreamBarsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamBarsResponse]:
        symbols = list(request.symbols)
        self._replay.check_symbols(symbols)
        cursor = self._replay.position
        if request.HasField("after_position"):
            cursor = request.after_position
            if not 0 <= cursor <= self._replay.position:
                raise InvalidArgument(
                    "after_position",
                    f"must be in 0..{self._replay.position}, the clock's position (got {cursor})",
                )
        # Headers now, so a subscriber knows it is connected before the first step arrives.
        await context.send_initial_metadata(())
        while True:
            while cursor < self._replay.position:
                cursor += 1
                yield pb.StreamBarsResponse(
                    position=cursor,
                    clock_time=convert.timestamp(self._replay.time_at(cursor)),
                    bars=[bar_to_proto(b) for b in self._replay.bars_at(cursor, symbols)],
                )
            if self._signal.draining:
                raise Unavailable(f"server is shutting down; resume with after_position={cursor}")
            await self._signal.wait()

    async def IngestBars(
        self, request: pb.IngestBarsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IngestBarsResponse:
        result = self._replay.ingest([series_from_proto(s) for s in request.series])
        return pb.IngestBarsResponse(
            bars_added=result.bars_added, new_symbols=result.new_symbols, length=result.length
        )

    async def GetFleet(
        self, request: pb.GetFleetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFleetResponse:
        report = await self._fleet.report(
            start_time=_time(request, "start_time"),
            end_time=_time(request, "end_time"),
            sector=request.sector,
            curve_points=request.curve_points,
        )
        return pb.GetFleetResponse(fleet=convert.fleet_to_proto(report))

    async def AddShadows(
        self, request: pb.AddShadowsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddShadowsResponse:
        change, applied = await self._fleet.add_shadows(
            convert.candidates_from_proto(request),
            evolution_id=request.evolution_id,
            trials=request.trials,
            action_key=request.action_key,
            action_id=request.action_id,
            plan_sequence=request.plan_sequence,
        )
        return pb.AddShadowsResponse(change=convert.change_to_proto(change), applied=applied)

    async def ApplyMetaParameters(
        self, request: pb.ApplyMetaParametersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyMetaParametersResponse:
        change, applied = await self._fleet.apply_meta(
            version=request.version,
            risk_multiplier=request.risk_multiplier,
            position_size_scale=request.position_size_scale,
        )
        return pb.ApplyMetaParametersResponse(
            change=convert.change_to_proto(change), applied=applied
        )

    async def ListTrades(
        self, request: pb.ListTradesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTradesResponse:
        size = paging.page_size(
            request.page_size, default=DEFAULT_TRADE_PAGE, maximum=MAX_TRADE_PAGE
        )
        query = TradeQuery(
            sector=request.sector,
            strategy_id=request.strategy_id,
            start_time=_time(request, "start_time"),
            end_time=_time(request, "end_time"),
        )
        # The token carries the query, so a page of one query is never read with another.
        expect = {
            "sector": query.sector,
            "strategy": query.strategy_id,
            "start": query.start_time,
            "end": query.end_time,
        }
        if request.page_token:
            token = paging.decode_token(request.page_token, expect=expect)
            after_time, after_id = token.get("t"), token.get("s")
            if not (isinstance(after_time, int) and isinstance(after_id, str)):
                raise InvalidArgument("page_token", "is not a token this server issued")
            query = dataclasses.replace(query, after=(after_time, after_id))
        trades, more = await self._fleet.trades(query, size)
        last = trades[-1] if trades else None
        return pb.ListTradesResponse(
            trades=[convert.trade_to_proto(t) for t in trades],
            next_page_token=paging.encode_token(**expect, t=last.entry_time, s=last.strategy_id)
            if more and last is not None
            else "",
        )

    async def WatchTrades(
        self, request: pb.WatchTradesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchTradesResponse]:
        after = (
            convert.cursor_from_proto(request.after, field="after")
            if request.HasField("after")
            else None
        )
        # Headers now, so a follower knows it is connected before the first trade closes.
        await context.send_initial_metadata(())
        sent_position: int | None = None
        while True:
            # Taken before reading, so a clock move after the read still wakes us.
            moved = self._signal.current()
            if self._replay.position != sent_position:
                run, trades = await self._fleet.closed_trades(after)
                clock = convert.timestamp(run.clock_time)
                batches = [
                    trades[i : i + WATCH_BATCH] for i in range(0, len(trades), WATCH_BATCH)
                ] or [[]]
                for i, batch in enumerate(batches):
                    if batch:
                        after = batch[-1].cursor
                    yield pb.WatchTradesResponse(
                        trades=[convert.trade_to_proto(t) for t in batch],
                        cursor=convert.cursor_to_proto(after),
                        clock_time=clock,
                        position=run.position,
                        caught_up=i == len(batches) - 1,
                    )
                sent_position = run.position
                continue
            if self._signal.draining:
                where = (
                    "from the first trade"
                    if after is None
                    else f"after the trade of {after[1]} closed at {format_time(after[0])}"
                )
                raise Unavailable(f"server is shutting down; resume {where}")
            await moved.wait()


def _is_int(value: object) -> TypeGuard[int]:
    # JSON true/false decode to bool, which is an int subclass.
    return isinstance(value, int) and not isinstance(value, bool)


def _time(message: object, name: str) -> int | None:
    """Unix nanoseconds of a Timestamp field, or None when it is unset."""
    return optional_time_from_proto(message, name)


def load_replay(config: MarketConfig) -> Replay:
    """The replay over the configured data (file or synthetic), clock at ``replay_start``."""
    if config.data_path is not None:
        try:
            series = load_bars(config.data_path)
        except InvalidArgument as exc:
            raise ConfigError("data_path", exc.message) from None
    else:
        spec = SyntheticMarketSpec(
            seed=config.seed, days=config.synthetic_days, noise=config.synthetic_noise
        )
        series = list(generate(spec).series)
    replay = Replay(series, start_position=1)
    start = max(1, round(replay.length * config.replay_start))
    if start > 1:
        replay.advance(start - 1)
    return replay


def wall_clock() -> int:
    return time.time_ns()


async def pace(servicer: MarketServicer, bars_per_second: float) -> None:
    """Moves the clock by itself at ``bars_per_second`` until the data ends: at most ten steps a
    wall second, each of the bars due since the last (the rate holds however long a step took)."""
    interval = max(1 / bars_per_second, 0.1)
    started, moved = time.monotonic(), 0
    while True:
        await asyncio.sleep(interval)
        due = int((time.monotonic() - started) * bars_per_second) - moved
        if due < 1:
            continue
        remaining = servicer.bars_left
        result = servicer.advance(min(due, remaining)) if remaining else None
        moved += due
        if result is None or result.at_end:
            _log.info("the market's data ended: its clock stops")
            return


def fleet_metrics(metrics: Metrics) -> Callable[[FleetRun], None]:
    """Sets the fleet's gauges per sector from each new run of the fleet (computed when the
    fleet is read after the clock moved or a change was made: GetFleet, ListTrades,
    WatchTrades)."""
    equity = metrics.gauge(
        "qtmesh_fleet_equity",
        "The paper fleet's equity allocated to the sector (its nominal allocation times the "
        "fleet's equity), as of the fleet last computed",
        ["sector"],
    )
    drawdown = metrics.gauge(
        "qtmesh_fleet_drawdown",
        "How far the sector's compounded returns since the deployment stand below their "
        "running peak, a fraction 0..1, as of the fleet last computed",
        ["sector"],
    )

    def mark(run: FleetRun) -> None:
        for sector in run.sector_marks():
            equity.labels(sector.sector).set(sector.equity)
            drawdown.labels(sector.sector).set(sector.drawdown)

    return mark


async def open_fleet(
    replay: Replay,
    config: MarketConfig,
    *,
    clock: Callable[[], int] = wall_clock,
    on_run: Callable[[FleetRun], None] | None = None,
) -> FleetEngine:
    """The paper fleet deployed at the replay's clock, with the changes stored for it;
    ``on_run`` is told each new run of the fleet (FleetEngine)."""
    try:
        setup = deploy(
            {info.symbol: info.sector for info in replay.symbol_infos()},
            deployment_time=replay.clock_time,
            families=config.families,
            allocations=config.allocations,
            capital=config.fleet_capital,
            costs=config.costs,
            warmup_bars=config.fleet_warmup_bars,
            limits=config.limits,
        )
    except InvalidArgument as exc:
        raise ConfigError("fleet_allocations", exc.message) from None
    url = config.url
    try:
        store = await asyncio.to_thread(FleetStore, url)
        return await FleetEngine.open(
            replay=replay, setup=setup, store=store, clock=clock, on_run=on_run
        )
    except (ValueError, OSError, sa.exc.SQLAlchemyError) as exc:
        raise ConfigError("database_url", f"cannot open {redact(url)}: {exc}") from None


def app(*, clock: Callable[[], int] = wall_clock) -> App[MarketConfig]:
    """The market App; tests inject the wall ``clock`` that stamps stored fleet changes."""

    async def build(ctx: Context[MarketConfig]) -> Built:
        config = ctx.config
        replay = await asyncio.to_thread(load_replay, config)
        fleet = await open_fleet(replay, config, clock=clock, on_run=fleet_metrics(ctx.metrics))
        servicer = MarketServicer(replay, fleet)
        service = Service.of(
            servicer,
            pb_grpc.add_MarketServiceServicer_to_server,
            pb.DESCRIPTOR.services_by_name["MarketService"],
        )

        pacing = None
        if config.pace_bars_per_second > 0:
            pacing = asyncio.ensure_future(pace(servicer, config.pace_bars_per_second))

        async def close() -> None:
            if pacing is not None:
                pacing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pacing
            await fleet.store.run(fleet.store.close)

        return Built(
            services=[service, agent_service(FleetAgent(fleet), executes=EXECUTES)],
            drain=servicer.drain,
            close=close,
        )

    return App(
        name="market",
        summary="market data, the replay clock and the paper fleet",
        config_type=MarketConfig,
        env_prefix=ENV_PREFIX,
        build=build,
    )


APP = app()
