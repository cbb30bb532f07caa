"""The Global Action Plan and how one is built from the agents' recommendations.

Every recommendation is put on a canonical *target* derived from its parameters (e.g. an
exposure change of Tech is on ``sector/Tech``, a mode switch on ``mode``) and given a *stance*
(``risk_on``/``risk_off`` for exposure, the mode's name for a mode switch, ``on``/``off`` for a
strategy, ``resume`` for resuming trading, ...). Agents agree when they take the same stance on
the same target.

The plan's market time, ``as_of``, is the cycle context's ``as_of_time`` (the plan's creation
time when the context has none). Every rule below that speaks of time means market time.

Staleness: a recommendation's ``as_of_time`` is the market time of the data it was computed from
(0: the cycle's). One whose data is more than ``max_age`` older than ``as_of`` does not vote: it
stays in the plan as a SUPERSEDED action of its own (one per agent and target) whose detail names
its age, and it counts for nothing in consensus, conflicts or confidence.

Conflicts: on a target with several stances, the stance whose best recommendation has the
highest priority wins, then the one with the larger total confidence, then the stance name
(alphabetical) as a deterministic tie-break. So a stance can win with less confidence than
another, when it has the higher priority.

Coherence across targets: a *de-risking* action (a portfolio exposure cut or halt: ``portfolio``
with stance ``risk_off``; or a switch to DEFENSIVE or CAPITAL_PRESERVATION on ``mode``) conflicts
with every *sector raise* (an exposure factor above 1 on ``sector/<name>``: stance ``risk_on``),
each the winner of its own target (a critical one held for lack of agreement included: it is
still where the plan leans). Ranked by the rule above (priority, then the total confidence
of the stance, then de-risking before raising, then the target's name), the strongest of them
decides: every action on the other side is SUPERSEDED naming it. So a sector raise runs beside a
portfolio cut or a defensive mode only if it outranks all of them, and then they are dropped.

Consensus, per target t with stances s and agent confidences c (one vote per agent and target,
its most confident recommendation there), is the share of the confidence held by the *winning*
stance w(t) (not necessarily the largest share)::

    agreement(t) = sum(c of agents with stance w(t)) / sum(c of all agents on t)
    consensus_score = sum_t W(t) * agreement(t) / sum_t W(t),   W(t) = sum(c on t)

(a target whose confidences sum to 0 has agreement 1). A losing stance's action records its own
share as its ``consensus``, a stale one 0 (it did not vote). Coherence does not change
agreements: it decides between targets.

Plan confidence is the mean confidence of the agents that were expected to vote, an agent that
did not answer counting as a zero-confidence vote::

    confidence = sum_{a in V} C(a) / (|V| + |F|)

with V the agents that answered with at least one recommendation, C(a) the mean confidence of
a's recommendations that are not stale (0 when all are), and F the agents that did not answer
(timed out, unavailable, failed). An agent that answered with no recommendation abstains and is
in neither. A plain mean because a confidence-weighted one gives a zero vote no weight, so a dead
agent could raise it; with this one an agent dropping out lowers the plan's confidence by its
C(a) / (|V| + |F|) and never raises it.

Every sum is taken with math.fsum (exactly rounded) or over targets in sorted order, so the
order agents answer in changes nothing, not even in the last bit.

The winning stance becomes one action (parameters of its most confident recommendation,
sources = every agent holding it); each losing stance stays in the plan as a SUPERSEDED action
naming the winner. A critical action whose target agreement is below
``min_consensus_for_critical`` is HELD with the reason.

Size: a plan takes at most ``max_actions`` actions (those neither superseded nor stale, pending or
held). Beyond that the lowest ranked are SUPERSEDED with the reason: lowest priority first, then
lowest confidence (of its leading recommendation: the order the plan lists its actions in), where
an action ranks as high as the highest ranked action that depends on it, directly or not, so the
cap never drops a dependency of an action it keeps.

Windows: an action whose priority has a window (``windows``, e.g. HIGH 1 min, MEDIUM 5 min) must
start by ``execute_by_time = as_of + window``, in market time; :mod:`federation.execution`
expires it otherwise. Critical actions have none: they run before the plan's other actions.

Actions are listed winners first (pending and held), by priority then confidence, then the
superseded ones in the same order; ids follow that order (``a1``, ``a2``, ...).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from qtmesh.base import contract as c
from qtmesh.base.bars import format_time

# The spec's windows, in nanoseconds after the plan's as_of_time; a priority not listed has none.
WINDOWS: Mapping[c.Priority, int] = {
    c.Priority.HIGH: 60 * 10**9,
    c.Priority.MEDIUM: 300 * 10**9,
}
MAX_AGE = 86_400 * 10**9  # a day of market time
MAX_ACTIONS = 20

# Stances on a target that de-risk the whole portfolio, and the one that raises a sector.
DE_RISKING = frozenset(
    {("portfolio", "risk_off"), ("mode", "defensive"), ("mode", "capital_preservation")}
)
RAISE = "risk_on"


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
    """A change of one action's status; ``sequence`` is its place in the event log.
    ``outcome`` is what the owner returned beside the detail when it completed the action."""

    sequence: int
    plan_sequence: int
    action_id: str
    action_type: c.ActionType
    priority: c.Priority
    status: c.ActionStatus
    detail: str
    attempts: int
    update_time: int
    outcome: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", MappingProxyType(dict(self.outcome)))


@dataclasses.dataclass(frozen=True)
class Event:
    """One entry of the plan history: a plan (as created) or a status update."""

    sequence: int
    plan: Plan | None = None
    update: StatusUpdate | None = None


def target_of(parameters: c.ActionParameters) -> str:
    """The canonical thing an action acts on; agents agree or conflict per target."""
    match parameters:
        case (
            c.HaltTrading(scope=scope)
            | c.ResumeTrading(scope=scope)
            | c.AdjustExposure(sector=scope)
        ):
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
        case c.ResumeTrading():
            return "resume"
        case c.AdjustExposure(factor=factor):
            return RAISE if factor > 1 else ("risk_off" if factor < 1 else "hold")
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


class _Why(enum.Enum):
    """Why a draft is superseded (the detail is written once ids are known)."""

    CONFLICT = 1
    COHERENCE = 2
    STALE = 3
    CAPPED = 4


@dataclasses.dataclass(eq=False)
class _Draft:
    """An action in the making: a stance on a target, or one agent's stale recommendation."""

    target: str
    stance: str
    votes: list[_Vote]
    agreement: float
    stale_agent: str = ""
    status: c.ActionStatus = c.ActionStatus.PENDING
    why: _Why | None = None
    by: _Draft | None = None  # the draft that superseded it
    detail: str = ""
    depends: list[_Draft] = dataclasses.field(default_factory=list)
    cycles: list[list[_Draft]] = dataclasses.field(default_factory=list)

    @functools.cached_property
    def lead(self) -> _Vote:
        return min(self.votes, key=_rank)

    @property
    def priority(self) -> c.Priority:
        return self.lead.recommendation.priority

    @functools.cached_property
    def weight(self) -> float:
        return math.fsum(v.recommendation.confidence for v in self.votes)

    @property
    def live(self) -> bool:
        return self.status is not c.ActionStatus.SUPERSEDED

    def order(self) -> tuple:
        """Place in the plan: live first, then by priority, confidence, target, stance."""
        lead = self.lead.recommendation
        return (
            not self.live,
            -lead.priority,
            -lead.confidence,
            self.target,
            self.stance,
            self.stale_agent,
        )

    def supersede(self, why: _Why, by: _Draft | None = None, detail: str = "") -> None:
        self.status, self.why, self.by, self.detail = c.ActionStatus.SUPERSEDED, why, by, detail


