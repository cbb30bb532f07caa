"""Conversions between the meta domain types and ``qtmesh.api.meta.v1`` messages. Incoming
enums are checked here; value checks are the domain's (meta/model.py)."""

from __future__ import annotations

import enum
from typing import TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from meta import model as m
from meta import sesa_evaluations as evolutions
from meta.engine import TrialLog
from meta.tuning import Trial
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.meta.v1 import meta_pb2 as pb
from qtmesh.api.sesa.v1 import sesa_pb2
from qtmesh.base.convert import enum_from_proto, enum_to_proto, optional_time_from_proto, timestamp
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyFamily, StrategyStage


def _time(message: object, name: str) -> int | None:
    """Unix nanoseconds of a Timestamp field, or None when it is unset."""
    return optional_time_from_proto(message, name)


def _optional_time(nanos: int | None) -> Timestamp | None:
    return timestamp(nanos) if nanos else None


E = TypeVar("E", bound=enum.Enum)


def _optional_enum(domain: type[E], proto: object, value: int, *, field: str) -> E | None:
    return None if value == 0 else enum_from_proto(domain, proto, value, field=field)


# -- inputs ---------------------------------------------------------------------------------------


def trade_to_proto(t: m.Trade) -> pb.TradeRecord:
    return pb.TradeRecord(
        strategy_id=t.strategy_id,
        symbol=t.symbol,
        sector=t.sector,
        entry_time=timestamp(t.entry_time),
        exit_time=timestamp(t.exit_time),
        return_fraction=t.return_fraction,
    )


def trade_from_proto(message: pb.TradeRecord) -> m.Trade:
    return m.Trade(
        strategy_id=message.strategy_id,
        symbol=message.symbol,
        sector=message.sector,
        entry_time=_time(message, "entry_time") or 0,
        exit_time=_time(message, "exit_time") or 0,
        return_fraction=message.return_fraction,
    )


def evaluation_to_proto(e: m.Evaluation) -> strategy_pb2.StrategyEvaluation:
    return strategy_pb2.StrategyEvaluation(
        genome=strategy_pb2.StrategyGenome(
            id=e.strategy_id,
            family=enum_to_proto(strategy_pb2.StrategyFamily, e.family) if e.family else None,
            generation=e.generation,
        ),
        metrics=strategy_pb2.StrategyMetrics(
            sharpe_ratio=e.sharpe_ratio,
            deflated_sharpe_ratio=e.deflated_sharpe_ratio or 0.0,
            trade_count=e.trade_count,
        ),
        composite_score=e.composite_score,
        stage=enum_to_proto(strategy_pb2.StrategyStage, e.stage) if e.stage else None,
        trials=e.trials,
        evaluated_time=timestamp(e.evaluated_time),
    )


def evaluation_from_proto(
    message: strategy_pb2.StrategyEvaluation, *, field: str, now: int
) -> m.Evaluation:
    """An evaluation without evaluated_time is taken as made at ``now``; the deflated Sharpe
    ratio counts as known only when SESA reported its trial count."""
    return m.Evaluation(
        strategy_id=message.genome.id,
        family=_optional_enum(
            StrategyFamily,
            strategy_pb2.StrategyFamily,
            message.genome.family,
            field=f"{field}.genome.family",
        ),
        generation=message.genome.generation,
        composite_score=message.composite_score,
        sharpe_ratio=message.metrics.sharpe_ratio,
        deflated_sharpe_ratio=message.metrics.deflated_sharpe_ratio if message.trials > 0 else None,
        trade_count=message.metrics.trade_count,
        stage=_optional_enum(
            StrategyStage, strategy_pb2.StrategyStage, message.stage, field=f"{field}.stage"
        ),
        trials=message.trials,
        evaluated_time=_time(message, "evaluated_time") or now,
    )


def candidate_to_proto(c: m.ShadowCandidate) -> pb.ShadowCandidate:
    message = pb.ShadowCandidate(
        strategy_id=c.strategy_id,
        days_in_test=c.days_in_test,
        trade_count=c.trade_count,
        sharpe_ratio=c.sharpe_ratio,
    )
    if c.deflated_sharpe_ratio is not None:
        message.deflated_sharpe_ratio = c.deflated_sharpe_ratio
    return message


def candidate_from_proto(message: pb.ShadowCandidate) -> m.ShadowCandidate:
    return m.ShadowCandidate(
        strategy_id=message.strategy_id,
        days_in_test=message.days_in_test,
        trade_count=message.trade_count,
        sharpe_ratio=message.sharpe_ratio,
        deflated_sharpe_ratio=message.deflated_sharpe_ratio
        if message.HasField("deflated_sharpe_ratio")
        else None,
    )


def setting_to_proto(s: m.MutationSetting) -> pb.MutationSetting:
    return pb.MutationSetting(rate=s.rate, magnitude=s.magnitude)


def setting_from_proto(message: pb.MutationSetting) -> m.MutationSetting:
    return m.MutationSetting(message.rate, message.magnitude)


