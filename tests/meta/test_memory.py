"""Meta remembers its decisions, over real market, memory and meta servers (port 0): every new
parameter version becomes an episode once the next adaptation measured what followed it, and
memory being away changes nothing meta does. The rules themselves run on records below."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from market.config import MarketConfig
from market.service import APP as MARKET
from meta.client import MetaClient
from meta.config import MetaConfig
from meta.learning import Tracked
from meta.memory import SUBJECT, Decided, DecisionMemory, decision_of, episode
from meta.model import NANOS_PER_HOUR, SCALARS, MetaParameters, ParameterChange, Trade
from meta.service import app
from meta.store import MetaStore, VersionRecord
from qtmesh.base.contract import Action, Priority, TuneLearning
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.channels import ChannelConfig
from qtmesh.testing import serving_app
from tests.helpers.memory import served_memory

T0 = 1_767_571_200 * 10**9
H = NANOS_PER_HOUR
NOW = T0 + 24 * H
NOWHERE = "127.0.0.1:1"  # nothing listens there


def trades(end: int, *, seed: int, n: int = 30, mean: float = 0.0005) -> list[Trade]:
    rng = np.random.default_rng(seed)
    return [
        Trade(
            strategy_id=f"ma-{i % 3}",
            sector="Tech",
            entry_time=end - (n - i) * H // 2 - 10**10,
            exit_time=end - (n - 1 - i) * H // 2,
            return_fraction=float(rng.normal(mean, 0.01)),
        )
        for i in range(n)
    ]


def tune(key: str, values: dict[str, float]) -> Action:
    return Action(
        id="a1",
        priority=Priority.LOW,
        target="meta/rl_exploration_rate",
        parameters=TuneLearning(parameters=values),
        confidence=0.8,
        rationale="test",
        idempotency_key=key,
    )


def meta_config(data_dir: Path) -> MetaConfig:
    return MetaConfig(
        data_dir=data_dir,
        scale_fleet=False,
        learn_from_fleet=False,
        learn_from_sesa=False,
        follow_regimes=False,
    )


@contextlib.asynccontextmanager
async def meta_server(data_dir: Path, memory: str):
    channels = ChannelConfig(addresses={"memory": memory})
    async with serving_app(
        app(clock=lambda: NOW), meta_config(data_dir), channel_config=channels
    ) as m:
        yield m


@pytest.fixture
async def market(tmp_path):
    async with serving_app(MARKET, MarketConfig(synthetic_days=2, seed=11)) as running:
        yield running


async def test_each_version_is_stored_once_the_next_adaptation_measured_it(tmp_path, market):
    data_dir = tmp_path / "meta"
    async with (
        served_memory(tmp_path, market) as (memory, store),
        meta_server(data_dir, memory.address) as meta,
    ):
        client = MetaClient(meta.channel)
        adapted = await client.update(trades(NOW, seed=4), now=NOW)  # version 2: adapts
        assert adapted.adapted
        tuned = await AgentClient(meta.channel, name="meta").execute(
            tune("plan-3/a1", {"rl_exploration_rate": 0.1}), plan_sequence=3
        )
        assert tuned.applied  # version 3: an action set it
        assert store.stored == []  # nothing measured what followed them yet
        again = await client.update(trades(NOW + H, seed=5), now=NOW + H)  # version 4
        assert again.adapted
        stored = await store.wait_for(2)
    history = MetaStore(meta_config(data_dir).url)
    try:
        v1, v2, v3, v4 = history.history(0, 10)
    finally:
        history.close()

    first, second = stored
    assert [e.decision for e in stored] == ["adapt", "tune_learning"]
    assert {e.sector for e in stored} == {SUBJECT}
    assert [e.tags["version"] for e in stored] == ["2", "3"]
    assert [e.time for e in stored] == [NOW, v3.parameters.update_time]
    # The situation each was decided in: the parameters before it, and the baseline then.
    assert dict(first.features) == {n: getattr(v1.parameters, n) for n in SCALARS}
    assert dict(second.features) == {n: getattr(v2.parameters, n) for n in SCALARS} | {
        "baseline_performance": v2.tracked.baseline_performance
    }
    # What followed: the baseline's move up to the next adaptation.
    moved = v4.tracked.baseline_performance - v2.tracked.baseline_performance
    assert moved != 0
    assert [e.outcome for e in stored] == [pytest.approx(moved)] * 2
    assert first.tags["cause"] == v2.parameters.cause
    assert first.tags["changes"].startswith(v2.changes[0].name)
    for change in v2.changes:
        if change.name in SCALARS:
            assert first.tags[f"reason.{change.name}"] == change.reason[:200]
    assert second.tags["action_key"] == "plan-3/a1"
    assert second.tags["changes"].startswith("rl_exploration_rate ")
    # No evolution is on record: the policy's evolution rule fires at both versions.
    assert "evolution_interval" in first.tags["rules"].split(",")
    assert "evolution_interval" in second.tags["rules"].split(",")
    assert first.id != second.id


async def test_memory_away_changes_nothing_meta_does(tmp_path):
    async with meta_server(tmp_path / "meta", NOWHERE) as meta:
        client = MetaClient(meta.channel)
        assert (await client.update(trades(NOW, seed=4), now=NOW)).adapted
        assert (await client.update(trades(NOW + H, seed=5), now=NOW + H)).adapted
        assert (await client.parameters()).version == 3


# -- the rules, on records -----------------------------------------------------------------------

BASE = MetaParameters(
    rl_learning_rate=1e-3,
    rl_exploration_rate=0.2,
    rl_discount=0.95,
    sesa_mutation_rate=0.3,
    sesa_mutation_magnitude=0.2,
    version=1,
    cause="seed",
)


def record(version: int, tracked: Tracked, *, cause: str, key: str | None = None, **values):
    parameters = dataclasses.replace(
        BASE, version=version, update_time=NOW + version, cause=cause, **values
    )
    changes = tuple(
        ParameterChange(name, getattr(BASE, name), value, f"because {name}")
        for name, value in values.items()
    )
    return VersionRecord(parameters, changes, tracked, key)


SEED = VersionRecord(BASE, (), Tracked())


def test_the_kind_of_decision_is_read_from_what_the_version_changed():
    adapted = record(2, Tracked(0.5, NOW + 2), cause="meta update", rl_exploration_rate=0.19)
    assert decision_of(adapted, SEED) == "adapt"
    tuned = record(3, adapted.tracked, cause="action a1 of plan 3", key="k", rl_discount=0.9)
    assert decision_of(tuned, adapted) == "tune_learning"
    evolved = record(
        4,
        dataclasses.replace(adapted.tracked, last_evolution_time=NOW),
        cause="e",
        key="evolution-completed/1",
    )
    assert decision_of(evolved, tuned) == "record_evolution"
    clipped = record(5, evolved.tracked, cause="configuration bounds", rl_discount=0.91)
    assert decision_of(clipped, evolved) == "clip_to_bounds"


def test_versions_wait_for_the_next_adaptation_and_the_first_ones_are_unmeasured():
    memory = DecisionMemory(engine=None, recorder=None)  # type: ignore[arg-type]
    tuned = record(2, Tracked(), cause="action a1 of plan 3", key="k", rl_discount=0.9)
    assert memory.add(Decided(tuned, SEED, ("evolution_interval",))) == []
    adapted = record(3, Tracked(0.5, NOW + 3), cause="meta update", rl_exploration_rate=0.19)
    [unmeasured] = memory.add(Decided(adapted, tuned, ()))
    assert (unmeasured.outcome, unmeasured.tags["measured"]) == (0.0, "no")
    assert unmeasured.tags["rules"] == "evolution_interval"
    assert unmeasured.tags["reason.rl_discount"] == "because rl_discount"
    later = record(4, Tracked(0.8, NOW + 4), cause="meta update", rl_exploration_rate=0.18)
    [measured] = memory.add(Decided(later, adapted, ()))
    assert measured.tags["version"] == "3"
    assert (measured.outcome, measured.tags["measured"]) == (pytest.approx(0.3), "yes")
    # The same version gives the same id: a retried store is recognised.
    assert episode(Decided(adapted, tuned, ()), baseline_after=0.8).id == measured.id
