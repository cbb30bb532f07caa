"""The proposal ledger's entries and their hash chain.

Every proposal is one entry at ``ledger_index`` 0, 1, 2, ... Its ``entry_hash`` is the hex
SHA-256 of its canonical encoding: the JSON object of every field but ``entry_hash`` itself
(``previous_hash`` included), keys sorted, no whitespace, UTF-8, floats in Python's shortest
round-trip form, the type by name, plus a format tag. ``previous_hash`` is the entry_hash of
the entry before it (64 zeros for the first). Changing any field of an entry changes its hash;
rewriting the hash breaks the next entry's link; deleting or reordering entries breaks the
index sequence or a link. Only truncating the newest entries leaves a valid chain, so each
cycle also records the head (index and hash) it left, and verification checks every entry
against the cycles: the entry at a recorded head must carry that hash, every entry must name a
recorded cycle and lie at or before that cycle's head, and nothing may follow the last cycle's
head. An entry appended by hand, even with a correct hash under the newest cycle's id, is
therefore found.

What the ledger alone cannot show is the removal of the newest cycle record together with its
entries: the rest is a shorter ledger that verifies. That is detectable only against a head hash
published outside the database, which VerifyLedger returns (``head_hash``) and every cycle
carries (``head_index``, ``head_hash``, also in the pulse's last cycle).

What became of a proposal is not part of its entry: an entry is never rewritten. Its lifecycle
(``state``, ``transition``) and the market times derived from its cycle (``as_of_time``,
``expire_time``) are read beside it and left out of the canonical encoding; the transition is a
row of its own (see :mod:`meta_optimizer.lifecycle`).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterable, Sequence

from meta_optimizer.audit import GapTest, ProposalDraft, ProposalType, SectorAudit

FORMAT = "qtmesh.metaopt.ledger.v1"
GENESIS = "0" * 64


class ProposalState(enum.Enum):
    """PROPOSED when a cycle appends it; then once, and finally, one of the other three."""

    PROPOSED = 1
    APPLIED = 2
    EXPIRED = 3
    REJECTED = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Transition:
    """A proposal's move out of PROPOSED and what made it: the federation plan (its sequence and
    id) and the action of that plan ("" when it expired at a plan that did not carry it), the
    event of the plan stream, the federation's time of that event and the plan's market time
    (Unix ns)."""

    proposal_id: str
    state: ProposalState
    plan_sequence: int
    plan_id: str
    action_id: str
    event_sequence: int
    reason: str
    time: int
    market_time: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Proposal:
    id: str
    type: ProposalType
    action: str
    target_sector: str
    counter_sector: str
    rationale: str
    confidence: float
    p_value: float
    factor: float
    allocation: float
    report_ids: tuple[str, ...]
    cycle_id: str
    create_time: int
    ledger_index: int
    previous_hash: str
    entry_hash: str = ""
    # Read beside the entry, never hashed (the module docstring).
    state: ProposalState = ProposalState.PROPOSED
    transition: Transition | None = None
    # Market time (Unix ns) of the data it rests on: the end of the newest trading day of its
    # sectors that its cycle audited; 0 if unknown.
    as_of_time: int = 0
    # Market time at which it expires unless applied before (0: unknown).
    expire_time: int = 0


# The fields of a Proposal that are not part of its ledger entry.
NOT_HASHED = frozenset({"entry_hash", "state", "transition", "as_of_time", "expire_time"})


def canonical(p: Proposal) -> bytes:
    fields = {f.name: getattr(p, f.name) for f in dataclasses.fields(p) if f.name not in NOT_HASHED}
    fields["type"] = p.type.name
    fields["report_ids"] = list(p.report_ids)
    fields["format"] = FORMAT
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def hash_of(p: Proposal) -> str:
    return hashlib.sha256(canonical(p)).hexdigest()


def chain(
    drafts: Sequence[ProposalDraft],
    *,
    cycle_id: str,
    create_time: int,
    first_index: int,
    previous_hash: str,
) -> list[Proposal]:
    """The entries of ``drafts``, appended after the entry ``first_index - 1`` whose hash is
    ``previous_hash``."""
    entries = []
    for k, d in enumerate(drafts):
        entry = Proposal(
            id=f"{cycle_id}-{k + 1}",
            type=d.type,
            action=d.action,
            target_sector=d.target_sector,
            counter_sector=d.counter_sector,
            rationale=d.rationale,
            confidence=d.confidence,
            p_value=d.p_value,
            factor=d.factor,
            allocation=d.allocation,
            report_ids=d.report_ids,
            cycle_id=cycle_id,
            create_time=create_time,
            ledger_index=first_index + k,
            previous_hash=previous_hash,
        )
        entry = dataclasses.replace(entry, entry_hash=hash_of(entry))
        previous_hash = entry.entry_hash
        entries.append(entry)
    return entries


@dataclasses.dataclass(frozen=True)
class Verification:
    intact: bool
    entry_count: int
    first_bad_index: int
    detail: str
    head_hash: str


@dataclasses.dataclass(frozen=True)
class CycleHead:
    """The head (index and hash) a cycle recorded; index -1 while the ledger was empty."""

    cycle_id: str
    head_index: int
    head_hash: str


class ChainVerifier:
    """Checks entries fed in index order against the cycle heads (in sequence order) read in the
    same snapshot, and stops judging at the first bad one."""

    def __init__(self, heads: Iterable[CycleHead] = ()) -> None:
        self.count = 0
        self.head = GENESIS
        self.first_bad: int | None = None
        self.detail = ""
        self._cycle_heads: dict[str, int] = {}
        self._recorded: dict[int, str] = {}
        self._last: CycleHead | None = None
        for h in heads:
            self._cycle_heads[h.cycle_id] = h.head_index
            self._recorded[h.head_index] = h.head_hash
            self._last = h

    def feed(self, entry: Proposal | None, *, index: int) -> None:
        """The stored entry at ``index``; None when its row no longer reads as an entry."""
        expected = self.count
        self.count += 1
        if self.first_bad is not None:
            return
        problem = ""
        if index != expected:
            problem = f"entry {expected} is missing: the next stored index is {index}"
        elif entry is None:
            problem = f"entry {expected} is unreadable: a field holds a value never written"
        elif entry.previous_hash != self.head:
            problem = (
                f"entry {expected} ({entry.id}) does not link to the entry before it: its "
                f"previous_hash {entry.previous_hash[:12]}... is not {self.head[:12]}..."
            )
        else:
            problem = self._misplaced(entry, expected)
        if problem:
            self.first_bad, self.detail = expected, problem
            return
        assert entry is not None
        self.head = entry.entry_hash

    def _misplaced(self, entry: Proposal, index: int) -> str:
        recomputed = _recompute(entry)
        if recomputed != entry.entry_hash:
            return (
                f"entry {index} ({entry.id}) was altered: its content hashes to "
                f"{recomputed[:12]}..., not the recorded {entry.entry_hash[:12]}..."
            )
        if self._last is None:
            return (
                f"entry {index} ({entry.id}) was appended outside any cycle: no cycle is recorded"
            )
        if index > self._last.head_index:
            return (
                f"entry {index} ({entry.id}) was appended outside any cycle: the last cycle "
                f"({self._last.cycle_id}) recorded its head at index {self._last.head_index}"
            )
        cycle_head = self._cycle_heads.get(entry.cycle_id)
        if cycle_head is None:
            return f"entry {index} ({entry.id}) names no recorded cycle ({entry.cycle_id!r})"
        if index > cycle_head:
            return (
                f"entry {index} ({entry.id}) lies beyond the head its cycle {entry.cycle_id} "
                f"recorded at index {cycle_head}"
            )
        recorded = self._recorded.get(index)
        if recorded is not None and recorded != entry.entry_hash:
            return f"entry {index} ({entry.id}) is not the head its cycle recorded"
        return ""

    def result(self) -> Verification:
        last = self._last
        if self.first_bad is None and last is not None and last.head_index >= self.count:
            self.first_bad = self.count
            self.detail = (
                f"entries {self.count}..{last.head_index} are missing: the last cycle recorded "
                f"its head at index {last.head_index}"
            )
        if self.first_bad is not None:
            return Verification(False, self.count, self.first_bad, self.detail, self.head)
        detail = f"{self.count} entries; every hash and link verified"
        return Verification(True, self.count, -1, detail, self.head)


def _recompute(entry: Proposal) -> str:
    try:
        return hash_of(entry)
    except ValueError:  # a non-finite number cannot have been hashed when appended
        return "<unencodable>"


class CycleStatus(enum.Enum):
    SUCCEEDED = 1
    # Some reports failed verification and were left out.
    PARTIAL = 2
    # No report could be audited (the source failed, or every report was rejected).
    FAILED = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cycle:
    """One optimization cycle as recorded beside the ledger, with the head it left."""

    id: str
    sequence: int
    start_time: int
    duration_seconds: float
    status: CycleStatus
    start_date: str
    end_date: str
    sectors: tuple[SectorAudit, ...]
    dominant_sector: str
    gap_test: GapTest | None
    proposals: tuple[Proposal, ...]
    reports_audited: int
    reports_rejected: int
    rejections: tuple[str, ...]
    head_index: int
    head_hash: str


class EventKind(enum.Enum):
    """What a :class:`LedgerEvent` records."""

    PROPOSAL = 1  # a proposal appended to the ledger (PROPOSED)
    CYCLE = 2  # a cycle recorded, after its proposals
    TRANSITION = 3  # a proposal's move out of PROPOSED


@dataclasses.dataclass(frozen=True, kw_only=True)
class LedgerEvent:
    """One event of the ledger's stream, at ``sequence`` 1, 2, 3, ... over every kind. A
    PROPOSAL event carries the proposal as appended, a CYCLE event the cycle with its proposals as
    appended (both PROPOSED, however they moved since), a TRANSITION event the proposal with its
    final state and transition."""

    sequence: int
    kind: EventKind
    proposal: Proposal | None = None
    cycle: Cycle | None = None
