"""The proposals' lifecycle over real servers: alpha-reporting, the meta optimizer and a federation
on port 0 whose market clock the test sets. A proposal is applied when an action carrying it
completes, rejected when one is refused, stays proposed when superseded and is applied by a later
plan, expires past its deadline or once a newer cycle replaces it; ListProposals filters by state;
the plan follower resumes after a restart without recording an event twice; and the ledger's
stream carries each transition after its proposal, also when resumed after a restart."""

from __future__ import annotations

from meta_optimizer.ledger import EventKind, ProposalState
from meta_optimizer.lifecycle import intent_key_of
from qtmesh.base import contract as c
from qtmesh.runtime.agent_service import AgentClient
from tests.helpers.federation import FakeAgent, rec
from tests.helpers.meta_optimizer import (
    DATA_END,
    DAY,
    Progress,
    Watcher,
    optimizer,
    plan,
    world,
)

PROPOSED, APPLIED, EXPIRED, REJECTED = (
    ProposalState.PROPOSED,
    ProposalState.APPLIED,
    ProposalState.EXPIRED,
    ProposalState.REJECTED,
)


def carrying(made, proposal) -> c.Action:
    """The plan's action whose key is the proposal's intent."""
    (action,) = [
        a for a in made.actions if a.idempotency_key == f"meta-optimizer/{intent_key_of(proposal)}"
    ]
    return action


async def test_a_completed_action_applies_its_proposal_and_a_refused_one_rejects_it(tmp_path):
    progress = Progress()
    async with (
        world(tmp_path, refuse=("Energy",)) as w,
        optimizer(w, tmp_path, progress) as (
            client,
            running,
        ),
    ):
        cycle = await client.run_cycle()
        reinforce, mitigate, arb = cycle.proposals
        assert {p.state for p in cycle.proposals} == {PROPOSED}
        assert {p.transition for p in cycle.proposals} == {None}
        assert (reinforce.as_of_time, reinforce.expire_time) == (DATA_END, DATA_END + DAY)
        assert await client.proposals(state=PROPOSED) == list(cycle.proposals)

        made, last = await plan(w.federation)
        await progress.reach(last)

        applied = await client.proposal(reinforce.id)
        assert applied.state is APPLIED
        t = applied.transition
        assert (t.plan_sequence, t.plan_id) == (made.sequence, made.id)
        assert t.action_id == carrying(made, reinforce).id
        assert t.state is APPLIED
        assert t.market_time == w.clock.time
        assert t.event_sequence > made.sequence  # the status update after the plan
        assert "completed: sector/Tech changed" in t.reason
        rejected = (await client.proposal(mitigate.id)).transition
        assert rejected.state is REJECTED
        assert (rejected.plan_id, rejected.action_id) == (made.id, carrying(made, mitigate).id)
        assert "failed" in rejected.reason
        assert "Energy takes no changes today" in rejected.reason
        assert (await client.proposal(arb.id)).state is APPLIED

        assert await client.proposals(state=PROPOSED) == []
        assert [p.id for p in await client.proposals(state=APPLIED)] == [reinforce.id, arb.id]
        assert [p.id for p in await client.proposals(state=REJECTED)] == [mitigate.id]
        assert len(await client.proposals()) == 3
        pulse = await client.pulse()
        assert (pulse.active_proposal_count, pulse.followed_sequence) == (0, last)
        assert [p.state for p in pulse.last_cycle.proposals] == [APPLIED, REJECTED, APPLIED]
        # The ledger is untouched: the transitions are rows of their own.
        verified = await client.verify()
        assert verified.intact
        assert verified.head_hash == cycle.head_hash

        # Decided proposals are offered no more.
        agent = AgentClient(running.channel, name="meta-optimizer")
        assert await agent.recommend(c.AgentContext(cycle_id="x", as_of_time=w.clock.time)) == []
        again, _ = await plan(w.federation)
        assert not [a for a in again.actions if a.idempotency_key.startswith("meta-optimizer/")]


async def test_a_proposal_superseded_in_one_plan_is_applied_by_a_later_one(tmp_path):
    cut = rec("cut", c.AdjustExposure("Tech", 0.5), 0.9, priority=c.Priority.HIGH)
    risk = FakeAgent("risk", [cut])
    progress = Progress()
    async with (
        world(tmp_path, others=(risk,)) as w,
        optimizer(w, tmp_path, progress) as (
            client,
            _,
        ),
    ):
        cycle = await client.run_cycle()
        reinforce = cycle.proposals[0]
        first, last = await plan(w.federation)
        await progress.reach(last)
        assert carrying(first, reinforce).status is c.ActionStatus.SUPERSEDED
        still = await client.proposal(reinforce.id)
        assert (still.state, still.transition) == (PROPOSED, None)
        assert [p.id for p in await client.proposals(state=PROPOSED)] == [reinforce.id]

        risk.recommendations = []
        second, last = await plan(w.federation)
        await progress.reach(last)
        t = (await client.proposal(reinforce.id)).transition
        assert t.state is APPLIED
        assert (t.plan_sequence, t.plan_id) == (second.sequence, second.id)
        assert t.action_id == carrying(second, reinforce).id


