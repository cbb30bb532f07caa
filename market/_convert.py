"""Conversions between market domain objects and their protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from market import fleet
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.market.v1 import market_pb2 as pb
from qtmesh.base.convert import (
    enum_from_proto,
    enum_to_proto,
    genome_from_proto,
    genome_to_proto,
    optional_time_from_proto,
    time_from_proto,
    timestamp,
)
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyStage

# -- the paper fleet ------------------------------------------------------------------------------


def _optional_timestamp(nanos: int | None) -> Timestamp | None:
    return timestamp(nanos) if nanos is not None else None


def fleet_to_proto(report: fleet.FleetReport) -> pb.Fleet:
    return pb.Fleet(
        deployment_time=timestamp(report.deployment_time),
        clock_time=timestamp(report.clock_time),
        position=report.position,
        start_time=_optional_timestamp(report.start_time),
        end_time=_optional_timestamp(report.end_time),
        bar_count=report.bar_count,
        capital=report.capital,
        equity=report.equity,
        total_return=report.total_return,
        pnl=report.pnl,
        sectors=[
            pb.FleetSector(
                sector=s.sector,
                allocation=s.allocation,
                strategy_count=s.strategy_count,
                roi=s.roi,
                pnl=s.pnl,
                benchmark_return=s.benchmark_return,
                volatility=s.volatility,
                max_drawdown=s.max_drawdown,
                trade_count=s.trade_count,
                gross_exposure=s.gross_exposure,
                net_exposure=s.net_exposure,
                halted=s.halted,
            )
            for s in report.sectors
        ],
        strategies=[
            pb.FleetStrategy(
                strategy_id=s.strategy.id,
                sector=s.strategy.sector,
                symbol=s.strategy.symbol,
                genome=genome_to_proto(s.strategy.genome),
                weight=s.weight,
                position=s.position,
                roi=s.roi,
                pnl=s.pnl,
                trade_count=s.trade_count,
                stage=enum_to_proto(strategy_pb2.StrategyStage, s.stage),
                enabled=s.enabled,
                since_time=timestamp(s.since),
                origin=s.origin,
                trials=s.trials,
                book_weight=s.book_weight,
                record=_record_to_proto(s.record) if s.record is not None else None,
            )
            for s in report.strategies
        ],
        missions=[
            pb.ArbMission(
                mission_id=m.mission.id,
                long_sector=m.mission.long_sector,
                short_sector=m.mission.short_sector,
                allocation=m.mission.allocation,
                open_time=timestamp(m.mission.open_time),
                close_time=timestamp(m.mission.close_time),
                active=m.active,
                roi=m.roi,
                pnl=m.pnl,
                action_id=m.mission.action_id,
            )
            for m in report.missions
        ],
        changes=[change_to_proto(c) for c in report.changes],
        halted=sorted(report.halted),
        scale=report.scale,
        curve=[
            pb.EquitySample(
                time=timestamp(c.time),
                equity=c.equity,
                benchmark_equity=c.benchmark_equity,
                static_equity=c.static_equity,
            )
            for c in report.curve
        ],
    )


def change_to_proto(c: fleet.FleetChange) -> pb.FleetChange:
    return pb.FleetChange(
        sequence=c.sequence,
        time=timestamp(c.time),
        action_id=c.cause.action_id,
        plan_sequence=c.cause.plan_sequence,
        detail=c.detail,
        allocations=dict(c.allocations),
        action_key=c.cause.action_key,
        strategies=[e.strategy_id for e in c.book],
        halted=sorted(c.halted),
        scale=c.scale,
    )


def _record_to_proto(r: fleet.StageRecord) -> pb.StageRecord:
    return pb.StageRecord(
        start_time=timestamp(r.start_time),
        bar_count=r.bar_count,
        total_return=r.total_return,
        sharpe=r.sharpe,
        trade_count=r.trade_count,
        deflated_sharpe=r.deflated_sharpe,
        volatility=r.volatility,
        max_drawdown=r.max_drawdown,
        probabilistic_sharpe=r.probabilistic_sharpe,
    )


def _record_from_proto(r: pb.StageRecord) -> fleet.StageRecord:
    return fleet.StageRecord(
        start_time=time_from_proto(r.start_time, field="start_time"),
        bar_count=r.bar_count,
        total_return=r.total_return,
        sharpe=r.sharpe,
        trade_count=r.trade_count,
        deflated_sharpe=r.deflated_sharpe if r.HasField("deflated_sharpe") else None,
        volatility=r.volatility,
        max_drawdown=r.max_drawdown,
        probabilistic_sharpe=r.probabilistic_sharpe,
    )


def _time(message: object, name: str) -> int | None:
    return optional_time_from_proto(message, name)


def fleet_from_proto(message: pb.Fleet) -> fleet.FleetReport:
    return fleet.FleetReport(
        deployment_time=time_from_proto(message.deployment_time, field="deployment_time"),
        clock_time=time_from_proto(message.clock_time, field="clock_time"),
        position=message.position,
        start_time=_time(message, "start_time"),
        end_time=_time(message, "end_time"),
        bar_count=message.bar_count,
        capital=message.capital,
        equity=message.equity,
        total_return=message.total_return,
        pnl=message.pnl,
        sectors=tuple(
            fleet.SectorBook(
                sector=s.sector,
                allocation=s.allocation,
                strategy_count=s.strategy_count,
                roi=s.roi,
                pnl=s.pnl,
                benchmark_return=s.benchmark_return,
                volatility=s.volatility,
                max_drawdown=s.max_drawdown,
                trade_count=s.trade_count,
                gross_exposure=s.gross_exposure,
                net_exposure=s.net_exposure,
                halted=s.halted,
            )
            for s in message.sectors
        ),
        strategies=tuple(
            fleet.StrategyBook(
                strategy=fleet.DeployedStrategy(
                    s.strategy_id,
                    s.sector,
                    s.symbol,
                    genome_from_proto(s.genome, field=f"strategies[{i}].genome"),
                ),
                weight=s.weight,
                position=s.position,
                roi=s.roi,
                pnl=s.pnl,
                trade_count=s.trade_count,
                stage=enum_from_proto(
                    StrategyStage,
                    strategy_pb2.StrategyStage,
                    s.stage or strategy_pb2.STRATEGY_STAGE_PRODUCTION,
                    field=f"strategies[{i}].stage",
                ),
                enabled=s.enabled,
                since=time_from_proto(s.since_time, field="since_time"),
                origin=s.origin,
                trials=s.trials,
                book_weight=s.book_weight,
                record=_record_from_proto(s.record) if s.HasField("record") else None,
            )
            for i, s in enumerate(message.strategies)
        ),
        missions=tuple(
            fleet.MissionBook(
                mission=fleet.ArbMission(
                    id=m.mission_id,
                    long_sector=m.long_sector,
                    short_sector=m.short_sector,
                    allocation=m.allocation,
                    open_time=time_from_proto(m.open_time, field="open_time"),
                    close_time=time_from_proto(m.close_time, field="close_time"),
                    action_id=m.action_id,
                ),
                active=m.active,
                roi=m.roi,
                pnl=m.pnl,
            )
            for m in message.missions
        ),
        changes=tuple(change_from_proto(c) for c in message.changes),
        halted=frozenset(message.halted),
        scale=message.scale,
        curve=tuple(
            fleet.EquitySample(
                time=time_from_proto(c.time, field="curve.time"),
                equity=c.equity,
                benchmark_equity=c.benchmark_equity,
                static_equity=c.static_equity,
            )
            for c in message.curve
        ),
    )


def change_from_proto(c: pb.FleetChange) -> fleet.FleetChange:
    """The change as reported: its book entries are named in ``strategies`` of the message and
    read in full from the fleet's strategies, so the domain change carries none."""
    return fleet.FleetChange(
        sequence=c.sequence,
        time=time_from_proto(c.time, field="time"),
        cause=fleet.Cause(c.action_key, c.action_id, c.plan_sequence),
        allocations=dict(c.allocations),
        mission=None,
        detail=c.detail,
        halted=frozenset(c.halted),
        scale=c.scale,
    )


