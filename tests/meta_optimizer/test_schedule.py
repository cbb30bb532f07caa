"""Automatic optimization cycles: one audit per newly reported day, none repeated after a
restart, and a lost report stream resumed from the last report seen."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses

import pytest

from alpha_reporting.report import EncryptedReport
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.schedule import CycleScheduler
from qtmesh.base.config import ConfigError, Secret
from qtmesh.base.errors import Unavailable

SECTORS = ("Tech", "Energy")
KEY = base64.b64encode(b"1" * 32).decode()


def reports_of(day: str, first_sequence: int) -> list[EncryptedReport]:
    return [
        EncryptedReport(
            report_id=f"eod-{day}-{sector}",
            sector=sector,
            trading_date=day,
            key_id="k1",
            nonce=b"n" * 12,
            ciphertext=b"c",
            sequence=first_sequence + i,
        )
        for i, sector in enumerate(SECTORS)
    ]


class Stream:
    """A report stream fed by the test; ``fail`` ends the current watch with UNAVAILABLE."""

    def __init__(self, stored: list[EncryptedReport] = ()) -> None:
        self.stored = list(stored)
        self.watched_after: list[int | None] = []
        self._feed: asyncio.Queue[EncryptedReport | Exception] = asyncio.Queue()
        self.watching = asyncio.Event()

    def add(self, reports: list[EncryptedReport]) -> None:
        self.stored += reports
        for r in reports:
            self._feed.put_nowait(r)

    def fail(self) -> None:
        self._feed.put_nowait(Unavailable("alpha-reporting restarted"))

    async def watch(self, *, after_sequence: int | None = None):
        self.watched_after.append(after_sequence)
        self._feed = asyncio.Queue()
        for r in self.stored:
            if after_sequence is None or r.sequence > after_sequence:
                yield r
        self.watching.set()
        while True:
            item = await self._feed.get()
            if isinstance(item, Exception):
                self.watching.clear()
                raise item
            yield item


@dataclasses.dataclass
class Cycle:
    id: str
    start_date: str
    end_date: str
    status: object = dataclasses.field(default_factory=lambda: type("S", (), {"name": "OK"}))
    proposals: tuple = ()


class Optimizer:
    """Records the windows audited; ``audited`` is set after each cycle."""

    def __init__(self, last: Cycle | None = None) -> None:
        self.last = last
        self.windows: list[tuple[str, str]] = []
        self.audited = asyncio.Event()

    async def last_cycle(self) -> Cycle | None:
        return self.last

    async def run_cycle(self, *, start_date: str, end_date: str) -> Cycle:
        self.windows.append((start_date, end_date))
        self.last = Cycle(f"cycle-{len(self.windows)}", start_date, end_date)
        self.audited.set()
        return self.last


@contextlib.asynccontextmanager
async def scheduling(optimizer: Optimizer, stream: Stream):
    scheduler = CycleScheduler(
        optimizer=optimizer,  # type: ignore[arg-type]
        stream=stream,
        window_days=3,
        settle_seconds=0.05,
        initial_backoff=0.01,
        max_backoff=0.01,
    )
    task = asyncio.ensure_future(scheduler.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_audit(optimizer: Optimizer) -> tuple[str, str]:
    await asyncio.wait_for(optimizer.audited.wait(), timeout=10)
    optimizer.audited.clear()
    return optimizer.windows[-1]


async def test_each_newly_reported_day_is_audited_once_over_its_window():
    stream = Stream(reports_of("2026-02-02", 1) + reports_of("2026-02-03", 3))
    optimizer = Optimizer()
    async with scheduling(optimizer, stream):
        # The stored history ends on 02-03: one audit of the window ending there, not one a day.
        assert await next_audit(optimizer) == ("2026-02-01", "2026-02-03")
        stream.add(reports_of("2026-02-04", 5))
        assert await next_audit(optimizer) == ("2026-02-02", "2026-02-04")
        stream.add(reports_of("2026-02-05", 7))
        assert await next_audit(optimizer) == ("2026-02-03", "2026-02-05")
    assert len(optimizer.windows) == 3


async def test_a_restart_does_not_audit_a_day_again():
    stored = reports_of("2026-02-02", 1) + reports_of("2026-02-03", 3)
    stream = Stream(stored)
    optimizer = Optimizer(last=Cycle("cycle-7", "2026-02-01", "2026-02-03"))
    async with scheduling(optimizer, stream):
        await asyncio.wait_for(stream.watching.wait(), timeout=10)
        stream.add(reports_of("2026-02-04", 5))
        assert await next_audit(optimizer) == ("2026-02-02", "2026-02-04")
    # The history up to 02-03, audited before the restart, was not audited again.
    assert optimizer.windows == [("2026-02-02", "2026-02-04")]


async def test_a_lost_stream_resumes_after_the_last_report_seen():
    stream = Stream(reports_of("2026-02-02", 1))
    optimizer = Optimizer()
    async with scheduling(optimizer, stream):
        assert await next_audit(optimizer) == ("2026-01-31", "2026-02-02")
        stream.fail()
        await asyncio.wait_for(stream.watching.wait(), timeout=10)
        stream.add(reports_of("2026-02-03", 3))
        assert await next_audit(optimizer) == ("2026-02-01", "2026-02-03")
    assert stream.watched_after == [0, 2]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"auto_window_days": 2}, "auto_window_days"),
        ({"auto_settle_seconds": 0.0}, "auto_settle_seconds"),
        ({"reconnect_initial_seconds": 9.0}, "reconnect_initial_seconds"),
    ],
)
def test_bad_schedule_settings_are_refused_at_start_up(tmp_path, settings, field):
    with pytest.raises(ConfigError) as caught:
        MetaOptimizerConfig(data_dir=tmp_path, keyring=Secret(f"k1:{KEY}"), **settings)
    assert caught.value.setting == field
