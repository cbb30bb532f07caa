"""Conversions between the strategy officer's domain objects and ``qtmesh.api.strategy.v1``."""

from __future__ import annotations

from agents.strategy.book import ACTION, FLEET, Entry, Record
from agents.strategy.performance import FLEET as MEASURED_BY_FLEET
from agents.strategy.performance import RECORD, Performance
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.strategy.v1 import strategy_officer_pb2 as pb
from qtmesh.base.convert import (
    enum_from_proto,
    enum_to_proto,
    genome_from_proto,
    genome_to_proto,
    time_from_proto,
    timestamp,
)
from qtmesh.base.genome import StrategyStage


def metrics_to_proto(p: Performance) -> strategy_pb2.StrategyMetrics:
    return strategy_pb2.StrategyMetrics(
        total_return=p.total_return,
        annualized_volatility=p.volatility,
        sharpe_ratio=p.sharpe,
        max_drawdown=p.max_drawdown,
        trade_count=p.trade_count,
        probabilistic_sharpe_ratio=p.psr,
        deflated_sharpe_ratio=p.deflated_sharpe or 0.0,
        bar_count=p.observations,
    )


def record_to_proto(entry: Entry, performance: Performance | None) -> pb.StrategyRecord:
    r = entry.record
    message = pb.StrategyRecord(
        genome=genome_to_proto(r.genome),
        sector=r.sector,
        stage=enum_to_proto(strategy_pb2.StrategyStage, r.stage),
        enabled=r.enabled,
        weight=entry.weight,
        symbol=r.symbol,
        stage_since_time=timestamp(r.since),
        in_fleet=entry.in_fleet,
        origin=r.origin,
        trials=r.trials,
        strategy_id=r.strategy_id,
    )
    if performance is not None:
        message.recent.CopyFrom(metrics_to_proto(performance))
    return message


def record_from_proto(message: pb.StrategyRecord) -> tuple[Entry, Performance | None]:
    record = Record(
        strategy_id=message.strategy_id,
        sector=message.sector,
        symbol=message.symbol,
        genome=genome_from_proto(message.genome, field="genome"),
        stage=enum_from_proto(
            StrategyStage, strategy_pb2.StrategyStage, message.stage, field="stage"
        ),
        enabled=message.enabled,
        raw_weight=message.weight,
        since=time_from_proto(message.stage_since_time, field="stage_since_time"),
        origin=message.origin or (FLEET if message.in_fleet else ACTION),
        trials=message.trials or 1,
    )
    performance = None
    if message.HasField("recent"):
        m = message.recent
        performance = Performance(
            source=MEASURED_BY_FLEET if message.in_fleet else RECORD,
            observations=m.bar_count,
            total_return=m.total_return,
            volatility=m.annualized_volatility,
            sharpe=m.sharpe_ratio,
            max_drawdown=m.max_drawdown,
            trade_count=m.trade_count,
            psr=m.probabilistic_sharpe_ratio,
            deflated_sharpe=m.deflated_sharpe_ratio if not message.in_fleet else None,
        )
    return Entry(record, message.weight), performance
