"""Watches the market's replay clock and reports every sector's day once the clock has left it.

On each connection it asks the market for the fleet (deployment time, clock, sectors), reports
every completed UTC day since the deployment that is not stored yet, then follows the clock with
StreamBars from the position it just read, so no step in between is missed. A day is complete
when the clock stands on a later date; its reports come from the fleet accounted over that
day's bars (GetFleet with the day as window). When the market is unavailable or restarts, the
watcher reconnects with exponential backoff; catching up by date, not by position, makes a
market that replays from its start again harmless. Days already reported are never reported
again (the book stores one report per sector and day).

A report that fails the book's checks (a number out of range, say) is logged with its field and
left out; the day still counts as done, so one bad number cannot stall the watcher on its day.
A sector's day that already holds a report other than the fleet's (submitted from outside) keeps
it, with a warning. Days whose every sector is stored are passed over without fetching them,
so such a replacement is only noticed for days the watcher still had to report.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import structlog

from alpha_reporting.engine import ReportBook
from alpha_reporting.report import DAY_NANOS, SectorReport, date_of, day_reports, day_start
from market.fleet import FleetReport
from qtmesh.base.bars import Bar
from qtmesh.base.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from qtmesh.base.reconnect import Sleep, follow_forever

_log = structlog.get_logger("alpha_reporting.watcher")


class Market(Protocol):
    """What the watcher reads from the market (implemented by MarketClient)."""

    async def fleet(
        self, *, start_time: int | None = None, end_time: int | None = None, sector: str = ""
    ) -> FleetReport: ...

    def stream_bars(
        self, symbols: Sequence[str] = (), *, after_position: int | None = None
    ) -> AsyncIterator[tuple[int, int, list[Bar]]]: ...


class DayReporter:
    def __init__(
        self,
        *,
        market: Market,
        book: ReportBook,
        initial_backoff: float,
        max_backoff: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._market = market
        self._book = book
        self._initial = initial_backoff
        self._max = max_backoff
        self._sleep = sleep
        # Days of the deployment before this one need no further look (reported, or without
        # fleet bars).
        self._deployment: int | None = None
        self._next_day: datetime.date | None = None

    async def run(self) -> None:
        """Follows the market until cancelled (when the service drains)."""
        await follow_forever(
            self._follow,
            initial_backoff=self._initial,
            max_backoff=self._max,
            log=_log,
            what="market watch",
            sleep=self._sleep,
        )

    async def _follow(self, connected: Callable[[], None]) -> None:
        fleet = await self._market.fleet()
        connected()
        self._book.learn_sectors([s.sector for s in fleet.sectors])
        self._book.learn_clock(fleet.clock_time)
        deployment = fleet.deployment_time
        await self.catch_up(clock_time=fleet.clock_time, deployment_time=deployment)
        # Only the clock matters: one symbol keeps the stream small.
        symbols = [fleet.strategies[0].strategy.symbol] if fleet.strategies else []
        checked = date_of(fleet.clock_time)
        async for _position, clock_time, _bars in self._market.stream_bars(
            symbols, after_position=fleet.position
        ):
            self._book.learn_clock(clock_time)
            today = date_of(clock_time)
            if today > checked:
                await self.catch_up(clock_time=clock_time, deployment_time=deployment)
                checked = today

    async def catch_up(self, *, clock_time: int, deployment_time: int) -> int:
        """Reports every completed day after the deployment not stored yet; the count stored."""
        first = date_of(deployment_time)
        if self._deployment != deployment_time or self._next_day is None:
            # A market restarted on other data is another deployment: look at all its days.
            self._deployment, self._next_day = deployment_time, first
        today = date_of(clock_time)
        days = []
        day = self._next_day
        while day < today:
            days.append(day)
            day += datetime.timedelta(days=1)
        if not days:
            return 0
        reported = await self._book.reported([d.isoformat() for d in days])
        stored = 0
        for day in days:
            sectors = self._book.known_sectors or frozenset()
            if sectors and all((s, day.isoformat()) in reported for s in sectors):
                self._next_day = day + datetime.timedelta(days=1)
                continue
            fleet = await self._market.fleet(
                start_time=day_start(day), end_time=day_start(day) + DAY_NANOS - 1
            )
            if fleet.bar_count > 0:
                for report in day_reports(fleet, day):
                    stored += await self._submit(report)
                _log.info("day reported", trading_date=day.isoformat(), bars=fleet.bar_count)
            self._next_day = day + datetime.timedelta(days=1)
        return stored

    async def _submit(self, report: SectorReport) -> int:
        """Stores one report of the fleet; 1 if stored now. The book returns the fleet's own
        report stored before without complaint, so only another report of the day warns."""
        try:
            _stored, created = await self._book.submit(report)
        except AlreadyExists as exc:
            _log.warning(
                "day not reported from the fleet: a report of it exists",
                sector=report.sector,
                trading_date=report.trading_date,
                stored_report_id=exc.metadata.get("report_id", ""),
            )
            return 0
        except (InvalidArgument, FailedPrecondition) as exc:
            _log.error(
                "fleet report refused; left out",
                report_id=report.report_id,
                field=exc.metadata.get("field", ""),
                problem=exc.message,
            )
            return 0
        return int(created)
