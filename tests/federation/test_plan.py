"""Building a plan: consensus and confidence formulas, conflicts on a target and between a
de-risking plan and sector raises, stale recommendations, held critical actions, dependencies,
windows in market time, the size cap, and invariance to the order agents answer in."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.config import FederationConfig
from federation.plan import AgentAnswer, AgentReport, CallOutcome, build_plan, stance_of, target_of
from qtmesh.base import contract as c
from tests.helpers.federation import DAY, MARKET

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


def plan(*answers: AgentAnswer, min_consensus: float = 0.8, as_of: int = 0, **rules):
    """The plan of ``answers`` at market time ``as_of`` (0: none, so the plan's ``NOW``)."""
    return build_plan(
        answers,
        plan_id="gap-7",
        sequence=7,
        now=NOW,
        context=c.AgentContext(cycle_id="cycle", as_of_time=as_of),
        min_consensus_for_critical=min_consensus,
        owners=OWNERS,
        **rules,
    )


def failed(agent: str, outcome: CallOutcome = CallOutcome.UNAVAILABLE) -> AgentAnswer:
    return AgentAnswer(AgentReport(agent, outcome, 0.001, 2, 0, "no answer"))


def made_at(recommendation: c.Recommendation, as_of_time: int) -> c.Recommendation:
    return dataclasses.replace(recommendation, as_of_time=as_of_time)


def by_source(result, agent: str) -> c.Action:
    (found,) = [a for a in result.actions if agent in a.source_agents]
    return found


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
    # Agent confidences: ceo 0.8, meta-optimizer 0.6, risk (0.9 + 0.5) / 2 = 0.7; their mean.
    assert result.confidence == pytest.approx((0.8 + 0.6 + 0.7) / 3)
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
    assert (evolve.owner, tune.owner, halt.owner) == (
        "sesa",
        "meta",
        OWNERS[c.ActionType.HALT_TRADING],
    )
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
    assert result.confidence == pytest.approx(0.9 / 2)  # the silent agent is a zero vote
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
            # Named by the winner of its target, which may itself have lost only across targets
            # (coherence), and that one's winner runs.
            winner = a.action(action.superseded_by)
            if winner.status is c.ActionStatus.SUPERSEDED:
                assert "a plan does not raise a sector" in winner.status_detail
                assert a.action(winner.superseded_by).status is not c.ActionStatus.SUPERSEDED


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
        ({"priority_windows": {"URGENT": "60"}}, "priority_windows"),
        ({"priority_windows": {"HIGH": "0"}}, "priority_windows"),
        ({"action_timeouts": {"RUN_EVOLUTION": "ten"}}, "action_timeouts"),
        ({"action_timeouts": {"EVOLVE": "600"}}, "action_timeouts"),
        ({"max_recommendation_age_seconds": 0.0}, "max_recommendation_age_seconds"),
        ({"max_plan_actions": 0}, "max_plan_actions"),
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
    # Windows: critical now (first), high 1 min, medium 5 min, low when convenient.
    assert config.window_by_priority == {
        c.Priority.HIGH: 60 * 10**9,
        c.Priority.MEDIUM: 300 * 10**9,
    }
    assert config.max_plan_actions == 20
    assert config.max_recommendation_age == 86_400 * 10**9
    timeouts = config.timeout_by_type
    assert timeouts[c.ActionType.RUN_EVOLUTION] == 600.0
    assert {t for t, s in timeouts.items() if s != config.action_timeout_seconds} == {
        c.ActionType.RUN_EVOLUTION
    }
    assert FederationConfig(action_timeouts={"TUNE_LEARNING": "30"}).timeout_by_type == {
        **{t: 10.0 for t in c.ActionType},
        c.ActionType.TUNE_LEARNING: 30.0,
    }


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
                clock=lambda: (NOW, "market clock"),  # every window still open
            )

    final = asyncio.run(run())
    for action in result.actions:
        if action.status is c.ActionStatus.PENDING:
            assert final[action.id] in (c.ActionStatus.COMPLETED, c.ActionStatus.BLOCKED)