def build_plan(
    answers: Sequence[AgentAnswer],
    *,
    plan_id: str,
    sequence: int,
    now: int,
    context: c.AgentContext,
    min_consensus_for_critical: float,
    owners: Mapping[c.ActionType, str],
    windows: Mapping[c.Priority, int] = WINDOWS,
    max_age: int = MAX_AGE,
    max_actions: int = MAX_ACTIONS,
) -> Plan:
    """The plan of one cycle (see the module docstring for every rule). ``now`` (wall clock) is
    its creation time; ``windows`` and ``max_age`` are in nanoseconds of market time."""
    as_of = context.as_of_time or now
    votes = [
        _Vote(a.report.agent, r, target_of(r.parameters), stance_of(r.parameters))
        for a in answers
        for r in a.recommendations
    ]
    stale = {id(v) for v in votes if _is_stale(v.recommendation, as_of, max_age)}
    # One vote per agent and target: its most confident recommendation there (the stale ones
    # collapse among themselves, into actions of their own).
    best: dict[tuple[str, str, bool], _Vote] = {}
    for vote in votes:
        key = (vote.agent, vote.target, id(vote) in stale)
        if key not in best or _rank(vote) < _rank(best[key]):
            best[key] = vote
    by_target: dict[str, list[_Vote]] = defaultdict(list)
    for (_agent, _target, is_stale), vote in best.items():
        if not is_stale:
            by_target[vote.target].append(vote)

    drafts: list[_Draft] = []
    placed_draft: dict[tuple[str, str, bool], _Draft] = {}
    weights: list[float] = []
    agreements: list[float] = []
    winners: list[_Draft] = []
    for target in sorted(by_target):
        target_votes = by_target[target]
        stances: dict[str, list[_Vote]] = defaultdict(list)
        for vote in target_votes:
            stances[vote.stance].append(vote)
        total = math.fsum(v.recommendation.confidence for v in target_votes)
        ordered = sorted(stances.items(), key=lambda item: _stance_rank(item[0], item[1]))

        def share(stance_votes: list[_Vote], total: float = total) -> float:
            if total <= 0:
                return 1.0
            return math.fsum(v.recommendation.confidence for v in stance_votes) / total

        agreement = share(ordered[0][1])
        weights.append(total)
        agreements.append(total * agreement)
        winner = _Draft(target, ordered[0][0], ordered[0][1], agreement)
        winners.append(winner)
        for index, (stance, stance_votes) in enumerate(ordered):
            draft = (
                winner if index == 0 else _Draft(target, stance, stance_votes, share(stance_votes))
            )
            if index:
                draft.supersede(_Why.CONFLICT, winner)
            drafts.append(draft)
            for vote in stance_votes:
                placed_draft[(vote.agent, vote.target, False)] = draft
    for (agent, _target, is_stale), vote in sorted(best.items(), key=lambda kv: kv[0]):
        if is_stale:
            # It did not vote, so it holds no share of the target's confidence.
            draft = _Draft(vote.target, vote.stance, [vote], 0.0, stale_agent=agent)
            draft.supersede(_Why.STALE, detail=_stale_detail(vote, as_of, max_age))
            drafts.append(draft)
            placed_draft[(agent, vote.target, True)] = draft

    _make_coherent(winners)
    for draft in winners:
        if (
            draft.live
            and draft.priority is c.Priority.CRITICAL
            and draft.agreement < min_consensus_for_critical
        ):
            draft.status = c.ActionStatus.HELD
            draft.detail = (
                f"consensus {draft.agreement:.2f} on {draft.target} is below the "
                f"{min_consensus_for_critical:.2f} required for critical actions"
            )

    # Where each agent's recommendation ended up (an agent's other recommendations on a target
    # count as the one that represents it), to rewrite dependencies between drafts.
    placed = {
        (v.agent, v.recommendation.id): placed_draft[(v.agent, v.target, id(v) in stale)]
        for v in votes
    }
    for draft in drafts:
        found = {
            placed[(v.agent, dep)]
            for v in draft.votes
            for dep in v.recommendation.depends_on
            if (v.agent, dep) in placed
        }
        draft.depends = [d for d in found if d is not draft]
    drafts.sort(key=_Draft.order)
    _break_cycles(drafts)
    _cap(drafts, max_actions)

    drafts.sort(key=_Draft.order)
    ids = {id(d): f"a{i + 1}" for i, d in enumerate(drafts)}
    actions = [_action(d, ids, plan_id, owners, as_of, windows, now) for d in drafts]

    contributing = [
        _agent_confidence(a, as_of, max_age)
        for a in answers
        if a.report.outcome is not CallOutcome.OK or a.recommendations
    ]
    confidence = math.fsum(contributing) / len(contributing) if contributing else 0.0
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


