"""The report store on SQLite and PostgreSQL: one report per id and per sector-day, ordered
pages, and the sequence WatchReports replays."""

from __future__ import annotations

from alpha_reporting.report import EncryptedReport
from alpha_reporting.store import ReportStore


def sealed(sector: str, date: str, *, report_id: str = "") -> EncryptedReport:
    return EncryptedReport(
        report_id=report_id or f"eod-{date}-{sector.lower()}",
        sector=sector,
        trading_date=date,
        key_id="k1",
        nonce=bytes(range(12)),
        ciphertext=b"\x00\xff" * 20,
        create_time=7,
    )


def test_reports_are_stored_once_per_id_and_day_and_read_back_exactly(database_url):
    store = ReportStore(database_url)
    try:
        first = store.insert(sealed("Tech", "2026-02-04"))
        assert first is not None
        assert first.sequence == 1
        assert store.get(first.report_id) == first
        assert store.of_day("Tech", "2026-02-04") == first
        assert store.insert(sealed("Tech", "2026-02-04", report_id="other")) is None
        assert store.insert(sealed("Energy", "2026-02-05", report_id=first.report_id)) is None
        second = store.insert(sealed("Energy", "2026-02-04"))
        assert second is not None
        # Increasing; PostgreSQL may skip numbers a refused insert drew.
        assert second.sequence > first.sequence
        assert store.last_sequence() == second.sequence
        assert store.after_sequence(first.sequence, 10) == [second]
        assert store.reported(["2026-02-04", "2026-02-05"]) == {
            ("Tech", "2026-02-04"),
            ("Energy", "2026-02-04"),
        }
    finally:
        store.close()


def test_pages_follow_date_then_sector_with_filters(database_url):
    store = ReportStore(database_url)
    try:
        for date in ("2026-02-06", "2026-02-04", "2026-02-05"):
            for sector in ("Tech", "Crypto", "Energy"):
                store.insert(sealed(sector, date))
        everything = store.page(limit=100)
        keys = [(r.trading_date, r.sector) for r in everything]
        assert keys == sorted(keys)
        assert len(keys) == 9
        first = store.page(limit=4)
        rest = store.page(after=(first[-1].trading_date, first[-1].sector), limit=100)
        assert first + rest == everything
        window = store.page(sector="Tech", start_date="2026-02-05", end_date="2026-02-06", limit=9)
        assert [(r.trading_date, r.sector) for r in window] == [
            ("2026-02-05", "Tech"),
            ("2026-02-06", "Tech"),
        ]
    finally:
        store.close()
