"""What became of each proposal, learnt from the federation's plan stream.

Every proposal is PROPOSED when its cycle appends it, and moves once, to one of three final
states, naming the federation plan (sequence and id) and action that moved it:

- **APPLIED**: an action carrying the proposal's intent COMPLETED (also when its owner answered
  "already applied": the fleet holds the change).
- **REJECTED**: an action carrying it FAILED or was BLOCKED, the federation's own final outcomes
  other than success (it has retried timeouts and UNAVAILABLE before recording FAILED). While
  another action carrying the same intent is still EXECUTING, the verdict waits for that one.
- **EXPIRED**: it was not applied in time. Its deadline is the market time of the data it rests
  on plus the TTL (``proposal_ttl_days``), or, once a newer cycle is recorded, that cycle's data
  time if earlier (the agent offers only the newest cycle's proposals, so an older one can no
  longer be applied). It expires at the first plan whose market time has reached the deadline
  and that carries no pending action of it, or when its last executing action ends otherwise
  after the deadline. An executing action defers expiry by at most one more TTL (an action the
  federation never finished, because it crashed, does not keep a proposal alive forever).

SUPERSEDED, HELD and EXPIRED actions are not final for a proposal: the next plan may apply it.

An action *carries* a proposal's intent when its idempotency key is
``meta-optimizer/<intent key>``: the meta optimizer's own recommendation led the action, with
its parameters. An action another agent led (same stance, its parameters) applies that agent's
intent, not this proposal. Proposals of one intent (a second audit of the same reports proposes
the same again under new ids) move together.

Market time is the plan's (the federation stamps every plan with the market's replay clock), so
deadlines follow the replay at any speed, and a replayed history gives the same verdicts. Why
not a count of cycles: a burst of audits asked for over gRPC would expire proposals the market
never had a day to act on, and a stalled reporting service would keep stale ones alive.

This module is pure: :func:`decide` takes one event and the state it needs, and returns what to
record. The store applies it in one transaction with the follower's position.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import Iterable, Sequence

from meta_optimizer.audit import SectorAudit
from meta_optimizer.ledger import Proposal, ProposalState, Transition
from qtmesh.base.contract import ActionStatus

# The name the federation asks the meta optimizer by: the prefix of its actions' keys.
AGENT = "meta-optimizer"
KEY_PREFIX = f"{AGENT}/"
DAY_NANOS = 86_400 * 10**9
# Market days a proposal has to be applied after the data it rests on: the market day after its
# data. It is also the federation's default max_recommendation_age_seconds: past it the
# federation supersedes a recommendation as stale, so an older proposal could not be applied.
DEFAULT_TTL_DAYS = 1.0

FINAL_STATES = (ProposalState.APPLIED, ProposalState.EXPIRED, ProposalState.REJECTED)
_REJECTING = (ActionStatus.FAILED, ActionStatus.BLOCKED)


# -- the plan stream, as the meta optimizer reads it ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlanAction:
    id: str
    idempotency_key: str
    status: ActionStatus
    detail: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanEvent:
    """A plan as created; ``market_time`` is its context's as_of_time (Unix ns)."""

    sequence: int
    plan_id: str
    create_time: int
    market_time: int
    actions: tuple[PlanAction, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatusEvent:
    sequence: int
    plan_sequence: int
    action_id: str
    status: ActionStatus
    detail: str
    update_time: int


@dataclasses.dataclass(frozen=True)
class SkippedEvent:
    """An event this version cannot read (a status it does not know): only its place counts."""

    sequence: int


FederationEvent = PlanEvent | StatusEvent | SkippedEvent


# -- the follower's state -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Position:
    """The last federation event recorded, and the newest plan market time seen."""

    after_sequence: int = 0
    market_time: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Carrier:
    """An action of a plan that carries the intent of PROPOSED proposals, as last reported."""

    plan_sequence: int
    action_id: str
    plan_id: str
    intent_key: str
    market_time: int
    status: ActionStatus
    detail: str
    update_time: int

    @property
    def key(self) -> tuple[int, str]:
        return (self.plan_sequence, self.action_id)

    def describe(self) -> str:
        said = f": {self.detail}" if self.detail else ""
        return (
            f"action {self.action_id} of plan {self.plan_id} (#{self.plan_sequence}) "
            f"{self.status.name.lower()}{said}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """A PROPOSED proposal with its intent and deadline (market time, Unix ns)."""

    proposal_id: str
    intent_key: str
    as_of_time: int
    deadline: int
    # The newer cycle whose data time set the deadline; "" when the TTL did.
    replaced_by: str = ""


@dataclasses.dataclass(frozen=True)
class Step:
    """What one event changes: transitions to append, carriers to write, intents whose carriers
    are done with, and the position after it."""

    transitions: tuple[Transition, ...]
    carriers: tuple[Carrier, ...]
    resolved: frozenset[str]
    position: Position


# -- market times ---------------------------------------------------------------------------------


def day_end(date: str) -> int:
    """Unix ns of the end of an ISO trading date (00:00 UTC of the next day)."""
    day = datetime.date.fromisoformat(date) + datetime.timedelta(days=1)
    moment = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 10**9


def data_time(sectors: Iterable[SectorAudit], names: Iterable[str] | None = None) -> int:
    """The end of the newest trading day audited (of the sectors ``names``, if given); 0 if
    none."""
    wanted = None if names is None else {n for n in names if n}
    ends = [
        day_end(a.last_date)
        for a in sectors
        if a.last_date and (wanted is None or a.sector in wanted)
    ]
    return max(ends, default=0)


def proposal_data_time(p: Proposal, sectors: Sequence[SectorAudit]) -> int:
    return data_time(sectors, (p.target_sector, p.counter_sector))


def deadline_of(as_of_time: int, ttl: int, replaced_at: int | None) -> int:
    own = as_of_time + ttl
    if replaced_at is None:
        return own
    return min(own, max(as_of_time, replaced_at))


def intent_key_of(p: Proposal) -> str:
    """What the proposal asks, on which evidence: its type, sectors and the reports it rests on.

    The latest cycle's proposals are offered in every federation cycle until they are applied,
    rejected or expire, and a second cycle over the same reports proposes the same again under
    new ids; one key for one intent on one body of evidence makes the fleet apply it once. New
    reports make a new intent (a sector still losing a day later is cut again)."""
    evidence = hashlib.sha256("\n".join(sorted(p.report_ids)).encode()).hexdigest()[:16]
    sectors = f"{p.target_sector}-{p.counter_sector}" if p.counter_sector else p.target_sector
    return f"{p.type.name.lower()}/{sectors}/{evidence}"


def intent_of_key(idempotency_key: str) -> str:
    """The intent key of an action the meta optimizer's recommendation led; "" otherwise."""
    if idempotency_key.startswith(KEY_PREFIX):
        return idempotency_key[len(KEY_PREFIX) :]
    return ""


def _iso(nanos: int) -> str:
    moment = datetime.datetime.fromtimestamp(nanos / 1e9, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# -- the rules ------------------------------------------------------------------------------------


def decide(
    event: FederationEvent,
    *,
    position: Position,
    candidates: Sequence[Candidate],
    carriers: Sequence[Carrier],
    ttl: int,
) -> Step:
    """What ``event`` does to the ``candidates`` (every PROPOSED proposal), given the unresolved
    ``carriers`` of their intents and the TTL (ns). The rules are the module docstring's."""
    return _Decision(position, candidates, carriers, ttl).run(event)


class _Decision:
    def __init__(
        self,
        position: Position,
        candidates: Sequence[Candidate],
        carriers: Sequence[Carrier],
        ttl: int,
    ) -> None:
        self.position = position
        self.ttl = ttl
        self.by_intent: dict[str, list[Candidate]] = {}
        for c in candidates:
            self.by_intent.setdefault(c.intent_key, []).append(c)
        self.carriers = {c.key: c for c in carriers}
        self.changed: dict[tuple[int, str], Carrier] = {}
        self.transitions: list[Transition] = []
        self.decided: set[str] = set()
        self.resolved: set[str] = set()
        self.event_sequence = 0

    def run(self, event: FederationEvent) -> Step:
        self.event_sequence = event.sequence
        if isinstance(event, PlanEvent):
            self._plan(event)
        elif isinstance(event, StatusEvent):
            self._status(event)
        changed = tuple(c for key, c in self.changed.items() if c.intent_key not in self.resolved)
        return Step(
            tuple(self.transitions),
            changed,
            frozenset(self.resolved),
            dataclasses.replace(self.position, after_sequence=event.sequence),
        )

    # -- events -----------------------------------------------------------------------------------

    def _plan(self, plan: PlanEvent) -> None:
        self.position = dataclasses.replace(
            self.position, market_time=max(self.position.market_time, plan.market_time)
        )
        carried: dict[str, Carrier] = {}
        for action in plan.actions:
            intent = intent_of_key(action.idempotency_key)
            if intent not in self.by_intent:
                continue
            carrier = Carrier(
                plan_sequence=plan.sequence,
                action_id=action.id,
                plan_id=plan.plan_id,
                intent_key=intent,
                market_time=plan.market_time,
                status=action.status,
                detail=action.detail,
                update_time=plan.create_time,
            )
            self._write(carrier)
            carried[intent] = carrier
        for carrier in carried.values():
            if carrier.status is not ActionStatus.PENDING:
                self._verdict(carrier, plan.create_time)
        for intent in list(self.by_intent):
            here = carried.get(intent)
            live = here is not None and here.status is ActionStatus.PENDING
            self._expire(
                intent,
                market_time=plan.market_time,
                at=here,
                plan=(plan.sequence, plan.plan_id),
                time=plan.create_time,
                live_here=live,
            )

    def _status(self, update: StatusEvent) -> None:
        known = self.carriers.get((update.plan_sequence, update.action_id))
        if known is None or known.intent_key not in self.by_intent:
            return
        carrier = dataclasses.replace(
            known, status=update.status, detail=update.detail, update_time=update.update_time
        )
        self._write(carrier)
        if carrier.status in (ActionStatus.PENDING, ActionStatus.EXECUTING):
            return
        if not self._verdict(carrier, update.update_time):
            self._expire(
                carrier.intent_key,
                market_time=self.position.market_time,
                at=carrier,
                plan=(carrier.plan_sequence, carrier.plan_id),
                time=update.update_time,
                live_here=False,
            )

    # -- verdicts ---------------------------------------------------------------------------------

    def _write(self, carrier: Carrier) -> None:
        self.carriers[carrier.key] = carrier
        self.changed[carrier.key] = carrier

    def _of(self, intent: str) -> list[Carrier]:
        return [c for c in self.carriers.values() if c.intent_key == intent]

    def _verdict(self, carrier: Carrier, time: int) -> bool:
        """Applies or rejects the intent of ``carrier``, which just took its status; whether a
        verdict was reached."""
        intent = carrier.intent_key
        if carrier.status is ActionStatus.COMPLETED:
            self._conclude(intent, ProposalState.APPLIED, carrier, carrier.describe(), time)
            return True
        others = [c for c in self._of(intent) if c.key != carrier.key]
        if any(c.status is ActionStatus.EXECUTING for c in others):
            return False  # another action of the intent may still apply it
        failed = [c for c in (carrier, *others) if c.status in _REJECTING]
        if not failed:
            return False
        last = carrier if carrier.status in _REJECTING else max(failed, key=lambda c: c.key)
        self._conclude(intent, ProposalState.REJECTED, last, last.describe(), time)
        return True

    def _expire(
        self,
        intent: str,
        *,
        market_time: int,
        at: Carrier | None,
        plan: tuple[int, str],
        time: int,
        live_here: bool,
    ) -> None:
        if intent in self.resolved or market_time <= 0:
            return
        executing = live_here or any(c.status is ActionStatus.EXECUTING for c in self._of(intent))
        for candidate in self.by_intent.get(intent, ()):
            if candidate.proposal_id in self.decided or market_time < candidate.deadline:
                continue
            if executing and market_time < candidate.deadline + self.ttl:
                continue
            self._record(
                candidate,
                ProposalState.EXPIRED,
                plan=plan,
                action_id=at.action_id if at is not None else "",
                reason=self._expiry_reason(candidate, market_time),
                time=time,
                market_time=market_time,
            )
        if all(c.proposal_id in self.decided for c in self.by_intent.get(intent, ())):
            self.resolved.add(intent)

    def _expiry_reason(self, candidate: Candidate, market_time: int) -> str:
        if candidate.replaced_by:
            reason = (
                f"replaced by {candidate.replaced_by}, whose data reaches "
                f"{_iso(candidate.deadline)}, before it was applied"
            )
        else:
            days = self.ttl / DAY_NANOS
            reason = (
                f"not applied within {days:g} market days of its data (to "
                f"{_iso(candidate.as_of_time)}); market time {_iso(market_time)}"
            )
        tried = self._of(candidate.intent_key)
        if tried:
            last = max(tried, key=lambda c: c.key)
            reason += f"; last: {last.describe()}"
        return reason

    def _conclude(
        self, intent: str, state: ProposalState, carrier: Carrier, reason: str, time: int
    ) -> None:
        for candidate in self.by_intent.get(intent, ()):
            if candidate.proposal_id not in self.decided:
                self._record(
                    candidate,
                    state,
                    plan=(carrier.plan_sequence, carrier.plan_id),
                    action_id=carrier.action_id,
                    reason=reason,
                    time=time,
                    market_time=carrier.market_time,
                )
        self.resolved.add(intent)

    def _record(
        self,
        candidate: Candidate,
        state: ProposalState,
        *,
        plan: tuple[int, str],
        action_id: str,
        reason: str,
        time: int,
        market_time: int,
    ) -> None:
        self.decided.add(candidate.proposal_id)
        self.transitions.append(
            Transition(
                proposal_id=candidate.proposal_id,
                state=state,
                plan_sequence=plan[0],
                plan_id=plan[1],
                action_id=action_id,
                event_sequence=self.event_sequence,
                reason=reason[:2000],
                time=time,
                market_time=market_time,
            )
        )
