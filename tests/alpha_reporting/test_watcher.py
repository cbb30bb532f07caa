"""The day reporter against a scripted market: a fleet report the book refuses is left out with
its field logged and the watcher moves on; a day already holding an outside report keeps it and
warns; the book refuses reports of days the market clock has not left."""

from __future__ import annotations

import base64
import dataclasses
import datetime

import pytest
from structlog.testing import capture_logs

from alpha_reporting.crypto import Keyring, open_report
from alpha_reporting.engine import ReportBook
from alpha_reporting.report import DAY_NANOS, SectorReport, day_start, report_id_for
from alpha_reporting.store import ReportStore, reports
from alpha_reporting.watcher import DayReporter
from market.fleet import FleetReport, SectorBook
from qtmesh.base.errors import FailedPrecondition
from qtmesh.base.storage import sqlite_url

KEYRING = Keyring.parse(f"k1:{base64.b64encode(bytes(range(32))).decode()}")
DAY1 = datetime.date(2026, 2, 3)
DAY2 = DAY1 + datetime.timedelta(days=1)
DEPLOYED = day_start(DAY1) + 3600 * 10**9


def sector(name: str, **changes) -> SectorBook:
    fields = {
        "sector": name,
        "allocation": 0.5,
        "strategy_count": 3,
        "roi": 0.01,
        "pnl": 100.0,
        "benchmark_return": 0.004,
        "volatility": 0.2,
        "max_drawdown": 0.02,
        "trade_count": 7,
        "gross_exposure": 1.0,
        "net_exposure": 0.5,
    }
    return SectorBook(**{**fields, **changes})


class ScriptedMarket:
    """Answers GetFleet for a day window with the given sector books; counts the calls."""

    def __init__(self, books: tuple[SectorBook, ...]) -> None:
        self.books = books
        self.calls = 0

    async def fleet(self, *, start_time=None, end_time=None, sector="") -> FleetReport:
        self.calls += 1
        return FleetReport(
            deployment_time=DEPLOYED,
            clock_time=end_time,
            position=0,
            start_time=start_time,
            end_time=end_time,
            bar_count=1440,
            capital=1e6,
            equity=1e6,
            total_return=0.0,
            pnl=0.0,
            sectors=self.books,
            strategies=(),
            missions=(),
            changes=(),
        )


@pytest.fixture
def book(tmp_path):
    store = ReportStore(sqlite_url(tmp_path / "alpha.db"))
    yield ReportBook(store=store, keyring=KEYRING, clock=lambda: 1_800_000_000 * 10**9)
    store.close()


def reporter(market: ScriptedMarket, book: ReportBook) -> DayReporter:
    return DayReporter(market=market, book=book, initial_backoff=0.01, max_backoff=0.01)


async def stored_days(book: ReportBook) -> set[tuple[str, str]]:
    return await book.reported([DAY1.isoformat(), DAY2.isoformat()])


async def test_a_refused_fleet_report_is_logged_and_left_out_and_the_days_move_on(book):
    market = ScriptedMarket((sector("Tech"), sector("Energy", max_drawdown=1.5)))
    watcher = reporter(market, book)
    clock = day_start(DAY2) + DAY_NANOS + 60 * 10**9  # the third day: two complete
    with capture_logs() as logs:
        assert await watcher.catch_up(clock_time=clock, deployment_time=DEPLOYED) == 2
    assert await stored_days(book) == {("Tech", DAY1.isoformat()), ("Tech", DAY2.isoformat())}
    refused = [e for e in logs if e["event"] == "fleet report refused; left out"]
    assert [(e["report_id"], e["field"]) for e in refused] == [
        (report_id_for("Energy", DAY1.isoformat()), "report.max_drawdown"),
        (report_id_for("Energy", DAY2.isoformat()), "report.max_drawdown"),
    ]
    # Both days are done: following the clock asks the market for neither again.
    assert market.calls == 2
    assert await watcher.catch_up(clock_time=clock, deployment_time=DEPLOYED) == 0
    assert market.calls == 2


async def test_a_day_holding_an_outside_report_keeps_it_and_warns(book):
    outside = SectorReport(
        report_id="",
        sector="Tech",
        trading_date=DAY1.isoformat(),
        roi=0.5,
        alpha=0.5,
        benchmark_return=0.0,
        volatility=0.1,
        max_drawdown=0.0,
        trade_count=1,
        fleet_size=1,
    )
    # Before the watcher has connected the book knows no clock, so the day is accepted.
    kept, _ = await book.submit(outside)
    market = ScriptedMarket((sector("Tech"), sector("Energy")))
    with capture_logs() as logs:
        stored = await reporter(market, book).catch_up(
            clock_time=day_start(DAY2) + 60 * 10**9, deployment_time=DEPLOYED
        )
    assert stored == 1
    assert open_report(await book.get(kept.report_id), KEYRING) == dataclasses.replace(
        outside, report_id=kept.report_id
    )
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "day not reported from the fleet: a report of it exists"
    assert (warning["sector"], warning["trading_date"]) == ("Tech", DAY1.isoformat())
    assert warning["stored_report_id"] == kept.report_id


async def test_the_fleets_own_earlier_report_is_passed_over_quietly(book):
    market = ScriptedMarket((sector("Tech"), sector("Energy")))
    clock = day_start(DAY2) + 60 * 10**9
    assert await reporter(market, book).catch_up(clock_time=clock, deployment_time=DEPLOYED) == 2
    # A restarted watcher that had only stored Tech before finds its own report and adds Energy.
    energy = report_id_for("Energy", DAY1.isoformat())
    with book.store.engine.begin() as c:
        c.execute(reports.delete().where(reports.c.report_id == energy))
    with capture_logs() as logs:
        assert (
            await reporter(market, book).catch_up(clock_time=clock, deployment_time=DEPLOYED) == 1
        )
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []


@pytest.mark.parametrize("date", [DAY2, DAY2 + datetime.timedelta(days=30)])
async def test_reports_of_days_the_clock_has_not_left_are_refused(book, date):
    book.learn_clock(day_start(DAY2) + 60 * 10**9)
    report = SectorReport(
        report_id="",
        sector="Tech",
        trading_date=date.isoformat(),
        roi=0.01,
        alpha=0.006,
        benchmark_return=0.004,
        volatility=0.1,
        max_drawdown=0.0,
        trade_count=1,
        fleet_size=1,
    )
    with pytest.raises(FailedPrecondition, match=f"{date.isoformat()} is not complete") as refused:
        await book.submit(report)
    assert refused.value.metadata["field"] == "report.trading_date"
    assert await book.reported([date.isoformat()]) == set()
    _stored, created = await book.submit(dataclasses.replace(report, trading_date="2026-02-03"))
    assert created