def _is_stale(recommendation: c.Recommendation, as_of: int, max_age: int) -> bool:
    """Whether its data is more than ``max_age`` older than ``as_of`` (unstamped: fresh)."""
    made = recommendation.as_of_time
    return bool(made) and as_of - made > max_age


def _agent_confidence(answer: AgentAnswer, as_of: int, max_age: int) -> float:
    """C(a): the mean confidence of the agent's fresh recommendations; 0 for none (it did not
    answer, or everything it said was stale)."""
    fresh = [r.confidence for r in answer.recommendations if not _is_stale(r, as_of, max_age)]
    return math.fsum(fresh) / len(fresh) if fresh else 0.0


def _make_coherent(winners: Sequence[_Draft]) -> None:
    """Settles the conflict between de-risking the portfolio and raising a sector (module
    docstring): the strongest action decides, the other side is superseded naming it."""
    de_risking = [d for d in winners if d.live and (d.target, d.stance) in DE_RISKING]
    raising = [
        d for d in winners if d.live and d.target.startswith("sector/") and d.stance == RAISE
    ]
    if not de_risking or not raising:
        return

    def strength(draft: _Draft) -> tuple:
        return (-draft.priority, -draft.weight, draft in raising, draft.target)

    strongest = min((*de_risking, *raising), key=strength)
    for draft in raising if strongest in de_risking else de_risking:
        draft.supersede(_Why.COHERENCE, strongest)


