"""Automatic optimization cycles: an audit of the latest days each time a trading day is reported.

The scheduler follows the alpha-reporting service's report stream from its beginning. Reports of
one day arrive together (the reporting service seals every sector of a day once the market's
clock has left it), so a day counts as reported once the stream has been quiet for
``settle_seconds`` after a report of a newer date than any audited. Then one cycle audits the
``window_days`` days ending on that date. The ledger's newest cycle says which date was audited
last, so a restart neither repeats an audit nor misses one; audits asked for over gRPC count too.
When the stream fails (the reporting service restarting, say) the scheduler reconnects with
exponential backoff from the last report it saw.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import structlog

from alpha_reporting.report import EncryptedReport
from meta_optimizer.engine import MetaOptimizer
from qtmesh.base.reconnect import Sleep, follow_forever

_log = structlog.get_logger("meta_optimizer.schedule")


class ReportStream(Protocol):
    """Where new reports are announced (the alpha-reporting client, or a test double)."""

    def watch(self, *, after_sequence: int | None = None) -> AsyncIterator[EncryptedReport]: ...


class CycleScheduler:
    def __init__(
        self,
        *,
        optimizer: MetaOptimizer,
        stream: ReportStream,
        window_days: int,
        settle_seconds: float,
        initial_backoff: float,
        max_backoff: float,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._optimizer = optimizer
        self._stream = stream
        self._window = datetime.timedelta(days=window_days - 1)
        self._settle = settle_seconds
        self._initial = initial_backoff
        self._max = max_backoff
        self._sleep = sleep
        self._after = 0  # the sequence of the last report seen; 0: from the first
        self._newest = ""  # the newest trading date reported
        self._audited = ""  # the newest date a cycle audited up to, as last read

    async def run(self) -> None:
        """Follows the reports until cancelled."""
        await follow_forever(
            self._follow,
            initial_backoff=self._initial,
            max_backoff=self._max,
            log=_log,
            what="following the reports",
            sleep=self._sleep,
        )

    async def _follow(self, connected: Callable[[], None]) -> None:
        reports = aiter(self._stream.watch(after_sequence=self._after))
        upcoming = asyncio.ensure_future(anext(reports))
        try:
            while True:
                if self._newest > self._audited:
                    # Read again only when it matters: a cycle asked for over gRPC may have
                    # audited the date meanwhile.
                    cycle = await self._optimizer.last_cycle()
                    self._audited = max(self._audited, cycle.end_date if cycle else "")
                due = self._newest > self._audited
                # Waiting without cancelling the read: a cancelled read would end the stream.
                done, _ = await asyncio.wait({upcoming}, timeout=self._settle if due else None)
                if not done:
                    await self._audit(self._newest)
                    continue
                try:
                    report = upcoming.result()
                except StopAsyncIteration:
                    return
                connected()
                self._after = max(self._after, report.sequence)
                self._newest = max(self._newest, report.trading_date)
                upcoming = asyncio.ensure_future(anext(reports))
        finally:
            upcoming.cancel()

    async def _audit(self, end_date: str) -> None:
        start = datetime.date.fromisoformat(end_date) - self._window
        cycle = await self._optimizer.run_cycle(start_date=start.isoformat(), end_date=end_date)
        self._audited = end_date
        _log.info(
            "automatic optimization cycle",
            cycle=cycle.id,
            window=f"{cycle.start_date}..{cycle.end_date}",
            status=cycle.status.name,
            proposals=len(cycle.proposals),
        )
