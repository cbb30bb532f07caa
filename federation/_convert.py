"""Conversions between the federation's plans and ``qtmesh.api.federation.v1`` messages."""

from __future__ import annotations

from federation.plan import AgentReport, CallOutcome, Plan, StatusUpdate
from qtmesh.api.agent.v1 import agent_pb2
from qtmesh.api.federation.v1 import federation_pb2 as pb
from qtmesh.base import convert as agent_convert
from qtmesh.base.contract import ActionStatus, ActionType, Priority
from qtmesh.base.convert import (
    duration,
    enum_from_proto,
    enum_to_proto,
    seconds_from_proto,
    time_from_proto,
    timestamp,
)


def plan_to_proto(plan: Plan) -> pb.GlobalActionPlan:
    return pb.GlobalActionPlan(
        id=plan.id,
        sequence=plan.sequence,
        create_time=timestamp(plan.create_time),
        confidence=plan.confidence,
        consensus_score=plan.consensus_score,
        actions=[agent_convert.action_to_proto(a) for a in plan.actions],
        agents=[report_to_proto(r) for r in plan.agents],
        context=agent_convert.context_to_proto(plan.context),
        summary=plan.summary,
    )


def plan_from_proto(message: pb.GlobalActionPlan) -> Plan:
    return Plan(
        id=message.id,
        sequence=message.sequence,
        create_time=time_from_proto(message.create_time, field="create_time"),
        confidence=message.confidence,
        consensus_score=message.consensus_score,
        actions=tuple(
            agent_convert.action_from_proto(a, field=f"actions[{i}]")
            for i, a in enumerate(message.actions)
        ),
        agents=tuple(report_from_proto(r) for r in message.agents),
        context=agent_convert.context_from_proto(message.context),
        summary=message.summary,
    )


def report_to_proto(report: AgentReport) -> pb.AgentReport:
    return pb.AgentReport(
        agent=report.agent,
        outcome=enum_to_proto(pb.AgentCallOutcome, report.outcome),
        latency=duration(report.latency_seconds),
        attempts=report.attempts,
        recommendation_count=report.recommendation_count,
        detail=report.detail,
    )


def report_from_proto(message: pb.AgentReport) -> AgentReport:
    return AgentReport(
        agent=message.agent,
        outcome=enum_from_proto(CallOutcome, pb.AgentCallOutcome, message.outcome, field="outcome"),
        latency_seconds=seconds_from_proto(message.latency, field="latency"),
        attempts=message.attempts,
        recommendation_count=message.recommendation_count,
        detail=message.detail,
    )


def status_to_proto(update: StatusUpdate) -> pb.ActionStatusUpdate:
    return pb.ActionStatusUpdate(
        plan_sequence=update.plan_sequence,
        action_id=update.action_id,
        status=enum_to_proto(agent_pb2.ActionStatus, update.status),
        detail=update.detail,
        attempts=update.attempts,
        update_time=timestamp(update.update_time),
        action_type=enum_to_proto(agent_pb2.ActionType, update.action_type),
        priority=enum_to_proto(agent_pb2.Priority, update.priority),
        outcome=dict(update.outcome),
    )


def status_from_proto(message: pb.ActionStatusUpdate, sequence: int) -> StatusUpdate:
    return StatusUpdate(
        sequence=sequence,
        plan_sequence=message.plan_sequence,
        action_id=message.action_id,
        action_type=enum_from_proto(
            ActionType, agent_pb2.ActionType, message.action_type, field="action_type"
        ),
        priority=enum_from_proto(Priority, agent_pb2.Priority, message.priority, field="priority"),
        status=enum_from_proto(
            ActionStatus, agent_pb2.ActionStatus, message.status, field="status"
        ),
        detail=message.detail,
        attempts=message.attempts,
        update_time=time_from_proto(message.update_time, field="update_time"),
        outcome=dict(message.outcome),
    )
