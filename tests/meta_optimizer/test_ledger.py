"""The proposal ledger on SQLite and PostgreSQL: entries chained by SHA-256, appended with their
cycle, paged and filtered; rows tampered with directly in the database are found."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from meta_optimizer.audit import ProposalDraft, ProposalType
from meta_optimizer.ledger import (
    GENESIS,
    ChainVerifier,
    Cycle,
    CycleHead,
    CycleStatus,
    EventKind,
    canonical,
    chain,
    hash_of,
)
from meta_optimizer.store import LedgerStore, ProposalQuery, _proposal_row, cycles, events, ledger

TIME = 1_800_000_000 * 10**9


def draft(kind: ProposalType, sector: str, *, counter: str = "", p: float = 0.01):
    return ProposalDraft(
        type=kind,
        action="act",
        target_sector=sector,
        counter_sector=counter,
        rationale=f"{sector} because of the numbers",
        confidence=1 - p,
        p_value=p,
        report_ids=(f"eod-{sector}-1", f"eod-{sector}-2"),
        factor=1.2 if kind is not ProposalType.ARB_MISSION else 0.0,
        allocation=0.1 if kind is ProposalType.ARB_MISSION else 0.0,
    )


DRAFTS = [
    draft(ProposalType.REINFORCEMENT, "Tech"),
    draft(ProposalType.RISK_MITIGATION, "Energy", p=0.07),
    draft(ProposalType.ARB_MISSION, "Tech", counter="Energy", p=0.02),
]


def append(store: LedgerStore, drafts, *, at: int = TIME) -> Cycle:
    def build(sequence: int, first_index: int, previous_hash: str) -> Cycle:
        cycle_id = f"cycle-{sequence:06d}"
        proposals = chain(
            drafts,
            cycle_id=cycle_id,
            create_time=at,
            first_index=first_index,
            previous_hash=previous_hash,
        )
        head = proposals[-1] if proposals else None
        return Cycle(
            id=cycle_id,
            sequence=sequence,
            start_time=at,
            duration_seconds=0.01,
            status=CycleStatus.SUCCEEDED,
            start_date="",
            end_date="",
            sectors=(),
            dominant_sector="Tech",
            gap_test=None,
            proposals=tuple(proposals),
            reports_audited=4,
            reports_rejected=0,
            rejections=(),
            head_index=head.ledger_index if head else first_index - 1,
            head_hash=head.entry_hash if head else previous_hash,
        )

    return store.append_cycle(build)


def verify(store: LedgerStore):
    with store.snapshot() as snapshot:
        verifier = ChainVerifier(snapshot.heads())
        for index, entry in snapshot.entries():
            verifier.feed(entry, index=index)
    return verifier.result()


def forge_after(store: LedgerStore, last, *, cycle_id: str):
    """Inserts an entry after ``last`` with a correct link and an honest (unkeyed) hash."""
    (forged,) = chain(
        DRAFTS[:1],
        cycle_id=cycle_id,
        create_time=TIME,
        first_index=last.ledger_index + 1 if last else 0,
        previous_hash=last.entry_hash if last else GENESIS,
    )
    forged = dataclasses.replace(forged, id=f"{cycle_id}-9")
    forged = dataclasses.replace(forged, entry_hash=hash_of(forged))
    with store.engine.begin() as c:
        c.execute(ledger.insert().values(**_proposal_row(forged)))
    return forged


def test_entries_are_chained_by_the_hash_of_their_canonical_encoding():
    entries = chain(
        DRAFTS, cycle_id="cycle-000001", create_time=TIME, first_index=0, previous_hash=GENESIS
    )
    assert [e.ledger_index for e in entries] == [0, 1, 2]
    assert entries[0].previous_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.previous_hash == before.entry_hash
    first = entries[0]
    encoded = json.loads(canonical(first))
    assert "entry_hash" not in encoded
    assert encoded["previous_hash"] == GENESIS
    assert encoded["type"] == "REINFORCEMENT"
    assert first.entry_hash == hashlib.sha256(canonical(first)).hexdigest()
    # Any field change changes the hash.
    for name, value in [("rationale", "other"), ("confidence", 0.5), ("report_ids", ("x",))]:
        changed = dataclasses.replace(first, **{name: value})
        assert hashlib.sha256(canonical(changed)).hexdigest() != first.entry_hash


def test_cycles_append_on_the_head_and_survive_reopening(database_url):
    store = LedgerStore(database_url)
    try:
        first = append(store, DRAFTS)
        empty = append(store, [])
        second = append(store, DRAFTS[:1], at=TIME + 10)
        assert [p.id for p in first.proposals] == [
            "cycle-000001-1",
            "cycle-000001-2",
            "cycle-000001-3",
        ]
        assert (empty.head_index, empty.head_hash) == (2, first.proposals[-1].entry_hash)
        assert second.proposals[0].ledger_index == 3
        assert second.proposals[0].previous_hash == first.proposals[-1].entry_hash
    finally:
        store.close()
    store = LedgerStore(database_url)
    try:
        assert store.counts() == (3, 4)
        assert store.last_cycle() == second
        assert store.proposal("cycle-000001-2") == first.proposals[1]
        assert store.proposal("nope") is None
        result = verify(store)
        assert result.intact
        assert result.entry_count == 4
        assert result.head_hash == second.proposals[0].entry_hash
    finally:
        store.close()


def test_proposals_filter_by_sector_type_and_time_and_page_by_index(database_url):
    store = LedgerStore(database_url)
    try:
        append(store, DRAFTS)
        append(store, DRAFTS, at=TIME + 100)
        energy = store.proposals(ProposalQuery(sector="Energy"), 10)
        assert [p.ledger_index for p in energy] == [1, 2, 4, 5]
        arb = store.proposals(ProposalQuery(type=ProposalType.ARB_MISSION), 10)
        assert [p.ledger_index for p in arb] == [2, 5]
        late = store.proposals(ProposalQuery(start_time=TIME + 1), 10)
        assert [p.ledger_index for p in late] == [3, 4, 5]
        early = store.proposals(ProposalQuery(end_time=TIME), 10)
        assert [p.ledger_index for p in early] == [0, 1, 2]
        page = store.proposals(ProposalQuery(after_index=1), 2)
        assert [p.ledger_index for p in page] == [2, 3]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("tamper", "bad", "problem"),
    [
        (
            lambda t: sa.update(t).where(t.c.ledger_index == 1).values(rationale="rewritten"),
            1,
            "was altered",
        ),
        (
            lambda t: sa.update(t).where(t.c.ledger_index == 2).values(confidence=0.999999),
            2,
            "was altered",
        ),
        (
            lambda t: sa.update(t).where(t.c.ledger_index == 1).values(entry_hash="ab" * 32),
            1,
            "was altered",
        ),
        (lambda t: sa.delete(t).where(t.c.ledger_index == 1), 1, "is missing"),
        (
            lambda t: sa.update(t).where(t.c.ledger_index == 0).values(type="WHATEVER"),
            0,
            "unreadable",
        ),
        (lambda t: sa.delete(t).where(t.c.ledger_index >= 3), 3, "are missing"),
    ],
)
def test_tampered_rows_are_found_at_the_first_bad_entry(database_url, tamper, bad, problem):
    store = LedgerStore(database_url)
    try:
        append(store, DRAFTS)
        append(store, DRAFTS)
        assert verify(store).intact
        with store.engine.begin() as c:
            c.execute(tamper(ledger))
        result = verify(store)
        assert not result.intact
        assert result.first_bad_index == bad
        assert problem in result.detail
    finally:
        store.close()


def test_a_rehashed_rewrite_still_breaks_the_next_link(database_url):
    store = LedgerStore(database_url)
    try:
        entries = append(store, DRAFTS).proposals
        forged = dataclasses.replace(entries[0], rationale="forged")
        forged = dataclasses.replace(
            forged, entry_hash=hashlib.sha256(canonical(forged)).hexdigest()
        )
        with store.engine.begin() as c:
            c.execute(
                sa.update(ledger)
                .where(ledger.c.ledger_index == 0)
                .values(rationale="forged", entry_hash=forged.entry_hash)
            )
        result = verify(store)
        assert result.first_bad_index == 1
        assert "does not link" in result.detail
    finally:
        store.close()


def test_an_entry_appended_after_the_last_cycle_head_is_found_and_never_read(database_url):
    store = LedgerStore(database_url)
    try:
        append(store, DRAFTS)
        second = append(store, DRAFTS)
        forged = forge_after(store, second.proposals[-1], cycle_id=second.id)
        result = verify(store)
        assert not result.intact
        assert result.first_bad_index == forged.ledger_index == 6
        assert "entry 6 (cycle-000002-9) was appended outside any cycle" in result.detail
        assert store.last_cycle() == second
    finally:
        store.close()


def test_entries_without_any_cycle_are_found(database_url):
    store = LedgerStore(database_url)
    try:
        forge_after(store, None, cycle_id="cycle-000001")
        result = verify(store)
        assert not result.intact
        assert result.first_bad_index == 0
        assert "no cycle is recorded" in result.detail
        assert store.last_cycle() is None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("tamper", "bad", "problem"),
    [
        # The last cycle's entries lose their cycle.
        (
            lambda t: sa.update(t).where(t.c.cycle_id == "cycle-000002").values(cycle_id="c-9"),
            3,
            "entry 3 (cycle-000002-1) names no recorded cycle ('cycle-000002')",
        ),
        # The first cycle claims one entry fewer than it wrote, with that entry's hash.
        (
            lambda t: (
                sa.update(t)
                .where(t.c.cycle_id == "cycle-000001")
                .values(
                    head_index=1,
                    head_hash=sa.select(ledger.c.entry_hash)
                    .where(ledger.c.ledger_index == 1)
                    .scalar_subquery(),
                )
            ),
            2,
            "entry 2 (cycle-000001-3) lies beyond the head its cycle cycle-000001 recorded",
        ),
        # A cycle's recorded head hash no longer matches its entry.
        (
            lambda t: sa.update(t).where(t.c.cycle_id == "cycle-000001").values(head_hash="0" * 64),
            2,
            "entry 2 (cycle-000001-3) is not the head its cycle recorded",
        ),
    ],
)
def test_entries_are_checked_against_the_cycle_records(database_url, tamper, bad, problem):
    store = LedgerStore(database_url)
    try:
        append(store, DRAFTS)
        append(store, DRAFTS)
        with store.engine.begin() as c:
            c.execute(tamper(cycles))
        result = verify(store)
        assert not result.intact
        assert result.first_bad_index == bad
        assert problem in result.detail
    finally:
        store.close()


def test_a_cycle_appended_while_verifying_is_not_taken_for_tampering(database_url):
    store = LedgerStore(database_url)
    try:
        first = append(store, DRAFTS)
        with store.snapshot() as snapshot:
            verifier = ChainVerifier(snapshot.heads())
            append(store, DRAFTS)  # another replica commits between the two reads
            for index, entry in snapshot.entries():
                verifier.feed(entry, index=index)
        result = verifier.result()
        assert result.intact, result.detail
        assert result.entry_count == 3
        assert result.head_hash == first.head_hash
        assert verify(store).entry_count == 6
    finally:
        store.close()


cycle_sizes = st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6)


@given(sizes=cycle_sizes, data=st.data())
def test_any_ledger_verifies_and_any_altered_entry_is_named(sizes, data):
    entries, head, heads = [], GENESIS, []
    for k, size in enumerate(sizes):
        made = chain(
            (DRAFTS * 2)[:size],
            cycle_id=f"cycle-{k + 1:06d}",
            create_time=TIME + k,
            first_index=len(entries),
            previous_hash=head,
        )
        entries += made
        head = made[-1].entry_hash if made else head
        heads.append(CycleHead(f"cycle-{k + 1:06d}", len(entries) - 1, head))
    verifier = ChainVerifier(heads)
    for e in entries:
        verifier.feed(e, index=e.ledger_index)
    assert verifier.result().intact
    if not entries:
        return
    bad = data.draw(st.integers(min_value=0, max_value=len(entries) - 1))
    field = data.draw(st.sampled_from(["rationale", "confidence", "target_sector", "cycle_id"]))
    value = {"rationale": "x", "confidence": 0.123, "target_sector": "Zinc", "cycle_id": "c"}
    altered = list(entries)
    altered[bad] = dataclasses.replace(entries[bad], **{field: value[field]})
    verifier = ChainVerifier(heads)
    for e in altered:
        verifier.feed(e, index=e.ledger_index)
    assert verifier.result().first_bad_index == bad


def test_the_stream_holds_each_cycle_s_proposals_then_the_cycle_in_one_sequence(database_url):
    """Two stores on one database (replicas) appending at once: every cycle's events are written
    with it, at sequences 1, 2, 3, ... with no gap and none twice; a reopened store (or one whose
    database lost the stream) reads the same events; a forged entry is in no event."""
    stores = [LedgerStore(database_url), LedgerStore(database_url)]
    try:
        with ThreadPoolExecutor(4) as pool:
            appended = list(pool.map(lambda k: append(stores[k % 2], DRAFTS[: k % 4]), range(8)))
        by_sequence = sorted(appended, key=lambda c: c.sequence)
        newest = max((p for c in appended for p in c.proposals), key=lambda p: p.ledger_index)
        forge_after(stores[0], newest, cycle_id=by_sequence[-1].id)
        found, through = stores[1].events_after(0, 1000)
        total = sum(len(c.proposals) + 1 for c in appended)
        assert [e.sequence for e in found] == list(range(1, total + 1))
        assert through == total
        assert stores[0].last_event_sequence() == total
        cycles_seen = [e.cycle for e in found if e.kind is EventKind.CYCLE]
        assert [c.id for c in cycles_seen] == [c.id for c in by_sequence]
        for e in found:
            if e.kind is EventKind.PROPOSAL:
                assert e.proposal == stores[0].proposal(e.proposal.id)
        for cycle in cycles_seen:
            (at,) = [k for k, e in enumerate(found) if e.cycle is cycle]
            members = [e.proposal for e in found[at - len(cycle.proposals) : at]]
            assert members == list(cycle.proposals)
        # Paged, and after the end.
        first, through = stores[0].events_after(0, 3)
        rest, end = stores[0].events_after(through, 1000)
        assert (first + rest, end) == (found, total)
        assert stores[0].events_after(total, 10) == ([], total)
    finally:
        for store in stores:
            store.close()
    store = LedgerStore(database_url)
    try:
        assert store.events_after(0, 1000) == (found, total)
        with store.engine.begin() as c:
            c.execute(events.delete())
    finally:
        store.close()
    store = LedgerStore(database_url)  # a database from before the stream: written on open
    try:
        assert store.events_after(0, 1000) == (found, total)
    finally:
        store.close()