def state_to_proto(s: m.MetaState) -> pb.MetaState:
    message = pb.MetaState(
        now=timestamp(s.now),
        last_evolution_time=_optional_time(s.last_evolution_time),
        last_retrain_time=_optional_time(s.last_retrain_time),
        performance=s.performance,
        baseline_performance=s.baseline_performance,
        target_performance=s.target_performance or 0.0,
        regime_changed=s.regime_changed,
        shadow_candidates=[candidate_to_proto(c) for c in s.shadow_candidates],
        streak=s.streak,
        exploration_rate=s.exploration_rate,
        risk_multiplier=s.risk_multiplier,
        strategy_weights=dict(s.strategy_weights),
        proposed_strategy_weights=dict(s.proposed_strategy_weights),
    )
    if s.sample_count is not None:
        message.sample_count = s.sample_count
    if s.mutation is not None:
        message.current_mutation.CopyFrom(setting_to_proto(s.mutation.current))
        message.proposed_mutation.CopyFrom(setting_to_proto(s.mutation.proposed))
    return message


def state_from_proto(message: pb.MetaState, *, now: int, field: str = "state") -> m.MetaState:
    """A full state for Decide. Unset: ``now`` is the server's clock, target_performance 0 is
    the configured target, and without proposed_mutation there is no mutation proposal."""
    mutation = None
    if message.HasField("proposed_mutation"):
        if not message.HasField("current_mutation"):
            raise InvalidArgument(f"{field}.current_mutation", "must be set with proposed_mutation")
        mutation = m.MutationProposal(
            current=setting_from_proto(message.current_mutation),
            proposed=setting_from_proto(message.proposed_mutation),
        )
    return m.MetaState(
        now=_time(message, "now") or now,
        last_evolution_time=_time(message, "last_evolution_time"),
        last_retrain_time=_time(message, "last_retrain_time"),
        performance=message.performance,
        baseline_performance=message.baseline_performance,
        target_performance=message.target_performance or None,
        regime_changed=message.regime_changed,
        shadow_candidates=tuple(candidate_from_proto(c) for c in message.shadow_candidates),
        streak=message.streak,
        exploration_rate=message.exploration_rate,
        risk_multiplier=message.risk_multiplier,
        sample_count=message.sample_count if message.HasField("sample_count") else None,
        strategy_weights=dict(message.strategy_weights),
        proposed_strategy_weights=dict(message.proposed_strategy_weights),
        mutation=mutation,
    )


def caller_state_to_proto(s: m.CallerState) -> pb.MetaState:
    return pb.MetaState(
        target_performance=s.target_performance or 0.0,
        regime_changed=s.regime_changed,
        shadow_candidates=[candidate_to_proto(c) for c in s.shadow_candidates or ()],
        last_evolution_time=_optional_time(s.last_evolution_time),
        last_retrain_time=_optional_time(s.last_retrain_time),
        strategy_weights=dict(s.strategy_weights),
    )


def caller_state_from_proto(message: pb.MetaState) -> m.CallerState:
    """The fields of a MetaUpdate's state the OS does not measure itself; an empty candidate
    list means "derive candidates from the evaluations"."""
    return m.CallerState(
        target_performance=message.target_performance or None,
        regime_changed=message.regime_changed,
        shadow_candidates=tuple(candidate_from_proto(c) for c in message.shadow_candidates) or None,
        last_evolution_time=_time(message, "last_evolution_time"),
        last_retrain_time=_time(message, "last_retrain_time"),
        strategy_weights=dict(message.strategy_weights),
    )


# -- outputs --------------------------------------------------------------------------------------


def parameters_to_proto(p: m.MetaParameters) -> pb.MetaParameters:
    return pb.MetaParameters(
        rl_learning_rate=p.rl_learning_rate,
        rl_exploration_rate=p.rl_exploration_rate,
        rl_discount=p.rl_discount,
        strategy_weights=dict(p.strategy_weights),
        model_weights=dict(p.model_weights),
        risk_multiplier=p.risk_multiplier,
        position_size_scale=p.position_size_scale,
        sesa_mutation_rate=p.sesa_mutation_rate,
        sesa_mutation_magnitude=p.sesa_mutation_magnitude,
        version=p.version,
        update_time=_optional_time(p.update_time),
        retrain_requested_time=_optional_time(p.retrain_requested_time),
        cause=p.cause,
    )


def parameters_from_proto(message: pb.MetaParameters) -> m.MetaParameters:
    return m.MetaParameters(
        rl_learning_rate=message.rl_learning_rate,
        rl_exploration_rate=message.rl_exploration_rate,
        rl_discount=message.rl_discount,
        strategy_weights=dict(message.strategy_weights),
        model_weights=dict(message.model_weights),
        risk_multiplier=message.risk_multiplier,
        position_size_scale=message.position_size_scale,
        sesa_mutation_rate=message.sesa_mutation_rate,
        sesa_mutation_magnitude=message.sesa_mutation_magnitude,
        retrain_requested_time=_time(message, "retrain_requested_time") or 0,
        version=message.version,
        update_time=_time(message, "update_time") or 0,
        cause=message.cause,
    )


