"""The alpha-reporting gRPC service: a thin adapter from AlphaReportingService to the report book,
plus the day reporter that follows the market's replay clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from alpha_reporting import _convert as convert
from alpha_reporting.config import ENV_PREFIX, AlphaReportingConfig
from alpha_reporting.engine import REFUSALS, Clock, Refused, ReportBook
from alpha_reporting.store import ReportStore
from alpha_reporting.watcher import DayReporter
from market.client import MarketClient
from qtmesh.api.alpha.v1 import alpha_reporting_pb2 as pb
from qtmesh.api.alpha.v1 import alpha_reporting_pb2_grpc as pb_grpc
from qtmesh.base import paging
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.runtime.app import App, Built, Context, Uses
from qtmesh.runtime.metrics import Metrics
from qtmesh.runtime.server import Service

WATCH_BATCH = 100


class AlphaServicer(pb_grpc.AlphaReportingServiceServicer):
    def __init__(self, book: ReportBook) -> None:
        self._book = book

    async def SubmitReport(
        self, request: pb.SubmitReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubmitReportResponse:
        if not request.HasField("report"):
            raise InvalidArgument("report", "must be set")
        stored, _created = await self._book.submit(convert.report_from_proto(request.report))
        return pb.SubmitReportResponse(report=convert.encrypted_to_proto(stored))

    async def GetReport(
        self, request: pb.GetReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetReportResponse:
        found = await self._book.get(request.report_id)
        return pb.GetReportResponse(report=convert.encrypted_to_proto(found))

    async def ListReports(
        self, request: pb.ListReportsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReportsResponse:
        size = paging.page_size(request.page_size, default=500, maximum=5000)
        expect = {
            "sector": request.sector,
            "start": request.start_date,
            "end": request.end_date,
        }
        after = None
        if request.page_token:
            token = paging.decode_token(request.page_token, expect=expect)
            date, sector = token.get("d"), token.get("s")
            if not (isinstance(date, str) and isinstance(sector, str)):
                raise InvalidArgument("page_token", "is not a token this server issued")
            after = (date, sector)
        # One more than the page tells whether another page follows.
        found = await self._book.page(
            sector=request.sector,
            start_date=request.start_date,
            end_date=request.end_date,
            after=after,
            limit=size + 1,
        )
        page = found[:size]
        next_token = ""
        if len(found) > size:
            next_token = paging.encode_token(**expect, d=page[-1].trading_date, s=page[-1].sector)
        return pb.ListReportsResponse(
            reports=[convert.encrypted_to_proto(r) for r in page], next_page_token=next_token
        )

    async def WatchReports(
        self, request: pb.WatchReportsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchReportsResponse]:
        signal = self._book.signal
        latest = await self._book.last_sequence()
        cursor = latest
        if request.HasField("after_sequence"):
            cursor = request.after_sequence
            if not 0 <= cursor <= latest:
                raise InvalidArgument(
                    "after_sequence",
                    f"must be in 0..{latest}, the last sequence stored (got {cursor})",
                )
        # Headers now, so a watcher knows it is connected before the next report exists.
        await context.send_initial_metadata(())
        while True:
            # Taken before reading, so a report stored after the read still wakes us.
            stored = signal.current()
            batch = await self._book.after_sequence(cursor, WATCH_BATCH)
            for report in batch:
                cursor = report.sequence
                yield pb.WatchReportsResponse(report=convert.encrypted_to_proto(report))
            if batch:
                continue
            if signal.draining:
                raise Unavailable(f"server is shutting down; resume with after_sequence={cursor}")
            await stored.wait()


def wall_clock() -> int:
    return time.time_ns()


def refusal_metrics(metrics: Metrics) -> Refused:
    """Counts each report refused by its reason (every reason from zero)."""
    rejected = metrics.counter(
        "qtmesh_reports_rejected_total", "Reports refused, by reason", ["reason"]
    )
    for reason in REFUSALS:
        rejected.labels(reason)
    return lambda reason: rejected.labels(reason).inc()


def app(*, clock: Clock = wall_clock) -> App[AlphaReportingConfig]:
    """The alpha-reporting App; tests inject the ``clock`` that stamps stored reports."""

    async def build(ctx: Context[AlphaReportingConfig]) -> Built:
        config = ctx.config
        keyring = await asyncio.to_thread(config.load_keyring, service="alpha-reporting")
        store = await asyncio.to_thread(config.open, ReportStore)
        book = ReportBook(
            store=store, keyring=keyring, clock=clock, refused=refusal_metrics(ctx.metrics)
        )
        servicer = AlphaServicer(book)
        watching: asyncio.Task[None] | None = None
        if config.watch_market:
            reporter = DayReporter(
                market=ctx.client("market", MarketClient),
                book=book,
                initial_backoff=config.reconnect_initial_seconds,
                max_backoff=config.reconnect_max_seconds,
            )
            watching = asyncio.ensure_future(reporter.run())

        def drain() -> None:
            book.signal.drain()
            if watching is not None:
                watching.cancel()

        async def close() -> None:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await store.run(store.close)

        return Built(
            services=[
                Service.of(
                    servicer,
                    pb_grpc.add_AlphaReportingServiceServicer_to_server,
                    pb.DESCRIPTOR.services_by_name["AlphaReportingService"],
                )
            ],
            drain=drain,
            close=close,
        )

    return App(
        name="alpha-reporting",
        summary="encrypted end-of-day sector reports",
        config_type=AlphaReportingConfig,
        env_prefix=ENV_PREFIX,
        build=build,
        # The market is followed only to write each day's reports when it ends.
        uses=lambda config: (
            (Uses(service="market", client=MarketClient),) if config.watch_market else ()
        ),
    )


APP = app()
