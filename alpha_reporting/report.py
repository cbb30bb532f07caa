"""End-of-day sector reports: their fields, the checks every report passes, deterministic ids,
and how a trading day of the paper fleet becomes one report per sector."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import re

from market.fleet import FleetReport
from qtmesh.base.errors import InvalidArgument

DAY_NANOS = 86_400 * 10**9
REPORT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# alpha must equal roi - benchmark_return up to rounding.
ALPHA_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True, kw_only=True)
class SectorReport:
    """One sector's trading day. Returns are fractions (0.01 is 1%)."""

    report_id: str
    sector: str
    trading_date: str
    roi: float
    alpha: float
    benchmark_return: float
    volatility: float
    max_drawdown: float
    trade_count: int
    fleet_size: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncryptedReport:
    """A report as stored and served: AES-GCM ciphertext under the keyring's ``key_id``."""

    report_id: str
    sector: str
    trading_date: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    create_time: int = 0
    sequence: int = 0


def parse_date(text: str, *, field: str) -> datetime.date:
    """An ISO 8601 calendar date (YYYY-MM-DD)."""
    if not DATE_PATTERN.match(text):
        raise InvalidArgument(field, f"{text!r} is not an ISO date (YYYY-MM-DD)")
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(field, f"{text!r} is not a calendar date") from None


def validate_sector(sector: str, *, field: str) -> None:
    if not sector.strip() or len(sector) > 64 or "\x00" in sector:
        raise InvalidArgument(field, "a sector name of 1-64 characters is required")


def validate_report(report: SectorReport, *, field: str = "report") -> None:
    """Raises InvalidArgument naming the first bad field."""
    if report.report_id and not REPORT_ID_PATTERN.match(report.report_id):
        raise InvalidArgument(
            f"{field}.report_id",
            f"{report.report_id!r} is not 1-128 letters, digits, '.', '_', ':' or '-'",
        )
    validate_sector(report.sector, field=f"{field}.sector")
    parse_date(report.trading_date, field=f"{field}.trading_date")
    for name in ("roi", "alpha", "benchmark_return", "volatility", "max_drawdown"):
        value = getattr(report, name)
        if not math.isfinite(value):
            raise InvalidArgument(f"{field}.{name}", f"{value} is not a finite number")
    for name in ("roi", "benchmark_return"):
        if getattr(report, name) <= -1:
            raise InvalidArgument(f"{field}.{name}", "a return must be above -100%")
    if report.volatility < 0:
        raise InvalidArgument(f"{field}.volatility", f"{report.volatility} is negative")
    if not 0 <= report.max_drawdown <= 1:
        raise InvalidArgument(f"{field}.max_drawdown", f"{report.max_drawdown} is not in 0..1")
    expected = report.roi - report.benchmark_return
    if abs(report.alpha - expected) > ALPHA_TOLERANCE * max(1.0, abs(expected)):
        raise InvalidArgument(
            f"{field}.alpha",
            f"{report.alpha} is not roi - benchmark_return ({expected})",
        )
    for name in ("trade_count", "fleet_size"):
        if getattr(report, name) < 0:
            raise InvalidArgument(f"{field}.{name}", "must not be negative")


def report_id_for(sector: str, trading_date: str) -> str:
    """The id the service gives the report of ``sector`` on ``trading_date``: readable, and
    distinct for sectors whose names differ only in punctuation or case."""
    slug = re.sub(r"[^a-z0-9]+", "-", sector.lower()).strip("-")[:40] or "sector"
    digest = hashlib.sha256(sector.encode()).hexdigest()[:6]
    return f"eod-{trading_date}-{slug}-{digest}"


def day_start(date: datetime.date) -> int:
    """Unix nanoseconds of the date's 00:00 UTC."""
    moment = datetime.datetime.combine(date, datetime.time(), tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 10**9


def date_of(nanos: int) -> datetime.date:
    """The UTC calendar date of a Unix-nanosecond time."""
    return datetime.datetime.fromtimestamp(nanos // 10**9, tz=datetime.UTC).date()


def day_reports(fleet: FleetReport, date: datetime.date) -> list[SectorReport]:
    """One report per sector from the fleet accounted over the bars of ``date`` (UTC)."""
    text = date.isoformat()
    return [
        SectorReport(
            report_id=report_id_for(book.sector, text),
            sector=book.sector,
            trading_date=text,
            roi=book.roi,
            alpha=book.roi - book.benchmark_return,
            benchmark_return=book.benchmark_return,
            volatility=book.volatility,
            max_drawdown=book.max_drawdown,
            trade_count=book.trade_count,
            fleet_size=book.strategy_count,
        )
        for book in fleet.sectors
    ]
