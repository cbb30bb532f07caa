"""The spec's MetaLearningOS and MetaPolicy over the real meta engine, in process and served."""

from __future__ import annotations

import json

import pytest

from meta import MetaLearningConfig, MetaLearningOS, MetaPolicy, MetaPolicyRules
from meta.config import MetaConfig
from meta.model import Evaluation, MetaState, ShadowCandidate, Trade
from meta.service import app
from qtmesh.base.errors import FailedPrecondition
from qtmesh.runtime.supervisor import address_in_state
from qtmesh.testing import serving_app

HOUR = 3600 * 10**9
NOW = 1_000 * HOUR


def trades(count: int, *, win: bool = True) -> list[Trade]:
    return [
        Trade(
            strategy_id="ma-1",
            symbol="ORBT",
            entry_time=NOW - (count - i) * HOUR // 2 - HOUR // 4,
            exit_time=NOW - (count - i) * HOUR // 2 + 1,
            return_fraction=(0.002 + i * 1e-5) if win else -(0.002 + i * 1e-5),
        )
        for i in range(count)
    ]


def evaluations() -> list[Evaluation]:
    return [
        Evaluation(strategy_id="ORBT/ma-1", composite_score=0.7, evaluated_time=NOW - HOUR),
        Evaluation(strategy_id="ORBT/mr-1", composite_score=0.4, evaluated_time=NOW - HOUR),
    ]


def test_the_policy_answers_from_its_rules_on_a_state():
    policy = MetaPolicy()
    fresh = MetaState(now=NOW)
    assert policy.should_run_sesa_evolution(fresh)
    assert policy.should_retrain_rl_models(fresh)
    recent = {"last_evolution_time": NOW - HOUR, "last_retrain_time": NOW - HOUR}
    winning = MetaState(
        now=NOW, streak=6, performance=2.0, baseline_performance=2.0, sample_count=50, **recent
    )
    assert not policy.should_run_sesa_evolution(winning)
    assert policy.determine_explore_exploit_mode(winning) == "exploit"
    assert policy.adjust_risk_limits(1.0, winning) > 1.0
    losing = MetaState(
        now=NOW, streak=-6, performance=0.5, baseline_performance=2.0, sample_count=50, **recent
    )
    assert policy.adjust_risk_limits(1.0, losing) < 1.0
    ready = ShadowCandidate(
        strategy_id="s1", days_in_test=10, trade_count=80, sharpe_ratio=2.0,
        deflated_sharpe_ratio=0.99,
    )  # fmt: skip
    new = ShadowCandidate(
        strategy_id="s2", days_in_test=1, trade_count=80, sharpe_ratio=2.0,
        deflated_sharpe_ratio=0.99,
    )  # fmt: skip
    state = MetaState(now=NOW, shadow_candidates=(ready, new))
    assert policy.should_promote_shadow_strategy("s1", state)
    assert not policy.should_promote_shadow_strategy("s2", state)


def test_the_rules_given_are_the_rules_used():
    lax = MetaPolicy(MetaPolicyRules(sesa_trigger_interval_hours=0.5, sesa_min_gap_hours=0.5))
    state = MetaState(now=NOW, last_evolution_time=NOW - HOUR, last_retrain_time=NOW - HOUR)
    assert lax.should_run_sesa_evolution(state)
    assert not MetaPolicy().should_run_sesa_evolution(state)


def test_the_policy_needs_a_state_or_an_update():
    with pytest.raises(FailedPrecondition):
        MetaPolicy().should_run_sesa_evolution()


async def test_an_update_runs_at_its_newest_input_and_the_policy_reads_its_decisions():
    meta_os = MetaLearningOS(config=MetaLearningConfig(), meta_policy=MetaPolicy())
    try:
        batch = trades(30)
        result = await meta_os.run_meta_update(
            recent_trades=batch, recent_evaluations=evaluations()
        )
        assert meta_os.last_time == max(t.exit_time for t in batch)
        assert result.adapted, result.detail
        assert meta_os.engine is not None
        assert meta_os.engine.parameters.version == result.parameters.version == 2
        assert meta_os.meta_policy.decisions == result.decisions
        expected = any(d.type.name == "RUN_EVOLUTION" for d in result.decisions)
        assert meta_os.meta_policy.should_run_sesa_evolution() is expected
    finally:
        meta_os.close()


async def test_the_same_update_goes_to_a_served_meta_service(tmp_path):
    config = MetaConfig(
        data_dir=tmp_path,
        learn_from_fleet=False,
        learn_from_sesa=False,
        follow_regimes=False,
        record_to_memory=False,
    )
    async with serving_app(app(), config) as meta:
        mesh = tmp_path / "mesh.json"
        mesh.write_text(json.dumps({"meta": {"address": meta.address}}))
        remote = MetaLearningOS.from_mesh(mesh_file=mesh)
        assert remote.engine is None
        result = await remote.run_meta_update(
            recent_trades=trades(30), recent_evaluations=evaluations()
        )
    local = MetaLearningOS()
    try:
        expected = await local.run_meta_update(
            recent_trades=trades(30), recent_evaluations=evaluations()
        )
    finally:
        local.close()
    assert result.parameters.version == expected.parameters.version == 2
    assert [d.type for d in result.decisions] == [d.type for d in expected.decisions]
    assert result.parameters.rl_exploration_rate == pytest.approx(
        expected.parameters.rl_exploration_rate
    )
    assert remote.meta_policy.decisions == result.decisions


def test_the_mesh_file_must_name_the_service(tmp_path):
    with pytest.raises(FailedPrecondition, match="qtmesh up"):
        address_in_state("meta", tmp_path / "missing.json")
    (tmp_path / "mesh.json").write_text(json.dumps({"market": {"address": "127.0.0.1:1"}}))
    with pytest.raises(FailedPrecondition, match="no meta service"):
        address_in_state("meta", tmp_path / "mesh.json")
