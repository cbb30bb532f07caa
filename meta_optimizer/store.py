"""Persistence of the proposal ledger, the cycle records and the proposals' lifecycle on SQLite
or PostgreSQL.

The ledger table is append-only: this module inserts entries and never updates or deletes one.
A cycle's entries and its record are written in one transaction, after reading the ledger's
head in that transaction; the ledger index is the primary key, so two replicas appending at
once cannot both extend the same head (the loser retries on the new head). Methods block; async
callers go through :meth:`SqlStore.run`.

The lifecycle lives beside the ledger, never in it: ``metaopt_transitions`` holds each
proposal's one move out of PROPOSED (the proposal id is its primary key, so a final state is
never replaced; rows are inserted, never updated); no row means PROPOSED. The plan follower's
working state is ``metaopt_carriers`` (the actions that carry an undecided intent, with their
last status) and ``metaopt_follower`` (the last federation event recorded). One event's
transitions, carriers and position are written in one transaction, so a restart resumes after
the last event recorded and records none twice.

The ledger's stream is ``metaopt_events``: one row per proposal appended, cycle recorded and
transition made, at sequence 1, 2, 3, ..., written in the transaction of what it records (a
cycle's proposals, then the cycle; an event's transitions), so the stream and the ledger never
disagree and a restart resumes it. A row names what it records (the proposal or cycle id); the
event is read from the ledger, the cycles and the transitions, which never change, so a replay
reads as the live event did. A sequence is the stream's largest plus one, read in the writing
transaction; the sequence is the primary key, so two writers cannot take the same one (the loser
retries), and the events commit in sequence order. A database written before the stream existed
gets its events once, on open: each cycle's proposals and the cycle, in cycle order, then the
transitions in the order they were recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from meta_optimizer.audit import GapTest, ProposalType, SectorAudit
from meta_optimizer.ledger import (
    GENESIS,
    Cycle,
    CycleHead,
    CycleStatus,
    EventKind,
    LedgerEvent,
    Proposal,
    ProposalState,
    Transition,
)
from meta_optimizer.lifecycle import (
    DAY_NANOS,
    DEFAULT_TTL_DAYS,
    Candidate,
    Carrier,
    FederationEvent,
    Position,
    Step,
    data_time,
    deadline_of,
    decide,
    intent_key_of,
    proposal_data_time,
)
from qtmesh.base.contract import ActionStatus
from qtmesh.base.storage import Migrations, SqlStore, create_engine

metadata = sa.MetaData()

ledger = sa.Table(
    "metaopt_ledger",
    metadata,
    sa.Column("ledger_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("proposal_id", sa.Text, nullable=False, unique=True),
    sa.Column("cycle_id", sa.Text, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target_sector", sa.Text, nullable=False),
    sa.Column("counter_sector", sa.Text, nullable=False),
    sa.Column("rationale", sa.Text, nullable=False),
    sa.Column("confidence", sa.Double, nullable=False),
    sa.Column("p_value", sa.Double, nullable=False),
    sa.Column("factor", sa.Double, nullable=False),
    sa.Column("allocation", sa.Double, nullable=False),
    # JSON text, not a JSON column: what is hashed must come back byte for byte.
    sa.Column("report_ids", sa.Text, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("previous_hash", sa.Text, nullable=False),
    sa.Column("entry_hash", sa.Text, nullable=False),
    sa.Index("metaopt_ledger_by_cycle", "cycle_id"),
    sa.Index("metaopt_ledger_by_time", "create_time"),
)

cycles = sa.Table(
    "metaopt_cycles",
    metadata,
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("cycle_id", sa.Text, nullable=False, unique=True),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("duration_seconds", sa.Double, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("start_date", sa.Text, nullable=False),
    sa.Column("end_date", sa.Text, nullable=False),
    sa.Column("dominant_sector", sa.Text, nullable=False),
    sa.Column("reports_audited", sa.Integer, nullable=False),
    sa.Column("reports_rejected", sa.Integer, nullable=False),
    # Sector audits, the gap test and the rejections, as JSON text (t statistics may be inf).
    sa.Column("audit", sa.Text, nullable=False),
    sa.Column("head_index", sa.BigInteger, nullable=False),
    sa.Column("head_hash", sa.Text, nullable=False),
)

# Each proposal's move out of PROPOSED (none: still PROPOSED); inserted once, never updated.
transitions = sa.Table(
    "metaopt_transitions",
    metadata,
    sa.Column("proposal_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("plan_sequence", sa.BigInteger, nullable=False),
    sa.Column("plan_id", sa.Text, nullable=False),
    sa.Column("action_id", sa.Text, nullable=False),
    sa.Column("event_sequence", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("transition_time", sa.BigInteger, nullable=False),
    sa.Column("market_time", sa.BigInteger, nullable=False),
    sa.Index("metaopt_transitions_by_state", "state"),
)

# The follower's working state: plan actions carrying an undecided intent, as last reported.
carriers = sa.Table(
    "metaopt_carriers",
    metadata,
    sa.Column("plan_sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("action_id", sa.Text, primary_key=True),
    sa.Column("plan_id", sa.Text, nullable=False),
    sa.Column("intent_key", sa.Text, nullable=False),
    sa.Column("market_time", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
    sa.Index("metaopt_carriers_by_intent", "intent_key"),
)

# Where the plan follower is: one row.
follower = sa.Table(
    "metaopt_follower",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("after_sequence", sa.BigInteger, nullable=False),
    sa.Column("market_time", sa.BigInteger, nullable=False),
)
FOLLOWER = "federation"

# The ledger's stream: what each event records (a proposal or cycle id), in sequence order.
events = sa.Table(
    "metaopt_events",
    metadata,
    sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("ref", sa.Text, nullable=False),
)

RETRIES = 5
BATCH = 1000


@dataclasses.dataclass(frozen=True)
class ProposalQuery:
    sector: str = ""
    type: ProposalType | None = None
    start_time: int | None = None
    end_time: int | None = None
    after_index: int = -1
    state: ProposalState | None = None


def _proposal(row: Any) -> Proposal:
    return Proposal(
        id=row.proposal_id,
        type=ProposalType[row.type],
        action=row.action,
        target_sector=row.target_sector,
        counter_sector=row.counter_sector,
        rationale=row.rationale,
        confidence=row.confidence,
        p_value=row.p_value,
        factor=row.factor,
        allocation=row.allocation,
        report_ids=tuple(json.loads(row.report_ids)),
        cycle_id=row.cycle_id,
        create_time=row.create_time,
        ledger_index=row.ledger_index,
        previous_hash=row.previous_hash,
        entry_hash=row.entry_hash,
    )


def _proposal_row(p: Proposal) -> dict[str, Any]:
    return {
        "ledger_index": p.ledger_index,
        "proposal_id": p.id,
        "cycle_id": p.cycle_id,
        "type": p.type.name,
        "action": p.action,
        "target_sector": p.target_sector,
        "counter_sector": p.counter_sector,
        "rationale": p.rationale,
        "confidence": p.confidence,
        "p_value": p.p_value,
        "factor": p.factor,
        "allocation": p.allocation,
        "report_ids": json.dumps(list(p.report_ids)),
        "create_time": p.create_time,
        "previous_hash": p.previous_hash,
        "entry_hash": p.entry_hash,
    }


def _transition(row: Any) -> Transition:
    return Transition(
        proposal_id=row.proposal_id,
        state=ProposalState[row.state],
        plan_sequence=row.plan_sequence,
        plan_id=row.plan_id,
        action_id=row.action_id,
        event_sequence=row.event_sequence,
        reason=row.reason,
        time=row.transition_time,
        market_time=row.market_time,
    )


def _transition_row(t: Transition) -> dict[str, Any]:
    return {
        "proposal_id": t.proposal_id,
        "state": t.state.name,
        "plan_sequence": t.plan_sequence,
        "plan_id": t.plan_id,
        "action_id": t.action_id,
        "event_sequence": t.event_sequence,
        "reason": t.reason,
        "transition_time": t.time,
        "market_time": t.market_time,
    }


def _carrier(row: Any) -> Carrier:
    return Carrier(
        plan_sequence=row.plan_sequence,
        action_id=row.action_id,
        plan_id=row.plan_id,
        intent_key=row.intent_key,
        market_time=row.market_time,
        status=ActionStatus[row.status],
        detail=row.detail,
        update_time=row.update_time,
    )


def _carrier_row(c: Carrier) -> dict[str, Any]:
    return {
        "plan_sequence": c.plan_sequence,
        "action_id": c.action_id,
        "plan_id": c.plan_id,
        "intent_key": c.intent_key,
        "market_time": c.market_time,
        "status": c.status.name,
        "detail": c.detail,
        "update_time": c.update_time,
    }


def _audits(text: str) -> tuple[SectorAudit, ...]:
    return tuple(
        SectorAudit(**{**a, "report_ids": tuple(a["report_ids"])})
        for a in json.loads(text)["sectors"]
    )


# The schema's revisions (qtmesh.base.storage.Migrations).
MIGRATIONS = Migrations(Path(__file__).parent / "migrations", "meta_optimizer_alembic_version")


class LedgerStore(SqlStore):
    """The ledger and the lifecycle; ``ttl_days`` is the market time a proposal has to be
    applied after the data it rests on (see :mod:`meta_optimizer.lifecycle`)."""

    def __init__(self, url: str, *, ttl_days: float = DEFAULT_TTL_DAYS) -> None:
        super().__init__(create_engine(url), MIGRATIONS)
        self.ttl = round(ttl_days * DAY_NANOS)
        # Writers of this process take turns; other processes are kept apart by the keys.
        self._writing = threading.Lock()
        self._backfill()

    # -- writes ----------------------------------------------------------------------------------

    def append_cycle(self, build: Callable[[int, int, str], Cycle]) -> Cycle:
        """Appends the cycle ``build(sequence, first_index, previous_hash)`` makes on the current
        head, with its proposals, in one transaction; retries if another writer got there first."""
        return self.append_cycle_logged(build)[0]

    def append_cycle_logged(
        self, build: Callable[[int, int, str], Cycle]
    ) -> tuple[Cycle, list[LedgerEvent]]:
        """:meth:`append_cycle`, and the stream's events it wrote (its proposals, then it)."""
        for attempt in range(RETRIES):
            try:
                with self._writing, self.engine.begin() as c:
                    sequence = c.execute(sa.select(sa.func.max(cycles.c.sequence))).scalar()
                    head = c.execute(
                        sa.select(ledger.c.ledger_index, ledger.c.entry_hash)
                        .order_by(ledger.c.ledger_index.desc())
                        .limit(1)
                    ).first()
                    index, previous = (
                        (head.ledger_index, head.entry_hash) if head else (-1, GENESIS)
                    )
                    cycle = build((sequence or 0) + 1, index + 1, previous)
                    if cycle.proposals:
                        c.execute(ledger.insert(), [_proposal_row(p) for p in cycle.proposals])
                    c.execute(cycles.insert().values(**_cycle_row(cycle)))
                    first = _append_events(
                        c,
                        [(EventKind.PROPOSAL, p.id) for p in cycle.proposals]
                        + [(EventKind.CYCLE, cycle.id)],
                    )
                dressed = [self._dress(p, cycle.sectors, None) for p in cycle.proposals]
                cycle = dataclasses.replace(cycle, proposals=tuple(dressed))
                logged = [
                    LedgerEvent(sequence=first + k, kind=EventKind.PROPOSAL, proposal=p)
                    for k, p in enumerate(dressed)
                ]
                logged.append(
                    LedgerEvent(sequence=first + len(dressed), kind=EventKind.CYCLE, cycle=cycle)
                )
                return cycle, logged
            except sa.exc.IntegrityError:
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def record_event(self, event: FederationEvent) -> Step:
        """Records what one federation event does to the proposals (:func:`lifecycle.decide`)
        with the follower's new position, in one transaction. An event at or before the
        position was recorded already: nothing changes."""
        return self.record_event_logged(event)[0]

    def record_event_logged(self, event: FederationEvent) -> tuple[Step, list[LedgerEvent]]:
        """:meth:`record_event`, and the stream's events it wrote (one per transition); retries
        if another writer got there first."""
        for attempt in range(RETRIES):
            try:
                with self._writing:
                    return self._record(event)
            except sa.exc.IntegrityError:
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _record(self, event: FederationEvent) -> tuple[Step, list[LedgerEvent]]:
        logged: list[LedgerEvent] = []
        with self.engine.begin() as c:
            position = self._position(c)
            if event.sequence <= position.after_sequence:
                return Step((), (), frozenset(), position), logged
            candidates = self._candidates(c)
            intents = {x.intent_key for x in candidates}
            found = (
                [
                    _carrier(r)
                    for r in c.execute(
                        carriers.select().where(carriers.c.intent_key.in_(sorted(intents)))
                    )
                ]
                if intents
                else []
            )
            step = decide(
                event, position=position, candidates=candidates, carriers=found, ttl=self.ttl
            )
            if step.transitions:
                c.execute(transitions.insert(), [_transition_row(t) for t in step.transitions])
                ids = [t.proposal_id for t in step.transitions]
                first = _append_events(c, [(EventKind.TRANSITION, i) for i in ids])
                rows = c.execute(ledger.select().where(ledger.c.proposal_id.in_(sorted(ids))))
                moved = {p.id: p for p in self._dressed(c, [_proposal(r) for r in rows])}
                logged = [
                    LedgerEvent(sequence=first + k, kind=EventKind.TRANSITION, proposal=moved[i])
                    for k, i in enumerate(ids)
                ]
            for carrier in step.carriers:
                c.execute(
                    carriers.delete()
                    .where(carriers.c.plan_sequence == carrier.plan_sequence)
                    .where(carriers.c.action_id == carrier.action_id)
                )
            if step.carriers:
                c.execute(carriers.insert(), [_carrier_row(x) for x in step.carriers])
            if step.resolved:
                c.execute(carriers.delete().where(carriers.c.intent_key.in_(sorted(step.resolved))))
            values = {
                "after_sequence": step.position.after_sequence,
                "market_time": step.position.market_time,
            }
            updated = c.execute(follower.update().where(follower.c.name == FOLLOWER).values(values))
            if not updated.rowcount:
                c.execute(follower.insert().values(name=FOLLOWER, **values))
        return step, logged

    def _backfill(self) -> None:
        """The events of a database written before the stream existed (see the module)."""
        with self.engine.connect() as c:
            if c.execute(sa.select(events.c.sequence).limit(1)).first() is not None:
                return
            if c.execute(sa.select(cycles.c.sequence).limit(1)).first() is None:
                return
        items: list[tuple[EventKind, str]] = []
        # A replica opening the same database at the same moment may write them first: its
        # events stand, and this one's insert fails on their sequences.
        with (
            contextlib.suppress(sa.exc.IntegrityError),
            self._writing,
            self.engine.begin() as c,
        ):
            if c.execute(sa.select(events.c.sequence).limit(1)).first() is not None:
                return
            recorded = list(
                c.execute(
                    sa.select(cycles.c.cycle_id, cycles.c.head_index).order_by(cycles.c.sequence)
                )
            )
            for cycle in recorded:
                entries = c.execute(
                    sa.select(ledger.c.proposal_id)
                    .where(ledger.c.cycle_id == cycle.cycle_id)
                    .where(ledger.c.ledger_index <= cycle.head_index)
                    .order_by(ledger.c.ledger_index)
                )
                items += [(EventKind.PROPOSAL, r.proposal_id) for r in entries]
                items.append((EventKind.CYCLE, cycle.cycle_id))
            moved = c.execute(
                sa.select(transitions.c.proposal_id)
                .join(ledger, ledger.c.proposal_id == transitions.c.proposal_id)
                .order_by(transitions.c.event_sequence, ledger.c.ledger_index)
            )
            items += [(EventKind.TRANSITION, r.proposal_id) for r in moved]
            _append_events(c, items)

    def position(self) -> Position:
        """The last federation event recorded (0: none)."""
        with self.engine.connect() as c:
            return self._position(c)

    def _position(self, c: sa.Connection) -> Position:
        row = c.execute(follower.select().where(follower.c.name == FOLLOWER)).first()
        return Position(row.after_sequence, row.market_time) if row is not None else Position()

    def _candidates(self, c: sa.Connection) -> list[Candidate]:
        """Every PROPOSED proposal a cycle recorded (one appended by hand beyond its cycle's head
        is never a candidate), with its deadline."""
        rows = list(
            c.execute(
                sa.select(ledger, cycles.c.sequence.label("cycle_sequence"), cycles.c.audit)
                .join(cycles, cycles.c.cycle_id == ledger.c.cycle_id)
                .outerjoin(transitions, transitions.c.proposal_id == ledger.c.proposal_id)
                .where(transitions.c.proposal_id.is_(None))
                .where(ledger.c.ledger_index <= cycles.c.head_index)
                .order_by(ledger.c.ledger_index)
            )
        )
        if not rows:
            return []
        oldest = min(r.cycle_sequence for r in rows)
        newer = [
            (r.sequence, r.cycle_id, data_time(_audits(r.audit)))
            for r in c.execute(
                sa.select(cycles.c.sequence, cycles.c.cycle_id, cycles.c.audit)
                .where(cycles.c.sequence > oldest)
                .order_by(cycles.c.sequence)
            )
        ]
        audits: dict[str, tuple[SectorAudit, ...]] = {}
        found = []
        for row in rows:
            p = _proposal(row)
            if p.cycle_id not in audits:
                audits[p.cycle_id] = _audits(row.audit)
            as_of = proposal_data_time(p, audits[p.cycle_id])
            later = [(t, cid) for seq, cid, t in newer if seq > row.cycle_sequence]
            replaced_at, replaced_by = min(later) if later else (None, "")
            deadline = deadline_of(as_of, self.ttl, replaced_at)
            found.append(
                Candidate(
                    proposal_id=p.id,
                    intent_key=intent_key_of(p),
                    as_of_time=as_of,
                    deadline=deadline,
                    # The newer cycle, if it ends the proposal's life no later than the TTL.
                    replaced_by=replaced_by if deadline == max(as_of, replaced_at or 0) else "",
                )
            )
        return found

    # -- reads -----------------------------------------------------------------------------------

    def last_event_sequence(self) -> int:
        """The stream's last sequence (0: no event yet)."""
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.max(events.c.sequence))).scalar() or 0)

    def events_after(self, after: int, limit: int) -> tuple[list[LedgerEvent], int]:
        """Up to ``limit`` events after ``after``, in sequence order, each as it read live, and
        the sequence read through (``after`` when there are none; the sequences have no gaps,
        so fewer than ``limit`` read means the end)."""
        with self.engine.connect() as c:
            rows = list(
                c.execute(
                    events.select()
                    .where(events.c.sequence > after)
                    .order_by(events.c.sequence)
                    .limit(limit)
                )
            )
            cycle_ids = sorted({r.ref for r in rows if r.kind == EventKind.CYCLE.name})
            proposal_ids = sorted({r.ref for r in rows if r.kind != EventKind.CYCLE.name})
            entries = {
                p.id: p
                for p in map(
                    _proposal,
                    c.execute(ledger.select().where(ledger.c.proposal_id.in_(proposal_ids)))
                    if proposal_ids
                    else [],
                )
            }
            names = sorted(set(cycle_ids) | {p.cycle_id for p in entries.values()})
            recorded = (
                {
                    r.cycle_id: r
                    for r in c.execute(cycles.select().where(cycles.c.cycle_id.in_(names)))
                }
                if names
                else {}
            )
            audits = {name: _audits(r.audit) for name, r in recorded.items()}
            moved = (
                {
                    t.proposal_id: t
                    for t in map(
                        _transition,
                        c.execute(
                            transitions.select().where(transitions.c.proposal_id.in_(proposal_ids))
                        ),
                    )
                }
                if proposal_ids
                else {}
            )
            members: dict[str, list[Proposal]] = {name: [] for name in cycle_ids}
            if cycle_ids:
                for r in c.execute(
                    ledger.select()
                    .where(ledger.c.cycle_id.in_(cycle_ids))
                    .order_by(ledger.c.ledger_index)
                ):
                    if r.ledger_index <= recorded[r.cycle_id].head_index:
                        members[r.cycle_id].append(_proposal(r))
        found: list[LedgerEvent] = []
        through = rows[-1].sequence if rows else after
        for row in rows:
            # An event whose record was removed by hand is left out (VerifyLedger finds that).
            kind = EventKind[row.kind]
            if kind is EventKind.CYCLE:
                record = recorded.get(row.ref)
                if record is None:
                    continue
                proposals = [self._dress(p, audits[row.ref], None) for p in members[row.ref]]
                found.append(
                    LedgerEvent(sequence=row.sequence, kind=kind, cycle=_cycle(record, proposals))
                )
                continue
            entry = entries.get(row.ref)
            if entry is None or (kind is EventKind.TRANSITION and row.ref not in moved):
                continue
            sectors = audits.get(entry.cycle_id, ())
            transition = moved[row.ref] if kind is EventKind.TRANSITION else None
            found.append(
                LedgerEvent(
                    sequence=row.sequence,
                    kind=kind,
                    proposal=self._dress(entry, sectors, transition),
                )
            )
        return found, through

    def _dress(
        self, p: Proposal, sectors: tuple[SectorAudit, ...], transition: Transition | None
    ) -> Proposal:
        as_of = proposal_data_time(p, sectors)
        return dataclasses.replace(
            p,
            state=transition.state if transition is not None else ProposalState.PROPOSED,
            transition=transition,
            as_of_time=as_of,
            expire_time=as_of + self.ttl if as_of else 0,
        )

    def _dressed(self, c: sa.Connection, found: list[Proposal]) -> list[Proposal]:
        """``found`` with their lifecycle and market times."""
        if not found:
            return []
        ids = sorted({p.id for p in found})
        moved = {
            t.proposal_id: t
            for t in map(
                _transition,
                c.execute(transitions.select().where(transitions.c.proposal_id.in_(ids))),
            )
        }
        names = sorted({p.cycle_id for p in found})
        audits = {
            r.cycle_id: _audits(r.audit)
            for r in c.execute(
                sa.select(cycles.c.cycle_id, cycles.c.audit).where(cycles.c.cycle_id.in_(names))
            )
        }
        return [self._dress(p, audits.get(p.cycle_id, ()), moved.get(p.id)) for p in found]

    def proposals(self, query: ProposalQuery, limit: int) -> list[Proposal]:
        select = (
            sa.select(ledger)
            .outerjoin(transitions, transitions.c.proposal_id == ledger.c.proposal_id)
            .where(ledger.c.ledger_index > query.after_index)
        )
        if query.sector:
            select = select.where(
                sa.or_(
                    ledger.c.target_sector == query.sector,
                    ledger.c.counter_sector == query.sector,
                )
            )
        if query.type is not None:
            select = select.where(ledger.c.type == query.type.name)
        if query.start_time is not None:
            select = select.where(ledger.c.create_time >= query.start_time)
        if query.end_time is not None:
            select = select.where(ledger.c.create_time <= query.end_time)
        if query.state is ProposalState.PROPOSED:
            select = select.where(transitions.c.proposal_id.is_(None))
        elif query.state is not None:
            select = select.where(transitions.c.state == query.state.name)
        select = select.order_by(ledger.c.ledger_index).limit(limit)
        with self.engine.connect() as c:
            return self._dressed(c, [_proposal(row) for row in c.execute(select)])

    def proposal(self, proposal_id: str) -> Proposal | None:
        with self.engine.connect() as c:
            row = c.execute(ledger.select().where(ledger.c.proposal_id == proposal_id)).first()
            return self._dressed(c, [_proposal(row)])[0] if row is not None else None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[ChainSnapshot]:
        """The cycle heads and the entries as of one committed state: a cycle appended while
        they are read is not half seen (its entries without its head would look forged)."""
        with self.engine.connect() as c:
            if self.local:
                # pysqlite opens no transaction for reads; an explicit one pins the WAL snapshot
                # at its first read for every read after it.
                c.exec_driver_sql("BEGIN")
            else:
                c = c.execution_options(isolation_level="REPEATABLE READ")
            yield ChainSnapshot(c)

    def last_cycle(self) -> Cycle | None:
        """The newest cycle with the entries it recorded: those of its id up to its head, so a
        row appended after it by hand never reaches a reader."""
        with self.engine.connect() as c:
            row = c.execute(cycles.select().order_by(cycles.c.sequence.desc()).limit(1)).first()
            if row is None:
                return None
            proposals = self._dressed(
                c,
                [
                    _proposal(r)
                    for r in c.execute(
                        ledger.select()
                        .where(ledger.c.cycle_id == row.cycle_id)
                        .where(ledger.c.ledger_index <= row.head_index)
                        .order_by(ledger.c.ledger_index)
                    )
                ],
            )
        return _cycle(row, proposals)

    def counts(self) -> tuple[int, int]:
        """(cycles, proposals) recorded."""
        with self.engine.connect() as c:
            cycle_count = c.execute(sa.select(sa.func.count()).select_from(cycles)).scalar_one()
            entry_count = c.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one()
        return int(cycle_count), int(entry_count)

    def active_count(self) -> int:
        """Proposals still PROPOSED."""
        with self.engine.connect() as c:
            count = c.execute(
                sa.select(sa.func.count())
                .select_from(ledger)
                .outerjoin(transitions, transitions.c.proposal_id == ledger.c.proposal_id)
                .where(transitions.c.proposal_id.is_(None))
            ).scalar_one()
        return int(count)


