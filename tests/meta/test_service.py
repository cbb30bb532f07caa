"""The meta service over gRPC on real servers (port 0): MetaUpdate, Decide, GetParameters,
WatchParameters (resume, live, drain), ListSesaTrials, AgentService Recommend/ExecuteAction,
restarts, and bad input rejected with the field named and nothing stored touched."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meta.client import MetaClient
from meta.config import MetaConfig
from meta.model import (
    NANOS_PER_HOUR,
    SCALARS,
    CallerState,
    DecisionType,
    Evaluation,
    MetaState,
    ShadowCandidate,
    Trade,
)
from meta.service import app
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.meta.v1 import meta_pb2, meta_pb2_grpc
from qtmesh.base import paging
from qtmesh.base.contract import (
    Action,
    AgentContext,
    ExecutionState,
    Priority,
    RunEvolution,
    TuneLearning,
)
from qtmesh.base.convert import timestamp
from qtmesh.base.errors import InvalidArgument, Unavailable
from qtmesh.runtime.agent_service import AgentClient
from qtmesh.runtime.status import error_info
from qtmesh.testing import serving_app

T0 = 1_767_571_200 * 10**9
H = NANOS_PER_HOUR
NOW = T0 + 24 * H
# The federation stamps actions with its wall clock, which the replayed market does not share.
WALL = T0 + 10_000 * H


class Clock:
    """The server's injected clock; a test moves it by hand."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@contextlib.asynccontextmanager
async def meta_server(data_dir: Path, clock: Clock | None = None):
    # Alone, meta must not push its scale to (nor learn from) whatever market listens at the
    # default address.
    config = MetaConfig(
        data_dir=data_dir,
        scale_fleet=False,
        learn_from_fleet=False,
        learn_from_sesa=False,
        follow_regimes=False,
        record_to_memory=False,
    )
    async with serving_app(app(clock=clock or Clock()), config) as running:
        yield running


@pytest.fixture
async def meta(tmp_path):
    async with meta_server(tmp_path) as running:
        yield running


def day_of_trades(
    end: int = NOW, *, n: int = 30, seed: int = 4, mean: float = 0.0005
) -> list[Trade]:
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


def evaluations(at: int = NOW - H) -> list[Evaluation]:
    return [
        Evaluation(
            strategy_id=f"ma-{i}", generation=1, composite_score=0.4 + 0.1 * i, evaluated_time=at
        )
        for i in range(3)
    ]


def action(
    key: str, parameters, *, id: str = "a1", target: str = "meta/rl_exploration_rate"
) -> Action:
    return Action(
        id=id,
        priority=Priority.LOW,
        target=target,
        parameters=parameters,
        confidence=0.8,
        rationale="test",
        idempotency_key=key,
        update_time=WALL,
    )


async def test_get_parameters_starts_at_the_seed(meta):
    parameters = await MetaClient(meta.channel).parameters()
    assert (parameters.version, parameters.cause) == (1, "seed")
    assert (parameters.rl_learning_rate, parameters.rl_exploration_rate) == (1e-3, 0.2)
    assert (parameters.sesa_mutation_rate, parameters.sesa_mutation_magnitude) == (0.3, 0.2)


async def test_meta_update_returns_new_parameters_and_reasoned_decisions(meta):
    stub = meta_pb2_grpc.MetaServiceStub(meta.channel)
    client = MetaClient(meta.channel)
    request = meta_pb2.MetaUpdateRequest(now=timestamp(NOW))
    await client.update(day_of_trades(), evaluations(), now=NOW)  # the same via the client...
    response = await stub.MetaUpdate(request)  # ...then an update with nothing new, not due
    assert not response.adapted
    assert "not due" in response.detail

    fresh = await client.parameters()
    assert fresh.version == 2
    history = [p async for p in _take(client.watch(after_version=1), 1)]
    ((parameters, changes),) = history
    assert parameters == fresh
    by_name = {c.name: c for c in changes}
    assert by_name["rl_exploration_rate"].reason.startswith("window Sharpe")
    assert set(fresh.strategy_weights) == {"ma-0", "ma-1", "ma-2"}

    later = await stub.MetaUpdate(
        meta_pb2.MetaUpdateRequest(
            trades=[_trade_proto(t) for t in day_of_trades(NOW + H, seed=5, n=4)],
            now=timestamp(NOW + H),
        )
    )
    assert later.adapted
    assert later.parameters.version == 3
    assert later.changes["rl_exploration_rate"].count(" -> ") == 1
    assert {c.name for c in later.parameter_changes} == set(later.changes)
    for decision in later.decisions:
        assert decision.rule
        assert decision.rationale
        assert 0 <= decision.confidence <= 1
    kinds = {d.type for d in later.decisions}
    assert meta_pb2.META_DECISION_TYPE_RETRAIN_MODELS in kinds  # never retrained


