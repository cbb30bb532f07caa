"""The selection engine: gates, overfitting control, diversity, top-K and promotion readiness.

Every rule reads the out-of-sample metrics (walk-forward folds, purged and embargoed):

* gates (seed defaults): Sharpe > 0.5, win rate > 48%, profit factor > 1.2, max drawdown < 20%,
  at least 20 trades and 2% exposure (a handful of trades proves nothing, however they went);
* a strategy passing every gate is a *shadow* candidate; it is a *production* candidate only if
  its deflated Sharpe ratio, computed with every genome tried so far, is at least 0.95;
* top-K: the best composite scores, skipping any strategy closer than ``min_distance`` (RMS
  distance in normalised parameter space) to one already chosen, or that trades exactly like
  one (identical out-of-sample metrics: a filter that never binds changes nothing); an
  evolution breeds from these;
* the final ranking of a search (:func:`rank`) orders by *consistency* instead: the t
  statistic of the per-block out-of-sample Sharpe ratios (backtest.overfitting.consistency),
  then the composite score (and, where no strategy passes the gates, by the gates failed
  first). A search that climbs the composite score fits the walk-forward folds it scores on;
  the genome whose edge is there in every stretch of them is the one that holds up on bars
  never seen (docs/services/sesa.md, "Selection and overfitting control");
* promotion readiness, 0..1: 0.5 x the share of gates passed + 0.5 x min(DSR / required, 1);
  exactly 1 for production candidates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from backtest.evaluation import Evaluation, TrialLog, rescore_deflated
from backtest.overfitting import consistency, probability_of_overfitting
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyStage


@dataclasses.dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    min_sharpe: float = 0.5
    min_win_rate: float = 0.48
    min_profit_factor: float = 1.2
    max_drawdown: float = 0.20
    top_k: int = 5
    min_distance: float = 0.1
    min_deflated_sharpe: float = 0.95
    min_trades: int = 20
    min_exposure: float = 0.02

    def __post_init__(self) -> None:
        for name in ("min_sharpe", "min_profit_factor"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidArgument(name, "must be a finite number")
        for name in (
            "min_win_rate",
            "max_drawdown",
            "min_distance",
            "min_deflated_sharpe",
            "min_exposure",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 1:
                raise InvalidArgument(name, f"{value} is not in 0..1")
        if not 0 <= self.min_trades <= 1_000_000:
            raise InvalidArgument("min_trades", f"{self.min_trades} is not in 0..1000000")
        if not 1 <= self.top_k <= 1000:
            raise InvalidArgument("top_k", f"{self.top_k} is not in 1..1000")


@dataclasses.dataclass(frozen=True)
class Judgement:
    evaluation: Evaluation
    passed_gates: bool
    gate_failures: tuple[str, ...]
    stage: StrategyStage
    promotion_readiness: float

    @property
    def genome_id(self) -> str:
        return self.evaluation.genome.id


def judge(evaluation: Evaluation, config: SelectionConfig) -> Judgement:
    m = evaluation.out_of_sample
    gates = (
        (m.sharpe_ratio > config.min_sharpe, f"Sharpe {m.sharpe_ratio:.2f} <= {config.min_sharpe}"),
        (
            m.win_rate > config.min_win_rate,
            f"win rate {m.win_rate:.1%} <= {config.min_win_rate:.0%}",
        ),
        (
            m.profit_factor > config.min_profit_factor,
            f"profit factor {m.profit_factor:.2f} <= {config.min_profit_factor}",
        ),
        (
            m.max_drawdown < config.max_drawdown,
            f"max drawdown {m.max_drawdown:.1%} >= {config.max_drawdown:.0%}",
        ),
        (m.trade_count >= config.min_trades, f"{m.trade_count} trades < {config.min_trades}"),
        (
            m.exposure >= config.min_exposure,
            f"exposure {m.exposure:.1%} < {config.min_exposure:.0%}",
        ),
    )
    failures = tuple(reason for ok, reason in gates if not ok)
    passed = not failures
    deflated_ok = m.deflated_sharpe_ratio >= config.min_deflated_sharpe
    if not passed:
        stage = StrategyStage.REJECTED
    elif deflated_ok:
        stage = StrategyStage.PRODUCTION
    else:
        stage = StrategyStage.SHADOW
    readiness = 1.0
    if stage is not StrategyStage.PRODUCTION:
        share = (len(gates) - len(failures)) / len(gates)
        required = config.min_deflated_sharpe
        # A zero bar is met by any deflated Sharpe ratio (itself a probability, 0..1).
        dsr = min(m.deflated_sharpe_ratio / required, 1.0) if required > 0 else 1.0
        readiness = min(0.5 * share + 0.5 * dsr, 0.999)
    return Judgement(evaluation, passed, failures, stage, readiness)


def by_score(judgement: Judgement) -> tuple[float, str]:
    """The order of an evolution's parents: best composite score first."""
    return (-judgement.evaluation.composite_score, judgement.genome_id)


