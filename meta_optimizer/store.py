"""Persistence of the proposal ledger and the cycle records on SQLite or PostgreSQL.

The ledger table is append-only: this module inserts entries and never updates or deletes one.
A cycle's entries and its record are written in one transaction, after reading the ledger's
head in that transaction; the ledger index is the primary key, so two replicas appending at
once cannot both extend the same head (the loser retries on the new head). Methods block; async
callers go through :meth:`SqlStore.run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from meta_optimizer.audit import GapTest, ProposalType, SectorAudit
from meta_optimizer.ledger import GENESIS, Cycle, CycleHead, CycleStatus, Proposal
from qtmesh.base.storage import SqlStore, create_engine

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

RETRIES = 5
BATCH = 1000


@dataclasses.dataclass(frozen=True)
class ProposalQuery:
    sector: str = ""
    type: ProposalType | None = None
    start_time: int | None = None
    end_time: int | None = None
    after_index: int = -1


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


class LedgerStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__(create_engine(url), metadata)

    # -- writes ----------------------------------------------------------------------------------

    def append_cycle(self, build: Callable[[int, int, str], Cycle]) -> Cycle:
        """Appends the cycle ``build(sequence, first_index, previous_hash)`` makes on the current
        head, with its proposals, in one transaction; retries if another writer got there first."""
        for attempt in range(RETRIES):
            try:
                with self.engine.begin() as c:
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
                return cycle
            except sa.exc.IntegrityError:
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- reads -----------------------------------------------------------------------------------

    def proposals(self, query: ProposalQuery, limit: int) -> list[Proposal]:
        select = ledger.select().where(ledger.c.ledger_index > query.after_index)
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
        select = select.order_by(ledger.c.ledger_index).limit(limit)
        with self.engine.connect() as c:
            return [_proposal(row) for row in c.execute(select)]

    def proposal(self, proposal_id: str) -> Proposal | None:
        with self.engine.connect() as c:
            row = c.execute(ledger.select().where(ledger.c.proposal_id == proposal_id)).first()
        return _proposal(row) if row is not None else None

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
            proposals = [
                _proposal(r)
                for r in c.execute(
                    ledger.select()
                    .where(ledger.c.cycle_id == row.cycle_id)
                    .where(ledger.c.ledger_index <= row.head_index)
                    .order_by(ledger.c.ledger_index)
                )
            ]
        return _cycle(row, proposals)

    def counts(self) -> tuple[int, int]:
        """(cycles, proposals) recorded."""
        with self.engine.connect() as c:
            cycle_count = c.execute(sa.select(sa.func.count()).select_from(cycles)).scalar_one()
            entry_count = c.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one()
        return int(cycle_count), int(entry_count)


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
    sectors = tuple(
        SectorAudit(**{**a, "report_ids": tuple(a["report_ids"])}) for a in audit["sectors"]
    )
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
