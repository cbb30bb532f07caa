"""The lifecycle's rules on plain events (an executing action defers expiry, a failure waits for
another executing action of the same intent, superseded and held actions decide nothing,
proposals of one intent move together), the store's one transaction per event, and the plan
follower reconnecting until the federation answers and resuming after the last event."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from meta_optimizer.audit import ProposalDraft, ProposalType, SectorAudit
from meta_optimizer.config import MetaOptimizerConfig
from meta_optimizer.engine import MetaOptimizer
from meta_optimizer.follower import PlanFollower
from meta_optimizer.ledger import GENESIS, Cycle, CycleStatus, ProposalState, chain
from meta_optimizer.lifecycle import (
    Candidate,
    PlanAction,
    PlanEvent,
    Position,
    SkippedEvent,
    StatusEvent,
    data_time,
    deadline_of,
    decide,
    intent_key_of,
)
from meta_optimizer.store import LedgerStore, ProposalQuery, carriers, transitions
from qtmesh.base.config import ConfigError, Secret
from qtmesh.base.contract import ActionStatus
from qtmesh.base.errors import Unavailable
from tests.helpers.meta_optimizer import DAY, HOUR, Progress, day_end

S = ActionStatus
AS_OF = day_end("2026-02-11")
TTL = DAY


def candidate(pid: str = "p1", intent: str = "k1", **fields) -> Candidate:
    values = {"as_of_time": AS_OF, "deadline": AS_OF + TTL, **fields}
    return Candidate(proposal_id=pid, intent_key=intent, **values)


def plan_event(sequence: int, market_time: int, *actions: tuple[str, str, ActionStatus]):
    return PlanEvent(
        sequence=sequence,
        plan_id=f"gap-{sequence}",
        create_time=10 + sequence,
        market_time=market_time,
        actions=tuple(PlanAction(a, f"meta-optimizer/{k}", s, "") for a, k, s in actions),
    )


def status(sequence: int, plan: int, action: str, value: ActionStatus, detail: str = ""):
    return StatusEvent(
        sequence=sequence,
        plan_sequence=plan,
        action_id=action,
        status=value,
        detail=detail,
        update_time=100 + sequence,
    )


class Run:
    """Feeds events to ``decide`` the way the store does, keeping its state in memory."""

    def __init__(self, *candidates: Candidate) -> None:
        self.candidates = list(candidates)
        self.carriers: dict = {}
        self.position = Position()
        self.transitions: list = []

    def __call__(self, event):
        intents = {c.intent_key for c in self.candidates}
        step = decide(
            event,
            position=self.position,
            candidates=self.candidates,
            carriers=[c for c in self.carriers.values() if c.intent_key in intents],
            ttl=TTL,
        )
        self.position = step.position
        decided = {t.proposal_id for t in step.transitions}
        self.candidates = [c for c in self.candidates if c.proposal_id not in decided]
        for c in step.carriers:
            self.carriers[c.key] = c
        self.carriers = {
            k: c for k, c in self.carriers.items() if c.intent_key not in step.resolved
        }
        self.transitions += step.transitions
        return step.transitions

    def state(self, pid: str = "p1") -> ProposalState:
        found = [t.state for t in self.transitions if t.proposal_id == pid]
        return found[0] if found else ProposalState.PROPOSED


def test_a_completion_applies_every_proposal_of_the_intent_naming_its_plan_and_action():
    run = Run(candidate("p1"), candidate("p2"), candidate("p3", intent="other"))
    assert run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING))) == ()
    run(status(2, 1, "a1", S.EXECUTING))
    (one, two) = run(status(3, 1, "a1", S.COMPLETED, "Tech changed"))
    assert (one.proposal_id, two.proposal_id) == ("p1", "p2")
    assert one.state is ProposalState.APPLIED
    assert (one.plan_sequence, one.plan_id, one.action_id, one.event_sequence) == (
        1,
        "gap-1",
        "a1",
        3,
    )
    assert (one.time, one.market_time) == (103, AS_OF + HOUR)
    assert one.reason == "action a1 of plan gap-1 (#1) completed: Tech changed"
    assert run.state("p3") is ProposalState.PROPOSED
    assert run.carriers == {}
    assert run.position == Position(3, AS_OF + HOUR)


@pytest.mark.parametrize("outcome", [S.SUPERSEDED, S.HELD, S.EXPIRED])
def test_superseded_held_or_expired_actions_leave_it_proposed_for_a_later_plan(outcome):
    run = Run(candidate())
    run(
        plan_event(
            1, AS_OF + HOUR, ("a1", "k1", outcome if outcome is not S.EXPIRED else S.PENDING)
        )
    )
    if outcome is S.EXPIRED:
        run(status(2, 1, "a1", S.EXPIRED, "not started by ..."))
    assert run.transitions == []
    run(plan_event(5, AS_OF + 2 * HOUR, ("a3", "k1", S.PENDING)))
    (applied,) = run(status(6, 5, "a3", S.COMPLETED))
    assert (applied.state, applied.plan_sequence, applied.action_id) == (
        ProposalState.APPLIED,
        5,
        "a3",
    )


@pytest.mark.parametrize("outcome", [S.FAILED, S.BLOCKED])
def test_a_failed_or_blocked_action_rejects_it(outcome):
    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    (rejected,) = run(status(2, 1, "a1", outcome, "FAILED_PRECONDITION: no"))
    assert rejected.state is ProposalState.REJECTED
    assert (
        rejected.reason
        == f"action a1 of plan gap-1 (#1) {outcome.name.lower()}: FAILED_PRECONDITION: no"
    )
    # Final: a later completion of the same intent changes nothing.
    assert run(plan_event(3, AS_OF + HOUR, ("a1", "k1", S.PENDING))) == ()
    assert run(status(4, 3, "a1", S.COMPLETED)) == ()
    assert run.state() is ProposalState.REJECTED


def test_a_failure_waits_for_another_executing_action_of_the_intent():
    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(2, 1, "a1", S.EXECUTING))
    run(plan_event(3, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(4, 3, "a1", S.EXECUTING))
    assert run(status(5, 1, "a1", S.FAILED, "after 3 attempts: timed out")) == ()
    (applied,) = run(status(6, 3, "a1", S.COMPLETED, "already applied"))
    assert (applied.state, applied.plan_sequence) == (ProposalState.APPLIED, 3)

    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(2, 1, "a1", S.EXECUTING))
    run(plan_event(3, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(4, 3, "a1", S.EXECUTING))
    run(status(5, 1, "a1", S.FAILED, "first"))
    (rejected,) = run(status(6, 3, "a1", S.BLOCKED, "second"))
    assert (rejected.state, rejected.plan_sequence) == (ProposalState.REJECTED, 3)


def test_it_expires_at_the_first_plan_past_its_deadline_that_does_not_carry_it():
    run = Run(candidate(), candidate("p2", intent="k2", deadline=AS_OF + 2 * TTL))
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.SUPERSEDED)))
    assert run(plan_event(2, AS_OF + TTL - 1)) == ()
    (expired,) = run(plan_event(3, AS_OF + TTL))
    assert expired.state is ProposalState.EXPIRED
    assert (expired.proposal_id, expired.plan_sequence, expired.plan_id, expired.action_id) == (
        "p1",
        3,
        "gap-3",
        "",
    )
    assert expired.market_time == AS_OF + TTL
    assert "not applied within 1 market days" in expired.reason
    assert "last: action a1 of plan gap-1 (#1) superseded" in expired.reason
    assert run.state("p2") is ProposalState.PROPOSED
    # A plan without a market time expires nothing.
    assert run(plan_event(4, 0)) == ()


def test_an_executing_action_defers_expiry_by_at_most_one_more_ttl():
    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(2, 1, "a1", S.EXECUTING))
    assert run(plan_event(3, AS_OF + TTL)) == ()
    (applied,) = run(status(4, 1, "a1", S.COMPLETED))
    assert applied.state is ProposalState.APPLIED

    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(2, 1, "a1", S.EXECUTING))
    assert run(plan_event(3, AS_OF + TTL)) == ()
    (expired,) = run(status(4, 1, "a1", S.EXPIRED, "late"))
    assert (expired.state, expired.plan_sequence, expired.action_id) == (
        ProposalState.EXPIRED,
        1,
        "a1",
    )

    # An action the federation never finished (it crashed) holds it one TTL more, no longer.
    run = Run(candidate())
    run(plan_event(1, AS_OF + HOUR, ("a1", "k1", S.PENDING)))
    run(status(2, 1, "a1", S.EXECUTING))
    assert run(plan_event(3, AS_OF + 2 * TTL - 1)) == ()
    (expired,) = run(plan_event(4, AS_OF + 2 * TTL))
    assert "last: action a1 of plan gap-1 (#1) executing" in expired.reason


def test_a_plan_that_carries_it_pending_past_its_deadline_lets_its_action_decide():
    run = Run(candidate())
    assert run(plan_event(1, AS_OF + TTL, ("a1", "k1", S.PENDING))) == ()
    (applied,) = run(status(2, 1, "a1", S.COMPLETED))
    assert applied.state is ProposalState.APPLIED


def test_a_replaced_proposal_names_the_newer_cycle():
    run = Run(candidate(deadline=AS_OF + HOUR, replaced_by="cycle-000002"))
    (expired,) = run(plan_event(1, AS_OF + HOUR))
    assert expired.reason.startswith("replaced by cycle-000002")


def test_deadlines_and_data_times():
    assert deadline_of(AS_OF, TTL, None) == AS_OF + TTL
    assert deadline_of(AS_OF, TTL, AS_OF + HOUR) == AS_OF + HOUR
    assert deadline_of(AS_OF, TTL, AS_OF + 2 * TTL) == AS_OF + TTL
    # A newer cycle over older data replaces it at once, never before its own data.
    assert deadline_of(AS_OF, TTL, 0) == AS_OF
    assert data_time(()) == 0
    assert day_end("2026-02-11") - day_end("2026-02-10") == DAY


def test_the_store_records_each_event_once_with_the_position(tmp_path):
    store = LedgerStore(f"sqlite:///{tmp_path / 'metaopt.db'}")
    try:
        first = store.record_event(SkippedEvent(1))
        assert first.position == Position(1, 0)
        again = store.record_event(SkippedEvent(1))
        assert (again.transitions, again.position) == ((), Position(1, 0))
        store.record_event(plan_event(2, AS_OF))
        assert store.position() == Position(2, AS_OF)
        with store.engine.connect() as c:
            assert list(c.execute(carriers.select())) == []  # no proposal, nothing carried
    finally:
        store.close()
    reopened = LedgerStore(f"sqlite:///{tmp_path / 'metaopt.db'}")
    try:
        assert reopened.position() == Position(2, AS_OF)
    finally:
        reopened.close()


def audit(sector: str, last: str) -> SectorAudit:
    return SectorAudit(
        sector=sector,
        report_ids=(f"eod-{last}-{sector}",),
        first_date="2026-02-04",
        last_date=last,
        roi=0.01,
        benchmark_return=0.0,
        alpha=0.01,
        mean_daily_alpha=0.001,
        alpha_stddev=0.001,
        alpha_t_stat=3.0,
        p_value_positive=0.01,
        p_value_negative=0.99,
        volatility=0.2,
        max_drawdown=0.01,
        fleet_size=4,
    )


def append(store: LedgerStore, last: str) -> Cycle:
    """A cycle reinforcing Tech and cutting Energy on data up to ``last``."""
    drafts = [
        ProposalDraft(
            type=kind,
            action="act",
            target_sector=sector,
            counter_sector="",
            rationale=sector,
            confidence=0.99,
            p_value=0.01,
            report_ids=(f"eod-{last}-{sector}",),
            factor=factor,
            allocation=0.0,
        )
        for kind, sector, factor in (
            (ProposalType.REINFORCEMENT, "Tech", 1.2),
            (ProposalType.RISK_MITIGATION, "Energy", 0.5),
        )
    ]

    def build(sequence: int, first_index: int, previous_hash: str) -> Cycle:
        cycle_id = f"cycle-{sequence:06d}"
        made = chain(
            drafts,
            cycle_id=cycle_id,
            create_time=1,
            first_index=first_index,
            previous_hash=previous_hash,
        )
        return Cycle(
            id=cycle_id,
            sequence=sequence,
            start_time=1,
            duration_seconds=0.01,
            status=CycleStatus.SUCCEEDED,
            start_date="",
            end_date=last,
            sectors=(audit("Tech", last), audit("Energy", last)),
            dominant_sector="Tech",
            gap_test=None,
            proposals=tuple(made),
            reports_audited=2,
            reports_rejected=0,
            rejections=(),
            head_index=made[-1].ledger_index,
            head_hash=made[-1].entry_hash if made else GENESIS,
        )

    return store.append_cycle(build)


def test_the_store_keeps_transitions_beside_the_ledger_on_both_backends(database_url):
    store = LedgerStore(database_url, ttl_days=1.0)
    try:
        cycle = append(store, "2026-02-11")
        tech, energy = cycle.proposals
        assert (tech.as_of_time, tech.expire_time) == (AS_OF, AS_OF + DAY)
        keys = [f"meta-optimizer/{intent_key_of(p)}" for p in cycle.proposals]
        store.record_event(
            PlanEvent(
                sequence=1,
                plan_id="gap-1",
                create_time=5,
                market_time=AS_OF + HOUR,
                actions=(
                    PlanAction("a1", keys[0], S.PENDING, ""),
                    PlanAction("a2", keys[1], S.PENDING, ""),
                    PlanAction("a3", "risk/other", S.PENDING, ""),
                ),
            )
        )
        with store.engine.connect() as c:
            assert {r.action_id for r in c.execute(carriers.select())} == {"a1", "a2"}
        store.record_event(status(2, 1, "a1", S.COMPLETED, "done"))
        store.record_event(status(3, 1, "a2", S.FAILED, "refused"))
        assert store.record_event(status(3, 1, "a2", S.COMPLETED)).transitions == ()
        with store.engine.connect() as c:
            assert list(c.execute(carriers.select())) == []
            assert c.execute(sa.select(sa.func.count()).select_from(transitions)).scalar() == 2
        got = store.proposal(tech.id)
        assert (got.state, got.transition.plan_id, got.transition.action_id) == (
            ProposalState.APPLIED,
            "gap-1",
            "a1",
        )
        assert [p.state for p in store.last_cycle().proposals] == [
            ProposalState.APPLIED,
            ProposalState.REJECTED,
        ]
        newer = append(store, "2026-02-12")
        by_state = {
            state: [p.id for p in store.proposals(ProposalQuery(state=state), 10)]
            for state in ProposalState
        }
        assert by_state == {
            ProposalState.PROPOSED: [p.id for p in newer.proposals],
            ProposalState.APPLIED: [tech.id],
            ProposalState.EXPIRED: [],
            ProposalState.REJECTED: [energy.id],
        }
        assert store.active_count() == 2
        assert store.position() == Position(3, AS_OF + HOUR)
    finally:
        store.close()


class Stream:
    """The federation's plan stream, by script: each watch fails UNAVAILABLE while ``down`` is
    set, else yields the stored events after the position asked, then waits."""

    def __init__(self, events) -> None:
        self.events = list(events)
        self.down = 2
        self.asked: list[int] = []
        self.up = asyncio.Event()

    async def watch(self, *, after_sequence: int):
        self.asked.append(after_sequence)
        if self.down:
            self.down -= 1
            raise Unavailable("federation not serving yet")
        self.up.set()
        for event in self.events:
            if event.sequence > after_sequence:
                yield event
        await asyncio.Event().wait()


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def following(store: LedgerStore, stream: Stream, progress: Progress):
    optimizer = MetaOptimizer(store=store, source=None, keyring=None, settings=None, clock=int)
    follower = PlanFollower(
        optimizer=optimizer,
        stream=stream,
        initial_backoff=1.0,
        max_backoff=2.0,
        observe=progress,
        sleep=no_wait,
    )
    task = asyncio.ensure_future(follower.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_follower_reconnects_until_the_federation_answers_and_resumes_after_a_restart(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'metaopt.db'}"
    events = [SkippedEvent(1), plan_event(2, AS_OF), SkippedEvent(3)]
    stream, progress = Stream(events), Progress()
    store = LedgerStore(url)
    try:
        async with following(store, stream, progress):
            await progress.reach(3)
        assert stream.asked == [0, 0, 0]  # twice refused, then from the start
        assert progress.sequences == [1, 2, 3]
    finally:
        store.close()
    stream = Stream([*events, SkippedEvent(4)])
    stream.down = 1
    progress = Progress()
    store = LedgerStore(url)
    try:
        async with following(store, stream, progress):
            await progress.reach(4)
        assert stream.asked == [3, 3]
        assert progress.sequences == [4]
        assert store.position().after_sequence == 4
    finally:
        store.close()


def test_a_bad_proposal_ttl_is_refused_at_start_up(tmp_path):
    key = "k1:" + "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="
    for value in (0.0, -1.0, float("nan"), 400.0):
        with pytest.raises(ConfigError) as caught:
            MetaOptimizerConfig(data_dir=tmp_path, keyring=Secret(key), proposal_ttl_days=value)
        assert caught.value.setting == "proposal_ttl_days"
