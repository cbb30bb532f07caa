"""The meta policy: every rule just below, at and above its threshold; decisions explain
themselves; monotone and bounded proposals for any state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meta.config import MetaPolicyRules
from meta.model import (
    ACTIONABLE,
    NANOS_PER_HOUR,
    DecisionType,
    MetaState,
    MutationProposal,
    MutationSetting,
    ShadowCandidate,
)
from meta.policy import RULE_NAMES, RULES, MetaPolicy, recommended_exploration

RULE_SET = MetaPolicyRules()
NOW = 1_767_571_200 * 10**9 + 1000 * NANOS_PER_HOUR
H = NANOS_PER_HOUR
S = 10**9  # a second: "just below" an hour threshold
# Nothing fires on this state: recent evolution and retraining, performance on target with
# exploration already at its minimum, no streak, no candidates.
QUIET = MetaState(
    now=NOW,
    last_evolution_time=NOW - H,
    last_retrain_time=NOW - H,
    performance=1.0,
    baseline_performance=1.0,
    exploration_rate=0.05,
    risk_multiplier=1.0,
    sample_count=30,
)


def decide(state: MetaState, rules: MetaPolicyRules = RULE_SET):
    return MetaPolicy(rules).decide(state)


def rules_of(state: MetaState, **rules: object) -> set[str]:
    return {d.rule for d in decide(state, dataclasses.replace(RULE_SET, **rules))}


def shadow(**fields: object) -> ShadowCandidate:
    values = {
        "strategy_id": "sh-1",
        "days_in_test": 8.0,
        "trade_count": 60,
        "sharpe_ratio": 1.5,
        "deflated_sharpe_ratio": 0.97,
    }
    return ShadowCandidate(**{**values, **fields})


def with_(**fields: object) -> MetaState:
    return dataclasses.replace(QUIET, **fields)


def test_a_quiet_state_holds():
    decisions = decide(QUIET)
    assert [(d.type, d.rule) for d in decisions] == [(DecisionType.HOLD, "hold")]
    assert "No rule called for a change" in decisions[0].rationale


# (name, state below the threshold, state at it, state above it, whether "at" fires)
BOUNDARIES = [
    (
        "evolution_interval",
        with_(last_evolution_time=NOW - 24 * H + S),
        with_(last_evolution_time=NOW - 24 * H),
        with_(last_evolution_time=NOW - 25 * H),
    ),
    (
        "evolution_performance_drop",
        with_(last_evolution_time=NOW - 3 * H, performance=0.86),
        with_(last_evolution_time=NOW - 3 * H, performance=0.85),
        with_(last_evolution_time=NOW - 3 * H, performance=0.80),
    ),
    (
        "retrain_interval",
        with_(last_retrain_time=NOW - 12 * H + S),
        with_(last_retrain_time=NOW - 12 * H),
        with_(last_retrain_time=NOW - 13 * H),
    ),
    (
        "retrain_regime_change",
        with_(last_retrain_time=NOW - H + S, regime_changed=True),
        with_(last_retrain_time=NOW - H, regime_changed=True),
        with_(last_retrain_time=NOW - 2 * H, regime_changed=True),
    ),
    (
        "shadow_promotion",
        with_(shadow_candidates=(shadow(days_in_test=6.99),)),
        with_(shadow_candidates=(shadow(days_in_test=7.0),)),
        with_(shadow_candidates=(shadow(days_in_test=7.5),)),
    ),
    (
        "shadow_promotion",
        with_(shadow_candidates=(shadow(trade_count=49),)),
        with_(shadow_candidates=(shadow(trade_count=50),)),
        with_(shadow_candidates=(shadow(trade_count=51),)),
    ),
    (
        "shadow_promotion",
        with_(shadow_candidates=(shadow(deflated_sharpe_ratio=0.94),)),
        with_(shadow_candidates=(shadow(deflated_sharpe_ratio=0.95),)),
        with_(shadow_candidates=(shadow(deflated_sharpe_ratio=0.96),)),
    ),
    (
        "explore_below_target",
        with_(performance=0.93),  # recommended 0.1175: 0.0175 above the current 0.05
        with_(performance=0.92),  # 0.02 above: the hysteresis
        with_(performance=0.91),
    ),
    (
        "exploit_near_target",
        with_(exploration_rate=0.069),  # at the target: recommended 0.05, 0.019 below
        with_(exploration_rate=0.07),  # 0.02 below: the hysteresis
        with_(exploration_rate=0.30),
    ),
    (
        "exploit_near_target",
        with_(exploration_rate=0.30, performance=0.999),  # just below the target: never exploit
        with_(exploration_rate=0.30, performance=1.0),
        with_(exploration_rate=0.30, performance=1.5),
    ),
    (
        "explore_on_regime_change",
        with_(regime_changed=True, exploration_rate=0.181),
        with_(regime_changed=True, exploration_rate=0.18),
        with_(regime_changed=True, exploration_rate=0.17),
    ),
    ("risk_up_on_winning_streak", with_(streak=4), with_(streak=5), with_(streak=6)),
    ("risk_down_on_losing_streak", with_(streak=-2), with_(streak=-3), with_(streak=-4)),
    (
        "risk_down_on_performance_drop",
        with_(performance=0.76),
        with_(performance=0.75),
        with_(performance=0.70),
    ),
    (
        "reweight_on_drift",
        with_(
            strategy_weights={"a": 0.5, "b": 0.5}, proposed_strategy_weights={"a": 0.59, "b": 0.41}
        ),
        with_(
            strategy_weights={"a": 0.5, "b": 0.5}, proposed_strategy_weights={"a": 0.6, "b": 0.4}
        ),
        with_(
            strategy_weights={"a": 0.5, "b": 0.5}, proposed_strategy_weights={"a": 0.7, "b": 0.3}
        ),
    ),
]


@pytest.mark.parametrize(
    ("rule", "below", "at", "above"),
    BOUNDARIES,
    ids=[f"{b[0]}-{i}" for i, b in enumerate(BOUNDARIES)],
)
def test_each_rule_fires_at_its_threshold_and_not_below(rule, below, at, above):
    assert rule not in {d.rule for d in decide(below)}
    for state in (at, above):
        decisions = [d for d in decide(state) if d.rule == rule]
        assert len(decisions) == 1
        decision = decisions[0]
        assert decision.inputs
        assert decision.rationale.endswith(".")
        assert 0.5 <= decision.confidence <= 1.0


@pytest.mark.parametrize(
    ("candidate", "rule"),
    [
        (shadow(days_in_test=6.99), "shadow_test_days"),
        (shadow(trade_count=49), "shadow_trade_count"),
        (shadow(sharpe_ratio=1.0), "shadow_sharpe"),  # must exceed 1.0: at it is not enough
        (shadow(sharpe_ratio=0.99), "shadow_sharpe"),
        (shadow(deflated_sharpe_ratio=0.9499), "shadow_deflated_sharpe"),
    ],
)
def test_a_shadow_failing_a_gate_is_kept_in_test_by_that_gate(candidate, rule):
    (decision,) = [d for d in decide(with_(shadow_candidates=(candidate,))) if d.strategy_id]
    assert (decision.type, decision.rule) == (DecisionType.KEEP_SHADOW, rule)
    assert "keep it in test" in decision.rationale


def test_sharpe_just_above_the_gate_promotes_and_an_unknown_deflated_sharpe_is_no_gate():
    for candidate in (shadow(sharpe_ratio=1.01), shadow(deflated_sharpe_ratio=None)):
        (decision,) = [d for d in decide(with_(shadow_candidates=(candidate,))) if d.strategy_id]
        assert decision.type is DecisionType.PROMOTE_SHADOW
        assert decision.strategy_id == "sh-1"


def test_only_the_best_candidates_use_the_promotions():
    candidates = (
        shadow(strategy_id="a", deflated_sharpe_ratio=0.96),
        shadow(strategy_id="b", deflated_sharpe_ratio=0.99),
        shadow(strategy_id="c", sharpe_ratio=0.5),
    )
    by_id = {d.strategy_id: d for d in decide(with_(shadow_candidates=candidates))}
    assert by_id["b"].rule == "shadow_promotion"
    assert by_id["a"].rule == "shadow_promotion_limit"
    assert by_id["c"].rule == "shadow_sharpe"
    both = {
        d.strategy_id: d.rule
        for d in decide(
            with_(shadow_candidates=candidates),
            dataclasses.replace(RULE_SET, shadow_max_promotions=2),
        )
    }
    assert both["a"] == both["b"] == "shadow_promotion"


def test_a_drop_within_the_minimum_gap_holds_evolution():
    assert "evolution_cooldown" in rules_of(
        with_(last_evolution_time=NOW - 2 * H + S, performance=0.8)
    )
    assert "evolution_performance_drop" in rules_of(
        with_(last_evolution_time=NOW - 2 * H, performance=0.8)
    )


def test_a_regime_change_within_the_minimum_gap_holds_retraining():
    state = with_(last_retrain_time=NOW - H + S, regime_changed=True)
    assert "retrain_cooldown" in {d.rule for d in decide(state)}
    assert "retrain_regime_change" not in rules_of(state, rl_retrain_on_regime_change=False)


def test_never_evolved_or_retrained_means_now():
    rules = rules_of(with_(last_evolution_time=None, last_retrain_time=None))
    assert {"evolution_interval", "retrain_interval"} <= rules


def test_too_few_samples_hold_the_performance_rules_only():
    weak = with_(performance=0.2, exploration_rate=0.05, last_evolution_time=NOW - 3 * H)
    assert {
        "evolution_performance_drop",
        "explore_below_target",
        "risk_down_on_performance_drop",
    } <= {d.rule for d in decide(weak)}
    held = {d.rule for d in decide(dataclasses.replace(weak, sample_count=19, streak=5))}
    assert "insufficient_data" in held
    assert not held & {
        "evolution_performance_drop",
        "explore_below_target",
        "risk_down_on_performance_drop",
    }
    assert "risk_up_on_winning_streak" in held  # a streak is counted, not estimated
    assert "insufficient_data" not in {
        d.rule for d in decide(dataclasses.replace(weak, sample_count=20))
    }


def test_risk_moves_ten_percent_and_stops_at_its_bounds():
    (up,) = [d for d in decide(with_(streak=5)) if d.rule == "risk_up_on_winning_streak"]
    assert up.proposed["risk_multiplier"] == pytest.approx(1.1)
    (capped,) = [
        d
        for d in decide(with_(streak=5, risk_multiplier=1.45))
        if d.type is DecisionType.INCREASE_RISK
    ]
    assert capped.proposed["risk_multiplier"] == 1.5
    (held,) = [d for d in decide(with_(streak=9, risk_multiplier=1.5)) if d.rule == "risk_at_bound"]
    assert held.type is DecisionType.HOLD
    (floor,) = [
        d for d in decide(with_(streak=-3, risk_multiplier=0.5)) if d.rule == "risk_at_bound"
    ]
    assert "bound 0.5" in floor.rationale
    # A losing streak outranks a winning-streak rule; a drop outranks a winning streak.
    assert "risk_up_on_winning_streak" not in rules_of(with_(streak=6, performance=0.7))


def test_the_mutation_rule_follows_the_tuner_proposal():
    same = MutationProposal(current=MutationSetting(0.3, 0.2), proposed=MutationSetting(0.3, 0.2))
    assert "mutation_tuner" not in rules_of(with_(mutation=same))
    other = dataclasses.replace(same, proposed=MutationSetting(0.45, 0.2), reason="Try it.")
    (decision,) = [d for d in decide(with_(mutation=other)) if d.rule == "mutation_tuner"]
    assert decision.type is DecisionType.ADJUST_MUTATION
    assert dict(decision.proposed) == {"sesa_mutation_rate": 0.45, "sesa_mutation_magnitude": 0.2}
    assert decision.rationale == "Try it."


def test_unknown_deployed_weights_never_reweight():
    # Without deployed weights there is no drift to measure: a reweight from nothing would fire
    # every cycle with the full proposal.
    assert "reweight_on_drift" not in rules_of(with_(proposed_strategy_weights={"a": 3.0, "b": 1}))
    (decision,) = [
        d
        for d in decide(
            with_(strategy_weights={"c": 1.0}, proposed_strategy_weights={"a": 3.0, "b": 1.0})
        )
        if d.rule == "reweight_on_drift"
    ]
    assert dict(decision.proposed) == {"a": 0.75, "b": 0.25}
    assert decision.inputs["total_variation"] == pytest.approx(1.0)


def test_exploration_above_the_curve_below_the_target_is_never_exploited():
    # The OS raises exploration to its own maximum (0.40) after a long bad run; the policy's
    # curve tops out at 0.30, but lowering exploration while far below target would undo it.
    for performance in (-1.0, 0.0, 0.5, 0.99):
        decisions = decide(with_(exploration_rate=0.40, performance=performance))
        assert DecisionType.SWITCH_TO_EXPLOIT not in {d.type for d in decisions}
    (exploit,) = [
        d
        for d in decide(with_(exploration_rate=0.40, performance=1.0))
        if d.type is DecisionType.SWITCH_TO_EXPLOIT
    ]
    assert exploit.proposed == {"rl_exploration_rate": RULE_SET.exploration_rate_min}


def test_the_catalog_has_at_least_twenty_rules_over_every_decision_type():
    assert len(RULES) >= 20
    assert len(RULE_NAMES) == len(RULES)
    assert {r.decision for r in RULES} == set(DecisionType)
    for rule in RULES:
        for name in rule.settings:
            assert hasattr(RULE_SET, name), (rule.name, name)


# One state per rule that makes it fire.
EXAMPLES = {
    "insufficient_data": with_(sample_count=3),
    "evolution_interval": with_(last_evolution_time=None),
    "evolution_performance_drop": with_(last_evolution_time=NOW - 3 * H, performance=0.8),
    "evolution_cooldown": with_(performance=0.8),
    "retrain_interval": with_(last_retrain_time=NOW - 12 * H),
    "retrain_regime_change": with_(last_retrain_time=NOW - 2 * H, regime_changed=True),
    "retrain_cooldown": with_(last_retrain_time=NOW - H // 2, regime_changed=True),
    "shadow_test_days": with_(shadow_candidates=(shadow(days_in_test=1),)),
    "shadow_trade_count": with_(shadow_candidates=(shadow(trade_count=1),)),
    "shadow_sharpe": with_(shadow_candidates=(shadow(sharpe_ratio=0.2),)),
    "shadow_deflated_sharpe": with_(shadow_candidates=(shadow(deflated_sharpe_ratio=0.5),)),
    "shadow_promotion": with_(shadow_candidates=(shadow(),)),
    "shadow_promotion_limit": with_(
        shadow_candidates=(shadow(strategy_id="a"), shadow(strategy_id="b"))
    ),
    "explore_on_regime_change": with_(regime_changed=True),
    "explore_below_target": with_(performance=0.2),
    "exploit_near_target": with_(exploration_rate=0.3),
    "risk_down_on_losing_streak": with_(streak=-3),
    "risk_down_on_performance_drop": with_(performance=0.7),
    "risk_up_on_winning_streak": with_(streak=5),
    "risk_at_bound": with_(streak=5, risk_multiplier=1.5),
    "mutation_tuner": with_(
        mutation=MutationProposal(
            current=MutationSetting(0.3, 0.2), proposed=MutationSetting(0.15, 0.2)
        )
    ),
    "reweight_on_drift": with_(strategy_weights={"b": 1.0}, proposed_strategy_weights={"a": 1.0}),
    "hold": QUIET,
}


def test_the_service_reference_lists_every_rule():
    readme = (Path(__file__).resolve().parents[2] / "docs" / "services" / "meta.md").read_text()
    assert [name for name in sorted(RULE_NAMES) if f"`{name}`" not in readme] == []
    assert f"{len(RULES)} named rules" in readme


def test_every_rule_has_an_example():
    assert set(EXAMPLES) == RULE_NAMES


@pytest.mark.parametrize("rule", sorted(EXAMPLES))
def test_each_rule_fires_on_its_example_with_reasons(rule):
    decisions = [d for d in decide(EXAMPLES[rule]) if d.rule == rule]
    assert decisions
    (catalogued,) = [r for r in RULES if r.name == rule]
    for d in decisions:
        assert d.type is catalogued.decision
        assert d.inputs
        assert d.rationale[0].isupper()
        assert d.rationale.endswith(".")
        if d.type in ACTIONABLE:
            assert 0.5 <= d.confidence <= 1


# -- properties -------------------------------------------------------------------------------

performances = st.floats(-5, 5, allow_nan=False)


@given(performances, performances, st.floats(0.1, 3))
def test_more_performance_never_raises_the_recommended_exploration(a, b, target):
    low, high = sorted((a, b))
    assert recommended_exploration(high, target, RULE_SET) <= recommended_exploration(
        low, target, RULE_SET
    )


states = st.builds(
    MetaState,
    now=st.just(NOW),
    last_evolution_time=st.one_of(st.none(), st.integers(NOW - 100 * H, NOW)),
    last_retrain_time=st.one_of(st.none(), st.integers(NOW - 100 * H, NOW)),
    performance=performances,
    baseline_performance=performances,
    target_performance=st.one_of(st.none(), st.floats(0.1, 3)),
    regime_changed=st.booleans(),
    streak=st.integers(-20, 20),
    exploration_rate=st.floats(0, 1),
    risk_multiplier=st.floats(0.1, 3),
    sample_count=st.one_of(st.none(), st.integers(0, 100)),
)


@given(states)
def test_proposals_stay_within_the_policy_bounds_for_any_state(state):
    rules = RULE_SET
    decisions = MetaPolicy(rules).decide(state)
    assert decisions
    for d in decisions:
        assert d.rule in RULE_NAMES
        assert d.rationale.endswith(".")
        assert 0 <= d.confidence <= 1
        if "rl_exploration_rate" in d.proposed:
            assert (
                rules.exploration_rate_min
                <= d.proposed["rl_exploration_rate"]
                <= rules.exploration_rate_max
            )
        if "risk_multiplier" in d.proposed:
            assert (
                rules.risk_multiplier_min
                <= d.proposed["risk_multiplier"]
                <= rules.risk_multiplier_max
            )
            moved = d.proposed["risk_multiplier"] - state.risk_multiplier
            assert (moved > 0) == (d.type is DecisionType.INCREASE_RISK)
    assert sum(d.type is DecisionType.RUN_EVOLUTION for d in decisions) <= 1
    assert (
        len({d.type for d in decisions} & {DecisionType.INCREASE_RISK, DecisionType.DECREASE_RISK})
        <= 1
    )
    holds = [d for d in decisions if d.rule == "hold"]
    if any(d.type in ACTIONABLE for d in decisions):
        assert holds == []
    else:
        (hold,) = holds
        assert hold is decisions[-1]
        assert hold.type is DecisionType.HOLD
        assert dict(hold.inputs) == {
            "performance": state.performance,
            "streak": float(state.streak),
            "exploration_rate": state.exploration_rate,
            "risk_multiplier": state.risk_multiplier,
        }


@given(states, performances)
def test_better_performance_never_turns_exploit_into_explore(state, delta):
    """With everything else equal, a higher performance never proposes more exploration."""

    def proposed(s: MetaState) -> float:
        for d in MetaPolicy(RULE_SET).decide(s):
            if "rl_exploration_rate" in d.proposed:
                return d.proposed["rl_exploration_rate"]
        return s.exploration_rate

    better = dataclasses.replace(state, performance=state.performance + abs(delta))
    assert proposed(better) <= proposed(state) + 1e-12


def test_same_state_same_decisions():
    state = with_(streak=-4, regime_changed=True, shadow_candidates=(shadow(),), performance=0.3)
    assert MetaPolicy(RULE_SET).decide(state) == MetaPolicy(RULE_SET).decide(state)
