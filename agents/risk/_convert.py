"""Conversions between the risk officer's domain objects and ``qtmesh.api.risk.v1``."""

from __future__ import annotations

import dataclasses

from agents.risk.assessment import Breach, RiskReport, SectorRisk
from agents.risk.limits import PORTFOLIO, Halt
from agents.risk.measures import TailRisk
from qtmesh.api.risk.v1 import risk_pb2 as pb
from qtmesh.base.convert import (
    duration,
    duration_nanos_from_proto,
    limits_from_proto,
    limits_to_proto,
    optional_time_from_proto,
    time_from_proto,
    timestamp,
)


def tail_to_proto(tail: TailRisk) -> pb.TailRisk:
    return pb.TailRisk(**dataclasses.asdict(tail))


def tail_from_proto(message: pb.TailRisk) -> TailRisk:
    return TailRisk(**{f.name: getattr(message, f.name) for f in dataclasses.fields(TailRisk)})


def halt_to_proto(halt: Halt) -> pb.Halt:
    return pb.Halt(
        scope=halt.scope,
        since_time=timestamp(halt.since),
        reason=halt.reason,
        action_id=halt.action_id,
    )


def halt_from_proto(message: pb.Halt) -> Halt:
    return Halt(
        message.scope,
        time_from_proto(message.since_time, field="since_time"),
        message.reason,
        message.action_id,
    )


def report_to_proto(report: RiskReport) -> pb.RiskReport:
    message = pb.RiskReport(
        portfolio=tail_to_proto(report.portfolio),
        sectors=[
            pb.SectorRisk(
                sector=s.sector,
                tail=tail_to_proto(s.tail),
                exposure=s.exposure,
                exposure_limit=s.exposure_limit,
                drawdown=s.drawdown,
                allocation=s.allocation,
                equity_var_95=s.equity_var_95,
                var_budget=s.var_budget,
            )
            for s in report.sectors
        ],
        gross_exposure=report.gross_exposure,
        drawdown=report.drawdown,
        limits=limits_to_proto(report.limits),
        breaches=[
            pb.LimitBreach(limit=b.limit, value=b.value, threshold=b.threshold)
            for b in report.breaches
        ],
        trading_halted=report.trading_halted,
        observations=report.observations,
        halts=[halt_to_proto(h) for h in report.halts],
        market_position=report.market_position,
    )
    if report.as_of_time:
        message.as_of_time.CopyFrom(timestamp(report.as_of_time))
    if report.horizon:
        message.horizon.CopyFrom(duration(report.horizon / 1e9))
    return message


def report_from_proto(message: pb.RiskReport) -> RiskReport:
    return RiskReport(
        as_of_time=optional_time_from_proto(message, "as_of_time") or 0,
        portfolio=tail_from_proto(message.portfolio),
        sectors=tuple(
            SectorRisk(
                sector=s.sector,
                tail=tail_from_proto(s.tail),
                exposure=s.exposure,
                exposure_limit=s.exposure_limit,
                drawdown=s.drawdown,
                allocation=s.allocation,
                equity_var_95=s.equity_var_95,
                var_budget=s.var_budget,
            )
            for s in message.sectors
        ),
        gross_exposure=message.gross_exposure,
        drawdown=message.drawdown,
        limits=limits_from_proto(message.limits, field="report.limits"),
        breaches=tuple(
            Breach(b.limit, b.value, b.threshold, b.limit.partition("/")[2] or PORTFOLIO)
            for b in message.breaches
        ),
        halts=tuple(halt_from_proto(h) for h in message.halts),
        observations=message.observations,
        horizon=duration_nanos_from_proto(message.horizon, field="horizon"),
        market_position=message.market_position,
    )
