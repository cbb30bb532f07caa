"""Conversions between the world model's domain objects and ``qtmesh.api.worldmodel.v1``."""

from __future__ import annotations

import numpy as np

from qtmesh.api.worldmodel.v1 import world_model_pb2 as pb
from qtmesh.base.convert import time_from_proto, timestamp
from world_model.regimes import RegimeReport
from world_model.scenarios import ScenarioSummary
from world_model.watch import RegimeChange


def report_to_proto(report: RegimeReport) -> pb.RegimeEstimate:
    return pb.RegimeEstimate(
        symbol=report.symbol,
        sector=report.sector,
        as_of_time=timestamp(report.as_of_time),
        regime=report.regime,
        states=[
            pb.RegimeState(label=label, probability=p, mean=m, stddev=s)
            for label, p, m, s in zip(
                report.labels, report.probabilities, report.means, report.stddevs, strict=True
            )
        ],
        transition_matrix=report.transition,
        observations=report.observations,
        bars_per_step=report.bars_per_step,
    )


def report_from_proto(message: pb.RegimeEstimate) -> RegimeReport:
    return RegimeReport(
        symbol=message.symbol,
        sector=message.sector,
        as_of_time=time_from_proto(message.as_of_time, field="as_of_time"),
        regime=message.regime,
        labels=tuple(s.label for s in message.states),
        probabilities=tuple(s.probability for s in message.states),
        means=tuple(s.mean for s in message.states),
        stddevs=tuple(s.stddev for s in message.states),
        transition=tuple(message.transition_matrix),
        observations=message.observations,
        bars_per_step=message.bars_per_step,
    )


def scenario_to_proto(summary: ScenarioSummary) -> pb.SimulateResponse:
    return pb.SimulateResponse(
        num_paths=summary.num_paths,
        horizon=summary.horizon,
        paths=summary.paths.ravel().tolist() if summary.paths is not None else (),
        quantiles=summary.quantiles,
        terminal_returns=summary.terminal_returns,
        regime=summary.regime,
        block_size=summary.block_size,
        history=summary.history,
    )


def scenario_from_proto(
    message: pb.SimulateResponse, *, symbol: str, sector: str, regime_conditioned: bool
) -> ScenarioSummary:
    paths = None
    if message.paths:
        paths = np.fromiter(message.paths, np.float64, len(message.paths)).reshape(
            message.num_paths, message.horizon
        )
    return ScenarioSummary(
        symbol=symbol,
        sector=sector,
        horizon=message.horizon,
        num_paths=message.num_paths,
        block_size=message.block_size,
        history=message.history,
        regime=message.regime,
        regime_conditioned=regime_conditioned,
        quantiles=tuple(message.quantiles),
        terminal_returns=tuple(message.terminal_returns),
        paths=paths,
    )


def change_to_proto(event: RegimeChange) -> pb.WatchRegimesResponse:
    return pb.WatchRegimesResponse(
        sequence=event.sequence,
        market_time=timestamp(event.market_time),
        regime=event.regime,
        previous_regime=event.previous_regime,
        probability=event.probability,
        estimate=report_to_proto(event.report),
    )


def change_from_proto(message: pb.WatchRegimesResponse) -> RegimeChange:
    return RegimeChange(
        sequence=message.sequence,
        market_time=time_from_proto(message.market_time, field="market_time"),
        regime=message.regime,
        previous_regime=message.previous_regime,
        report=report_from_proto(message.estimate),
    )