class ChainSnapshot:
    """Reads of the ledger inside :meth:`LedgerStore.snapshot`."""

    def __init__(self, connection: sa.Connection) -> None:
        self._c = connection

    def heads(self) -> list[CycleHead]:
        """The head every cycle recorded, in sequence order."""
        rows = self._c.execute(
            sa.select(cycles.c.cycle_id, cycles.c.head_index, cycles.c.head_hash).order_by(
                cycles.c.sequence
            )
        )
        return [CycleHead(r.cycle_id, r.head_index, r.head_hash) for r in rows]

    def entries(self) -> Iterator[tuple[int, Proposal | None]]:
        """Every (index, entry) in index order, read in batches; None for a row that no longer
        reads as an entry (e.g. an unknown type written by hand)."""
        after = -1
        while True:
            rows = list(
                self._c.execute(
                    ledger.select()
                    .where(ledger.c.ledger_index > after)
                    .order_by(ledger.c.ledger_index)
                    .limit(BATCH)
                )
            )
            for row in rows:
                try:
                    entry: Proposal | None = _proposal(row)
                except (KeyError, ValueError, TypeError):
                    entry = None
                yield row.ledger_index, entry
            if len(rows) < BATCH:
                return
            after = rows[-1].ledger_index


def _cycle_row(cycle: Cycle) -> dict[str, Any]:
    audit = {
        "sectors": [dataclasses.asdict(a) for a in cycle.sectors],
        "gap_test": dataclasses.asdict(cycle.gap_test) if cycle.gap_test else None,
        "rejections": list(cycle.rejections),
    }
    return {
        "sequence": cycle.sequence,
        "cycle_id": cycle.id,
        "start_time": cycle.start_time,
        "duration_seconds": cycle.duration_seconds,
        "status": cycle.status.name,
        "start_date": cycle.start_date,
        "end_date": cycle.end_date,
        "dominant_sector": cycle.dominant_sector,
        "reports_audited": cycle.reports_audited,
        "reports_rejected": cycle.reports_rejected,
        "audit": json.dumps(audit),
        "head_index": cycle.head_index,
        "head_hash": cycle.head_hash,
    }


