"""The spec's FederatedEngineV2 over the real federation, in process and served."""

from __future__ import annotations

import json

import pytest

from backtest.indicators import BarData
from federation import CallOutcome, FederatedEngineV2
from market.synthetic import SyntheticMarketSpec, generate
from meta import MetaLearningOS
from meta.model import Trade
from qtmesh.base import contract as c
from qtmesh.base.errors import FailedPrecondition
from sesa import SESAEngine
from tests.helpers.federation import TUNE, FakeAgent, MarketClock, rec, served_federation

HOUR = 3600 * 10**9
NOW = 1_000 * HOUR


async def test_a_plan_in_process_asks_the_meta_agent_at_the_updates_market_time():
    meta_os = MetaLearningOS()
    federation = FederatedEngineV2(meta_learning_os=meta_os)
    try:
        batch = [
            Trade(
                strategy_id="ma-1",
                entry_time=NOW - (30 - i) * HOUR // 2 - 1,
                exit_time=NOW - (30 - i) * HOUR // 2,
                return_fraction=0.001 * (i % 3 - 1) + 0.0005,
            )
            for i in range(30)
        ]
        update = await meta_os.run_meta_update(recent_trades=batch)
        plan = await federation.generate_global_action_plan()
        again = await federation.generate_global_action_plan()
    finally:
        await federation.close()
        meta_os.close()
    assert [r.agent for r in plan.agents] == ["meta"]
    assert [r.outcome for r in plan.agents] == [CallOutcome.OK]
    assert plan.context.as_of_time == meta_os.last_time == max(t.exit_time for t in batch)
    actionable = [d for d in update.decisions if d.type.name not in {"HOLD", "KEEP_SHADOW"}]
    assert plan.actions
    assert len(plan.actions) == len(actionable)
    assert again.sequence == plan.sequence + 1


async def test_in_process_sesa_is_asked_and_runs_the_evolution_it_asked_for_tuned_by_meta():
    series = generate(SyntheticMarketSpec(seed=3, days=3)).series[0]
    meta_os = MetaLearningOS()
    sesa = SESAEngine(bars=BarData(series), symbol=series.symbol)
    federation = FederatedEngineV2(meta_learning_os=meta_os, sesa_engine=sesa)
    try:
        plan = await federation.generate_global_action_plan(execute=True)
        assert await federation.settle(timeout=600)
        (evolve,) = [a for a in plan.actions if a.action_type is c.ActionType.RUN_EVOLUTION]
        stored = await federation.store.run(federation.store.get_plan, plan.sequence)
        again = await federation.generate_global_action_plan()
    finally:
        await federation.close()
        meta_os.close()
    assert {r.agent for r in plan.agents} == {"meta", "sesa"}
    done = stored.action(evolve.id)
    assert done.status is c.ActionStatus.COMPLETED, done.status_detail
    assert sesa.last_result is not None
    assert done.outcome["trials"] == str(sesa.last_result.trials)
    assert done.outcome["symbols"] == series.symbol
    # Tuned by meta's parameters of the moment (meta's own action of the plan may have made a
    # newer version meanwhile), as SESA in a mesh is.
    assert 1 <= int(done.outcome["meta_version"]) <= meta_os.engine.parameters.version
    assert "meta_error" not in done.outcome
    # The evolution is fresh now: the next plan asks for none.
    assert all(a.action_type is not c.ActionType.RUN_EVOLUTION for a in again.actions)


def test_in_process_needs_an_in_process_meta_os(tmp_path):
    with pytest.raises(FailedPrecondition):
        FederatedEngineV2()
    with pytest.raises(FailedPrecondition):
        FederatedEngineV2(meta_learning_os=MetaLearningOS(address="127.0.0.1:1"))


async def test_a_served_federation_plans_through_its_client(tmp_path):
    agent = FakeAgent("meta", [rec("r1", TUNE)])
    async with served_federation(tmp_path, [agent], market_clock=MarketClock(NOW)) as (server, _):
        mesh = tmp_path / "mesh.json"
        mesh.write_text(json.dumps({"federation": {"address": server.address}}))
        remote = FederatedEngineV2.from_mesh(mesh_file=mesh)
        plan = await remote.generate_global_action_plan()
        await remote.close()
    assert plan.sequence == 1
    assert [a.action_type for a in plan.actions] == [c.ActionType.TUNE_LEARNING]
    assert [r.agent for r in plan.agents] == ["meta"]