def change_to_proto(c: m.ParameterChange) -> pb.ParameterChange:
    return pb.ParameterChange(
        name=c.name, old_value=c.old_value, new_value=c.new_value, reason=c.reason
    )


def change_from_proto(message: pb.ParameterChange) -> m.ParameterChange:
    return m.ParameterChange(message.name, message.old_value, message.new_value, message.reason)


def changes_map(changes: tuple[m.ParameterChange, ...]) -> dict[str, str]:
    """The contract's summary form: name -> "old -> new"."""
    return {c.name: f"{c.old_value:.6g} -> {c.new_value:.6g}" for c in changes}


def decision_to_proto(d: m.MetaDecision) -> pb.MetaDecision:
    return pb.MetaDecision(
        type=enum_to_proto(pb.MetaDecisionType, d.type),
        rule=d.rule,
        inputs=dict(d.inputs),
        rationale=d.rationale,
        strategy_id=d.strategy_id,
        proposed=dict(d.proposed),
        confidence=d.confidence,
    )


def decision_from_proto(message: pb.MetaDecision, *, field: str) -> m.MetaDecision:
    return m.MetaDecision(
        type=enum_from_proto(
            m.DecisionType, pb.MetaDecisionType, message.type, field=f"{field}.type"
        ),
        rule=message.rule,
        inputs=dict(message.inputs),
        rationale=message.rationale,
        strategy_id=message.strategy_id,
        proposed=dict(message.proposed),
        confidence=message.confidence,
    )


def trial_to_proto(t: Trial) -> pb.SesaTrial:
    return pb.SesaTrial(
        index=t.index,
        setting=setting_to_proto(t.setting),
        start_time=_optional_time(t.start_time),
        end_time=timestamp(t.end_time) if t.end_time is not None else None,
        evaluation_count=t.evaluation_count,
        mean_score=t.mean_score,
    )


def trial_from_proto(message: pb.SesaTrial) -> Trial:
    count = message.evaluation_count
    return Trial(
        index=message.index,
        setting=setting_from_proto(message.setting),
        start_time=_time(message, "start_time") or 0,
        end_time=_time(message, "end_time"),
        evaluation_count=count,
        score_sum=message.mean_score * count,
    )


def trial_log_from_proto(message: pb.ListSesaTrialsResponse) -> TrialLog:
    return TrialLog(
        tuple(trial_from_proto(t) for t in message.trials),
        message.total_trials,
        message.total_evaluations,
    )


# -- SESA's evolution events, as the follower reads them -------------------------------------------
# Lenient: a value this meta does not know becomes None (or UNSPECIFIED), so one event of a newer
# SESA cannot stall the stream.


def _known(domain: type[E], proto: object, value: int) -> E | None:
    try:
        return _optional_enum(domain, proto, value, field="")
    except InvalidArgument:
        return None


def _genome_from_proto(e: strategy_pb2.StrategyEvaluation) -> evolutions.Genome:
    return evolutions.Genome(
        genome_id=e.genome.id,
        family=_known(StrategyFamily, strategy_pb2.StrategyFamily, e.genome.family),
        generation=e.genome.generation,
    )


def _candidate_from_proto(c: sesa_pb2.CandidateSummary) -> evolutions.Candidate:
    return evolutions.Candidate(
        genome_id=c.genome_id,
        strategy_id=c.strategy_id,
        stage=_known(StrategyStage, strategy_pb2.StrategyStage, c.stage),
        composite_score=c.composite_score,
        sharpe_ratio=c.sharpe_ratio,
        deflated_sharpe_ratio=c.deflated_sharpe_ratio,
        trade_count=c.trade_count,
    )


def evolution_event_from_proto(
    message: sesa_pb2.WatchEvolutionsResponse,
) -> evolutions.EvolutionEvent:
    kind = message.WhichOneof("event")
    event: evolutions.Started | evolutions.Generation | evolutions.Ended | None = None
    if kind == "started":
        event = evolutions.Started(
            symbol=message.started.symbol,
            bars_end_time=_time(message.started, "bars_end_time"),
        )
    elif kind == "generation":
        event = evolutions.Generation(
            top=tuple(_genome_from_proto(e) for e in message.generation.top)
        )
    elif kind == "ended":
        ended = message.ended
        summary = ended.summary
        candidates = list(summary.candidates)
        if not candidates and summary.HasField("best"):
            candidates = [summary.best]
        event = evolutions.Ended(
            outcome=_known(evolutions.Outcome, sesa_pb2.EvolutionOutcome, ended.outcome)
            or evolutions.Outcome.UNSPECIFIED,
            summarized=ended.HasField("summary"),
            trials=summary.trials,
            candidates=tuple(_candidate_from_proto(c) for c in candidates),
        )
    return evolutions.EvolutionEvent(
        sequence=message.sequence,
        start_sequence=message.start_sequence,
        evolution_id=message.evolution_id,
        event=event,
    )
