"""Conversions between the CEO's domain objects and ``qtmesh.api.ceo.v1``."""

from __future__ import annotations

from typing import Any

from agents.ceo.engine import ModeReport
from qtmesh.api.ceo.v1 import ceo_pb2 as pb
from qtmesh.api.common.v1 import policy_pb2
from qtmesh.base.contract import StrategicMode
from qtmesh.base.convert import enum_from_proto, enum_to_proto, optional_time_from_proto, timestamp


def _mode(mode: StrategicMode) -> Any:
    return enum_to_proto(policy_pb2.StrategicMode, mode)


def report_to_proto(report: ModeReport) -> pb.GetModeResponse:
    message = pb.GetModeResponse(
        mode=_mode(report.mode),
        rationale=report.rationale,
        inputs=dict(report.inputs),
        indicated_mode=_mode(report.indicated) if report.indicated is not None else None,
        score=report.score,
        target_mode=_mode(report.target),
        confirmations=report.confirmations,
        missing_inputs=report.missing,
    )
    if report.since:
        message.since_time.CopyFrom(timestamp(report.since))
    if report.evaluated_time:
        message.evaluated_time.CopyFrom(timestamp(report.evaluated_time))
    return message


def report_from_proto(message: pb.GetModeResponse) -> ModeReport:
    def mode(value: int, field: str) -> StrategicMode:
        return enum_from_proto(StrategicMode, policy_pb2.StrategicMode, value, field=field)

    return ModeReport(
        mode=mode(message.mode, "mode"),
        since=optional_time_from_proto(message, "since_time") or 0,
        rationale=message.rationale,
        inputs=dict(message.inputs),
        indicated=mode(message.indicated_mode, "indicated_mode")
        if message.indicated_mode
        else None,
        score=message.score,
        target=mode(message.target_mode, "target_mode"),
        confirmations=message.confirmations,
        evaluated_time=optional_time_from_proto(message, "evaluated_time") or 0,
        missing=tuple(message.missing_inputs),
    )
