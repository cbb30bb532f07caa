"""Conversions between the agent contract's dataclasses and ``qtmesh.api.agent.v1`` /
``qtmesh.api.common.v1`` messages. Incoming messages are validated: bad values raise
InvalidArgument naming the field."""

from __future__ import annotations

import math

from qtmesh.api.agent.v1 import agent_pb2 as pb
from qtmesh.api.common.v1 import policy_pb2, strategy_pb2
from qtmesh.base import contract as c
from qtmesh.base.convert._values import (
    enum_from_proto,
    enum_to_proto,
    finite,
    optional_time_from_proto,
    time_from_proto,
    timestamp,
)
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyGenome

# -- common types -------------------------------------------------------------------------------


def genome_to_proto(genome: StrategyGenome) -> strategy_pb2.StrategyGenome:
    return strategy_pb2.StrategyGenome(
        id=genome.id,
        family=enum_to_proto(strategy_pb2.StrategyFamily, genome.family),
        parameters=dict(genome.parameters),
        parent_ids=genome.parent_ids,
        generation=genome.generation,
        origin=genome.origin,
    )


def genome_from_proto(message: strategy_pb2.StrategyGenome, *, field: str) -> StrategyGenome:
    if not message.id:
        raise InvalidArgument(f"{field}.id", "must not be empty")
    for name, value in message.parameters.items():
        if not math.isfinite(value):
            raise InvalidArgument(f"{field}.parameters[{name}]", f"{value} is not finite")
    return StrategyGenome(
        id=message.id,
        family=enum_from_proto(
            StrategyFamily, strategy_pb2.StrategyFamily, message.family, field=f"{field}.family"
        ),
        parameters=dict(message.parameters),
        parent_ids=tuple(message.parent_ids),
        generation=message.generation,
        origin=message.origin,
    )


def limits_to_proto(limits: c.RiskLimits) -> policy_pb2.RiskLimits:
    return policy_pb2.RiskLimits(
        max_var_95=limits.max_var_95,
        max_drawdown=limits.max_drawdown,
        max_gross_exposure=limits.max_gross_exposure,
        max_sector_exposure=limits.max_sector_exposure,
        sector_exposure_limits=dict(limits.sector_exposure_limits),
    )


def limits_from_proto(message: policy_pb2.RiskLimits, *, field: str) -> c.RiskLimits:
    values = {
        "max_var_95": message.max_var_95,
        "max_drawdown": message.max_drawdown,
        "max_gross_exposure": message.max_gross_exposure,
        "max_sector_exposure": message.max_sector_exposure,
    }
    for name, value in [*values.items(), *message.sector_exposure_limits.items()]:
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{field}.{name}", f"{value} is not a non-negative number")
    return c.RiskLimits(**values, sector_exposure_limits=dict(message.sector_exposure_limits))


# -- action parameters ----------------------------------------------------------------------------


def parameters_to_proto(p: c.ActionParameters) -> pb.ActionParameters:
    match p:
        case c.HaltTrading():
            return pb.ActionParameters(halt_trading=pb.HaltTrading(scope=p.scope))
        case c.ResumeTrading():
            return pb.ActionParameters(resume_trading=pb.ResumeTrading(scope=p.scope))
        case c.AdjustExposure():
            return pb.ActionParameters(
                adjust_exposure=pb.AdjustExposure(sector=p.sector, factor=p.factor)
            )
        case c.AdjustRiskLimits():
            return pb.ActionParameters(
                adjust_risk_limits=pb.AdjustRiskLimits(limits=limits_to_proto(p.limits))
            )
        case c.SwitchMode():
            return pb.ActionParameters(
                switch_mode=pb.SwitchMode(mode=enum_to_proto(policy_pb2.StrategicMode, p.mode))
            )
        case c.EnableStrategy():
            return pb.ActionParameters(
                enable_strategy=pb.EnableStrategy(
                    strategy_id=p.strategy_id,
                    sector=p.sector,
                    genome=genome_to_proto(p.genome) if p.genome else None,
                    weight=p.weight,
                )
            )
        case c.DisableStrategy():
            return pb.ActionParameters(
                disable_strategy=pb.DisableStrategy(strategy_id=p.strategy_id)
            )
        case c.ReweightStrategies():
            return pb.ActionParameters(
                reweight_strategies=pb.ReweightStrategies(weights=dict(p.weights))
            )
        case c.PromoteStrategy():
            return pb.ActionParameters(
                promote_strategy=pb.PromoteStrategy(
                    strategy_id=p.strategy_id,
                    genome=genome_to_proto(p.genome) if p.genome else None,
                    sector=p.sector,
                    replaces=p.replaces,
                )
            )
        case c.RunEvolution():
            return pb.ActionParameters(
                run_evolution=pb.RunEvolution(symbols=p.symbols, generations=p.generations)
            )
        case c.TuneLearning():
            return pb.ActionParameters(
                tune_learning=pb.TuneLearning(
                    parameters=dict(p.parameters), retrain_models=p.retrain_models
                )
            )
        case c.SpawnArbMission():
            return pb.ActionParameters(
                spawn_arb_mission=pb.SpawnArbMission(
                    long_sector=p.long_sector, short_sector=p.short_sector, allocation=p.allocation
                )
            )
    raise TypeError(f"not action parameters: {p!r}")


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, f"{value} is not finite")
    return value


