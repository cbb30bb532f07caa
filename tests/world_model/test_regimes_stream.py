"""WatchRegimes: the whole market's regime on the replay clock. The watcher detects at most once
per clock step and interval and logs only changes; over gRPC, a market whose bars turn volatile
is reported as a change with its market time, and a follower resumes after a sequence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from qtmesh.api.worldmodel.v1 import world_model_pb2, world_model_pb2_grpc
from qtmesh.base.errors import FailedPrecondition
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving, serving_app
from tests.helpers.regimes import BEFORE_THE_SWITCH, MINUTE, T0, save_switching_market
from world_model.client import WorldModelClient
from world_model.config import WorldModelConfig
from world_model.engine import MARKET as WHOLE_MARKET
from world_model.engine import Subject, WorldModel
from world_model.regimes import RegimeReport
from world_model.service import APP, services
from world_model.watch import RegimeChange, RegimeLog, RegimeWatcher

# Two states (calm, volatile), so the labels say plainly what the planted days are.
CONFIG = WorldModelConfig(
    states=2, bars_per_step=15, warm_up=False, refit_bars=30, restarts=0, watch_interval_minutes=60
)


def report(regime: str, at: int, p: float = 0.9) -> RegimeReport:
    labels = ("calm", "volatile")
    probabilities = (p, 1 - p) if regime == "calm" else (1 - p, p)
    return RegimeReport(
        symbol="",
        sector="",
        as_of_time=at,
        regime=regime,
        labels=labels,
        probabilities=probabilities,
        means=(0.0, 0.0),
        stddevs=(1e-4, 1e-3),
        transition=(0.9, 0.1, 0.1, 0.9),
        observations=100,
        bars_per_step=15,
    )


class ScriptedDetector:
    """Answers each detection with the next scripted regime (an exception is raised)."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[Subject] = []
        self.now = T0

    async def detect(self, subject: Subject, *, lookback: int = 0) -> RegimeReport:
        self.asked.append(subject)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return report(answer, self.now)


class NoMarket:
    """The watcher's market when the test drives its steps itself."""

    async def snapshot(self, symbols=()):  # pragma: no cover - never called
        raise AssertionError("not followed in this test")

    def stream_bars(self, symbols=(), *, after_position=None):  # pragma: no cover
        raise AssertionError("not followed in this test")


async def test_the_watcher_detects_at_most_once_per_interval_and_logs_only_changes():
    detector = ScriptedDetector("calm", "calm", FailedPrecondition("too few bars"), "volatile")
    log = RegimeLog(keep=10, queue_size=10)
    watcher = RegimeWatcher(detector, NoMarket(), log, interval=60 * MINUTE)

    first = await watcher.step(T0)
    assert first is not None
    assert (first.sequence, first.regime, first.previous_regime) == (1, "calm", "")
    assert not first.is_change  # the regime found, not a change
    # Inside the interval nothing is detected, however many steps arrive.
    for minute in range(1, 60):
        assert await watcher.step(T0 + minute * MINUTE) is None
    assert watcher.detections == 1
    assert await watcher.step(T0 + 60 * MINUTE) is None  # detected: still calm
    assert await watcher.step(T0 + 120 * MINUTE) is None  # the detection failed: logged, skipped
    assert await watcher.step(T0 + 150 * MINUTE) is None  # and retried only an interval later
    detector.now = T0 + 180 * MINUTE
    change = await watcher.step(T0 + 180 * MINUTE)
    assert change is not None
    assert change.is_change
    assert (change.sequence, change.regime, change.previous_regime) == (2, "volatile", "calm")
    assert change.market_time == T0 + 180 * MINUTE
    assert change.probability == pytest.approx(0.9)
    assert watcher.detections == 4
    assert detector.asked == [WHOLE_MARKET] * 4
    assert [e.sequence for e in log.after(0, 10)] == [1, 2]


