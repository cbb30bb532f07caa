"""The Global Action Plan and how one is built from the agents' recommendations.

Every recommendation is put on a canonical *target* derived from its parameters (e.g. an
exposure change of Tech is on ``sector/Tech``, a mode switch on ``mode``) and given a *stance*
(``risk_on``/``risk_off`` for exposure, the mode's name for a mode switch, ``on``/``off`` for a
strategy, ...). Agents agree when they take the same stance on the same target.

Conflicts: on a target with several stances, the stance whose best recommendation has the
highest priority wins, then the one with the larger total confidence, then the stance name
(alphabetical) as a deterministic tie-break. So a stance can win with less confidence than
another, when it has the higher priority.

Consensus, per target t with stances s and agent confidences c (one vote per agent and target,
its most confident recommendation there), is the share of the confidence held by the *winning*
stance w(t) (not necessarily the largest share)::

    agreement(t) = sum(c of agents with stance w(t)) / sum(c of all agents on t)
    consensus_score = sum_t W(t) * agreement(t) / sum_t W(t),   W(t) = sum(c on t)

(a target whose confidences sum to 0 has agreement 1). A losing stance's action records its own
share as its ``consensus``.

Plan confidence, over the agents that contributed at least one recommendation, with an agent's
confidence C(a) the mean confidence of its recommendations::

    confidence = sum_a C(a)^2 / sum_a C(a)      (the confidence-weighted mean of C)

Every sum is taken with math.fsum (exactly rounded) or over targets in sorted order, so the
order agents answer in changes nothing, not even in the last bit.

The winning stance becomes one action (parameters
of its most confident recommendation, sources = every agent holding it); each losing stance
stays in the plan as a SUPERSEDED action naming the winner. A critical action whose target
agreement is below ``min_consensus_for_critical`` is HELD with the reason.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from qtmesh.base import contract as c

# Scheduling windows by priority, in nanoseconds after the plan (0: no deadline).
WINDOWS = {
    c.Priority.CRITICAL: 0,
    c.Priority.HIGH: 60 * 10**9,
    c.Priority.MEDIUM: 300 * 10**9,
    c.Priority.LOW: 0,
}


class CallOutcome(enum.Enum):
    OK = 1
    TIMED_OUT = 2
    UNAVAILABLE = 3
    ERROR = 4


@dataclasses.dataclass(frozen=True)
class AgentReport:
    """How one agent call of a cycle went."""

    agent: str
    outcome: CallOutcome
    latency_seconds: float
    attempts: int = 1
    recommendation_count: int = 0
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class AgentAnswer:
    """An agent's report plus what it recommended (nothing unless the outcome is OK)."""

    report: AgentReport
    recommendations: tuple[c.Recommendation, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    id: str
    sequence: int
    create_time: int
    confidence: float
    consensus_score: float
    actions: tuple[c.Action, ...]
    agents: tuple[AgentReport, ...]
    context: c.AgentContext
    summary: str

    def action(self, action_id: str) -> c.Action:
        for action in self.actions:
            if action.id == action_id:
                return action
        raise KeyError(action_id)

    @property
    def max_priority(self) -> int:
        return max((a.priority for a in self.actions), default=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusUpdate:
    """A change of one action's status; ``sequence`` is its place in the event log."""

    sequence: int
    plan_sequence: int
    action_id: str
    action_type: c.ActionType
    priority: c.Priority
    status: c.ActionStatus
    detail: str
    attempts: int
    update_time: int


@dataclasses.dataclass(frozen=True)
class Event:
    """One entry of the plan history: a plan (as created) or a status update."""

    sequence: int
    plan: Plan | None = None
    update: StatusUpdate | None = None


def target_of(parameters: c.ActionParameters) -> str:
    """The canonical thing an action acts on; agents agree or conflict per target."""
    match parameters:
        case c.HaltTrading(scope=scope) | c.AdjustExposure(sector=scope):
            return "portfolio" if scope in ("", "portfolio") else f"sector/{scope}"
        case c.SwitchMode():
            return "mode"
        case c.EnableStrategy(strategy_id=sid) | c.DisableStrategy(strategy_id=sid):
            return f"strategy/{sid}"
        case c.PromoteStrategy(strategy_id=sid):
            return f"strategy/{sid}"
        case c.ReweightStrategies():
            return "strategies"
        case c.RunEvolution():
            return "sesa/evolution"
        case c.TuneLearning(parameters=tuned, retrain_models=retrain):
            # Per parameter set: retraining and an exploration change are separate matters, and
            # one agent's votes on a target collapse to one.
            names = [*sorted(tuned), *(["retrain_models"] if retrain else [])]
            return "meta/" + (",".join(names) or "learning")
        case c.AdjustRiskLimits():
            return "risk/limits"
        case c.SpawnArbMission(long_sector=long, short_sector=short):
            return f"arb/{long}/{short}"
    raise TypeError(f"not action parameters: {parameters!r}")


def stance_of(parameters: c.ActionParameters) -> str:
    """The position an action takes on its target; different stances on a target conflict."""
    match parameters:
        case c.HaltTrading():
            return "risk_off"
        case c.AdjustExposure(factor=factor):
            return "risk_on" if factor > 1 else ("risk_off" if factor < 1 else "hold")
        case c.SwitchMode(mode=mode):
            return mode.name.lower()
        case c.EnableStrategy():
            return "on"
        case c.PromoteStrategy():
            return "promote"
        case c.DisableStrategy():
            return "off"
    return parameters.action_type.name.lower()


@dataclasses.dataclass(frozen=True)
class _Vote:
    agent: str
    recommendation: c.Recommendation
    target: str
    stance: str


def build_plan(
    answers: Sequence[AgentAnswer],
    *,
    plan_id: str,
    sequence: int,
    now: int,
    context: c.AgentContext,
    min_consensus_for_critical: float,
    owners: Mapping[c.ActionType, str],
) -> Plan:
    """The plan of one cycle (see the module docstring for every rule)."""
    votes = [
        _Vote(a.report.agent, r, target_of(r.parameters), stance_of(r.parameters))
        for a in answers
        for r in a.recommendations
    ]
    # One vote per agent and target: its most confident recommendation there.
    best: dict[tuple[str, str], _Vote] = {}
    for vote in votes:
        key = (vote.agent, vote.target)
        if key not in best or _rank(vote) < _rank(best[key]):
            best[key] = vote
    by_target: dict[str, list[_Vote]] = defaultdict(list)
    for vote in best.values():
        by_target[vote.target].append(vote)

    drafts: list[dict] = []
    weights: list[float] = []
    agreements: list[float] = []
    for target in sorted(by_target):
        target_votes = by_target[target]
        stances: dict[str, list[_Vote]] = defaultdict(list)
        for vote in target_votes:
            stances[vote.stance].append(vote)
        total = math.fsum(v.recommendation.confidence for v in target_votes)
        ordered = sorted(stances.items(), key=lambda item: _stance_rank(item[0], item[1]))
        winner_votes = ordered[0][1]
        agreement = (
            math.fsum(v.recommendation.confidence for v in winner_votes) / total
            if total > 0
            else 1.0
        )
        weights.append(total)
        agreements.append(total * agreement)
        for index, (stance, stance_votes) in enumerate(ordered):
            drafts.append(
                {
                    "votes": stance_votes,
                    "target": target,
                    "stance": stance,
                    "winner": index == 0,
                    "agreement": agreement
                    if index == 0
                    else math.fsum(v.recommendation.confidence for v in stance_votes) / total,
                    "winner_key": (target, ordered[0][0]),
                }
            )

    drafts.sort(key=_draft_order)
    ids = {(d["target"], d["stance"]): f"a{i + 1}" for i, d in enumerate(drafts)}
    # Where each agent's recommendation ended up, to rewrite its dependencies as action ids.
    placed: dict[tuple[str, str], str] = {}
    for vote in votes:
        # An agent's other recommendations on a target count as the one that represents it.
        kept = best[(vote.agent, vote.target)]
        placed[(vote.agent, vote.recommendation.id)] = ids[(kept.target, kept.stance)]
    actions = []
    for d in drafts:
        lead_vote = min(d["votes"], key=_rank)
        lead = lead_vote.recommendation
        action_id = ids[(d["target"], d["stance"])]
        depends = sorted(
            {
                placed[(v.agent, dep)]
                for v in d["votes"]
                for dep in v.recommendation.depends_on
                if (v.agent, dep) in placed and placed[(v.agent, dep)] != action_id
            }
        )
        status, detail, superseded_by = c.ActionStatus.PENDING, "", ""
        if not d["winner"]:
            status = c.ActionStatus.SUPERSEDED
            superseded_by = ids[d["winner_key"]]
            detail = f"lost to {superseded_by} on {d['target']} ({d['winner_key'][1]})"
        elif lead.priority is c.Priority.CRITICAL and d["agreement"] < min_consensus_for_critical:
            status = c.ActionStatus.HELD
            detail = (
                f"consensus {d['agreement']:.2f} on {d['target']} is below the "
                f"{min_consensus_for_critical:.2f} required for critical actions"
            )
        confidences = [v.recommendation.confidence for v in d["votes"]]
        actions.append(
            c.Action(
                id=action_id,
                priority=lead.priority,
                target=d["target"],
                parameters=lead.parameters,
                confidence=_weighted_mean(confidences),
                rationale=lead.rationale,
                depends_on=tuple(depends),
                status=status,
                status_detail=detail,
                source_agents=tuple(sorted(v.agent for v in d["votes"])),
                superseded_by=superseded_by,
                owner=owners.get(lead.action_type, ""),
                idempotency_key=_idempotency_key(lead_vote, plan_id, action_id),
                execute_by_time=now + WINDOWS[lead.priority] if WINDOWS[lead.priority] else 0,
                update_time=now,
                consensus=d["agreement"],
            )
        )

    actions = _break_cycles(actions)

    contributing = [
        math.fsum(r.confidence for r in a.recommendations) / len(a.recommendations)
        for a in answers
        if a.recommendations
    ]
    confidence = _weighted_mean(contributing)
    weight = math.fsum(weights)
    consensus = math.fsum(agreements) / weight if weight > 0 else 0.0
    reports = tuple(sorted((a.report for a in answers), key=lambda r: r.agent))
    return Plan(
        id=plan_id,
        sequence=sequence,
        create_time=now,
        confidence=confidence,
        consensus_score=consensus,
        actions=tuple(actions),
        agents=reports,
        context=context,
        summary=_summary(actions, reports, consensus, confidence),
    )


def _break_cycles(actions: list[c.Action]) -> list[c.Action]:
    """The actions with every dependency that would close a cycle dropped.

    Each agent's dependencies are acyclic, but merged ones need not be (one agent orders X before
    Y, another Y before X; or a dependency remapped to the vote that represents its target), and
    a cycle would leave its actions waiting for each other forever. Edges are accepted in plan
    order (priority first), so the dependencies of the more important action are kept.
    """
    accepted: dict[str, tuple[str, ...]] = {a.id: () for a in actions}
    result = []
    for action in actions:
        dropped = []
        for dependency in action.depends_on:
            kept = accepted[action.id]
            accepted[action.id] = (*kept, dependency)
            # The accepted graph was acyclic, so a cycle now is the one this edge closes.
            loop = c.find_cycle(accepted)[:-1]
            if loop:
                accepted[action.id] = kept
                start = loop.index(action.id)
                ring = [*loop[start:], *loop[:start], action.id]
                dropped.append(" -> ".join(ring))
        if dropped:
            reason = "dropped dependencies that would close a cycle: " + "; ".join(dropped)
            detail = f"{action.status_detail}; {reason}" if action.status_detail else reason
            action = dataclasses.replace(
                action, depends_on=tuple(accepted[action.id]), status_detail=detail
            )
        result.append(action)
    return result


def _idempotency_key(lead: _Vote, plan_id: str, action_id: str) -> str:
    # An intent offered again in a later cycle keeps its key, so its owner applies it once.
    if lead.recommendation.intent_key:
        return f"{lead.agent}/{lead.recommendation.intent_key}"
    return f"{plan_id}/{action_id}"


def _rank(vote: _Vote) -> tuple:
    r = vote.recommendation
    return (-r.priority, -r.confidence, vote.agent, r.id)


def _stance_rank(stance: str, votes: list[_Vote]) -> tuple:
    top = max(v.recommendation.priority for v in votes)
    weight = math.fsum(v.recommendation.confidence for v in votes)
    return (-top, -weight, stance)


def _draft_order(draft: dict) -> tuple:
    lead = min(draft["votes"], key=_rank).recommendation
    return (not draft["winner"], -lead.priority, -lead.confidence, draft["target"], draft["stance"])


def _weighted_mean(values: Sequence[float]) -> float:
    # fsum is exactly rounded, so the result does not depend on the order of the values.
    total = math.fsum(values)
    return math.fsum(v * v for v in values) / total if total > 0 else 0.0


def _summary(
    actions: Sequence[c.Action], reports: Sequence[AgentReport], consensus: float, confidence: float
) -> str:
    ok = sum(r.outcome is CallOutcome.OK for r in reports)
    live = [a for a in actions if a.status is c.ActionStatus.PENDING]
    held = sum(a.status is c.ActionStatus.HELD for a in actions)
    superseded = sum(a.status is c.ActionStatus.SUPERSEDED for a in actions)
    return (
        f"{len(live)} actions to execute from {ok}/{len(reports)} agents "
        f"(consensus {consensus:.2f}, confidence {confidence:.2f}); "
        f"{held} held, {superseded} superseded"
    )


def with_status(
    plan: Plan, action_id: str, status: c.ActionStatus, detail: str, attempts: int, now: int
) -> Plan:
    """The plan with one action's status changed."""
    actions = tuple(
        dataclasses.replace(
            a, status=status, status_detail=detail, attempts=attempts, update_time=now
        )
        if a.id == action_id
        else a
        for a in plan.actions
    )
    return dataclasses.replace(plan, actions=actions)