async def test_proposals_expire_when_a_newer_cycle_replaces_them_or_their_deadline_passes(
    tmp_path,
):
    progress = Progress()
    async with (
        world(tmp_path) as w,
        optimizer(w, tmp_path, progress, proposal_ttl_days=3) as (
            client,
            _,
        ),
    ):
        older = await client.run_cycle(start_date="2026-02-04", end_date="2026-02-10")
        newer = await client.run_cycle(start_date="2026-02-05", end_date="2026-02-11")
        assert older.proposals
        assert newer.proposals
        assert {intent_key_of(p) for p in older.proposals}.isdisjoint(
            intent_key_of(p) for p in newer.proposals
        )
        active = await client.proposals(state=PROPOSED)
        assert active == [*older.proposals, *newer.proposals]

        # Planned, not executed: the newer cycle's proposals stay pending in it.
        made, last = await plan(w.federation, execute=False)
        await progress.reach(last)
        for p in older.proposals:
            t = (await client.proposal(p.id)).transition
            assert t.state is EXPIRED
            assert (t.plan_sequence, t.plan_id, t.action_id) == (made.sequence, made.id, "")
            assert "replaced by cycle-000002" in t.reason
        # The active proposals, one page at a time.
        pages, token = [], ""
        while True:
            page, token = await client.proposals_page(state=PROPOSED, page_size=1, page_token=token)
            pages += page
            if not token:
                break
        assert pages == list(newer.proposals)

        deadline = newer.proposals[0].expire_time
        assert deadline == DATA_END + 3 * DAY
        w.clock.time = deadline
        late, last = await plan(w.federation)
        assert not [a for a in late.actions if a.idempotency_key.startswith("meta-optimizer/")]
        await progress.reach(last)
        for p in newer.proposals:
            t = (await client.proposal(p.id)).transition
            assert t.state is EXPIRED
            assert (t.plan_sequence, t.plan_id, t.action_id) == (late.sequence, late.id, "")
            assert "not applied within 3 market days" in t.reason
            assert f"last: action {carrying(made, p).id} of plan {made.id}" in t.reason
            assert "pending" in t.reason
            assert t.market_time == deadline
        assert await client.proposals(state=PROPOSED) == []
        expired = await client.proposals(state=EXPIRED)
        assert len(expired) == len(older.proposals) + len(newer.proposals)


async def test_the_follower_resumes_after_a_restart_without_recording_an_event_twice(tmp_path):
    before = Progress()
    async with world(tmp_path) as w:
        async with optimizer(w, tmp_path, before) as (client, _):
            cycle = await client.run_cycle()
            _, last = await plan(w.federation)
            await before.reach(last)
            decided = await client.proposals()
            assert {p.state for p in decided} == {APPLIED}
        assert before.sequences == list(range(1, last + 1))
        # Planned while the meta optimizer is down: events it has yet to record.
        await plan(w.federation)
        _, down = await plan(w.federation)
        after = Progress()
        async with optimizer(w, tmp_path, after) as (client, _):
            await after.reach(down)
            assert after.sequences == list(range(last + 1, down + 1))
            assert await client.proposals() == decided
            assert (await client.pulse()).followed_sequence == down
            assert sorted(t.proposal_id for t in before.transitions) == [
                p.id for p in cycle.proposals
            ]
            assert after.transitions == []


async def test_the_ledger_stream_carries_each_transition_after_its_proposal(tmp_path):
    progress = Progress()
    async with world(tmp_path, refuse=("Energy",)) as w:
        async with optimizer(w, tmp_path, progress) as (client, _):
            watcher = Watcher(client, after_sequence=0)
            try:
                cycle = await client.run_cycle()
                reinforce, mitigate, arb = cycle.proposals
                made, last = await plan(w.federation)
                await progress.reach(last)
                await watcher.reach(7)
            finally:
                await watcher.close()
            kinds = [e.kind for e in watcher.events]
            assert (
                kinds == [EventKind.PROPOSAL] * 3 + [EventKind.CYCLE] + [EventKind.TRANSITION] * 3
            )
            assert watcher.sequences == list(range(1, 8))
            moved = {e.proposal.id: e.proposal for e in watcher.events[4:]}
            assert {i: p.state for i, p in moved.items()} == {
                reinforce.id: APPLIED,
                mitigate.id: REJECTED,
                arb.id: APPLIED,
            }
            for p in cycle.proposals:
                assert moved[p.id] == await client.proposal(p.id)
                assert moved[p.id].transition.plan_id == made.id
        # After a restart the stream resumes where a subscriber left it, transitions included.
        async with optimizer(w, tmp_path, Progress()) as (client, _):
            resumed = Watcher(client, after_sequence=4)
            try:
                await resumed.reach(7)
            finally:
                await resumed.close()
            assert resumed.events == watcher.events[4:]
