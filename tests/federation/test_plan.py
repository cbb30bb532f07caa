"""Building a plan: consensus and confidence formulas, conflicts, held critical actions,
dependencies, scheduling windows, and invariance to the order agents answer in."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.config import FederationConfig
from federation.plan import AgentAnswer, AgentReport, CallOutcome, build_plan, stance_of, target_of
from qtmesh.base import contract as c

OWNERS = FederationConfig().owner_by_type
NOW = 1_000_000_000_000


def rec(
    rid: str,
    parameters: c.ActionParameters,
    confidence: float,
    priority: c.Priority = c.Priority.MEDIUM,
    depends_on: tuple[str, ...] = (),
) -> c.Recommendation:
    return c.Recommendation(
        id=rid,
        priority=priority,
        target="ignored: the federation derives targets",
        parameters=parameters,
        confidence=confidence,
        rationale=f"{rid} rationale",
        depends_on=depends_on,
    )


def answer(agent: str, *recommendations: c.Recommendation) -> AgentAnswer:
    report = AgentReport(agent, CallOutcome.OK, 0.001, 1, len(recommendations))
    return AgentAnswer(report, tuple(recommendations))


def plan(*answers: AgentAnswer, min_consensus: float = 0.8):
    return build_plan(
        answers,
        plan_id="gap-7",
        sequence=7,
        now=NOW,
        context=c.AgentContext(cycle_id="cycle"),
        min_consensus_for_critical=min_consensus,
        owners=OWNERS,
    )


UP = c.AdjustExposure(sector="Tech", factor=1.2)
DOWN = c.AdjustExposure(sector="Tech", factor=0.5)


def test_targets_and_stances_are_derived_from_parameters():
    assert (
        target_of(UP) == target_of(DOWN) == target_of(c.HaltTrading(scope="Tech")) == "sector/Tech"
    )
    assert (
        target_of(c.HaltTrading())
        == target_of(c.AdjustExposure(sector="", factor=2))
        == "portfolio"
    )
    assert stance_of(UP) == "risk_on"
    assert stance_of(DOWN) == stance_of(c.HaltTrading(scope="Tech")) == "risk_off"
    assert stance_of(c.SwitchMode(mode=c.StrategicMode.DEFENSIVE)) == "defensive"
    assert target_of(c.EnableStrategy(strategy_id="s1")) == target_of(
        c.DisableStrategy(strategy_id="s1")
    )
    assert stance_of(c.EnableStrategy(strategy_id="s1")) != stance_of(
        c.DisableStrategy(strategy_id="s1")
    )
    # Learning changes are placed by what they change, so retraining and a new exploration
    # rate from one agent are two actions, not one vote.
    explore = c.TuneLearning(parameters={"rl_exploration_rate": 0.3})
    assert target_of(explore) == target_of(c.TuneLearning(parameters={"rl_exploration_rate": 0.1}))
    assert target_of(explore) != target_of(c.TuneLearning(retrain_models=True))
    assert target_of(c.TuneLearning(parameters={"b": 1.0, "a": 2.0})) == "meta/a,b"


def test_consensus_and_confidence_follow_their_formulas():
    result = plan(
        answer("ceo", rec("r1", UP, 0.8)),
        answer("meta-optimizer", rec("r1", c.AdjustExposure(sector="Tech", factor=1.3), 0.6)),
        answer(
            "risk",
            rec("r1", DOWN, 0.9),
            rec("r2", c.SwitchMode(mode=c.StrategicMode.DEFENSIVE), 0.5),
        ),
    )
    # sector/Tech: risk_on 0.8 + 0.6 = 1.4 vs risk_off 0.9, total 2.3; mode: one agent, agreement 1.
    tech_agreement = 1.4 / 2.3
    assert result.consensus_score == pytest.approx((2.3 * tech_agreement + 0.5 * 1.0) / (2.3 + 0.5))
    # Agent confidences: ceo 0.8, meta-optimizer 0.6, risk (0.9 + 0.5) / 2 = 0.7.
    confidences = [0.8, 0.6, 0.7]
    assert result.confidence == pytest.approx(sum(x * x for x in confidences) / sum(confidences))
    tech = [a for a in result.actions if a.target == "sector/Tech"]
    winner = next(a for a in tech if a.status is c.ActionStatus.PENDING)
    loser = next(a for a in tech if a.status is c.ActionStatus.SUPERSEDED)
    assert winner.parameters == UP  # the more confident of the two agreeing recommendations
    assert winner.source_agents == ("ceo", "meta-optimizer")
    assert winner.consensus == pytest.approx(tech_agreement)
    assert winner.confidence == pytest.approx((0.8**2 + 0.6**2) / 1.4)
    assert loser.superseded_by == winner.id
    assert loser.source_agents == ("risk",)
    assert "lost to" in loser.status_detail


def test_conflicts_are_won_by_priority_then_confidence_then_name():
    high_but_unsure = rec("r", DOWN, 0.3, c.Priority.HIGH)
    sure_but_medium = rec("r", UP, 0.95, c.Priority.MEDIUM)
    result = plan(answer("a", high_but_unsure), answer("b", sure_but_medium))
    assert next(a for a in result.actions if a.status is c.ActionStatus.PENDING).parameters == DOWN
    result = plan(answer("a", rec("r", DOWN, 0.4)), answer("b", rec("r", UP, 0.7)))
    assert next(a for a in result.actions if a.status is c.ActionStatus.PENDING).parameters == UP
    # Equal priority and confidence: the stance name decides ("risk_off" < "risk_on").
    result = plan(answer("a", rec("r", UP, 0.5)), answer("b", rec("r", DOWN, 0.5)))
    assert next(a for a in result.actions if a.status is c.ActionStatus.PENDING).parameters == DOWN


def test_priority_overrides_confidence_and_agreement_is_the_winners_share():
    result = plan(
        answer("a", rec("r", DOWN, 0.3, c.Priority.HIGH)),
        answer("b", rec("r", UP, 0.9)),
        answer("c", rec("r", c.AdjustExposure(sector="Tech", factor=1.5), 0.8)),
    )
    winner = next(a for a in result.actions if a.status is c.ActionStatus.PENDING)
    loser = next(a for a in result.actions if a.status is c.ActionStatus.SUPERSEDED)
    assert winner.parameters == DOWN  # 0.3 at HIGH beats 1.7 at MEDIUM
    assert winner.consensus == 0.3 / 2.0  # the winner's share, not the largest share
    assert loser.consensus == math.fsum([0.9, 0.8]) / 2.0
    assert result.consensus_score == 0.3 / 2.0


def test_critical_actions_need_consensus():
    halt = c.HaltTrading(scope="Crypto")
    dissent = c.AdjustExposure(sector="Crypto", factor=1.1)
    # 0.8 of the confidence agrees: exactly at the bar, so it runs.
    at_bar = plan(
        answer("risk", rec("r", halt, 0.8, c.Priority.CRITICAL)),
        answer("ceo", rec("r", dissent, 0.2)),
    )
    lead = next(
        a
        for a in at_bar.actions
        if a.target == "sector/Crypto" and a.action_type is c.ActionType.HALT_TRADING
    )
    assert lead.status is c.ActionStatus.PENDING
    below = plan(
        answer("risk", rec("r", halt, 0.79, c.Priority.CRITICAL)),
        answer("ceo", rec("r", dissent, 0.21)),
    )
    held = next(a for a in below.actions if a.action_type is c.ActionType.HALT_TRADING)
    assert held.status is c.ActionStatus.HELD
    assert "consensus 0.79" in held.status_detail
    assert "0.80 required" in held.status_detail
    alone = plan(answer("risk", rec("r", halt, 0.3, c.Priority.CRITICAL)))
    assert alone.actions[0].status is c.ActionStatus.PENDING  # nobody disagreed


def test_plan_details_dependencies_windows_owners_keys():
    result = plan(
        answer(
            "meta",
            rec(
                "tune", c.TuneLearning(parameters={"rl_exploration_rate": 0.2}), 0.6, c.Priority.LOW
            ),
            rec(
                "evolve",
                c.RunEvolution(symbols=("ORBT",)),
                0.7,
                c.Priority.HIGH,
                depends_on=("tune",),
            ),
        ),
        answer("risk", rec("halt", c.HaltTrading(), 0.9, c.Priority.CRITICAL)),
    )
    by_type = {a.action_type: a for a in result.actions}
    evolve, tune, halt = (
        by_type[c.ActionType.RUN_EVOLUTION],
        by_type[c.ActionType.TUNE_LEARNING],
        by_type[c.ActionType.HALT_TRADING],
    )
    assert [a.id for a in result.actions] == ["a1", "a2", "a3"]
    assert result.actions[0] is halt  # critical first, then by priority
    assert evolve.depends_on == (tune.id,)
    assert halt.execute_by_time == 0
    assert tune.execute_by_time == 0
    assert evolve.execute_by_time == NOW + 60 * 10**9
    assert (evolve.owner, tune.owner, halt.owner) == ("sesa", "meta", "risk")
    assert halt.idempotency_key == f"gap-7/{halt.id}"
    assert result.sequence == 7
    assert result.summary.startswith("3 actions to execute")


def test_an_intent_offered_in_many_cycles_keeps_its_idempotency_key():
    from meta_optimizer.agent import recommendation_of
    from meta_optimizer.audit import ProposalType
    from meta_optimizer.ledger import Proposal

    proposal = Proposal(
        id="p-17",
        type=ProposalType.REINFORCEMENT,
        action="scale",
        target_sector="Tech",
        counter_sector="",
        rationale="Tech beat its peers",
        confidence=0.9,
        p_value=0.01,
        factor=1.2,
        allocation=0.0,
        report_ids=("r1",),
        cycle_id="c1",
        create_time=1,
        ledger_index=3,
        previous_hash="",
    )
    offered = recommendation_of(proposal)
    # A later cycle over the same reports proposes the same under a new id: the same intent.
    again = recommendation_of(dataclasses.replace(proposal, id="p-23", cycle_id="c2"))
    assert offered.intent_key == again.intent_key
    newer = recommendation_of(dataclasses.replace(proposal, report_ids=("r1", "r2")))
    assert newer.intent_key != offered.intent_key
    plans = [
        build_plan(
            [
                answer("meta-optimizer", offered),
                answer("ceo", rec("r", c.SwitchMode(mode=mode), 0.5)),
            ],
            plan_id=f"gap-{n}",
            sequence=n,
            now=NOW + n,
            context=c.AgentContext(cycle_id=f"cycle-{n}"),
            min_consensus_for_critical=0.8,
            owners=OWNERS,
        )
        for n, mode in ((1, c.StrategicMode.NORMAL), (2, c.StrategicMode.DEFENSIVE))
    ]
    keys = [
        next(a for a in p.actions if a.action_type is c.ActionType.ADJUST_EXPOSURE).idempotency_key
        for p in plans
    ]
    assert keys == [f"meta-optimizer/{offered.intent_key}"] * 2
    # Without an intent key every plan's action is new.
    modes = [next(a for a in p.actions if a.target == "mode") for p in plans]
    assert [m.idempotency_key for m in modes] == [f"gap-1/{modes[0].id}", f"gap-2/{modes[1].id}"]


def test_the_intent_key_comes_from_the_agent_whose_recommendation_leads():
    sure = dataclasses.replace(rec("r", UP, 0.9), intent_key="mine")
    unsure = dataclasses.replace(
        rec("r", c.AdjustExposure(sector="Tech", factor=1.1), 0.4), intent_key="theirs"
    )
    (action,) = plan(answer("a", unsure), answer("b", sure)).actions
    assert action.source_agents == ("a", "b")
    assert action.idempotency_key == "b/mine"


def test_failed_agents_are_recorded_without_votes():
    failed = AgentAnswer(AgentReport("world-model", CallOutcome.TIMED_OUT, 10.0, 1, 0, "slow"))
    result = plan(answer("risk", rec("r", DOWN, 0.9)), failed)
    assert [r.agent for r in result.agents] == ["risk", "world-model"]
    assert result.agents[1].outcome is CallOutcome.TIMED_OUT
    assert result.confidence == pytest.approx(0.9)
    assert len(result.actions) == 1


PARAMETERS = st.sampled_from(
    [
        UP,
        DOWN,
        c.HaltTrading(scope="Tech"),
        c.SwitchMode(mode=c.StrategicMode.EXPANSION),
        c.SwitchMode(mode=c.StrategicMode.DEFENSIVE),
        c.EnableStrategy(strategy_id="s1"),
        c.DisableStrategy(strategy_id="s1"),
        c.RunEvolution(),
    ]
)


@given(
    st.lists(
        st.tuples(
            PARAMETERS,
            st.floats(0.01, 1.0),
            st.sampled_from(list(c.Priority)),
        ),
        min_size=1,
        max_size=6,
    ),
    st.randoms(),
)
def test_the_order_agents_answer_in_changes_nothing(votes, random):
    answers = [
        answer(f"agent-{i}", rec("r", p, conf, prio)) for i, (p, conf, prio) in enumerate(votes)
    ]
    shuffled = list(answers)
    random.shuffle(shuffled)
    a, b = plan(*answers), plan(*shuffled)
    assert a.consensus_score == b.consensus_score
    assert a.confidence == b.confidence
    assert a.actions == b.actions
    assert 0 <= a.consensus_score <= 1
    assert 0 <= a.confidence <= 1
    for action in a.actions:
        if action.status is c.ActionStatus.SUPERSEDED:
            assert a.action(action.superseded_by).status is not c.ActionStatus.SUPERSEDED


def test_an_agent_has_one_vote_per_target():
    result = plan(
        answer(
            "risk",
            rec("up", UP, 0.4),
            rec("down", DOWN, 0.9),
            rec("after", c.RunEvolution(), 0.5, depends_on=("up",)),
        )
    )
    tech = [a for a in result.actions if a.target == "sector/Tech"]
    assert len(tech) == 1
    assert tech[0].parameters == DOWN
    assert tech[0].consensus == 1.0
    evolve = next(a for a in result.actions if a.action_type is c.ActionType.RUN_EVOLUTION)
    assert evolve.depends_on == (tech[0].id,)


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"min_consensus_for_critical": 1.2}, "min_consensus_for_critical"),
        ({"agent_timeout_seconds": 0}, "agent_timeout_seconds"),
        ({"max_concurrent_actions": 0}, "max_concurrent_actions"),
        ({"gap_update_interval_seconds": -1}, "gap_update_interval_seconds"),
        ({"owners": {"FLY_TO_MOON": "risk"}}, "owners"),
        ({"deadline_reserve_seconds": 20.0}, "deadline_reserve_seconds"),
    ],
)
def test_the_configuration_is_validated(settings, setting):
    from qtmesh.base.config import ConfigError

    with pytest.raises(ConfigError) as failure:
        FederationConfig(**settings)
    assert failure.value.setting == setting


def test_the_spec_defaults():
    config = FederationConfig()
    assert (
        config.gap_update_interval_seconds,
        config.agent_timeout_seconds,
        config.max_concurrent_actions,
        config.min_consensus_for_critical,
        config.enable_sesa_integration,
        config.enable_meta_learning_integration,
    ) == (30.0, 10.0, 5, 0.80, True, True)
    assert "sesa" not in FederationConfig(enable_sesa_integration=False).asked_agents
    assert "meta" not in FederationConfig(enable_meta_learning_integration=False).asked_agents


def test_intent_keys_are_unique_within_an_answer_and_bounded():
    from qtmesh.base.errors import InvalidArgument

    twice = [
        dataclasses.replace(rec("a", UP, 0.5), intent_key="k"),
        dataclasses.replace(rec("b", c.RunEvolution(), 0.5), intent_key="k"),
    ]
    with pytest.raises(InvalidArgument) as failure:
        c.validate_recommendations("meta-optimizer", twice)
    assert failure.value.field == "meta-optimizer.recommendations[0].intent_key"
    with pytest.raises(InvalidArgument) as failure:
        c.validate_recommendations(
            "x", [dataclasses.replace(rec("a", UP, 0.5), intent_key="k" * 257)]
        )
    assert failure.value.field == "x.recommendations[0].intent_key"


def test_dependencies_that_cross_agents_into_a_cycle_are_dropped_with_a_reason():
    tune = c.TuneLearning(parameters={"rl_exploration_rate": 0.2})
    evolve = c.RunEvolution()
    # meta: tune before evolve; sesa: evolve before tune. Merged, each waits for the other.
    result = plan(
        answer("meta", rec("t", tune, 0.9), rec("e", evolve, 0.5, depends_on=("t",))),
        answer("sesa", rec("e", evolve, 0.6), rec("t", tune, 0.4, depends_on=("e",))),
    )
    by_type = {a.action_type: a for a in result.actions}
    first, second = by_type[c.ActionType.TUNE_LEARNING], by_type[c.ActionType.RUN_EVOLUTION]
    assert [a.id for a in result.actions] == [first.id, second.id]  # tune is more confident
    # The first action in plan order keeps its dependencies; the edge closing the cycle goes.
    assert first.depends_on == (second.id,)
    assert second.depends_on == ()
    assert second.status is c.ActionStatus.PENDING
    assert f"cycle: {second.id} -> {first.id} -> {second.id}" in second.status_detail
    assert c.find_cycle({a.id: a.depends_on for a in result.actions}) == []


def _acyclic_answers(draw_data):
    """Agents whose own dependencies are acyclic (each recommendation depends only on earlier
    ones of its agent), on overlapping targets, so merging them can create cycles."""
    answers = []
    for agent in range(draw_data.draw(st.integers(1, 4))):
        count = draw_data.draw(st.integers(1, 5))
        recommendations = []
        for i in range(count):
            depends = draw_data.draw(st.sets(st.integers(0, i - 1), max_size=i)) if i else set()
            recommendations.append(
                rec(
                    f"r{i}",
                    draw_data.draw(PARAMETERS),
                    draw_data.draw(st.floats(0.01, 1.0)),
                    draw_data.draw(st.sampled_from(list(c.Priority))),
                    depends_on=tuple(f"r{d}" for d in sorted(depends)),
                )
            )
        c.validate_recommendations(f"agent-{agent}", recommendations)
        answers.append(answer(f"agent-{agent}", *recommendations))
    return answers


@given(st.data())
def test_plans_are_acyclic_and_their_execution_always_ends(data):
    import asyncio

    from federation.execution import execute_plan

    result = plan(*_acyclic_answers(data), min_consensus=0.0)
    ids = {a.id for a in result.actions}
    assert c.find_cycle({a.id: a.depends_on for a in result.actions}) == []
    assert all(set(a.depends_on) <= ids - {a.id} for a in result.actions)

    class Owner:
        name = "owner"

        async def recommend(self, context):
            return []

        async def execute(self, action, *, plan_sequence):
            return c.ExecutionResult(True, "done")

    async def noop(*_args) -> None:
        return None

    owners = {name: Owner() for name in OWNERS.values()}

    async def run():
        # A bound, not a pause: a hang fails here instead of stalling the suite.
        async with asyncio.timeout(30):
            return await execute_plan(
                result,
                owners=owners,
                on_status=noop,
                max_concurrent=2,
                timeout=5.0,
                attempts=1,
                backoff=0.0,
            )

    final = asyncio.run(run())
    for action in result.actions:
        if action.status is c.ActionStatus.PENDING:
            assert final[action.id] in (c.ActionStatus.COMPLETED, c.ActionStatus.BLOCKED)