def parameters_from_proto(message: pb.ActionParameters, *, field: str) -> c.ActionParameters:
    kind = message.WhichOneof("kind")
    where = f"{field}.{kind}"
    match kind:
        case "halt_trading":
            return c.HaltTrading(scope=message.halt_trading.scope or "portfolio")
        case "resume_trading":
            return c.ResumeTrading(scope=message.resume_trading.scope or "portfolio")
        case "adjust_exposure":
            exposure = message.adjust_exposure
            factor = _finite(exposure.factor, f"{where}.factor")
            if factor < 0:
                raise InvalidArgument(f"{where}.factor", f"{factor} is negative")
            return c.AdjustExposure(sector=exposure.sector, factor=factor)
        case "adjust_risk_limits":
            return c.AdjustRiskLimits(
                limits=limits_from_proto(message.adjust_risk_limits.limits, field=f"{where}.limits")
            )
        case "switch_mode":
            return c.SwitchMode(
                mode=enum_from_proto(
                    c.StrategicMode,
                    policy_pb2.StrategicMode,
                    message.switch_mode.mode,
                    field=f"{where}.mode",
                )
            )
        case "enable_strategy":
            enable = message.enable_strategy
            return c.EnableStrategy(
                strategy_id=_required(enable.strategy_id, f"{where}.strategy_id"),
                sector=enable.sector,
                genome=genome_from_proto(enable.genome, field=f"{where}.genome")
                if enable.HasField("genome")
                else None,
                weight=_finite(enable.weight, f"{where}.weight"),
            )
        case "disable_strategy":
            return c.DisableStrategy(
                strategy_id=_required(message.disable_strategy.strategy_id, f"{where}.strategy_id")
            )
        case "reweight_strategies":
            weights = dict(message.reweight_strategies.weights)
            for name, weight in weights.items():
                if not math.isfinite(weight) or weight < 0:
                    raise InvalidArgument(f"{where}.weights[{name}]", f"{weight} is not >= 0")
            return c.ReweightStrategies(weights=weights)
        case "promote_strategy":
            promote = message.promote_strategy
            return c.PromoteStrategy(
                strategy_id=_required(promote.strategy_id, f"{where}.strategy_id"),
                genome=genome_from_proto(promote.genome, field=f"{where}.genome")
                if promote.HasField("genome")
                else None,
                sector=promote.sector,
                replaces=promote.replaces,
            )
        case "run_evolution":
            evolve = message.run_evolution
            if evolve.generations < 0:
                raise InvalidArgument(f"{where}.generations", "must not be negative")
            return c.RunEvolution(symbols=tuple(evolve.symbols), generations=evolve.generations)
        case "tune_learning":
            tune = message.tune_learning
            for name, value in tune.parameters.items():
                _finite(value, f"{where}.parameters[{name}]")
            return c.TuneLearning(
                parameters=dict(tune.parameters), retrain_models=tune.retrain_models
            )
        case "spawn_arb_mission":
            arb = message.spawn_arb_mission
            allocation = _finite(arb.allocation, f"{where}.allocation")
            if not 0 <= allocation <= 1:
                raise InvalidArgument(f"{where}.allocation", f"{allocation} is not in 0..1")
            return c.SpawnArbMission(
                long_sector=_required(arb.long_sector, f"{where}.long_sector"),
                short_sector=_required(arb.short_sector, f"{where}.short_sector"),
                allocation=allocation,
            )
    raise InvalidArgument(field, "no action parameters set")


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return value


# -- context, recommendations, actions ------------------------------------------------------------


def context_to_proto(context: c.AgentContext) -> pb.AgentContext:
    return pb.AgentContext(
        cycle_id=context.cycle_id,
        as_of_time=timestamp(context.as_of_time),
        market_position=context.market_position,
        hints=dict(context.hints),
    )


