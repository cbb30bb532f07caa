"""The selection engine: gates, overfitting control, diversity, top-K and promotion readiness.

Every rule reads the out-of-sample metrics (walk-forward folds, purged and embargoed):

* gates (seed defaults): Sharpe > 0.5, win rate > 48%, profit factor > 1.2, max drawdown < 20%,
  at least 20 trades and 2% exposure (a handful of trades proves nothing, however they went);
* a strategy passing every gate is a *shadow* candidate; it is a *production* candidate only if
  its deflated Sharpe ratio, computed with every genome tried so far, is at least 0.95;
* top-K: the best composite scores, skipping any strategy closer than ``min_distance`` (RMS
  distance in normalised parameter space) to one already chosen, or that trades exactly like
  one (identical out-of-sample metrics: a filter that never binds changes nothing);
* promotion readiness, 0..1: 0.5 x the share of gates passed + 0.5 x min(DSR / required, 1);
  exactly 1 for production candidates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from backtest.evaluation import Evaluation
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


def diverse_top(
    judgements: Sequence[Judgement], *, k: int, min_distance: float, policy: Policy
) -> list[Judgement]:
    """The best ``k`` by composite score, each at least ``min_distance`` from those before and
    not a behavioural twin of one of them."""
    ranked = sorted(judgements, key=lambda j: (-j.evaluation.composite_score, j.genome_id))
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
