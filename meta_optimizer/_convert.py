"""Conversions between the meta optimizer's domain types and ``qtmesh.api.metaoptimizer.v1``
messages."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from meta_optimizer.audit import GapTest, ProposalType, SectorAudit
from meta_optimizer.engine import Pulse
from meta_optimizer.ledger import Cycle, CycleStatus, Proposal, Verification
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.base.convert import duration, enum_from_proto, enum_to_proto, timestamp


def proposal_to_proto(p: Proposal) -> pb.Proposal:
    return pb.Proposal(
        id=p.id,
        type=enum_to_proto(pb.ProposalType, p.type),
        action=p.action,
        target_sector=p.target_sector,
        counter_sector=p.counter_sector,
        rationale=p.rationale,
        confidence=p.confidence,
        report_ids=p.report_ids,
        cycle_id=p.cycle_id,
        create_time=timestamp(p.create_time),
        ledger_index=p.ledger_index,
        previous_hash=p.previous_hash,
        entry_hash=p.entry_hash,
        factor=p.factor,
        allocation=p.allocation,
        p_value=p.p_value,
    )


def proposal_from_proto(message: pb.Proposal) -> Proposal:
    return Proposal(
        id=message.id,
        type=enum_from_proto(ProposalType, pb.ProposalType, message.type, field="type"),
        action=message.action,
        target_sector=message.target_sector,
        counter_sector=message.counter_sector,
        rationale=message.rationale,
        confidence=message.confidence,
        p_value=message.p_value,
        factor=message.factor,
        allocation=message.allocation,
        report_ids=tuple(message.report_ids),
        cycle_id=message.cycle_id,
        create_time=message.create_time.ToNanoseconds(),
        ledger_index=message.ledger_index,
        previous_hash=message.previous_hash,
        entry_hash=message.entry_hash,
    )


def audit_to_proto(a: SectorAudit) -> pb.SectorAudit:
    return pb.SectorAudit(
        sector=a.sector,
        report_count=a.report_count,
        roi=a.roi,
        alpha=a.alpha,
        mean_daily_alpha=a.mean_daily_alpha,
        alpha_stddev=a.alpha_stddev,
        alpha_t_stat=a.alpha_t_stat,
        volatility=a.volatility,
        max_drawdown=a.max_drawdown,
        fleet_size=a.fleet_size,
        benchmark_return=a.benchmark_return,
        p_value_positive=a.p_value_positive,
        p_value_negative=a.p_value_negative,
        first_date=a.first_date,
        last_date=a.last_date,
        report_ids=a.report_ids,
    )


def audit_from_proto(m: pb.SectorAudit) -> SectorAudit:
    return SectorAudit(
        sector=m.sector,
        report_ids=tuple(m.report_ids),
        first_date=m.first_date,
        last_date=m.last_date,
        roi=m.roi,
        benchmark_return=m.benchmark_return,
        alpha=m.alpha,
        mean_daily_alpha=m.mean_daily_alpha,
        alpha_stddev=m.alpha_stddev,
        alpha_t_stat=m.alpha_t_stat,
        p_value_positive=m.p_value_positive,
        p_value_negative=m.p_value_negative,
        volatility=m.volatility,
        max_drawdown=m.max_drawdown,
        fleet_size=m.fleet_size,
    )


def gap_to_proto(g: GapTest) -> pb.SectorGapTest:
    return pb.SectorGapTest(
        best_sector=g.best_sector,
        worst_sector=g.worst_sector,
        gap=g.gap,
        q_statistic=g.q_statistic,
        p_value=g.p_value,
        sector_count=g.sector_count,
        degrees_of_freedom=g.degrees_of_freedom,
        significant=g.significant,
    )


def gap_from_proto(m: pb.SectorGapTest) -> GapTest:
    return GapTest(
        m.best_sector,
        m.worst_sector,
        m.gap,
        m.q_statistic,
        m.p_value,
        m.sector_count,
        m.degrees_of_freedom,
        m.significant,
    )


def cycle_to_proto(c: Cycle) -> pb.OptimizationCycle:
    return pb.OptimizationCycle(
        id=c.id,
        start_time=timestamp(c.start_time),
        duration=duration(c.duration_seconds),
        status=enum_to_proto(pb.CycleStatus, c.status),
        sectors=[audit_to_proto(a) for a in c.sectors],
        dominant_sector=c.dominant_sector,
        proposals=[proposal_to_proto(p) for p in c.proposals],
        reports_audited=c.reports_audited,
        reports_rejected=c.reports_rejected,
        rejections=c.rejections,
        gap_test=gap_to_proto(c.gap_test) if c.gap_test else None,
        start_date=c.start_date,
        end_date=c.end_date,
        head_index=c.head_index,
        head_hash=c.head_hash,
        sequence=c.sequence,
    )


def _seconds(d: Duration) -> float:
    return d.ToNanoseconds() / 1e9


def cycle_from_proto(m: pb.OptimizationCycle) -> Cycle:
    return Cycle(
        id=m.id,
        sequence=m.sequence,
        start_time=m.start_time.ToNanoseconds(),
        duration_seconds=_seconds(m.duration),
        status=enum_from_proto(CycleStatus, pb.CycleStatus, m.status, field="status"),
        start_date=m.start_date,
        end_date=m.end_date,
        sectors=tuple(audit_from_proto(a) for a in m.sectors),
        dominant_sector=m.dominant_sector,
        gap_test=gap_from_proto(m.gap_test) if m.HasField("gap_test") else None,
        proposals=tuple(proposal_from_proto(p) for p in m.proposals),
        reports_audited=m.reports_audited,
        reports_rejected=m.reports_rejected,
        rejections=tuple(m.rejections),
        head_index=m.head_index,
        head_hash=m.head_hash,
    )


def verification_to_proto(v: Verification) -> pb.VerifyLedgerResponse:
    return pb.VerifyLedgerResponse(
        intact=v.intact,
        entry_count=v.entry_count,
        first_bad_index=v.first_bad_index,
        detail=v.detail,
        head_hash=v.head_hash,
    )


def verification_from_proto(m: pb.VerifyLedgerResponse) -> Verification:
    return Verification(m.intact, m.entry_count, m.first_bad_index, m.detail, m.head_hash)


def pulse_to_proto(p: Pulse) -> pb.GetPulseResponse:
    return pb.GetPulseResponse(
        last_cycle=cycle_to_proto(p.last_cycle) if p.last_cycle else None,
        cycle_count=p.cycle_count,
        proposal_count=p.proposal_count,
        arb_missions=[proposal_to_proto(a) for a in p.arb_missions],
    )


def pulse_from_proto(m: pb.GetPulseResponse) -> Pulse:
    return Pulse(
        cycle_from_proto(m.last_cycle) if m.HasField("last_cycle") else None,
        m.cycle_count,
        m.proposal_count,
    )