async def test_fewer_than_the_minimum_samples_change_nothing(meta):
    client = MetaClient(meta.channel)
    result = await client.update(day_of_trades(n=19), now=NOW)
    assert not result.adapted
    assert result.changes == ()
    assert "holds 19 trades and 20 are needed" in result.detail
    assert (await client.parameters()).version == 1
    held = [d for d in result.decisions if d.rule == "insufficient_data"]
    assert held
    assert held[0].type is DecisionType.HOLD


async def test_decide_evaluates_a_state_under_the_servers_or_overridden_rules(meta):
    client = MetaClient(meta.channel)
    candidate = ShadowCandidate(
        strategy_id="sh",
        days_in_test=7,
        trade_count=40,
        sharpe_ratio=1.4,
        deflated_sharpe_ratio=0.97,
    )
    state = MetaState(
        now=NOW,
        last_evolution_time=NOW - 24 * H,
        last_retrain_time=NOW - H,
        performance=1.0,
        baseline_performance=1.0,
        exploration_rate=0.05,
        shadow_candidates=(candidate,),
        streak=-3,
    )
    decisions = {d.rule: d for d in await client.decide(state)}
    assert {"evolution_interval", "shadow_trade_count", "risk_down_on_losing_streak"} <= set(
        decisions
    )
    assert decisions["risk_down_on_losing_streak"].proposed == {
        "risk_multiplier": pytest.approx(0.9)
    }
    relaxed = {d.rule for d in await client.decide(state, rule_overrides={"shadow_min_trades": 30})}
    assert "shadow_promotion" in relaxed
    with pytest.raises(InvalidArgument) as failure:
        await client.decide(state, rule_overrides={"exploration_rate_min": 0.5})
    assert failure.value.field == "rule_overrides[exploration_rate_min]"
    assert "above exploration_rate_max" in failure.value.problem


async def test_watch_resumes_every_later_version_once_then_goes_live(meta):
    client = MetaClient(meta.channel)
    agent = AgentClient(meta.channel, name="meta")
    for i, rate in enumerate((0.25, 0.3), start=2):
        await agent.execute(
            action(f"k{i}", TuneLearning(parameters={"rl_exploration_rate": rate})), plan_sequence=i
        )
    received: list[int] = []
    caught_up = asyncio.Event()

    async def consume() -> None:
        async for parameters, _changes in client.watch(after_version=1):
            received.append(parameters.version)
            if parameters.version == 3:
                caught_up.set()
            if parameters.version == 4:
                return

    consumer = asyncio.ensure_future(consume())
    await asyncio.wait_for(caught_up.wait(), timeout=10)
    await agent.execute(
        action("k4", TuneLearning(parameters={"rl_discount": 0.9})), plan_sequence=4
    )
    await asyncio.wait_for(consumer, timeout=10)
    assert received == [2, 3, 4]

    current = [p.version async for p, _ in _take(client.watch(), 1)]
    assert current == [4]
    with pytest.raises(InvalidArgument) as failure:
        async for _ in client.watch(after_version=5):
            pass
    assert failure.value.field == "after_version"


async def test_streams_end_on_drain_with_a_resume_hint(tmp_path):
    async with meta_server(tmp_path) as running:
        client = MetaClient(running.channel)
        connected = asyncio.Event()
        outcome: list[BaseException] = []

        async def consume() -> None:
            try:
                async for _ in client.watch(after_version=0):
                    connected.set()
            except Unavailable as exc:
                outcome.append(exc)

        consumer = asyncio.ensure_future(consume())
        await asyncio.wait_for(connected.wait(), timeout=10)
        await running.server.stop()
        await asyncio.wait_for(consumer, timeout=10)
    assert len(outcome) == 1
    assert "resume with after_version=1" in str(outcome[0])


