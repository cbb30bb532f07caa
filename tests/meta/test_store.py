"""The meta engine over its store, on SQLite and PostgreSQL: versions persist and survive a
restart, rejected requests store nothing, actions apply once, the trial log credits offspring."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sqlalchemy as sa

from meta import store as tables
from meta.config import MetaConfig
from meta.engine import MetaEngine
from meta.model import NANOS_PER_HOUR, CallerState, DecisionType, Evaluation, Trade
from meta.store import MetaStore
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyStage

CONFIG = MetaConfig()
T0 = 1_767_571_200 * 10**9
H = NANOS_PER_HOUR


async def started(url: str, config: MetaConfig = CONFIG) -> MetaEngine:
    engine = MetaEngine(
        store=MetaStore(url), learning=config.learning, rules=config.rules, clock=lambda: T0
    )
    await engine.start()
    return engine


def day_of_trades(end: int, *, seed: int = 1, n: int = 30, mean: float = 0.001) -> list[Trade]:
    rng = np.random.default_rng(seed)
    return [
        Trade(
            strategy_id=f"s{i % 3}",
            sector="Tech",
            entry_time=end - (n - i) * H // 2 - 10**9,
            exit_time=end - (n - 1 - i) * H // 2,
            return_fraction=float(rng.normal(mean, 0.01)),
        )
        for i in range(n)
    ]


def offspring(
    ids, at: int, *, score: float = 0.5, stage=StrategyStage.PRODUCTION
) -> list[Evaluation]:
    return [
        Evaluation(
            strategy_id=sid,
            family=StrategyFamily.MA_CROSSOVER,
            generation=1,
            composite_score=score,
            sharpe_ratio=1.2,
            trade_count=40,
            stage=stage,
            evaluated_time=at,
        )
        for sid in ids
    ]


def counts(engine: MetaEngine) -> dict[str, int]:
    with engine.store.engine.connect() as c:
        return {
            t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (
                tables.versions,
                tables.trades,
                tables.evaluations,
                tables.trials,
                tables.credits,
            )
        }


async def test_a_new_store_is_seeded_once(database_url):
    engine = await started(database_url)
    assert engine.parameters.version == 1
    assert engine.parameters.cause == "seed"
    again = await started(database_url)
    assert again.parameters == engine.parameters
    assert counts(again)["meta_parameter_versions"] == 1
    engine.store.close()
    again.store.close()


async def test_parameters_and_history_survive_a_restart(database_url):
    engine = await started(database_url)
    now = T0 + 24 * H
    result = await engine.update(day_of_trades(now), offspring(["a", "b"], now - H), now=now)
    assert result.adapted
    await engine.tune(
        {"rl_exploration_rate": 0.3}, cause="action x", action_key="key-1", now=now + 1
    )
    history = await engine.history(0)
    engine.store.close()

    restarted = await started(database_url)
    assert restarted.parameters == engine.parameters
    assert restarted.parameters.version == 3
    assert await restarted.history(0) == history
    assert [r.parameters.cause for r in history] == ["seed", "meta update", "action x"]
    assert history[1].changes == result.changes
    # The action's key is remembered across the restart.
    again = await restarted.tune({"rl_exploration_rate": 0.3}, cause="action x", action_key="key-1")
    assert not again.applied
    assert "already applied as version 3" in again.detail
    # The window and its baseline carried over: an hour later the next update adapts from both.
    later = await restarted.update(day_of_trades(now + H, seed=2, n=3), (), now=now + H)
    assert later.adapted
    restarted.store.close()


async def test_a_rejected_update_stores_nothing(database_url):
    engine = await started(database_url)
    now = T0 + 24 * H
    before = counts(engine)
    trades = day_of_trades(now)
    trades[7] = dataclasses.replace(trades[7], return_fraction=float("nan"))
    with pytest.raises(InvalidArgument) as failure:
        await engine.update(trades, offspring(["a"], now), now=now)
    assert failure.value.field == "trades[7].return_fraction"
    evaluations = offspring(["a", "b"], now)
    evaluations[1] = dataclasses.replace(evaluations[1], evaluated_time=now + 1)
    with pytest.raises(InvalidArgument) as failure:
        await engine.update(day_of_trades(now), evaluations, now=now)
    assert failure.value.field == "evaluations[1].evaluated_time"
    with pytest.raises(InvalidArgument) as failure:
        await engine.tune({"rl_discount": 1.5}, cause="action y", action_key="k")
    assert failure.value.field == "parameters[rl_discount]"
    assert counts(engine) == before
    assert engine.parameters.version == 1
    engine.store.close()


async def test_repeated_trades_and_evaluations_count_once(database_url):
    engine = await started(database_url)
    now = T0 + 24 * H
    trades = day_of_trades(now)
    await engine.update(trades[:25], offspring(["a"], now - 3 * H), now=now - 2 * H)
    await engine.update(trades, offspring(["a"], now - 3 * H) + offspring(["b"], now), now=now)
    assert counts(engine)["meta_trades"] == 30
    # The same strategy closing positions in two symbols at the same minute made two trades.
    twin = [dataclasses.replace(t, symbol="OTHER") for t in trades[:5]]
    await engine.update(twin, (), now=now)
    assert counts(engine)["meta_trades"] == 35
    assert counts(engine)["meta_evaluations"] == 2
    log = await engine.trial_log(offset=0, limit=10)
    assert (log.total_trials, log.total_evaluations) == (1, 2)
    engine.store.close()


async def test_a_mutation_change_opens_a_trial_and_offspring_are_credited_by_time(database_url):
    engine = await started(database_url)
    now = T0 + 24 * H
    await engine.update(
        (), offspring([f"g{i}" for i in range(20)], now - 2 * H, score=0.4), now=now
    )
    decisions = await engine.decisions_at(now)
    (adjust,) = [d for d in decisions if d.type is DecisionType.ADJUST_MUTATION]
    assert adjust.proposed == {"sesa_mutation_rate": 0.45, "sesa_mutation_magnitude": 0.2}
    result = await engine.tune(adjust.proposed, cause="action m", action_key="m", now=now)
    assert result.applied
    # Offspring evaluated before the switch belong to trial 1, after it to trial 2.
    await engine.update(
        (),
        offspring(["late-1"], now - H) + offspring(["new-1", "new-2"], now + H, score=0.8),
        now=now + 2 * H,
    )
    log = await engine.trial_log(offset=0, limit=10)
    assert [(t.index, t.setting.rate, t.evaluation_count) for t in log.trials] == [
        (1, 0.3, 21),
        (2, 0.45, 2),
    ]
    assert log.trials[0].end_time == log.trials[1].start_time == now
    assert log.trials[1].end_time is None
    assert log.trials[1].mean_score == pytest.approx(0.8)
    assert (log.total_trials, log.total_evaluations) == (2, 23)
    page = await engine.trial_log(offset=1, limit=1)
    assert [t.index for t in page.trials] == [2]
    engine.store.close()


async def test_shadow_candidates_are_derived_from_evaluations(database_url):
    engine = await started(database_url)
    now = T0 + 30 * 24 * H
    first = offspring(["sh"], now - 8 * 24 * H, stage=StrategyStage.SHADOW)
    latest = [
        dataclasses.replace(e, evaluated_time=now - H, trade_count=55, sharpe_ratio=1.3)
        for e in first
    ]
    await engine.update((), first, now=now - 8 * 24 * H)
    result = await engine.update((), latest, now=now)
    (promote,) = [d for d in result.decisions if d.type is DecisionType.PROMOTE_SHADOW]
    assert promote.strategy_id == "sh"
    assert promote.inputs["days_in_test"] == pytest.approx(8.0)
    # A caller's candidate list replaces the derived one.
    told = await engine.decisions_at(now, CallerState(shadow_candidates=()))
    assert not any(d.strategy_id for d in told)
    engine.store.close()


async def test_narrowed_bounds_clip_the_stored_parameters_on_start(database_url):
    engine = await started(database_url)
    engine.store.close()
    narrow = dataclasses.replace(
        CONFIG,
        rl_exploration_rate_min=0.25,
        rl_exploration_rate_initial=0.25,
        exploration_rate_min=0.25,
        regime_exploration_rate=0.25,
    )
    clipped = await started(database_url, narrow)
    assert clipped.parameters.rl_exploration_rate == 0.25
    assert clipped.parameters.version == 2
    assert clipped.parameters.cause == "configuration bounds"
    (change,) = clipped.current.changes
    assert (change.name, change.old_value, change.new_value) == ("rl_exploration_rate", 0.2, 0.25)
    clipped.store.close()
