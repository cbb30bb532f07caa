"""Conversions between SESA's domain objects and ``qtmesh.api.sesa.v1`` / common messages."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from backtest.evaluation import CostModel, Evaluation, EvaluationSettings
from backtest.metrics import Metrics, ScoreWeights
from qtmesh.api.common.v1 import strategy_pb2
from qtmesh.api.sesa.v1 import sesa_pb2 as pb
from qtmesh.base.convert import enum_from_proto, enum_to_proto, genome_from_proto, genome_to_proto
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import StrategyStage
from sesa.agent import FinishedEvolution, ShadowBook, book_candidates, book_strategy_id
from sesa.evolution import EvaluationType, EvolutionConfig, EvolutionResult, GenerationStats
from sesa.forward import Origin, ScenarioSource
from sesa.mutation import OPERATORS
from sesa.selection import Judgement, SelectionConfig

OPERATOR_NAMES = {
    pb.MUTATION_OPERATOR_PARAMETER_TWEAK: "parameter_tweak",
    pb.MUTATION_OPERATOR_TIME_WINDOW: "time_window",
    pb.MUTATION_OPERATOR_VOLATILITY_FILTER: "volatility_filter",
    pb.MUTATION_OPERATOR_RISK_REWARD: "risk_reward",
    pb.MUTATION_OPERATOR_RL_PARAMETERS: "rl_parameters",
    pb.MUTATION_OPERATOR_DYNAMIC_TP_SL: "dynamic_tp_sl",
    pb.MUTATION_OPERATOR_ENTRY_EXIT_THRESHOLDS: "entry_exit_thresholds",
    pb.MUTATION_OPERATOR_HYBRID: "hybrid",
    pb.MUTATION_OPERATOR_CROSSOVER: "crossover",
}
assert set(OPERATOR_NAMES.values()) == set(OPERATORS)

_METRIC_FIELDS = [f.name for f in dataclasses.fields(Metrics)]


def metrics_to_proto(m: Metrics) -> strategy_pb2.StrategyMetrics:
    return strategy_pb2.StrategyMetrics(**{name: getattr(m, name) for name in _METRIC_FIELDS})


def metrics_from_proto(message: strategy_pb2.StrategyMetrics) -> Metrics:
    values = {name: getattr(message, name) for name in _METRIC_FIELDS}
    return Metrics(**values)


def evaluation_to_proto(
    e: Evaluation, judgement: Judgement | None = None
) -> strategy_pb2.StrategyEvaluation:
    message = strategy_pb2.StrategyEvaluation(
        genome=genome_to_proto(e.genome),
        metrics=metrics_to_proto(e.metrics),
        out_of_sample_metrics=metrics_to_proto(e.out_of_sample),
        risk_score=e.risk_score,
        composite_score=e.composite_score,
        trials=e.trials,
    )
    if judgement is not None:
        message.passed_gates = judgement.passed_gates
        message.gate_failures.extend(judgement.gate_failures)
        message.stage = enum_to_proto(strategy_pb2.StrategyStage, judgement.stage)
        message.promotion_readiness = judgement.promotion_readiness
    return message


def judgement_to_proto(j: Judgement) -> strategy_pb2.StrategyEvaluation:
    return evaluation_to_proto(j.evaluation, j)


def evaluation_from_proto(message: strategy_pb2.StrategyEvaluation, *, field: str) -> Evaluation:
    if not message.HasField("genome"):
        raise InvalidArgument(f"{field}.genome", "is required")
    for name, value in (
        ("risk_score", message.risk_score),
        ("composite_score", message.composite_score),
    ):
        if not math.isfinite(value):
            raise InvalidArgument(f"{field}.{name}", f"{value} is not finite")
    oos = (
        message.out_of_sample_metrics
        if message.HasField("out_of_sample_metrics")
        else message.metrics
    )
    return Evaluation(
        genome=genome_from_proto(message.genome, field=f"{field}.genome"),
        metrics=metrics_from_proto(message.metrics),
        out_of_sample=metrics_from_proto(oos),
        risk_score=message.risk_score,
        composite_score=message.composite_score,
        trials=message.trials,
    )


def stats_to_proto(s: GenerationStats) -> pb.GenerationStats:
    return pb.GenerationStats(
        generation=s.generation,
        best_composite=s.best_composite,
        median_composite=s.median_composite,
        worst_composite=s.worst_composite,
        diversity=s.diversity,
        evaluated=s.evaluated,
        passed_gates=s.passed_gates,
        trials=s.trials,
        top=[judgement_to_proto(j) for j in s.top],
        elapsed_seconds=s.elapsed_seconds,
    )


def result_to_proto(
    r: EvolutionResult, finished: FinishedEvolution | None = None
) -> pb.EvolutionResult:
    message = pb.EvolutionResult(
        top=[judgement_to_proto(j) for j in r.top],
        shadow_candidates=[judgement_to_proto(j) for j in r.shadow_candidates],
        production_candidates=[judgement_to_proto(j) for j in r.production_candidates],
        generations=[stats_to_proto(s) for s in r.generations],
        trials=r.trials,
        elapsed_seconds=r.elapsed_seconds,
        pbo=r.pbo,
    )
    if finished is not None:
        message.evolution_id = finished.evolution_id
        book = finished.shadow_book
        if book is not None:
            message.shadow_book.CopyFrom(shadow_book_to_proto(book))
    return message


def judgement_from_proto(message: strategy_pb2.StrategyEvaluation, *, field: str) -> Judgement:
    """A judged evaluation (as :func:`judgement_to_proto` writes it). The per-fold Sharpe ratios
    and the out-of-sample block sums are not in the message: they come back empty."""
    return Judgement(
        evaluation=evaluation_from_proto(message, field=field),
        passed_gates=message.passed_gates,
        gate_failures=tuple(message.gate_failures),
        stage=enum_from_proto(
            StrategyStage, strategy_pb2.StrategyStage, message.stage, field=f"{field}.stage"
        ),
        promotion_readiness=message.promotion_readiness,
    )


def _judgements(
    messages: Sequence[strategy_pb2.StrategyEvaluation], field: str
) -> tuple[Judgement, ...]:
    return tuple(judgement_from_proto(m, field=f"{field}[{i}]") for i, m in enumerate(messages))


def stats_from_proto(message: pb.GenerationStats, *, field: str) -> GenerationStats:
    return GenerationStats(
        generation=message.generation,
        best_composite=message.best_composite,
        median_composite=message.median_composite,
        worst_composite=message.worst_composite,
        diversity=message.diversity,
        evaluated=message.evaluated,
        passed_gates=message.passed_gates,
        trials=message.trials,
        top=_judgements(message.top, f"{field}.top"),
        elapsed_seconds=message.elapsed_seconds,
    )


def result_from_proto(message: pb.EvolutionResult, *, field: str = "result") -> EvolutionResult:
    """The domain result of an Evolve response (its evolution id and shadow book are the
    message's own; read them there)."""
    return EvolutionResult(
        top=_judgements(message.top, f"{field}.top"),
        shadow_candidates=_judgements(message.shadow_candidates, f"{field}.shadow_candidates"),
        production_candidates=_judgements(
            message.production_candidates, f"{field}.production_candidates"
        ),
        generations=tuple(
            stats_from_proto(s, field=f"{field}.generations[{i}]")
            for i, s in enumerate(message.generations)
        ),
        trials=message.trials,
        elapsed_seconds=message.elapsed_seconds,
        pbo=message.pbo if message.HasField("pbo") else None,
    )


def evolution_config_from_proto(message: pb.EvolutionConfig) -> EvolutionConfig:
    values = {
        name: getattr(message, name)
        for name in (
            "num_mutations_per_parent",
            "mutation_rate",
            "mutation_magnitude",
            "evaluation_lookback_days",
            "num_generations",
            "elite_carry_forward",
            "scenario_paths",
        )
        if message.HasField(name)
    }
    if message.evaluation_type:
        values["evaluation_type"] = enum_from_proto(
            EvaluationType,
            pb.EvaluationType,
            message.evaluation_type,
            field="config.evaluation_type",
        )
    for name in ("mutation_rate", "mutation_magnitude"):
        if name in values and not math.isfinite(values[name]):
            raise InvalidArgument(f"config.{name}", "is not finite")
    return EvolutionConfig(**values)


def costs_from_proto(message: pb.CostModel, present: bool, default: CostModel) -> CostModel:
    if not present:
        return default
    return CostModel(commission_bps=message.commission_bps, slippage_bps=message.slippage_bps)


def weights_from_proto(message: pb.ScoreWeights, present: bool) -> ScoreWeights:
    if not present:
        return ScoreWeights()
    return ScoreWeights(
        pnl=message.pnl,
        sharpe=message.sharpe,
        win_rate=message.win_rate,
        profit_factor=message.profit_factor,
        drawdown=message.drawdown,
        risk=message.risk,
    )


def selection_from_proto(message: pb.SelectionConfig) -> SelectionConfig:
    values = {
        name: getattr(message, name)
        for name in (
            "min_sharpe",
            "min_win_rate",
            "min_profit_factor",
            "max_drawdown",
            "top_k",
            "min_distance",
            "min_deflated_sharpe",
            "min_trades",
            "min_exposure",
        )
        if message.HasField(name)
    }
    return SelectionConfig(**values)


def shadow_book_to_proto(book: ShadowBook) -> pb.ShadowBookChange:
    return pb.ShadowBookChange(
        strategy_ids=book.strategy_ids,
        applied=book.applied,
        change_sequence=book.change_sequence,
        detail=book.detail,
    )


def evolution_config_to_proto(
    config: EvolutionConfig, settings: EvaluationSettings, top_k: int
) -> pb.EvolutionConfig:
    """The settings an evolution runs with, every field set."""
    return pb.EvolutionConfig(
        num_mutations_per_parent=config.num_mutations_per_parent,
        mutation_rate=config.mutation_rate,
        mutation_magnitude=config.mutation_magnitude,
        evaluation_type=enum_to_proto(pb.EvaluationType, config.evaluation_type),
        evaluation_lookback_days=config.evaluation_lookback_days,
        num_generations=config.num_generations,
        elite_carry_forward=config.elite_carry_forward,
        costs=pb.CostModel(
            commission_bps=settings.costs.commission_bps,
            slippage_bps=settings.costs.slippage_bps,
        ),
        weights=pb.ScoreWeights(**dataclasses.asdict(settings.weights)),
        top_k=top_k,
        scenario_paths=config.scenario_paths,
    )


def candidate_to_proto(j: Judgement, symbol: str) -> pb.CandidateSummary:
    oos = j.evaluation.out_of_sample
    return pb.CandidateSummary(
        genome_id=j.genome_id,
        strategy_id=book_strategy_id(symbol, j.genome_id),
        stage=enum_to_proto(strategy_pb2.StrategyStage, j.stage),
        composite_score=j.evaluation.composite_score,
        sharpe_ratio=oos.sharpe_ratio,
        deflated_sharpe_ratio=oos.deflated_sharpe_ratio,
        win_rate=oos.win_rate,
        profit_factor=oos.profit_factor,
        max_drawdown=oos.max_drawdown,
        trade_count=oos.trade_count,
        promotion_readiness=j.promotion_readiness,
        gate_failures=j.gate_failures,
        fold_sharpe_ratios=j.evaluation.fold_sharpe_ratios,
    )


def summary_to_proto(
    r: EvolutionResult, symbol: str, book: ShadowBook | None
) -> pb.EvolutionSummary:
    chosen = book_candidates(r)
    message = pb.EvolutionSummary(
        trials=r.trials,
        generations=len(r.generations),
        elapsed_seconds=r.elapsed_seconds,
        candidates=[candidate_to_proto(j, symbol) for j in chosen],
    )
    if not chosen and r.top:
        message.best.CopyFrom(candidate_to_proto(r.top[0], symbol))
    if book is not None:
        message.shadow_book.CopyFrom(shadow_book_to_proto(book))
    return message


_ORIGINS = {
    Origin.WORLD_MODEL: pb.SCENARIO_GENERATOR_WORLD_MODEL,
    Origin.BLOCK_BOOTSTRAP: pb.SCENARIO_GENERATOR_BLOCK_BOOTSTRAP,
}


def scenario_source_to_proto(source: ScenarioSource) -> pb.ScenarioSource:
    return pb.ScenarioSource(
        generator=_ORIGINS[source.origin],
        regime=source.regime,
        fallback_reason=source.fallback_reason,
    )