def test_the_log_keeps_the_last_events():
    log = RegimeLog(keep=2, queue_size=10)
    for i, regime in enumerate(["calm", "volatile", "calm"]):
        log.append(market_time=T0 + i, regime=regime, previous="", report=report(regime, T0 + i))
    assert (log.oldest_sequence, log.last_sequence) == (2, 3)
    assert [e.sequence for e in log.after(1, 10)] == [2, 3]
    assert [e.sequence for e in log.after(2, 10)] == [3]
    assert log.after(3, 10) == []
    assert [e.sequence for e in log.after(1, 1)] == [2]


@pytest.fixture(scope="module")
def switching_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A volatile day, two calm days, then the market turns volatile again on its last day."""
    return save_switching_market(tmp_path_factory.mktemp("market") / "switching.csv")


@contextlib.asynccontextmanager
async def mesh(data: Path, config: WorldModelConfig = CONFIG):
    # The clock starts near the end of the second calm day.
    replay = MarketConfig(data_path=data, replay_start=BEFORE_THE_SWITCH)
    async with serving_app(MARKET, replay) as market:
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(APP, config, channel_config=channels) as world:
            yield market, world


async def next_event(events: AsyncIterator[RegimeChange]) -> RegimeChange:
    return await asyncio.wait_for(anext(events), timeout=60)


async def test_a_switch_of_the_market_is_streamed_and_a_follower_resumes_after_a_sequence(
    switching_market,
):
    async with mesh(switching_market) as (market, world):
        client = WorldModelClient(world.channel)
        prices = MarketClient(market.channel)
        start = (await prices.snapshot()).clock_time
        events = client.watch_regimes(after_sequence=0)
        found = await next_event(events)
        # Detected at the clock's own step, before the clock moved.
        assert (found.sequence, found.regime, found.previous_regime) == (1, "calm", "")
        assert found.market_time == start
        assert (found.report.symbol, found.report.sector) == ("", "")

        await prices.advance(12 * 60)  # twelve hours into the volatile day
        clock = (await prices.snapshot()).clock_time
        change = await next_event(events)
        assert (change.sequence, change.regime, change.previous_regime) == (2, "volatile", "calm")
        assert change.is_change
        assert change.probability > 0.9
        assert start < change.market_time <= clock
        assert change.report.stddevs[1] == pytest.approx(2e-3 / np.sqrt(3), rel=0.3)
        # DetectRegime of the market answers from the same cached model.
        detected = await client.detect_regime(market=True)
        assert (detected.regime, detected.as_of_time) == ("volatile", change.market_time)

        # A follower that saw sequence 1 resumes with the change, exactly once, then live.
        resumed = client.watch_regimes(after_sequence=1)
        again = await next_event(resumed)
        assert (again.sequence, again.regime, again.market_time) == (
            2,
            "volatile",
            change.market_time,
        )
        await events.aclose()
        await resumed.aclose()


async def test_a_resume_past_the_log_or_before_its_oldest_event_is_refused():
    log = RegimeLog(keep=2, queue_size=10)
    for i, regime in enumerate(["calm", "volatile", "calm"]):
        previous = ["", "calm", "volatile"][i]
        log.append(market_time=T0 + i, regime=regime, previous=previous, report=report(regime, T0))
    model = WorldModel(NoMarket(), CONFIG)  # type: ignore[arg-type]
    async with serving(services(model, log)) as world:
        stub = world_model_pb2_grpc.WorldModelServiceStub(world.channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.WatchRegimes(world_model_pb2.WatchRegimesRequest(after_sequence=4)).read()
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == "after_sequence"

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.WatchRegimes(world_model_pb2.WatchRegimesRequest(after_sequence=0)).read()
        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(failure.value).metadata["oldest_sequence"] == "2"

        call = stub.WatchRegimes(world_model_pb2.WatchRegimesRequest(after_sequence=1))
        kept = [await call.read(), await call.read()]
        assert [(m.sequence, m.regime, m.previous_regime) for m in kept] == [
            (2, "volatile", "calm"),
            (3, "calm", "volatile"),
        ]
        # Live events follow the kept ones; on drain the stream ends saying where to resume.
        log.append(
            market_time=T0 + 9, regime="volatile", previous="calm", report=report("volatile", T0)
        )
        assert (await call.read()).sequence == 4
        log.drain()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call.read()
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(failure.value).metadata["resume_after_sequence"] == "4"
    await model.close()
