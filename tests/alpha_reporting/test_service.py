"""The alpha-reporting service over gRPC: day reports written as the market's clock leaves each
UTC day (once, across restarts of either service), external submissions, pages, the report
stream, bad requests, and keys that never reach the logs."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from alpha_reporting import _convert as convert
from alpha_reporting.client import AlphaReportingClient
from alpha_reporting.config import AlphaReportingConfig
from alpha_reporting.crypto import Keyring, open_report
from alpha_reporting.report import SectorReport, date_of, day_start, report_id_for
from alpha_reporting.service import app as alpha_app
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.api.alpha.v1 import alpha_reporting_pb2 as pb
from qtmesh.api.alpha.v1 import alpha_reporting_pb2_grpc as pb_grpc
from qtmesh.base.config import Secret
from qtmesh.base.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.server import ServerConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

DAY = 1440
DAY_NANOS = 86_400 * 10**9
KEY = base64.b64encode(bytes(range(32))).decode()
KEYRING = Secret(f"k1:{KEY}")
ALPHA = alpha_app(clock=lambda: 1_800_000_000 * 10**9)


def market_config(data_dir: Path) -> MarketConfig:
    # Deployed at the end of the second of six days.
    return MarketConfig(
        synthetic_days=6, seed=9, replay_start=1 / 3, data_dir=data_dir, fleet_warmup_bars=600
    )


def alpha_config(data_dir: Path, **changes) -> AlphaReportingConfig:
    fields = {
        "data_dir": data_dir,
        "keyring": KEYRING,
        "reconnect_initial_seconds": 0.05,
        "reconnect_max_seconds": 0.2,
    }
    return AlphaReportingConfig(**{**fields, **changes})


def report(sector: str = "Tech", date: str = "2026-02-04", roi: float = 0.01) -> SectorReport:
    return SectorReport(
        report_id="",
        sector=sector,
        trading_date=date,
        roi=roi,
        alpha=roi - 0.002,
        benchmark_return=0.002,
        volatility=0.2,
        max_drawdown=0.01,
        trade_count=12,
        fleet_size=9,
    )


async def watch_until(client: AlphaReportingClient, count: int, *, after: int = 0) -> list:
    seen = []
    async for stored in client.watch(after_sequence=after):
        seen.append(stored)
        if len(seen) == count:
            return seen
    raise AssertionError("the report stream ended")


@contextlib.asynccontextmanager
async def mesh(tmp_path: Path, *, market_port: int = 0):
    async with serving_app(
        MARKET,
        market_config(tmp_path),
        server_config=ServerConfig(port=market_port, grace_seconds=1.0),
    ) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(ALPHA, alpha_config(tmp_path), channel_config=channels) as alpha:
            yield market, alpha


async def test_every_completed_day_is_reported_once_per_sector(tmp_path):
    keyring = Keyring.parse(KEYRING.reveal())
    async with mesh(tmp_path) as (market, alpha):
        client, prices = AlphaReportingClient(alpha.channel), MarketClient(market.channel)
        await prices.advance(2 * DAY + 1)
        stored = await watch_until(client, 8)
        fleet = await prices.fleet()
        days = sorted({r.trading_date for r in stored})
        first = date_of(fleet.start_time)
        assert days == [first.isoformat(), date_of(fleet.start_time + DAY_NANOS).isoformat()]
        opened = [open_report(r, keyring) for r in stored]
        assert {r.key_id for r in stored} == {"k1"}
        assert {(r.sector, r.trading_date) for r in opened} == {
            (s, d) for s in ("Crypto", "Energy", "Financials", "Tech") for d in days
        }
        day = await prices.fleet(
            start_time=day_start(first), end_time=day_start(first) + DAY_NANOS - 1
        )
        for r in (r for r in opened if r.trading_date == days[0]):
            book = next(s for s in day.sectors if s.sector == r.sector)
            assert r.roi == book.roi
            assert r.alpha == pytest.approx(book.roi - book.benchmark_return)
            assert r.trade_count == book.trade_count
            assert r.fleet_size == book.strategy_count
            assert r.report_id == report_id_for(r.sector, r.trading_date)
    # Restarted over the same stores, nothing is reported twice; the next day still comes.
    async with mesh(tmp_path) as (market, alpha):
        client, prices = AlphaReportingClient(alpha.channel), MarketClient(market.channel)
        await prices.advance(3 * DAY + 1)
        later = await watch_until(client, 4, after=stored[-1].sequence)
        assert {r.trading_date for r in later} == {
            date_of(fleet.start_time + 2 * DAY_NANOS).isoformat()
        }
        assert len(await client.reports()) == 12


async def test_reporting_resumes_after_the_market_restarts(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path)) as market:
        port = int(market.address.rpartition(":")[2])
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(ALPHA, alpha_config(tmp_path), channel_config=channels) as alpha:
            client = AlphaReportingClient(alpha.channel)
            await MarketClient(market.channel).advance(DAY + 1)
            first = await watch_until(client, 4)
            await market.server.stop()
            restarted = ServerConfig(port=port, grace_seconds=1.0)
            async with serving_app(MARKET, market_config(tmp_path), server_config=restarted) as m:
                # Subchannels are shared: the reporter's failed attempts put this address in
                # backoff, so wait until the new server is reachable.
                await m.channel.channel_ready()
                # The market replays from its start: the day reported before is not repeated.
                await MarketClient(m.channel).advance(2 * DAY + 1)
                later = await watch_until(client, 4, after=first[-1].sequence)
            assert len({r.trading_date for r in first + later}) == 2
            assert len(await client.reports()) == 8


@pytest.fixture
async def alpha(tmp_path):
    async with serving_app(ALPHA, alpha_config(tmp_path, watch_market=False)) as running:
        yield running


async def test_submitted_reports_are_sealed_stored_once_and_served_encrypted(alpha):
    client = AlphaReportingClient(alpha.channel)
    stored = await client.submit(report())
    assert stored.report_id == report_id_for("Tech", "2026-02-04")
    assert stored.create_time == 1_800_000_000 * 10**9
    assert await client.get(stored.report_id) == stored
    keyring = Keyring.parse(KEYRING.reveal())
    assert open_report(stored, keyring) == SectorReport(
        **{**report().__dict__, "report_id": stored.report_id}
    )
    # The same report again is the stored one; another one for that day is refused.
    assert await client.submit(report()) == stored
    with pytest.raises(AlreadyExists, match="already reported"):
        await client.submit(report(roi=0.02))
    named = await client.submit(
        SectorReport(**{**report(date="2026-02-05").__dict__, "report_id": "external-7"})
    )
    assert named.report_id == "external-7"
    with pytest.raises(AlreadyExists, match="is taken"):
        await client.submit(
            SectorReport(**{**report(date="2026-02-06").__dict__, "report_id": "external-7"})
        )
    assert len(await client.reports()) == 2
    with pytest.raises(NotFound):
        await client.get("eod-missing")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sector": "", "trading_date": "2026-02-04"}, "report.sector"),
        ({"sector": "Tech", "trading_date": "2026-13-01"}, "report.trading_date"),
        ({"sector": "Tech", "trading_date": "2026-02-04", "roi": float("nan")}, "report.roi"),
        (
            {"sector": "Tech", "trading_date": "2026-02-04", "roi": 0.1, "alpha": 0.3},
            "report.alpha",
        ),
        (
            {"sector": "Tech", "trading_date": "2026-02-04", "max_drawdown": -0.1},
            "report.max_drawdown",
        ),
    ],
)
async def test_bad_reports_are_refused_naming_the_field_and_store_nothing(alpha, fields, field):
    stub = pb_grpc.AlphaReportingServiceStub(alpha.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.SubmitReport(pb.SubmitReportRequest(report=pb.SectorReport(**fields)))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field
    assert await AlphaReportingClient(alpha.channel).reports() == []


async def test_pages_are_stable_and_tokens_belong_to_their_query(alpha):
    client = AlphaReportingClient(alpha.channel)
    for day in range(4, 9):
        for sector in ("Tech", "Energy", "Crypto"):
            await client.submit(report(sector, f"2026-02-0{day}"))
    first, token = await client.reports_page(page_size=4)
    assert len(first) == 4
    await client.submit(report("Financials", "2026-02-09"))  # a newer report lands at the end
    rest = []
    while token:
        page, token = await client.reports_page(page_size=4, page_token=token)
        rest += page
    everything = await client.reports()
    assert first + rest == everything
    assert len(everything) == 16
    assert [(r.trading_date, r.sector) for r in everything] == sorted(
        (r.trading_date, r.sector) for r in everything
    )
    window = await client.reports(sector="Tech", start_date="2026-02-05", end_date="2026-02-06")
    assert [r.trading_date for r in window] == ["2026-02-05", "2026-02-06"]
    _, issued = await client.reports_page(page_size=2)
    for kwargs, field in [
        ({"sector": "Tech", "page_token": issued}, "page_token"),
        ({"start_date": "2026-02-07", "end_date": "2026-02-05"}, "end_date"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"page_size": -1}, "page_size"),
    ]:
        with pytest.raises(InvalidArgument) as bad:
            await client.reports_page(**kwargs)
        assert bad.value.field == field


async def test_the_report_stream_resumes_after_a_sequence_and_goes_live(alpha):
    client = AlphaReportingClient(alpha.channel)
    first = await client.submit(report("Tech"))
    second = await client.submit(report("Energy"))
    stream = client.watch(after_sequence=first.sequence)
    assert await anext(stream) == second
    third = await client.submit(report("Crypto"))
    assert await anext(stream) == third
    await stream.aclose()
    with pytest.raises(InvalidArgument) as bad:
        await anext(client.watch(after_sequence=third.sequence + 5))
    assert bad.value.field == "after_sequence"


async def test_reports_of_sectors_the_market_lacks_are_refused(tmp_path):
    async with mesh(tmp_path) as (market, alpha):
        client = AlphaReportingClient(alpha.channel)
        # The reporter learns the sectors on connecting; a report it stores proves it did.
        await MarketClient(market.channel).advance(DAY + 1)
        await watch_until(client, 4)
        with pytest.raises(InvalidArgument) as bad:
            await client.submit(report("Metals"))
        assert bad.value.field == "report.sector"


async def test_reports_of_days_the_market_clock_has_not_left_are_refused(tmp_path):
    async with mesh(tmp_path) as (market, alpha):
        client, prices = AlphaReportingClient(alpha.channel), MarketClient(market.channel)
        await prices.advance(DAY + 1)
        # The first day's reports prove the reporter has followed the clock onto the next day.
        before = await watch_until(client, 4)
        today = date_of((await prices.fleet()).clock_time).isoformat()
        stub = pb_grpc.AlphaReportingServiceStub(alpha.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.SubmitReport(
                pb.SubmitReportRequest(report=convert.report_to_proto(report(date=today)))
            )
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"{today} is not complete" in failure.value.details()
        assert error_info(failure.value).metadata["field"] == "report.trading_date"
        assert await client.reports() == before


async def test_keys_never_reach_the_logs(tmp_path):
    rotated = Secret(f"k1:{KEY},k2:{base64.b64encode(b'k' * 32).decode()}")
    with capture_logs() as logs:
        config = alpha_config(tmp_path, watch_market=False, keyring=rotated)
        async with serving_app(ALPHA, config) as running:
            stored = await AlphaReportingClient(running.channel).submit(report())
    assert stored.key_id == "k2"
    text = repr(logs) + repr(config)
    assert "report keyring loaded" in text
    assert KEY not in text
    assert base64.b64encode(b"k" * 32).decode() not in text


def refusals(running) -> dict[str, float]:
    """``qtmesh_reports_rejected_total`` of the server, by reason."""
    families = text_string_to_metric_families(running.server.metrics.text())
    (family,) = [f for f in families if f.name == "qtmesh_reports_rejected"]
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


async def test_each_refused_report_is_counted_by_its_reason(tmp_path):
    config = alpha_config(tmp_path, watch_market=False)
    async with serving_app(ALPHA, config) as alpha:
        client = AlphaReportingClient(alpha.channel)
        counted = refusals(alpha)
        assert set(counted) >= {"invalid_field", "duplicate", "tampered", "undecryptable"}
        assert set(counted.values()) == {0}
        stored = await client.submit(report())
        assert await client.submit(report()) == stored  # the same report again is no refusal
        with pytest.raises(InvalidArgument):
            await client.submit(report(roi=float("nan")))
        with pytest.raises(AlreadyExists):
            await client.submit(report(roi=0.02))
        await client.submit(
            SectorReport(**{**report(date="2026-02-05").__dict__, "report_id": "x7"})
        )
        with pytest.raises(AlreadyExists):
            await client.submit(
                SectorReport(**{**report(date="2026-02-06").__dict__, "report_id": "x7"})
            )
        assert refusals(alpha) == {
            **counted,
            "invalid_field": 1,
            "duplicate": 1,
            "id_taken": 1,
        }
        # The stored report altered: the same report again cannot be matched with it.
        with sqlite3.connect(tmp_path / "alpha.db") as db:
            db.execute(
                "UPDATE alpha_reports SET ciphertext = ? WHERE report_id = ?",
                (bytes([stored.ciphertext[0] ^ 1]) + stored.ciphertext[1:], stored.report_id),
            )
        with pytest.raises(AlreadyExists):
            await client.submit(report())
        assert refusals(alpha)["tampered"] == 1
    # Sealed under a key no longer in the keyring.
    other = Secret(f"k2:{base64.b64encode(b'k' * 32).decode()}")
    async with serving_app(ALPHA, alpha_config(tmp_path, watch_market=False, keyring=other)) as a:
        with pytest.raises(AlreadyExists):
            await AlphaReportingClient(a.channel).submit(
                SectorReport(**{**report(date="2026-02-05").__dict__, "report_id": "x7"})
            )
        assert refusals(a) == {**dict.fromkeys(counted, 0.0), "undecryptable": 1}


async def test_reports_of_unknown_sectors_or_open_days_are_counted_by_their_reason(tmp_path):
    async with mesh(tmp_path) as (market, alpha):
        client, prices = AlphaReportingClient(alpha.channel), MarketClient(market.channel)
        await prices.advance(DAY + 1)
        await watch_until(client, 4)  # the reporter knows the sectors and the clock
        today = date_of((await prices.fleet()).clock_time).isoformat()
        with pytest.raises(InvalidArgument):
            await client.submit(report("Metals"))
        with pytest.raises(FailedPrecondition):
            await client.submit(report(date=today))
        counted = refusals(alpha)
        assert (counted["unknown_sector"], counted["incomplete_day"]) == (1, 1)
        # The fleet's own reports were stored, none refused.
        assert sum(counted.values()) == 2