def _break_cycles(drafts: Sequence[_Draft]) -> None:
    """Drops every dependency that would close a cycle.

    Each agent's dependencies are acyclic, but merged ones need not be (one agent orders X before
    Y, another Y before X; or a dependency remapped to the vote that represents its target), and
    a cycle would leave its actions waiting for each other forever. Edges are accepted in plan
    order (priority first), so the dependencies of the more important action are kept; the
    rings dropped are noted on the draft, for its detail.
    """
    names = {id(d): str(i) for i, d in enumerate(drafts)}
    by_name = {names[id(d)]: d for d in drafts}
    accepted: dict[str, tuple[str, ...]] = {names[id(d)]: () for d in drafts}
    for draft in drafts:
        me = names[id(draft)]
        kept_edges = []
        for dependency in sorted(draft.depends, key=_Draft.order):
            kept = accepted[me]
            accepted[me] = (*kept, names[id(dependency)])
            # The accepted graph was acyclic, so a cycle now is the one this edge closes.
            loop = c.find_cycle(accepted)[:-1]
            if loop:
                accepted[me] = kept
                start = loop.index(me)
                draft.cycles.append([by_name[n] for n in (*loop[start:], *loop[:start], me)])
            else:
                kept_edges.append(dependency)
        draft.depends = kept_edges


