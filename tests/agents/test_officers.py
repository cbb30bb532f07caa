"""What the three officers share: the fleet's history sampled per period from a real market (each
period fetched once, a restarted market re-read), the coalescing refresher, and the clock
follower that resumes and reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agents.fleet_history import HOUR_NANOS, FleetSampler
from agents.officer import FleetPeriods, Officer
from agents.refresh import Refresher, follow_clock
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.config import MetaPolicyRules
from qtmesh.base.config import ConfigError
from qtmesh.base.contract import AgentContext
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.runtime import catalog
from qtmesh.testing import serving_app


class Counting:
    """A market client that records the windows asked for."""

    def __init__(self, client: MarketClient) -> None:
        self.client = client
        self.windows: list[tuple[int | None, int | None]] = []

    async def fleet(self, *, start_time=None, end_time=None, sector=""):
        self.windows.append((start_time, end_time))
        return await self.client.fleet(start_time=start_time, end_time=end_time, sector=sector)


def market_config(tmp_path: Path) -> MarketConfig:
    return MarketConfig(synthetic_days=3, seed=5, data_dir=tmp_path, fleet_warmup_bars=600)


async def test_the_sampler_fetches_each_completed_period_once_and_keeps_the_last(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path)) as market:
        client = MarketClient(market.channel)
        counting = Counting(client)
        sampler = FleetSampler(counting, period=HOUR_NANOS, max_periods=4)
        history = await sampler.update()
        assert history.observations == 0
        assert history.drawdown() == 0
        await client.advance(3 * 60 + 20)
        history = await sampler.update()
        assert history.observations == 3
        d = history.deployment_time
        assert counting.windows[-3:] == [
            (d + k * HOUR_NANOS + 1, d + (k + 1) * HOUR_NANOS) for k in range(3)
        ]
        counting.windows.clear()
        await sampler.update()
        assert counting.windows == [(None, None)]  # only the fleet now: no period completed
        await client.advance(3 * 60)
        history = await sampler.update()
        assert history.observations == 4
        assert history.end_times.tolist() == [d + k * HOUR_NANOS for k in range(3, 7)]
        assert len(counting.windows) == 2 + 3  # two reads of the fleet now, three periods
        whole = await client.fleet(end_time=history.end_times[-1])
        first = await client.fleet(end_time=history.end_times[0] - HOUR_NANOS)
        assert np.prod(1 + history.portfolio) == pytest.approx(whole.equity / first.equity)
        assert history.equity[-1] == pytest.approx(whole.equity)
        assert history.strategy_trades.shape == (4, 27)
        assert 0 <= history.drawdown() < 0.05

    # A restarted market replays from its start: the history starts again.
    async with serving_app(MARKET, market_config(tmp_path)) as market:
        sampler._market = MarketClient(market.channel)
        history = await sampler.update()
        assert history.observations == 0
        assert history.next_period == 0


async def test_the_refresher_coalesces_requests_and_fresh_waits_for_a_later_run():
    runs = 0
    gate = asyncio.Event()
    started = asyncio.Event()

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        started.set()
        await gate.wait()

    refresher = Refresher(refresh, name="test")
    first = refresher.request()
    await started.wait()
    # Requests while a refresh runs join the next one.
    second, third = refresher.request(), refresher.request()
    assert second is third
    assert second is not first
    gate.set()
    await first
    await second
    assert runs == 2
    await refresher.fresh()
    assert runs == 3
    await refresher.close()


async def test_a_failed_refresh_reaches_its_waiters_and_the_next_one_runs():
    outcomes = [Unavailable("market down"), None]

    async def refresh() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    refresher = Refresher(refresh, name="test")
    with pytest.raises(Unavailable):
        await refresher.fresh()
    assert isinstance(refresher.last_error, Unavailable)
    await refresher.fresh()
    assert refresher.last_error is None
    await refresher.close()


async def test_the_clock_follower_resumes_after_the_last_position_and_reconnects():
    calls: list[int | None] = []
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    class Stream:
        def stream_bars(self, symbols=(), *, after_position=None):
            calls.append(after_position)
            return self._steps(len(calls))

        async def _steps(self, attempt: int):
            if attempt == 1:
                yield 5, 500, []
                yield 6, 600, []
                raise Unavailable("server is shutting down; resume with after_position=6")
            if attempt == 2:
                raise InvalidArgument("after_position", "must be in 0..3")
            yield 3, 300, []

    def on_step(position: int, clock_time: int) -> None:
        seen.append((position, clock_time))
        if position == 3:
            done.set()

    follower = asyncio.ensure_future(follow_clock(Stream(), on_step, backoff=(0.0, 0.0)))
    await done.wait()
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    assert seen == [(5, 500), (6, 600), (3, 300)]
    # Resumed after 6, then followed the restarted market from its clock.
    assert calls == [None, 6, None]


async def test_history_leaves_out_periods_without_bars(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path)) as market:
        client = MarketClient(market.channel)
        await client.advance(2 * 60)
        history = await FleetSampler(client, period=HOUR_NANOS, max_periods=10).update()
        closed = dataclasses.replace(await client.fleet(), bar_count=0)
        extended = history.extended(history.current, [(5, closed)], 10)
        assert extended.observations == history.observations == 2
        assert extended.next_period == 6


@pytest.mark.parametrize(
    ("app", "environ", "message"),
    [
        ("risk", {"QTMESH_RISK_HALT_MARGIN": "-1"}, "halt_margin: must be positive"),
        ("risk", {"QTMESH_RISK_MAX_DRAWDOWN": "1.5"}, "max_drawdown: must be in (0, 1]"),
        (
            "risk",
            {"QTMESH_RISK_LOOKBACK_PERIODS": "5"},
            "lookback_periods: must be at least min_observations",
        ),
        (
            "ceo",
            {"QTMESH_CEO_DRAWDOWN_ANCHORS": "0.1,0.05,0.2,0.3"},
            "drawdown_anchors: anchors must increase",
        ),
        ("ceo", {"QTMESH_CEO_INITIAL_MODE": "PANIC"}, "initial_mode: must be one of"),
        ("ceo", {"QTMESH_CEO_CONFIRMATIONS": "0"}, "confirmations: must be in 1..100"),
        (
            "strategy",
            {"QTMESH_STRATEGY_SHADOW_REQUIRED_DEFLATED_SHARPE": "2"},
            "shadow_required_deflated_sharpe: must be in 0..1",
        ),
        ("strategy", {"QTMESH_STRATEGY_ENABLE_PSR": "0.01"}, "enable_psr: must be in"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_setting_and_variable(app, environ, message):
    loaded = catalog.entry(app).load()
    with pytest.raises(ConfigError) as error:
        loaded.load_config(environ=environ)
    assert message in str(error.value)
    assert next(iter(environ)) in str(error.value)


def test_data_directories_and_gates_come_from_the_environment(tmp_path):
    for app, variable in (
        ("risk", "QTMESH_RISK_DATA_DIR"),
        ("ceo", "QTMESH_CEO_DATA_DIR"),
    ):
        config = catalog.entry(app).load().load_config(environ={variable: str(tmp_path)})
        assert config.url == f"sqlite:///{tmp_path / f'{app}.db'}"
    strategy = catalog.entry("strategy").load().load_config(environ={})
    assert strategy.rules.meta == MetaPolicyRules()
    gated = (
        catalog.entry("strategy")
        .load()
        .load_config(environ={"QTMESH_STRATEGY_SHADOW_MIN_TEST_DAYS": "2.5"})
    )
    assert gated.rules.meta == dataclasses.replace(MetaPolicyRules(), shadow_min_test_days=2.5)


def test_the_strategy_officer_stores_nothing_and_calls_the_market_and_meta():
    # The book it advises on is the market fleet's, which also keeps its shadows' records; meta
    # gives the strategy weights that tilt its reweighting.
    app = catalog.entry("strategy").load()
    fields = {f.name for f in dataclasses.fields(app.config_type)}
    assert not fields & {"data_dir", "database_url", "sesa_timeout_seconds"}
    assert app.depends_on == ("market", "meta")
    assert app.calls == ("market", "meta")
    # The risk officer calls the market twice: its fleet, and its AgentService for a resume.
    risk = catalog.entry("risk").load()
    assert risk.depends_on == ("market",)
    assert [u.service for u in risk.clients(risk.config_type())] == ["market", "market"]


@dataclasses.dataclass
class Periods(FleetPeriods):
    period_minutes: float = 60.0
    lookback_periods: int = 24
    min_observations: int = 2


class Probe(Officer[None]):
    """An officer that recommends nothing and remembers the position of its last refresh."""

    name = "probe"

    async def _refresh(self) -> None:
        await self._sampler.update()

    def _recommendations(self) -> list:
        return []


async def test_recommend_catches_up_with_a_context_ahead_of_the_last_refresh(tmp_path):
    async with serving_app(MARKET, market_config(tmp_path)) as market:
        client = MarketClient(market.channel)
        officer = Probe(market=client, policy=None, periods=Periods())
        await officer._refresher.fresh()
        before = officer._computed_position()
        moved = await client.advance(240)  # a replay moves the clock hours at once
        context = AgentContext(
            cycle_id="c", as_of_time=moved.clock_time, market_position=moved.position
        )
        await officer.recommend(context)
        assert before is not None
        assert before < moved.position
        assert officer._computed_position() == moved.position
        await officer.close()