def by_consistency(judgement: Judgement) -> tuple[int, float, float, str]:
    """The order of a final ranking: fewest gates failed, then most consistent out of sample,
    then by score (a scenario evaluation, which has no blocks, by score alone). Failures come
    first so that, where nothing passes, a strategy of three lucky trades (consistent because
    it is rarely in the market) does not outrank one that misses a gate by a little."""
    blocks = judgement.evaluation.out_of_sample_blocks
    t = 0.0 if blocks is None else float(consistency(blocks)[0])
    return (
        len(judgement.gate_failures),
        -t,
        -judgement.evaluation.composite_score,
        judgement.genome_id,
    )


def diverse_top(
    judgements: Sequence[Judgement],
    *,
    k: int,
    min_distance: float,
    policy: Policy,
    order: Callable[[Judgement], Any] = by_score,
) -> list[Judgement]:
    """The first ``k`` in ``order``, each at least ``min_distance`` from those before and not
    a behavioural twin of one of them."""
    ranked = sorted(judgements, key=order)
    chosen: list[Judgement] = []
    for candidate in ranked:
        genome = candidate.evaluation.genome
        behaviour = candidate.evaluation.out_of_sample
        if all(
            policy.distance(genome, c.evaluation.genome) >= min_distance
            and behaviour != c.evaluation.out_of_sample
            for c in chosen
        ):
            chosen.append(candidate)
            if len(chosen) == k:
                break
    return chosen


def select(
    evaluations: Sequence[Evaluation], config: SelectionConfig, *, policy: Policy
) -> tuple[list[Judgement], list[Judgement]]:
    """(selected, judged): the diverse top-K among strategies that pass the gates, and every
    evaluation with its stage, in input order."""
    judged = [judge(e, config) for e in evaluations]
    unique = list({j.genome_id: j for j in judged if j.passed_gates}.values())
    selected = diverse_top(unique, k=config.top_k, min_distance=config.min_distance, policy=policy)
    return selected, judged


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The verdict on a whole search: every genome it evaluated judged with the final number of
    trials, the best of them and the probability of backtest overfitting of the selection."""

    top: tuple[Judgement, ...]
    shadow_candidates: tuple[Judgement, ...]
    production_candidates: tuple[Judgement, ...]
    # backtest.overfitting over every genome evaluated; None for scenario evaluations (they
    # average paths: no bars to split) or a search of one genome.
    pbo: float | None


def rank(
    evaluations: Sequence[Evaluation],
    trials: TrialLog,
    config: SelectionConfig,
    *,
    policy: Policy,
) -> Ranking:
    """The final judgement of an evolution or any other search: deflated Sharpe ratios
    recomputed for ``trials``; the diverse top-K, most consistent first, among strategies
    passing the gates (or, when none does, among all); the shadow and production candidates
    in the same order."""
    final = [rescore_deflated(e, trials) for e in evaluations]
    judged = [judge(e, config) for e in final]
    ranked = sorted(judged, key=by_consistency)
    passed = [j for j in ranked if j.passed_gates]
    top = diverse_top(
        passed or ranked,
        k=config.top_k,
        min_distance=config.min_distance,
        policy=policy,
        order=by_consistency,
    )
    blocks = [e.out_of_sample_blocks for e in evaluations]
    known = [b for b in blocks if b is not None]
    pbo = (
        probability_of_overfitting(np.stack(known)) if known and len(known) == len(blocks) else None
    )
    return Ranking(
        top=tuple(top),
        shadow_candidates=tuple(j for j in ranked if j.stage is StrategyStage.SHADOW),
        production_candidates=tuple(j for j in ranked if j.stage is StrategyStage.PRODUCTION),
        pbo=pbo,
    )