async def test_recommend_maps_decisions_to_actions_and_execute_applies_tuning_once(meta):
    agent = AgentClient(meta.channel, name="meta")
    client = MetaClient(meta.channel)
    await client.update(day_of_trades(), evaluations(NOW - 30 * H), now=NOW)
    recommendations = await agent.recommend(AgentContext(cycle_id="c1", as_of_time=NOW))
    by_id = {r.id: r for r in recommendations}
    evolve = by_id["meta/evolution_interval"]
    assert isinstance(evolve.parameters, RunEvolution)
    assert (evolve.target, evolve.priority) == ("sesa", Priority.MEDIUM)
    assert 0.5 <= evolve.confidence <= 1
    assert "30.0 h ago" in evolve.rationale
    assert evolve.evidence["hours_since_evolution"] == pytest.approx(30.0)
    assert by_id["meta/retrain_interval"].parameters == TuneLearning(retrain_models=True)
    # The federation reports no deployed weights, so there is no drift to reweight on (the
    # strategy officer owns the deployed weights and the genome ids SESA proposes are not its).
    assert "meta/reweight_on_drift" not in by_id
    (explore,) = [r for r in recommendations if r.target == "meta/rl_exploration_rate"]

    # Executing the recommendation applies it once, even when the federation retries.
    tune = action("plan-7/explore", explore.parameters, id="x1")
    first = await agent.execute(tune, plan_sequence=7)
    assert first.applied
    assert "rl_exploration_rate" in first.detail
    again = await agent.execute(tune, plan_sequence=7)
    assert not again.applied
    parameters = await client.parameters()
    assert parameters.rl_exploration_rate == explore.parameters.parameters["rl_exploration_rate"]
    assert parameters.cause == "action x1 of plan 7"

    # Retraining restarts the retraining interval, on the market clock of the cycle (not the
    # action's wall-clock time); a regime change (a hint) asks again later.
    retrain = action("plan-8/retrain", TuneLearning(retrain_models=True), id="r1")
    await agent.execute(retrain, plan_sequence=8)
    assert (await client.parameters()).retrain_requested_time == NOW
    calm = {
        r.id for r in await agent.recommend(AgentContext(cycle_id="c2", as_of_time=NOW + 2 * H))
    }
    assert not calm & {"meta/retrain_interval", "meta/retrain_regime_change"}
    shaken = await agent.recommend(
        AgentContext(cycle_id="c3", as_of_time=NOW + 2 * H, hints={"regime_changed": "true"})
    )
    (regime,) = [r for r in shaken if r.id == "meta/retrain_regime_change"]
    assert regime.priority == Priority.MEDIUM

    # The federation reports that the evolution completed (market time): the interval restarts
    # there, so the next cycles do not ask again until 24 h later, and the record is kept.
    done = {"completed/run_evolution": str(NOW + 2 * H)}
    later = {
        r.id
        for r in await agent.recommend(
            AgentContext(cycle_id="c4", as_of_time=NOW + 3 * H, hints=done)
        )
    }
    assert "meta/evolution_interval" not in later
    assert (await client.parameters()).cause == "an evolution the federation completed"
    day = await agent.recommend(AgentContext(cycle_id="c5", as_of_time=NOW + 26 * H))
    (again,) = [r for r in day if r.id == "meta/evolution_interval"]
    assert again.evidence["hours_since_evolution"] == pytest.approx(24.0)
    with pytest.raises(InvalidArgument) as bad:
        await agent.recommend(
            AgentContext(cycle_id="c6", hints={"completed/run_evolution": "yesterday"})
        )
    assert bad.value.field == "context.hints[completed/run_evolution]"


async def test_actions_execute_on_the_market_clock_of_the_latest_cycle(tmp_path):
    clock = Clock(WALL)  # the server's own clock is the wall clock too
    async with meta_server(tmp_path, clock) as running:
        agent = AgentClient(running.channel, name="meta")
        client = MetaClient(running.channel)
        await agent.recommend(AgentContext(cycle_id="c1", as_of_time=NOW))
        mutate = TuneLearning(parameters={"sesa_mutation_rate": 0.45})
        await agent.execute(action("m", mutate, target="meta/sesa_mutation"), plan_sequence=1)
        parameters = await client.parameters()
        assert parameters.update_time == NOW
        trials = (await client.trials()).trials
        # The new trial starts at the market time, so offspring evaluated after it count for it.
        assert [(t.index, t.start_time) for t in trials] == [(1, 0), (2, NOW)]

        # A later cycle moves the clock actions run on; an earlier one never moves it back.
        await agent.recommend(AgentContext(cycle_id="c2", as_of_time=NOW + H))
        await agent.recommend(AgentContext(cycle_id="c0", as_of_time=NOW - H))
        retrain = action("r", TuneLearning(retrain_models=True), id="r1")
        await agent.execute(retrain, plan_sequence=2)
        assert (await client.parameters()).retrain_requested_time == NOW + H
    async with meta_server(tmp_path, clock) as restarted:
        # Before its first cycle a restarted server runs on the time of its latest version.
        agent = AgentClient(restarted.channel, name="meta")
        await agent.execute(
            action("x", TuneLearning(parameters={"rl_discount": 0.9})), plan_sequence=3
        )
        assert (await MetaClient(restarted.channel).parameters()).update_time == NOW + H