def test_windows_end_in_market_time_after_the_plans_as_of_time():
    recommendations = (
        rec("critical", c.HaltTrading(), 0.9, c.Priority.CRITICAL),
        rec("high", EVOLVE_ORBT, 0.8, c.Priority.HIGH),
        rec("medium", c.EnableStrategy(strategy_id="s1"), 0.7, c.Priority.MEDIUM),
        rec("low", c.TuneLearning(retrain_models=True), 0.6, c.Priority.LOW),
    )
    result = plan(answer("a", *recommendations), as_of=MARKET)
    by_priority = {a.priority: a.execute_by_time for a in result.actions}
    assert by_priority == {
        c.Priority.CRITICAL: 0,  # no window: it runs before the rest
        c.Priority.HIGH: MARKET + 60 * 10**9,
        c.Priority.MEDIUM: MARKET + 300 * 10**9,
        c.Priority.LOW: 0,  # when convenient
    }
    assert {a.update_time for a in result.actions} == {NOW}  # records stay in wall time
    windows = FederationConfig(priority_windows={"HIGH": "10", "LOW": "3600"}).window_by_priority
    result = plan(answer("a", *recommendations), as_of=MARKET, windows=windows)
    assert {a.priority: a.execute_by_time for a in result.actions} == {
        c.Priority.CRITICAL: 0,
        c.Priority.HIGH: MARKET + 10 * 10**9,
        c.Priority.MEDIUM: 0,
        c.Priority.LOW: MARKET + 3600 * 10**9,
    }


EVOLVE_ORBT = c.RunEvolution(symbols=("ORBT",))


def test_a_stale_recommendation_is_superseded_naming_its_age():
    # The world model's raise rests on a regime computed five market days before the plan.
    raise_crypto = rec("w", c.AdjustExposure(sector="Crypto", factor=1.3), 0.9, c.Priority.HIGH)
    cut_crypto = rec("r", c.AdjustExposure(sector="Crypto", factor=0.8), 0.4)
    result = plan(
        answer("world-model", made_at(raise_crypto, MARKET - 5 * DAY)),
        answer("risk", made_at(cut_crypto, MARKET - 60 * 10**9)),
        as_of=MARKET,
    )
    stale = by_source(result, "world-model")
    assert stale.status is c.ActionStatus.SUPERSEDED
    assert stale.superseded_by == ""
    assert stale.status_detail == (
        "stale: computed from data of 2027-01-10T08:00:00Z, 5d of market time before the "
        "plan's 2027-01-15T08:00:00Z (at most 1d allowed)"
    )
    assert stale.consensus == 0.0
    # It did not vote: the risk officer's less confident, lower priority cut stands alone.
    cut = by_source(result, "risk")
    assert cut.status is c.ActionStatus.PENDING
    assert cut.consensus == 1.0
    assert result.consensus_score == 1.0
    # An agent whose every recommendation is stale is a zero vote.
    assert result.confidence == pytest.approx((0.0 + 0.4) / 2)
    assert [a.id for a in result.actions] == [cut.id, stale.id]  # live first


def test_the_staleness_limit_is_inclusive_and_configurable():
    up = rec("w", c.AdjustExposure(sector="Crypto", factor=1.3), 0.9)
    for made, limit, fresh in (
        (MARKET - DAY, 86_400 * 10**9, True),  # exactly a day old: still fresh
        (MARKET - DAY - 1, 86_400 * 10**9, False),
        (MARKET - 5 * DAY, 6 * DAY, True),
        (0, DAY, True),  # unstamped: computed at the cycle's as_of_time
        (MARKET + 10**9, DAY, True),  # newer than the cycle (the clock moved on meanwhile)
    ):
        (action,) = plan(answer("w", made_at(up, made)), as_of=MARKET, max_age=limit).actions
        assert (action.status is c.ActionStatus.PENDING) is fresh, (made, limit)


def test_an_agents_stale_and_fresh_recommendations_on_one_target_are_apart():
    old = made_at(rec("old", c.AdjustExposure(sector="Tech", factor=1.4), 0.9), MARKET - 3 * DAY)
    new = made_at(rec("new", c.AdjustExposure(sector="Tech", factor=0.9), 0.5), MARKET)
    after = rec("after", EVOLVE_ORBT, 0.5, depends_on=("old",))
    result = plan(answer("world-model", old, new, after), as_of=MARKET)
    by_status = {a.status: a for a in result.actions if a.target == "sector/Tech"}
    assert by_status[c.ActionStatus.PENDING].parameters == new.parameters
    assert by_status[c.ActionStatus.SUPERSEDED].parameters == old.parameters
    # What depends on the stale one waits for an action that never runs (execution blocks it).
    evolve = next(a for a in result.actions if a.action_type is c.ActionType.RUN_EVOLUTION)
    assert evolve.depends_on == (by_status[c.ActionStatus.SUPERSEDED].id,)
    # The agent's confidence is that of its fresh recommendations only.
    assert result.confidence == pytest.approx((0.5 + 0.5) / 2)


CRYPTO_UP = c.AdjustExposure(sector="Crypto", factor=1.09)
DEFENSIVE = c.SwitchMode(mode=c.StrategicMode.DEFENSIVE)