_SIDES = {1: pb.TRADE_SIDE_LONG, -1: pb.TRADE_SIDE_SHORT}


def trade_to_proto(t: fleet.Trade) -> pb.FleetTrade:
    return pb.FleetTrade(
        trade_id=t.trade_id,
        strategy_id=t.strategy_id,
        sector=t.sector,
        symbol=t.symbol,
        side=_SIDES[t.side],
        entry_time=timestamp(t.entry_time),
        exit_time=_optional_timestamp(t.exit_time),
        open=t.exit_time is None,
        bar_count=t.bar_count,
        return_fraction=t.return_fraction,
        pnl=t.pnl,
        family=enum_to_proto(strategy_pb2.StrategyFamily, t.family) if t.family else None,
    )


def trade_from_proto(message: pb.FleetTrade) -> fleet.Trade:
    return fleet.Trade(
        strategy_id=message.strategy_id,
        sector=message.sector,
        symbol=message.symbol,
        side=1 if message.side == pb.TRADE_SIDE_LONG else -1,
        entry_time=time_from_proto(message.entry_time, field="entry_time"),
        exit_time=optional_time_from_proto(message, "exit_time"),
        bar_count=message.bar_count,
        return_fraction=message.return_fraction,
        pnl=message.pnl,
        family=_family(message.family),
    )


def _family(value: int) -> StrategyFamily | None:
    """A trade's family; None when unset or one this client does not know (a newer server)."""
    try:
        return enum_from_proto(StrategyFamily, strategy_pb2.StrategyFamily, value, field="family")
    except InvalidArgument:
        return None


def cursor_to_proto(cursor: tuple[int, str] | None) -> pb.TradeCursor | None:
    if cursor is None:
        return None
    return pb.TradeCursor(exit_time=timestamp(cursor[0]), strategy_id=cursor[1])


def cursor_from_proto(message: pb.TradeCursor, *, field: str) -> tuple[int, str]:
    if not message.HasField("exit_time"):
        raise InvalidArgument(f"{field}.exit_time", "must be set")
    return (time_from_proto(message.exit_time, field="exit_time"), message.strategy_id)


def candidates_from_proto(request: pb.AddShadowsRequest) -> list[fleet.Candidate]:
    candidates = []
    for i, c in enumerate(request.candidates):
        where = f"candidates[{i}]"
        if not c.strategy_id:
            raise InvalidArgument(f"{where}.strategy_id", "must not be empty")
        if not c.HasField("genome"):
            raise InvalidArgument(f"{where}.genome", "must be set")
        candidates.append(
            fleet.Candidate(
                strategy_id=c.strategy_id,
                sector=c.sector,
                genome=genome_from_proto(c.genome, field=f"{where}.genome"),
            )
        )
    return candidates