async def test_execute_rejects_actions_meta_does_not_own_or_out_of_bounds(meta):
    agent = AgentClient(meta.channel, name="meta")
    with pytest.raises(InvalidArgument) as failure:
        await agent.execute(action("k", RunEvolution()), plan_sequence=1)
    assert failure.value.field == "action.type"
    for values, name in (
        ({"rl_exploration_rate": 0.9}, "rl_exploration_rate"),
        ({"gamma": 0.5}, "gamma"),
    ):
        with pytest.raises(InvalidArgument) as failure:
            await agent.execute(action("k2", TuneLearning(parameters=values)), plan_sequence=1)
        assert failure.value.field == f"action.parameters.tune_learning.parameters[{name}]"
    assert (await MetaClient(meta.channel).parameters()).version == 1


async def test_a_restarted_server_keeps_parameters_history_and_trials(tmp_path):
    async with meta_server(tmp_path) as running:
        client = MetaClient(running.channel)
        await client.update(day_of_trades(), evaluations(), now=NOW)
        await AgentClient(running.channel, name="meta").execute(
            action("m", TuneLearning(parameters={"sesa_mutation_rate": 0.45})), plan_sequence=1
        )
        before = await client.parameters()
        history = [p async for p, _ in _take(client.watch(after_version=0), before.version)]
        trials = await client.trials()
    async with meta_server(tmp_path) as restarted:
        client = MetaClient(restarted.channel)
        assert await client.parameters() == before
        assert [p async for p, _ in _take(client.watch(after_version=0), before.version)] == history
        assert await client.trials() == trials
    assert before.version == 3
    assert [t.setting.rate for t in trials.trials] == [0.3, 0.45]


async def test_same_inputs_and_clock_give_the_same_responses(tmp_path):
    responses = []
    for name in ("a", "b"):
        async with meta_server(tmp_path / name) as running:
            stub = meta_pb2_grpc.MetaServiceStub(running.channel)
            request = meta_pb2.MetaUpdateRequest(
                trades=[_trade_proto(t) for t in day_of_trades()], now=timestamp(NOW)
            )
            responses.append(await stub.MetaUpdate(request))
    assert responses[0] == responses[1]
    assert responses[0].adapted


async def test_the_trial_log_pages(meta):
    agent = AgentClient(meta.channel, name="meta")
    for i, rate in enumerate((0.45, 0.15, 0.3)):
        await agent.execute(
            action(f"m{i}", TuneLearning(parameters={"sesa_mutation_rate": rate})), plan_sequence=i
        )
    stub = meta_pb2_grpc.MetaServiceStub(meta.channel)
    first = await stub.ListSesaTrials(meta_pb2.ListSesaTrialsRequest(page_size=3))
    assert [t.index for t in first.trials] == [1, 2, 3]
    assert not first.trials[0].HasField("start_time")
    assert first.total_trials == 4
    second = await stub.ListSesaTrials(
        meta_pb2.ListSesaTrialsRequest(page_token=first.next_page_token)
    )
    assert [t.index for t in second.trials] == [4]
    assert not second.next_page_token
    assert [
        t.setting.rate for t in (await MetaClient(meta.channel).trials(page_size=2)).trials
    ] == [0.3, 0.45, 0.15, 0.3]


def _trade_proto(t: Trade) -> meta_pb2.TradeRecord:
    return meta_pb2.TradeRecord(
        strategy_id=t.strategy_id,
        symbol=t.symbol,
        sector=t.sector,
        entry_time=timestamp(t.entry_time),
        exit_time=timestamp(t.exit_time),
        return_fraction=t.return_fraction,
    )


async def _take(iterator, n: int):
    """The first ``n`` items of an async iterator, then closes it."""
    if n <= 0:
        return
    count = 0
    async for item in iterator:
        yield item
        count += 1
        if count == n:
            break
    await iterator.aclose()