def test_a_portfolio_cut_and_a_defensive_mode_beat_a_sector_raise():
    # The plan: a critical portfolio cut, the switch to DEFENSIVE, and a Crypto raise.
    result = plan(
        answer(
            "risk", rec("cut", c.AdjustExposure(sector="", factor=0.7), 0.9, c.Priority.CRITICAL)
        ),
        answer("ceo", rec("mode", DEFENSIVE, 0.8, c.Priority.HIGH)),
        answer("world-model", rec("up", CRYPTO_UP, 0.95, c.Priority.MEDIUM)),
        answer("meta-optimizer", rec("tech", c.AdjustExposure(sector="Tech", factor=0.9), 0.6)),
    )
    cut, mode, crypto = (by_source(result, a) for a in ("risk", "ceo", "world-model"))
    assert (cut.status, mode.status) == (c.ActionStatus.PENDING, c.ActionStatus.PENDING)
    assert crypto.status is c.ActionStatus.SUPERSEDED
    assert crypto.superseded_by == cut.id  # the strongest of the de-risking side
    assert crypto.status_detail.startswith(f"lost to {cut.id} (portfolio risk_off)")
    assert "a plan does not raise a sector" in crypto.status_detail
    # A sector cut goes with a defensive plan; the agreement on each target is untouched.
    assert by_source(result, "meta-optimizer").status is c.ActionStatus.PENDING
    assert crypto.consensus == 1.0
    assert [a.id for a in result.actions][-1] == crypto.id


@pytest.mark.parametrize(
    ("de_risk", "raise_", "winner"),
    [
        # priority first
        ((DEFENSIVE, 0.5, c.Priority.HIGH), (CRYPTO_UP, 0.9, c.Priority.MEDIUM), "ceo"),
        ((DEFENSIVE, 0.9, c.Priority.MEDIUM), (CRYPTO_UP, 0.5, c.Priority.HIGH), "world-model"),
        # then confidence
        ((DEFENSIVE, 0.5, c.Priority.MEDIUM), (CRYPTO_UP, 0.6, c.Priority.MEDIUM), "world-model"),
        # a tie goes to de-risking
        ((DEFENSIVE, 0.6, c.Priority.MEDIUM), (CRYPTO_UP, 0.6, c.Priority.MEDIUM), "ceo"),
        (
            (c.SwitchMode(mode=c.StrategicMode.CAPITAL_PRESERVATION), 0.6, c.Priority.LOW),
            (CRYPTO_UP, 0.6, c.Priority.LOW),
            "ceo",
        ),
        ((c.HaltTrading(), 0.6, c.Priority.HIGH), (CRYPTO_UP, 0.9, c.Priority.HIGH), "world-model"),
    ],
)
def test_de_risking_and_a_sector_raise_conflict_by_priority_then_confidence(
    de_risk, raise_, winner
):
    result = plan(
        answer("ceo", rec("d", de_risk[0], de_risk[1], de_risk[2])),
        answer("world-model", rec("r", raise_[0], raise_[1], raise_[2])),
    )
    loser = "ceo" if winner == "world-model" else "world-model"
    assert by_source(result, winner).status is c.ActionStatus.PENDING
    assert by_source(result, loser).status is c.ActionStatus.SUPERSEDED
    assert by_source(result, loser).superseded_by == by_source(result, winner).id


def test_the_confidence_behind_a_stance_decides_and_other_modes_do_not_conflict():
    # Two agents' 0.4 each for DEFENSIVE outweigh one 0.7 for the raise, at equal priority.
    result = plan(
        answer("ceo", rec("d", DEFENSIVE, 0.4)),
        answer("memory", rec("d", DEFENSIVE, 0.4)),
        answer("world-model", rec("r", CRYPTO_UP, 0.7)),
    )
    assert by_source(result, "world-model").status is c.ActionStatus.SUPERSEDED
    # NORMAL is not defensive, and a lost DEFENSIVE stance is not the plan's.
    for mode_votes in (
        [answer("ceo", rec("n", c.SwitchMode(mode=c.StrategicMode.NORMAL), 0.9, c.Priority.HIGH))],
        [
            answer("ceo", rec("d", DEFENSIVE, 0.3)),
            answer("risk", rec("e", c.SwitchMode(mode=c.StrategicMode.EXPANSION), 0.8)),
        ],
    ):
        result = plan(*mode_votes, answer("world-model", rec("r", CRYPTO_UP, 0.2, c.Priority.LOW)))
        assert by_source(result, "world-model").status is c.ActionStatus.PENDING


