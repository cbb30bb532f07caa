"""The report book: seals and stores sector reports once per (sector, trading day), serves them
still encrypted, and wakes watchers when one is stored. No gRPC here."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Collection

from alpha_reporting.crypto import Keyring, RandomBytes, open_report, seal
from alpha_reporting.report import (
    EncryptedReport,
    SectorReport,
    date_of,
    parse_date,
    report_id_for,
    validate_report,
)
from alpha_reporting.store import ReportStore
from qtmesh.base.errors import (
    AlreadyExists,
    DataIntegrityError,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    NotFound,
)
from qtmesh.base.signal import ChangeSignal

Clock = Callable[[], int]
Refused = Callable[[str], None]
"""Told why a report was refused, one of :data:`REFUSALS`."""
REFUSALS = (
    "invalid_field",  # a field out of range (InvalidArgument)
    "unknown_sector",  # a sector the market does not have
    "incomplete_day",  # a day the market clock has not left
    "duplicate",  # a (sector, day) already reported with another report
    "id_taken",  # a report id another (sector, day) holds
    "tampered",  # a sealed report that fails authentication
    "undecryptable",  # a sealed report under a key retired or not in the keyring
)


class ReportBook:
    def __init__(
        self,
        *,
        store: ReportStore,
        keyring: Keyring,
        clock: Clock,
        random_bytes: RandomBytes = os.urandom,
        refused: Refused | None = None,
    ) -> None:
        """``refused`` is told the reason of every report :meth:`submit` refuses."""
        self.store = store
        self.keyring = keyring
        self.signal = ChangeSignal()
        self._clock = clock
        self._random_bytes = random_bytes
        self._refused = refused
        self._lock = asyncio.Lock()
        # The market's sectors once the watcher has seen them; reports of others are refused.
        self.known_sectors: frozenset[str] | None = None
        # The market's replay clock as the watcher last saw it; days from its date on are not
        # complete, and a report of one would stand in for the fleet's (which is never written
        # once a report of the day exists).
        self.clock_time: int | None = None

    def learn_sectors(self, sectors: Collection[str]) -> None:
        self.known_sectors = frozenset(sectors)

    def learn_clock(self, clock_time: int) -> None:
        self.clock_time = clock_time

    async def submit(self, report: SectorReport) -> tuple[EncryptedReport, bool]:
        """Seals and stores ``report`` (its id defaults to the day's id); True if stored now.
        Submitting the same report again returns the stored one; a different report for a
        (sector, day) already reported is AlreadyExists; once the market clock is known, a
        report of a day it has not left is FailedPrecondition. Each refusal's reason is told to
        ``refused``."""
        try:
            validate_report(report)
        except InvalidArgument as exc:
            self._refuse(refusal_reason(exc), exc)
            raise
        if self.known_sectors is not None and report.sector not in self.known_sectors:
            raise self._refuse(
                "unknown_sector",
                InvalidArgument(
                    "report.sector",
                    f"unknown sector {report.sector!r}; the market has "
                    f"{', '.join(sorted(self.known_sectors))}",
                ),
            )
        if self.clock_time is not None:
            today = date_of(self.clock_time)
            if parse_date(report.trading_date, field="report.trading_date") >= today:
                raise self._refuse(
                    "incomplete_day",
                    FailedPrecondition(
                        f"report.trading_date: {report.trading_date} is not complete; the "
                        f"market clock stands on {today.isoformat()}",
                        metadata={
                            "field": "report.trading_date",
                            "trading_date": report.trading_date,
                        },
                    ),
                )
        report = dataclasses.replace(
            report, report_id=report.report_id or report_id_for(report.sector, report.trading_date)
        )
        async with self._lock:
            existing = await self.store.run(self.store.of_day, report.sector, report.trading_date)
            if existing is not None:
                reason = "duplicate"
                if existing.report_id == report.report_id:
                    try:
                        if open_report(existing, self.keyring) == report:
                            return existing, False
                    except MeshError as exc:
                        # The day's stored report does not open: nothing shows it is this one.
                        reason = refusal_reason(exc)
                raise self._refuse(
                    reason,
                    AlreadyExists(
                        f"{report.sector} on {report.trading_date} is already reported as "
                        f"{existing.report_id}; a trading day is reported once",
                        metadata={"report_id": existing.report_id},
                    ),
                )
            clash = await self.store.run(self.store.get, report.report_id)
            if clash is not None:
                raise self._refuse(
                    "id_taken",
                    AlreadyExists(
                        f"report id {report.report_id} is taken by {clash.sector} on "
                        f"{clash.trading_date}",
                        metadata={"report_id": report.report_id},
                    ),
                )
            sealed = seal(
                report, self.keyring, create_time=self._clock(), random_bytes=self._random_bytes
            )
            stored = await self.store.run(self.store.insert, sealed)
            if stored is None:
                raise self._refuse(
                    "duplicate", AlreadyExists(f"report {report.report_id} was stored concurrently")
                )
            self.signal.notify()
        return stored, True

    def _refuse(self, reason: str, error: MeshError) -> MeshError:
        """``error``, the report's refusal, once ``refused`` is told its reason."""
        if self._refused is not None:
            self._refused(reason)
        return error

    async def get(self, report_id: str) -> EncryptedReport:
        if not report_id:
            raise InvalidArgument("report_id", "must not be empty")
        found = await self.store.run(self.store.get, report_id)
        if found is None:
            raise NotFound(f"no report {report_id!r}", metadata={"report_id": report_id})
        return found

    async def page(
        self,
        *,
        sector: str,
        start_date: str,
        end_date: str,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[EncryptedReport]:
        check_window(start_date, end_date)
        return await self.store.run(
            lambda: self.store.page(
                sector=sector, start_date=start_date, end_date=end_date, after=after, limit=limit
            )
        )

    async def after_sequence(self, sequence: int, limit: int) -> list[EncryptedReport]:
        return await self.store.run(self.store.after_sequence, sequence, limit)

    async def last_sequence(self) -> int:
        return await self.store.run(self.store.last_sequence)

    async def reported(self, dates: list[str]) -> set[tuple[str, str]]:
        return await self.store.run(self.store.reported, dates)


def refusal_reason(error: MeshError) -> str:
    """The reason, as a short snake_case word, of a report refused with ``error``: ``tampered``
    when it fails authentication (open_report's DataIntegrityError), ``undecryptable`` when its
    key is retired or not in the keyring, else the error's own reason (``invalid_field``)."""
    if isinstance(error, DataIntegrityError):
        return "tampered"
    if isinstance(error, FailedPrecondition) and "key_id" in error.metadata:
        return "undecryptable"
    return error.reason.lower()


def check_window(start_date: str, end_date: str) -> None:
    """Validates an inclusive window of ISO dates; empty bounds are unbounded."""
    start = parse_date(start_date, field="start_date") if start_date else None
    end = parse_date(end_date, field="end_date") if end_date else None
    if start is not None and end is not None and end < start:
        raise InvalidArgument("end_date", f"{end_date} is before start_date {start_date}")
