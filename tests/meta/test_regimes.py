"""Meta hears the world model's regime changes: the next update runs with regime_changed and
fires the regime rules, later updates do not, Recommend sees the change until a retraining
answers it; the follower resumes after what it read; and in a live mesh a market that turns
volatile makes meta recommend retraining."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import meta.service
from market.client import MarketClient
from market.config import MarketConfig
from market.service import APP as MARKET
from meta.client import MetaClient
from meta.config import MetaConfig
from meta.model import NANOS_PER_HOUR
from meta.regimes import RegimeChanges, follow_regimes
from meta.service import app, build_engine
from qtmesh.base.contract import Action, AgentContext, Priority, TuneLearning
from qtmesh.base.errors import FailedPrecondition, InvalidArgument
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from tests.helpers.regimes import BEFORE_THE_SWITCH, save_switching_market
from world_model.config import WorldModelConfig
from world_model.regimes import RegimeReport
from world_model.service import APP as WORLD_MODEL
from world_model.watch import RegimeChange

T0 = 1_767_571_200 * 10**9
H = NANOS_PER_HOUR
REGIME_RULES = {"retrain_regime_change", "explore_on_regime_change"}


def settings(data_dir: Path, **more) -> MetaConfig:
    """Meta alone: it follows nothing unless told to."""
    alone = {"scale_fleet": False, "learn_from_fleet": False, "learn_from_sesa": False}
    return MetaConfig(data_dir=data_dir, **(alone | {"follow_regimes": False} | more))


def rules(decisions) -> set[str]:
    return {d.rule for d in decisions}


def test_a_change_reaches_one_update_and_the_decisions_until_a_retraining():
    changes = RegimeChanges()
    assert changes.note(T0 + 2 * H)
    assert not changes.note(T0 + 2 * H)  # a repeat (another replica, a restarted world model)
    assert not changes.note(T0 + H)  # older than the latest
    assert not changes.for_update(T0 + 2 * H - 1, retrained_at=0)  # before the change
    assert changes.for_update(T0 + 2 * H, retrained_at=0)
    changes.updated(T0 + 2 * H)
    assert not changes.for_update(T0 + 3 * H, retrained_at=0)  # once
    assert changes.for_decisions(T0 + 3 * H, retrained_at=T0)
    assert not changes.for_decisions(T0 + 3 * H, retrained_at=T0 + 2 * H)  # answered
    assert changes.note(T0 + 5 * H)
    assert changes.for_update(T0 + 5 * H, retrained_at=0)
    assert not changes.for_update(T0 + 5 * H, retrained_at=T0 + 5 * H)  # answered already
    assert changes.latest == T0 + 5 * H


async def test_a_regime_change_makes_the_next_update_fire_the_regime_rules(tmp_path):
    engine = await build_engine(settings(tmp_path), clock=lambda: T0)
    try:
        # Retrained an hour into the day, exploring less than a regime change asks for.
        await engine.tune(
            {"rl_exploration_rate": 0.1}, retrain_models=True, cause="a test", now=T0 + H
        )
        changed = T0 + 3 * H
        assert engine.note_regime_change(changed)

        before = await engine.update([], (), now=changed - 1)
        assert not rules(before.decisions) & REGIME_RULES

        result = await engine.update([], (), now=changed)
        fired = {d.rule: d for d in result.decisions}
        assert set(fired) >= REGIME_RULES
        assert fired["retrain_regime_change"].inputs["regime_changed"] == 1.0
        assert fired["explore_on_regime_change"].proposed == {"rl_exploration_rate": 0.2}

        # The update counted it: the next one does not fire again ...
        again = await engine.update([], (), now=changed + 60 * 10**9)
        assert not rules(again.decisions) & REGIME_RULES
        # ... but what the federation asks for sees it until a retraining answers it.
        assert rules(await engine.decisions_at(changed + 2 * 60 * 10**9)) >= REGIME_RULES
        await engine.tune({}, retrain_models=True, cause="the retraining", now=changed + H)
        assert not rules(await engine.decisions_at(changed + H + 1)) & REGIME_RULES
    finally:
        await engine.store.run(engine.store.close)


def event(sequence: int, at: int, regime: str, previous: str) -> RegimeChange:
    report = RegimeReport(
        symbol="",
        sector="",
        as_of_time=at,
        regime=regime,
        labels=("calm", "volatile"),
        probabilities=(0.1, 0.9) if regime == "volatile" else (0.9, 0.1),
        means=(0.0, 0.0),
        stddevs=(1e-4, 1e-3),
        transition=(0.9, 0.1, 0.1, 0.9),
        observations=100,
        bars_per_step=15,
    )
    return RegimeChange(
        sequence=sequence, market_time=at, regime=regime, previous_regime=previous, report=report
    )


class ScriptedStream:
    """Each watch_regimes call plays the next script: events, then an error, an end or a wait."""

    def __init__(self, *scripts) -> None:
        self.scripts = list(scripts)
        self.calls: list[int | None] = []

    async def watch_regimes(self, *, after_sequence: int | None = None) -> AsyncIterator:
        self.calls.append(after_sequence)
        script = self.scripts.pop(0)
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item
        if not self.scripts:
            await asyncio.Event().wait()  # the last connection stays open


class Notes:
    def __init__(self, expected: int) -> None:
        self.changes = RegimeChanges()
        self.noted: list[int] = []
        self.expected = expected
        self.done = asyncio.Event()

    def note_regime_change(self, at: int) -> bool:
        noted = self.changes.note(at)
        if noted:
            self.noted.append(at)
        if len(self.noted) == self.expected:
            self.done.set()
        return noted


async def test_the_follower_resumes_after_what_it_read_and_counts_each_change_once():
    first = T0 + H
    second = T0 + 2 * H
    stream = ScriptedStream(
        # The world model's first event is the regime it found; the second a change. Then the
        # stream ends (the world model stopped).
        [event(1, T0, "calm", ""), event(2, first, "volatile", "calm")],
        # It restarted: its log is behind the cursor, so it is read from its start ...
        [InvalidArgument("after_sequence", "must be in 0..1, the last sequence (got 2)")],
        # ... which lost events to its bounded log meanwhile ...
        [FailedPrecondition("dropped", metadata={"oldest_sequence": "3"})],
        # ... and repeats the change already counted before a new one.
        [event(3, first, "volatile", "calm"), event(4, second, "calm", "volatile")],
    )
    notes = Notes(expected=2)
    task = asyncio.ensure_future(
        follow_regimes(notes, stream, initial_backoff=0.001, max_backoff=0.001)
    )
    try:
        await asyncio.wait_for(notes.done.wait(), timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert stream.calls == [0, 2, 0, 2]
    assert notes.noted == [first, second]


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def retrain(key: str) -> Action:
    return Action(
        id="a1",
        priority=Priority.LOW,
        target="meta/rl-models",
        parameters=TuneLearning(retrain_models=True),
        confidence=0.8,
        rationale="a test",
        idempotency_key=key,
    )


async def test_in_a_live_mesh_a_market_turning_volatile_makes_meta_recommend_retraining(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    heard: list[int] = []
    changed = asyncio.Event()
    real = meta.service.follow_regimes

    async def traced(notes, world, **backoff) -> None:
        class Traced:
            def note_regime_change(self, at: int) -> bool:
                noted = notes.note_regime_change(at)
                heard.append(at)
                changed.set()
                return noted

        await real(Traced(), world, **backoff)

    monkeypatch.setattr(meta.service, "follow_regimes", traced)
    data = save_switching_market(tmp_path / "switching.csv")
    replay = MarketConfig(data_path=data, replay_start=BEFORE_THE_SWITCH)
    world_config = WorldModelConfig(
        states=2, bars_per_step=15, warm_up=False, refit_bars=30, restarts=0
    )
    async with serving_app(MARKET, replay) as market:
        prices = MarketClient(market.channel)
        start = (await prices.snapshot()).clock_time
        channels = ChannelConfig(addresses={"market": market.address})
        async with serving_app(WORLD_MODEL, world_config, channel_config=channels) as world:
            config = settings(
                tmp_path / "meta",
                follow_regimes=True,
                reconnect_initial_seconds=0.01,
                reconnect_max_seconds=0.05,
            )
            channels = ChannelConfig(addresses={"world-model": world.address})
            async with serving_app(app(clock=Clock(start)), config, channel_config=channels) as m:
                agent = AgentClient(m.channel, name="meta")
                # The models were retrained at the start of the replay.
                await agent.recommend(AgentContext(cycle_id="c0", as_of_time=start))
                assert (await agent.execute(retrain("k0"), plan_sequence=1)).applied

                await prices.advance(10 * 60)  # ten hours into the volatile day
                await asyncio.wait_for(changed.wait(), timeout=60)
                (at,) = heard
                assert start < at <= (await prices.snapshot()).clock_time

                context = AgentContext(cycle_id="c1", as_of_time=at)
                by_id = {r.id: r for r in await agent.recommend(context)}
                assert by_id["meta/retrain_regime_change"].priority is Priority.MEDIUM
                assert by_id["meta/retrain_regime_change"].parameters == TuneLearning(
                    retrain_models=True
                )
                client = MetaClient(m.channel)
                assert "retrain_regime_change" in rules((await client.update(now=at)).decisions)
                assert "retrain_regime_change" not in rules(
                    (await client.update(now=at + 1)).decisions
                )