def context_from_proto(message: pb.AgentContext, *, field: str = "context") -> c.AgentContext:
    return c.AgentContext(
        cycle_id=message.cycle_id,
        as_of_time=time_from_proto(message.as_of_time, field=f"{field}.as_of_time"),
        market_position=message.market_position,
        hints=dict(message.hints),
    )


def recommendation_to_proto(r: c.Recommendation) -> pb.Recommendation:
    return pb.Recommendation(
        id=r.id,
        action_type=enum_to_proto(pb.ActionType, r.action_type),
        priority=enum_to_proto(pb.Priority, r.priority),
        target=r.target,
        parameters=parameters_to_proto(r.parameters),
        confidence=r.confidence,
        rationale=r.rationale,
        depends_on=r.depends_on,
        evidence=dict(r.evidence),
        intent_key=r.intent_key,
        as_of_time=timestamp(r.as_of_time) if r.as_of_time else None,
    )


def recommendation_from_proto(message: pb.Recommendation, *, field: str) -> c.Recommendation:
    parameters = parameters_from_proto(message.parameters, field=f"{field}.parameters")
    declared = enum_from_proto(
        c.ActionType, pb.ActionType, message.action_type, field=f"{field}.action_type"
    )
    if declared is not parameters.action_type:
        raise InvalidArgument(
            f"{field}.action_type",
            f"{declared.name} does not match parameters of {parameters.action_type.name}",
        )
    return c.Recommendation(
        id=message.id,
        priority=enum_from_proto(
            c.Priority, pb.Priority, message.priority, field=f"{field}.priority"
        ),
        target=message.target,
        parameters=parameters,
        confidence=finite(message.confidence, field=f"{field}.confidence"),
        rationale=message.rationale,
        depends_on=tuple(message.depends_on),
        evidence=dict(message.evidence),
        intent_key=message.intent_key,
        as_of_time=optional_time_from_proto(message, "as_of_time", field=f"{field}.as_of_time")
        or 0,
    )


def action_to_proto(a: c.Action) -> pb.Action:
    return pb.Action(
        id=a.id,
        type=enum_to_proto(pb.ActionType, a.action_type),
        priority=enum_to_proto(pb.Priority, a.priority),
        target=a.target,
        parameters=parameters_to_proto(a.parameters),
        confidence=a.confidence,
        rationale=a.rationale,
        depends_on=a.depends_on,
        status=enum_to_proto(pb.ActionStatus, a.status),
        status_detail=a.status_detail,
        source_agents=a.source_agents,
        superseded_by=a.superseded_by,
        owner=a.owner,
        idempotency_key=a.idempotency_key,
        attempts=a.attempts,
        execute_by_time=timestamp(a.execute_by_time) if a.execute_by_time else None,
        update_time=timestamp(a.update_time) if a.update_time else None,
        consensus=a.consensus,
        outcome=dict(a.outcome),
    )


def action_from_proto(message: pb.Action, *, field: str) -> c.Action:
    parameters = parameters_from_proto(message.parameters, field=f"{field}.parameters")
    declared = enum_from_proto(c.ActionType, pb.ActionType, message.type, field=f"{field}.type")
    if declared is not parameters.action_type:
        raise InvalidArgument(
            f"{field}.type",
            f"{declared.name} does not match parameters of {parameters.action_type.name}",
        )
    status = c.ActionStatus.PENDING
    if message.status:
        status = enum_from_proto(
            c.ActionStatus, pb.ActionStatus, message.status, field=f"{field}.status"
        )
    return c.Action(
        id=message.id,
        priority=enum_from_proto(
            c.Priority, pb.Priority, message.priority, field=f"{field}.priority"
        ),
        target=message.target,
        parameters=parameters,
        confidence=finite(message.confidence, field=f"{field}.confidence"),
        rationale=message.rationale,
        depends_on=tuple(message.depends_on),
        status=status,
        status_detail=message.status_detail,
        source_agents=tuple(message.source_agents),
        superseded_by=message.superseded_by,
        owner=message.owner,
        idempotency_key=message.idempotency_key,
        attempts=message.attempts,
        execute_by_time=optional_time_from_proto(
            message, "execute_by_time", field=f"{field}.execute_by_time"
        )
        or 0,
        update_time=optional_time_from_proto(message, "update_time", field=f"{field}.update_time")
        or 0,
        consensus=finite(message.consensus, field=f"{field}.consensus"),
        outcome=dict(message.outcome),
    )
