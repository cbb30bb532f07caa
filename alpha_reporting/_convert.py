"""Conversions between alpha-reporting domain objects and ``qtmesh.api.alpha.v1`` messages."""

from __future__ import annotations

from alpha_reporting.report import EncryptedReport, SectorReport
from qtmesh.api.alpha.v1 import alpha_reporting_pb2 as pb
from qtmesh.base.convert import time_from_proto, timestamp


def report_to_proto(r: SectorReport) -> pb.SectorReport:
    return pb.SectorReport(
        report_id=r.report_id,
        sector=r.sector,
        trading_date=r.trading_date,
        roi=r.roi,
        alpha=r.alpha,
        benchmark_return=r.benchmark_return,
        volatility=r.volatility,
        max_drawdown=r.max_drawdown,
        trade_count=r.trade_count,
        fleet_size=r.fleet_size,
    )


def report_from_proto(message: pb.SectorReport) -> SectorReport:
    """Values are checked by the domain (alpha_reporting.report.validate_report)."""
    return SectorReport(
        report_id=message.report_id,
        sector=message.sector,
        trading_date=message.trading_date,
        roi=message.roi,
        alpha=message.alpha,
        benchmark_return=message.benchmark_return,
        volatility=message.volatility,
        max_drawdown=message.max_drawdown,
        trade_count=message.trade_count,
        fleet_size=message.fleet_size,
    )


def encrypted_to_proto(r: EncryptedReport) -> pb.EncryptedReport:
    return pb.EncryptedReport(
        report_id=r.report_id,
        sector=r.sector,
        trading_date=r.trading_date,
        key_id=r.key_id,
        nonce=r.nonce,
        ciphertext=r.ciphertext,
        create_time=timestamp(r.create_time),
        sequence=r.sequence,
    )


def encrypted_from_proto(message: pb.EncryptedReport) -> EncryptedReport:
    return EncryptedReport(
        report_id=message.report_id,
        sector=message.sector,
        trading_date=message.trading_date,
        key_id=message.key_id,
        nonce=bytes(message.nonce),
        ciphertext=bytes(message.ciphertext),
        create_time=time_from_proto(message.create_time, field="create_time"),
        sequence=message.sequence,
    )