# -- bad input ------------------------------------------------------------------------------------

GOOD_TRADE = _trade_proto(day_of_trades()[0])


def _with(message, **fields):
    copy = type(message)()
    copy.CopyFrom(message)
    for name, value in fields.items():
        if hasattr(value, "CopyFrom"):
            getattr(copy, name).CopyFrom(value)
        else:
            setattr(copy, name, value)
    return copy


def _evaluation(**fields) -> strategy_pb2.StrategyEvaluation:
    message = strategy_pb2.StrategyEvaluation(
        genome=strategy_pb2.StrategyGenome(id="g", generation=1),
        composite_score=0.5,
        evaluated_time=timestamp(NOW - H),
    )
    return _with(message, **fields)


BAD_UPDATES = [
    (
        {"trades": [GOOD_TRADE, _with(GOOD_TRADE, return_fraction=float("nan"))]},
        "trades[1].return_fraction",
    ),
    ({"trades": [_with(GOOD_TRADE, return_fraction=float("inf"))]}, "trades[0].return_fraction"),
    ({"trades": [_with(GOOD_TRADE, return_fraction=-1.5)]}, "trades[0].return_fraction"),
    ({"trades": [_with(GOOD_TRADE, strategy_id="")]}, "trades[0].strategy_id"),
    ({"trades": [_with(GOOD_TRADE, exit_time=timestamp(NOW + 1))]}, "trades[0].exit_time"),
    (
        {"trades": [_with(GOOD_TRADE, entry_time=timestamp(NOW), exit_time=timestamp(NOW - 5))]},
        "trades[0].exit_time",
    ),
    ({"trades": [GOOD_TRADE, GOOD_TRADE]}, "trades[1]"),
    ({"evaluations": [_evaluation(composite_score=1.5)]}, "evaluations[0].composite_score"),
    ({"evaluations": [_evaluation(stage=99)]}, "evaluations[0].stage"),
    (
        {"evaluations": [_evaluation(genome=strategy_pb2.StrategyGenome(id="g", family=42))]},
        "evaluations[0].genome.family",
    ),
    (
        {"evaluations": [_evaluation(genome=strategy_pb2.StrategyGenome(id=""))]},
        "evaluations[0].genome.id",
    ),
    (
        {
            "evaluations": [
                _evaluation(
                    trials=5, metrics=strategy_pb2.StrategyMetrics(deflated_sharpe_ratio=1.2)
                )
            ]
        },
        "evaluations[0].metrics.deflated_sharpe_ratio",
    ),
    ({"state": meta_pb2.MetaState(target_performance=-1)}, "state.target_performance"),
    (
        {
            "state": meta_pb2.MetaState(
                shadow_candidates=[meta_pb2.ShadowCandidate(strategy_id="s", days_in_test=-1)]
            )
        },
        "state.shadow_candidates[0].days_in_test",
    ),
    (
        {"state": meta_pb2.MetaState(strategy_weights={"a": float("nan")})},
        "state.strategy_weights[a]",
    ),
]