def test_a_plan_holds_at_most_max_actions_and_drops_the_lowest_ranked():
    priorities = [c.Priority.LOW, c.Priority.MEDIUM, c.Priority.HIGH]
    recommendations = [
        rec(f"r{i}", c.EnableStrategy(strategy_id=f"s{i}"), 0.3 + 0.02 * i, priorities[i % 3])
        for i in range(25)
    ]
    result = plan(answer("strategy", *recommendations))
    live = [a for a in result.actions if a.status is c.ActionStatus.PENDING]
    dropped = [a for a in result.actions if a.status is c.ActionStatus.SUPERSEDED]
    assert len(live) == 20
    assert [a.id for a in result.actions] == [f"a{i + 1}" for i in range(25)]
    # The five lowest by priority, then confidence: the LOW ones with i = 0, 3, 6, 9, 12.
    assert sorted(a.target for a in dropped) == sorted(f"strategy/s{i}" for i in (0, 3, 6, 9, 12))
    assert {a.status_detail.split(";")[0] for a in dropped} == {"plan holds at most 20 actions"}
    assert {a.superseded_by for a in dropped} == {""}
    assert min(a.priority for a in live) == c.Priority.LOW
    assert result.summary.startswith("20 actions to execute")
    assert len(plan(answer("strategy", *recommendations), max_actions=25).actions) == 25


def test_the_cap_keeps_the_dependencies_of_what_it_keeps():
    result = plan(
        answer(
            "meta",
            rec("tune", c.TuneLearning(retrain_models=True), 0.3, c.Priority.LOW),
            rec("evolve", EVOLVE_ORBT, 0.9, c.Priority.HIGH, depends_on=("tune",)),
            rec("enable", c.EnableStrategy(strategy_id="s1"), 0.8, c.Priority.MEDIUM),
        ),
        max_actions=2,
    )
    by_type = {a.action_type: a for a in result.actions}
    evolve, tune = by_type[c.ActionType.RUN_EVOLUTION], by_type[c.ActionType.TUNE_LEARNING]
    assert evolve.status is tune.status is c.ActionStatus.PENDING
    assert evolve.depends_on == (tune.id,)
    assert by_type[c.ActionType.ENABLE_STRATEGY].status is c.ActionStatus.SUPERSEDED


def test_resuming_trading_conflicts_with_halting_it():
    resume = c.ResumeTrading(scope="Tech")
    assert target_of(resume) == target_of(c.HaltTrading(scope="Tech")) == "sector/Tech"
    assert target_of(c.ResumeTrading()) == "portfolio"
    assert stance_of(resume) == "resume"
    result = plan(
        answer("risk", rec("resume", resume, 0.7, c.Priority.HIGH)),
        answer("ceo", rec("halt", c.HaltTrading(scope="Tech"), 0.9, c.Priority.MEDIUM)),
    )
    assert by_source(result, "risk").status is c.ActionStatus.PENDING
    assert by_source(result, "ceo").status is c.ActionStatus.SUPERSEDED


def test_dead_agents_lower_the_plans_confidence():
    # The fleet: with its three least confident agents dead, the confidence-weighted
    # mean of the rest went up (0.78 to 0.81); dead agents are zero votes now.
    confidences = [0.9, 0.88, 0.85, 0.83, 0.8, 0.6, 0.55, 0.5]
    answers = [
        answer(f"agent-{i}", rec("r", c.EnableStrategy(strategy_id=f"s{i}"), x))
        for i, x in enumerate(confidences)
    ]
    everyone = plan(*answers).confidence
    assert everyone == pytest.approx(sum(confidences) / 8)
    dead = [*answers[:5], *(failed(f"agent-{i}") for i in (5, 6, 7))]
    assert plan(*dead).confidence == pytest.approx(sum(confidences[:5]) / 8)
    assert plan(*dead).confidence < everyone
    # An agent that answered with nothing to recommend abstains: it is no vote at all.
    quiet = [*answers[:5], *(answer(f"agent-{i}") for i in (5, 6, 7))]
    assert plan(*quiet).confidence == pytest.approx(sum(confidences[:5]) / 5)


AGENT_ANSWER = st.lists(
    st.tuples(PARAMETERS, st.floats(0.0, 1.0), st.sampled_from(list(c.Priority)), st.booleans()),
    max_size=3,
)


@given(st.lists(AGENT_ANSWER, min_size=1, max_size=8), st.data())
def test_plan_confidence_never_rises_as_agents_drop_out(agents, data):
    answers = []
    for i, votes in enumerate(agents):
        # One recommendation per parameter kind (ids unique); some made from stale data.
        unique = {type(p).__name__ + str(p): (p, x, prio, old) for p, x, prio, old in votes}
        answers.append(
            answer(
                f"agent-{i}",
                *(
                    made_at(rec(f"r{j}", p, x, prio), MARKET - (2 * DAY if old else 0))
                    for j, (p, x, prio, old) in enumerate(unique.values())
                ),
            )
        )
    previous = plan(*answers, as_of=MARKET).confidence
    for i in data.draw(st.permutations(range(len(answers)))):
        outcome = data.draw(st.sampled_from([o for o in CallOutcome if o is not CallOutcome.OK]))
        answers[i] = failed(f"agent-{i}", outcome)
        now = plan(*answers, as_of=MARKET).confidence
        assert 0 <= now <= previous
        previous = now
    assert previous == 0.0