def _cycle(row: Any, proposals: list[Proposal]) -> Cycle:
    audit = json.loads(row.audit)
    sectors = _audits(row.audit)
    return Cycle(
        id=row.cycle_id,
        sequence=row.sequence,
        start_time=row.start_time,
        duration_seconds=row.duration_seconds,
        status=CycleStatus[row.status],
        start_date=row.start_date,
        end_date=row.end_date,
        sectors=sectors,
        dominant_sector=row.dominant_sector,
        gap_test=GapTest(**audit["gap_test"]) if audit["gap_test"] else None,
        proposals=tuple(proposals),
        reports_audited=row.reports_audited,
        reports_rejected=row.reports_rejected,
        rejections=tuple(audit["rejections"]),
        head_index=row.head_index,
        head_hash=row.head_hash,
    )


def _append_events(c: sa.Connection, items: list[tuple[EventKind, str]]) -> int:
    """Writes ``items`` as the stream's next events; the sequence of the first."""
    first = int(c.execute(sa.select(sa.func.max(events.c.sequence))).scalar() or 0) + 1
    if items:
        c.execute(
            events.insert(),
            [
                {"sequence": first + k, "kind": kind.name, "ref": ref}
                for k, (kind, ref) in enumerate(items)
            ],
        )
    return first