@pytest.mark.parametrize(("fields", "field"), BAD_UPDATES, ids=[b[1] for b in BAD_UPDATES])
async def test_bad_updates_are_rejected_naming_the_field_and_store_nothing(meta, fields, field):
    stub = meta_pb2_grpc.MetaServiceStub(meta.channel)
    good = [_trade_proto(t) for t in day_of_trades()]
    request = meta_pb2.MetaUpdateRequest(now=timestamp(NOW), **fields)
    if "trades" not in fields:
        request.trades.extend(good)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.MetaUpdate(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field
    # Nothing was stored: the same good trades now adapt from scratch, as on a fresh server.
    assert (await MetaClient(meta.channel).parameters()).version == 1
    fresh = await stub.MetaUpdate(meta_pb2.MetaUpdateRequest(now=timestamp(NOW), trades=good[:19]))
    assert "holds 19 trades" in fresh.detail


BAD_DECISIONS = [
    (meta_pb2.MetaState(exploration_rate=1.5), {}, "state.exploration_rate"),
    (meta_pb2.MetaState(performance=float("nan")), {}, "state.performance"),
    (meta_pb2.MetaState(last_evolution_time=timestamp(NOW + H)), {}, "state.last_evolution_time"),
    (
        meta_pb2.MetaState(
            shadow_candidates=[meta_pb2.ShadowCandidate(strategy_id="s", deflated_sharpe_ratio=2.0)]
        ),
        {},
        "state.shadow_candidates[0].deflated_sharpe_ratio",
    ),
    (
        meta_pb2.MetaState(
            shadow_candidates=[
                meta_pb2.ShadowCandidate(strategy_id="s"),
                meta_pb2.ShadowCandidate(strategy_id="s"),
            ]
        ),
        {},
        "state.shadow_candidates[1].strategy_id",
    ),
    (
        meta_pb2.MetaState(proposed_mutation=meta_pb2.MutationSetting(rate=0.2)),
        {},
        "state.current_mutation",
    ),
    (meta_pb2.MetaState(), {"no_such_rule": 1}, "rule_overrides[no_such_rule]"),
    (meta_pb2.MetaState(), {"shadow_min_trades": 2.5}, "rule_overrides[shadow_min_trades]"),
    (meta_pb2.MetaState(), {"risk_step": 1.5}, "rule_overrides[risk_step]"),
    (
        meta_pb2.MetaState(),
        {"sesa_trigger_interval_hours": -1},
        "rule_overrides[sesa_trigger_interval_hours]",
    ),
]


@pytest.mark.parametrize(
    ("state", "overrides", "field"), BAD_DECISIONS, ids=[b[2] for b in BAD_DECISIONS]
)
async def test_bad_decide_requests_are_rejected_naming_the_field(meta, state, overrides, field):
    stub = meta_pb2_grpc.MetaServiceStub(meta.channel)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Decide(meta_pb2.DecideRequest(state=state, rule_overrides=overrides))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(failure.value).metadata["field"] == field


async def test_other_bad_requests(meta):
    stub = meta_pb2_grpc.MetaServiceStub(meta.channel)
    for request, field in (
        (meta_pb2.ListSesaTrialsRequest(page_token="garbage"), "page_token"),
        (meta_pb2.ListSesaTrialsRequest(page_token=paging.encode_token(o=1)), "page_token"),
        (
            meta_pb2.ListSesaTrialsRequest(
                page_token=paging.encode_token(list="sesa_trials", o=-4)
            ),
            "page_token",
        ),
        # Well-formed tokens of the wrong shape: a missing offset, or one of another type.
        (
            meta_pb2.ListSesaTrialsRequest(page_token=paging.encode_token(list="sesa_trials")),
            "page_token",
        ),
        *(
            (
                meta_pb2.ListSesaTrialsRequest(
                    page_token=paging.encode_token(list="sesa_trials", o=bad)
                ),
                "page_token",
            )
            for bad in ("3", [1], None, True, 1.5)
        ),
        (meta_pb2.ListSesaTrialsRequest(page_size=-1), "page_size"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ListSesaTrials(request)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(failure.value).metadata["field"] == field
    with pytest.raises(InvalidArgument):
        await MetaClient(meta.channel).update(state=CallerState(last_retrain_time=NOW + H), now=NOW)


async def test_a_tuning_is_known_by_its_key_after_a_restart(tmp_path):
    tune = action("plan-5/tune", TuneLearning(parameters={"rl_exploration_rate": 0.25}))
    async with meta_server(tmp_path) as running:
        result = await AgentClient(running.channel, name="meta").execute(tune, plan_sequence=5)
    async with meta_server(tmp_path) as running:
        agent = AgentClient(running.channel, name="meta")
        known = await agent.execution("plan-5/tune")
        never = await agent.execution("plan-6/tune")
    assert result.applied
    assert known.state is ExecutionState.APPLIED
    assert known.detail.startswith("version 2: rl_exploration_rate ")
    assert known.detail.endswith("-> 0.25")
    assert never.state is ExecutionState.NOT_APPLIED


async def test_the_adapted_parameters_are_exported_as_they_change(meta):
    client = MetaClient(meta.channel)

    def exported() -> dict[str, float]:
        families = text_string_to_metric_families(meta.server.metrics.text())
        (family,) = [f for f in families if f.name == "qtmesh_meta_parameter"]
        return {sample.labels["name"]: sample.value for sample in family.samples}

    def values(parameters) -> dict[str, float]:
        return {name: getattr(parameters, name) for name in SCALARS}

    seed = await client.parameters()
    assert exported() == values(seed)
    result = await client.update(day_of_trades(), evaluations(), now=NOW)
    assert result.adapted
    adapted = await client.parameters()
    assert adapted.version == 2
    assert values(adapted) != values(seed)
    assert exported() == values(adapted)
