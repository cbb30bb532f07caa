"""Conversions between the meta optimizer's domain types and ``qtmesh.api.metaoptimizer.v1``
messages, and from the federation's plan stream (``qtmesh.api.federation.v1``) to the events the
lifecycle reads (the meta optimizer does not import the federation's package: they are peers)."""

from __future__ import annotations

from meta_optimizer.audit import GapTest, ProposalType, SectorAudit
from meta_optimizer.engine import Pulse
from meta_optimizer.ledger import (
    Cycle,
    CycleStatus,
    EventKind,
    LedgerEvent,
    Proposal,
    ProposalState,
    Transition,
    Verification,
)
from meta_optimizer.lifecycle import (
    FederationEvent,
    PlanAction,
    PlanEvent,
    SkippedEvent,
    StatusEvent,
)
from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.federation.v1 import federation_pb2
from qtmesh.api.metaoptimizer.v1 import meta_optimizer_pb2 as pb
from qtmesh.base.contract import ActionStatus
from qtmesh.base.convert import (
    duration,
    enum_from_proto,
    enum_to_proto,
    optional_time_from_proto,
    seconds_from_proto,
    time_from_proto,
    timestamp,
)
from qtmesh.base.errors import InvalidArgument


def transition_to_proto(t: Transition) -> pb.ProposalTransition:
    return pb.ProposalTransition(
        state=enum_to_proto(pb.ProposalState, t.state),
        plan_sequence=t.plan_sequence,
        plan_id=t.plan_id,
        action_id=t.action_id,
        reason=t.reason,
        time=timestamp(t.time),
        market_time=timestamp(t.market_time),
        event_sequence=t.event_sequence,
    )


def transition_from_proto(proposal_id: str, m: pb.ProposalTransition) -> Transition:
    return Transition(
        proposal_id=proposal_id,
        state=enum_from_proto(ProposalState, pb.ProposalState, m.state, field="transition.state"),
        plan_sequence=m.plan_sequence,
        plan_id=m.plan_id,
        action_id=m.action_id,
        event_sequence=m.event_sequence,
        reason=m.reason,
        time=time_from_proto(m.time, field="time"),
        market_time=time_from_proto(m.market_time, field="market_time"),
    )


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
        state=enum_to_proto(pb.ProposalState, p.state),
        transition=transition_to_proto(p.transition) if p.transition is not None else None,
        as_of_time=timestamp(p.as_of_time) if p.as_of_time else None,
        expire_time=timestamp(p.expire_time) if p.expire_time else None,
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
        create_time=time_from_proto(message.create_time, field="create_time"),
        ledger_index=message.ledger_index,
        previous_hash=message.previous_hash,
        entry_hash=message.entry_hash,
        # A server older than the lifecycle leaves it unset: everything was proposed then.
        state=enum_from_proto(ProposalState, pb.ProposalState, message.state, field="state")
        if message.state
        else ProposalState.PROPOSED,
        transition=transition_from_proto(message.id, message.transition)
        if message.HasField("transition")
        else None,
        as_of_time=optional_time_from_proto(message, "as_of_time") or 0,
        expire_time=optional_time_from_proto(message, "expire_time") or 0,
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


def cycle_from_proto(m: pb.OptimizationCycle) -> Cycle:
    return Cycle(
        id=m.id,
        sequence=m.sequence,
        start_time=time_from_proto(m.start_time, field="start_time"),
        duration_seconds=seconds_from_proto(m.duration, field="duration"),
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
        active_proposal_count=p.active_proposal_count,
        followed_sequence=p.followed_sequence,
    )


def pulse_from_proto(m: pb.GetPulseResponse) -> Pulse:
    return Pulse(
        cycle_from_proto(m.last_cycle) if m.HasField("last_cycle") else None,
        m.cycle_count,
        m.proposal_count,
        active_proposal_count=m.active_proposal_count,
        followed_sequence=m.followed_sequence,
    )


# -- the federation's plan stream -----------------------------------------------------------------


def _action_status(value: int) -> ActionStatus | None:
    """The status, or None for one this version does not know (a newer federation's)."""
    try:
        return enum_from_proto(ActionStatus, agent_pb2.ActionStatus, value, field="status")
    except InvalidArgument:
        return None


def federation_event_from_proto(m: federation_pb2.SubscribePlansResponse) -> FederationEvent:
    """What the lifecycle reads of one SubscribePlans event."""
    if m.HasField("plan"):
        plan = m.plan
        actions = []
        for a in plan.actions:
            status = _action_status(a.status)
            if status is not None:
                actions.append(PlanAction(a.id, a.idempotency_key, status, a.status_detail))
        return PlanEvent(
            sequence=m.sequence,
            plan_id=plan.id,
            create_time=time_from_proto(plan.create_time, field="create_time"),
            market_time=time_from_proto(plan.context.as_of_time, field="as_of_time"),
            actions=tuple(actions),
        )
    if m.HasField("status_update"):
        update = m.status_update
        status = _action_status(update.status)
        if status is not None:
            return StatusEvent(
                sequence=m.sequence,
                plan_sequence=update.plan_sequence,
                action_id=update.action_id,
                status=status,
                detail=update.detail,
                update_time=time_from_proto(update.update_time, field="update_time"),
            )
    return SkippedEvent(m.sequence)


def event_to_proto(e: LedgerEvent) -> pb.WatchLedgerResponse:
    message = pb.WatchLedgerResponse(sequence=e.sequence)
    if e.kind is EventKind.CYCLE and e.cycle is not None:
        message.cycle.CopyFrom(cycle_to_proto(e.cycle))
    elif e.kind is EventKind.PROPOSAL and e.proposal is not None:
        message.proposal.CopyFrom(proposal_to_proto(e.proposal))
    elif e.kind is EventKind.TRANSITION and e.proposal is not None:
        message.transition.CopyFrom(proposal_to_proto(e.proposal))
    return message


def event_from_proto(m: pb.WatchLedgerResponse) -> LedgerEvent | None:
    """The event; None for a kind this client does not know (a newer server's)."""
    which = m.WhichOneof("event")
    if which == "cycle":
        return LedgerEvent(
            sequence=m.sequence, kind=EventKind.CYCLE, cycle=cycle_from_proto(m.cycle)
        )
    if which == "proposal":
        return LedgerEvent(
            sequence=m.sequence, kind=EventKind.PROPOSAL, proposal=proposal_from_proto(m.proposal)
        )
    if which == "transition":
        return LedgerEvent(
            sequence=m.sequence,
            kind=EventKind.TRANSITION,
            proposal=proposal_from_proto(m.transition),
        )
    return None
