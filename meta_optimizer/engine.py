"""The meta optimizer's cycle: read the encrypted reports of a window, open and verify each,
audit them, and append the proposals and the cycle record to the ledger. Also the ledger's
reads, its verification, the pulse, and the record of what the federation's plans did to the
proposals (:mod:`meta_optimizer.lifecycle`). No gRPC here; clocks are injected."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from alpha_reporting.crypto import Keyring, open_report
from alpha_reporting.engine import Refused, check_window, refusal_reason
from alpha_reporting.report import EncryptedReport, SectorReport
from meta_optimizer.audit import AuditSettings, ProposalType, audit
from meta_optimizer.ledger import (
    ChainVerifier,
    Cycle,
    CycleStatus,
    LedgerEvent,
    Proposal,
    Verification,
    chain,
)
from meta_optimizer.lifecycle import FederationEvent, Position, Step
from meta_optimizer.store import LedgerStore, ProposalQuery
from qtmesh.base.errors import InvalidArgument, MeshError, NotFound
from qtmesh.base.hub import Hub

Clock = Callable[[], int]
Timer = Callable[[], float]

# Live events a subscriber may fall behind before its stream ends (RESOURCE_EXHAUSTED).
DEFAULT_QUEUE_SIZE = 1000


class ReportSource(Protocol):
    """Where encrypted reports come from (the alpha-reporting client, or a test double)."""

    async def reports(
        self, *, sector: str = "", start_date: str = "", end_date: str = ""
    ) -> list[EncryptedReport]: ...


@dataclasses.dataclass(frozen=True)
class Pulse:
    last_cycle: Cycle | None
    cycle_count: int
    proposal_count: int
    # Proposals still PROPOSED, and the last federation event the plan follower recorded.
    active_proposal_count: int = 0
    followed_sequence: int = 0

    @property
    def arb_missions(self) -> tuple[Proposal, ...]:
        if self.last_cycle is None:
            return ()
        return tuple(p for p in self.last_cycle.proposals if p.type is ProposalType.ARB_MISSION)


def open_reports(
    sealed: Sequence[EncryptedReport], keyring: Keyring, *, rejected: Refused | None = None
) -> tuple[list[SectorReport], list[str]]:
    """The reports that open and verify, and one line per rejected report. A sector's day
    reported twice keeps the first (in date order) and rejects the other. ``rejected`` is
    told the reason of each rejection (``tampered``, ``undecryptable`` or ``duplicate``)."""
    opened: list[SectorReport] = []
    rejections: list[str] = []
    seen: dict[tuple[str, str], str] = {}

    def reject(reason: str, line: str) -> None:
        rejections.append(line)
        if rejected is not None:
            rejected(reason)

    for report in sealed:
        try:
            plain = open_report(report, keyring)
        except MeshError as exc:
            reject(refusal_reason(exc), exc.message)
            continue
        day = (plain.sector, plain.trading_date)
        if day in seen:
            reject(
                "duplicate",
                f"report {plain.report_id} is a second report of {plain.sector} on "
                f"{plain.trading_date} (after {seen[day]})",
            )
            continue
        seen[day] = plain.report_id
        opened.append(plain)
    return opened, rejections


class MetaOptimizer:
    def __init__(
        self,
        *,
        store: LedgerStore,
        source: ReportSource,
        keyring: Keyring,
        settings: AuditSettings,
        clock: Clock,
        timer: Timer = time.perf_counter,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        verified: Callable[[Verification], None] | None = None,
        rejected: Refused | None = None,
    ) -> None:
        """``verified`` is told each verification of the ledger; ``rejected``, the reason of
        each report a cycle rejects (:func:`open_reports`)."""
        self.store = store
        self.source = source
        self.keyring = keyring
        self.settings = settings
        self._clock = clock
        self._timer = timer
        self._verified = verified
        self._rejected = rejected
        self._lock = asyncio.Lock()
        # The ledger stream's live subscribers; every event is published once it is stored.
        self.hub: Hub[LedgerEvent] = Hub(queue_size=queue_size)

    async def run_cycle(self, *, start_date: str = "", end_date: str = "") -> Cycle:
        """Audits the reports of the inclusive date window (empty bounds: unbounded) and appends
        the cycle to the ledger. A failing source or rejected reports are part of the cycle's
        record (status FAILED or PARTIAL), not errors of the call."""
        check_window(start_date, end_date)
        async with self._lock:
            started, begun = self._clock(), self._timer()
            problems: list[str] = []
            sealed: list[EncryptedReport] = []
            failed = False
            try:
                sealed = await self.source.reports(start_date=start_date, end_date=end_date)
            except MeshError as exc:
                failed = True
                problems.append(f"alpha-reporting: {exc.message}")
            reports, rejections = await asyncio.to_thread(
                functools.partial(open_reports, rejected=self._rejected), sealed, self.keyring
            )
            result = await asyncio.to_thread(audit, reports, self.settings)
            if failed or (sealed and not reports):
                status = CycleStatus.FAILED
            elif rejections:
                status = CycleStatus.PARTIAL
            else:
                status = CycleStatus.SUCCEEDED

            def build(sequence: int, first_index: int, previous_hash: str) -> Cycle:
                cycle_id = f"cycle-{sequence:06d}"
                proposals = chain(
                    result.proposals,
                    cycle_id=cycle_id,
                    create_time=started,
                    first_index=first_index,
                    previous_hash=previous_hash,
                )
                head = proposals[-1] if proposals else None
                return Cycle(
                    id=cycle_id,
                    sequence=sequence,
                    start_time=started,
                    duration_seconds=self._timer() - begun,
                    status=status,
                    start_date=start_date,
                    end_date=end_date,
                    sectors=result.sectors,
                    dominant_sector=result.dominant_sector,
                    gap_test=result.gap_test,
                    proposals=tuple(proposals),
                    reports_audited=len(reports),
                    reports_rejected=len(rejections),
                    rejections=tuple(problems + rejections),
                    head_index=head.ledger_index if head else first_index - 1,
                    head_hash=head.entry_hash if head else previous_hash,
                )

            cycle, logged = await self.store.run(self.store.append_cycle_logged, build)
            self._publish(logged)
            return cycle

    # -- reads -----------------------------------------------------------------------------------

    async def proposals(self, query: ProposalQuery, limit: int) -> list[Proposal]:
        if (
            query.start_time is not None
            and query.end_time is not None
            and query.end_time < query.start_time
        ):
            raise InvalidArgument("end_time", "is before start_time")
        return await self.store.run(self.store.proposals, query, limit)

    async def proposal(self, proposal_id: str) -> Proposal:
        if not proposal_id:
            raise InvalidArgument("id", "must not be empty")
        found = await self.store.run(self.store.proposal, proposal_id)
        if found is None:
            raise NotFound(f"no proposal {proposal_id!r}", metadata={"id": proposal_id})
        return found

    async def verify(self) -> Verification:
        """Recomputes the chain from the stored entries and checks them against the cycles'
        heads, all read in one snapshot (off the event loop)."""

        def work() -> Verification:
            with self.store.snapshot() as snapshot:
                verifier = ChainVerifier(snapshot.heads())
                for index, entry in snapshot.entries():
                    verifier.feed(entry, index=index)
            return verifier.result()

        verification = await self.store.run(work)
        if self._verified is not None:
            self._verified(verification)
        return verification

    async def pulse(self) -> Pulse:
        def read() -> Pulse:
            cycles, proposals = self.store.counts()
            return Pulse(
                self.store.last_cycle(),
                cycles,
                proposals,
                active_proposal_count=self.store.active_count(),
                followed_sequence=self.store.position().after_sequence,
            )

        return await self.store.run(read)

    async def last_cycle(self) -> Cycle | None:
        return await self.store.run(self.store.last_cycle)

    # -- the ledger's stream ---------------------------------------------------------------------

    async def last_event_sequence(self) -> int:
        """The stream's last event stored (0: none yet)."""
        return await self.store.run(self.store.last_event_sequence)

    async def events_after(self, after: int, limit: int) -> tuple[list[LedgerEvent], int]:
        """Up to ``limit`` stored events after ``after``, in sequence order, and the sequence
        read through."""
        return await self.store.run(self.store.events_after, after, limit)

    # -- the lifecycle ---------------------------------------------------------------------------

    async def record_event(self, event: FederationEvent) -> Step:
        """Records what a federation event (of the plan stream, in sequence order) did to the
        proposals; an event recorded before changes nothing."""
        step, logged = await self.store.run(self.store.record_event_logged, event)
        self._publish(logged)
        return step

    def _publish(self, events: list[LedgerEvent]) -> None:
        for event in events:
            self.hub.publish(event)

    async def followed(self) -> Position:
        """Where the plan follower is: resume after ``after_sequence``."""
        return await self.store.run(self.store.position)