def _cap(drafts: Sequence[_Draft], max_actions: int) -> None:
    """Supersedes the lowest ranked live drafts beyond ``max_actions`` (module docstring)."""
    live = [d for d in drafts if d.live]
    if len(live) <= max_actions:
        return
    dependents: dict[int, list[_Draft]] = defaultdict(list)
    for draft in live:
        for dependency in draft.depends:
            if dependency.live:
                dependents[id(dependency)].append(draft)
    closure: dict[int, list[_Draft]] = {}

    def waiting_on(draft: _Draft) -> list[_Draft]:
        """Every live draft that depends on ``draft``, directly or not (the graph is acyclic)."""
        if id(draft) not in closure:
            found: dict[int, _Draft] = {}
            for dependent in dependents[id(draft)]:
                found[id(dependent)] = dependent
                found.update((id(d), d) for d in waiting_on(dependent))
            closure[id(draft)] = list(found.values())
        return closure[id(draft)]

    def rank(draft: _Draft) -> tuple:
        # A dependency ranks as high as what waits for it and, on a tie, before it (it has
        # strictly more dependents), so a kept action's dependencies are kept.
        others = waiting_on(draft)
        return (min(d.order() for d in (draft, *others)), -len(others), draft.order())

    ranked = sorted(live, key=rank)
    for draft in ranked[max_actions:]:
        draft.supersede(
            _Why.CAPPED,
            detail=f"plan holds at most {max_actions} actions; {max_actions} rank higher by "
            "priority, then confidence",
        )


def _action(
    draft: _Draft,
    ids: Mapping[int, str],
    plan_id: str,
    owners: Mapping[c.ActionType, str],
    as_of: int,
    windows: Mapping[c.Priority, int],
    now: int,
) -> c.Action:
    lead_vote = draft.lead
    lead = lead_vote.recommendation
    action_id = ids[id(draft)]
    detail = draft.detail
    superseded_by = ids[id(draft.by)] if draft.by is not None else ""
    if draft.why is _Why.CONFLICT:
        assert draft.by is not None
        detail = f"lost to {superseded_by} on {draft.target} ({draft.by.stance})"
    elif draft.why is _Why.COHERENCE:
        assert draft.by is not None
        detail = (
            f"lost to {superseded_by} ({draft.by.target} {draft.by.stance}), which ranks higher "
            "by priority, then confidence: a plan does not raise a sector while it cuts the "
            "portfolio or turns defensive"
        )
    if draft.cycles:
        rings = "; ".join(" -> ".join(ids[id(d)] for d in ring) for ring in draft.cycles)
        reason = f"dropped dependencies that would close a cycle: {rings}"
        detail = f"{detail}; {reason}" if detail else reason
    window = windows.get(lead.priority, 0)
    return c.Action(
        id=action_id,
        priority=lead.priority,
        target=draft.target,
        parameters=lead.parameters,
        confidence=_weighted_mean([v.recommendation.confidence for v in draft.votes]),
        rationale=lead.rationale,
        depends_on=tuple(sorted(ids[id(d)] for d in draft.depends)),
        status=draft.status,
        status_detail=detail,
        source_agents=tuple(sorted(v.agent for v in draft.votes)),
        superseded_by=superseded_by,
        owner=owners.get(lead.action_type, ""),
        idempotency_key=_idempotency_key(lead_vote, plan_id, action_id),
        execute_by_time=as_of + window if window else 0,
        update_time=now,
        consensus=draft.agreement,
    )


def _stale_detail(vote: _Vote, as_of: int, max_age: int) -> str:
    made = vote.recommendation.as_of_time
    return (
        f"stale: computed from data of {format_time(made)}, {duration(as_of - made)} of market "
        f"time before the plan's {format_time(as_of)} (at most {duration(max_age)} allowed)"
    )


def duration(nanos: int) -> str:
    """A span for messages: ``5d 2h``, ``3h 20m``, ``4m 10s``, ``12.5s``."""
    seconds = nanos / 1e9
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m {secs}s" if secs else f"{minutes}m"


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
    plan: Plan,
    action_id: str,
    status: c.ActionStatus,
    detail: str,
    attempts: int,
    now: int,
    outcome: Mapping[str, str] | None = None,
) -> Plan:
    """The plan with one action's status changed (and its outcome, when one is given)."""
    actions = tuple(
        dataclasses.replace(
            a,
            status=status,
            status_detail=detail,
            attempts=attempts,
            update_time=now,
            outcome=a.outcome if outcome is None else outcome,
        )
        if a.id == action_id
        else a
        for a in plan.actions
    )
    return dataclasses.replace(plan, actions=actions)
