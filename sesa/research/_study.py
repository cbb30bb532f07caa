"""A study: one search over a symbol's bars, with its last share held out and judged after.

The rules:

* the last ``holdout`` share of the bars is cut off before the search starts; the search and
  its selection see only the bars before it (the training bars);
* bars per year (and the spacing that turns durations into bars) come from the whole file's
  calendar, so both parts are annualised alike;
* every search is judged by the same final ranking as an evolution (sesa.selection.rank): the
  deflated Sharpe ratio over every genome evaluated, the gates, the diverse top-K and the
  probability of backtest overfitting;
* the top genomes are then run over all the bars with one boundary where the holdout begins
  (positions closed there, indicators warm and the Q-learning trader trained from the bars
  before it) and measured on the held-out bars alone, beside buy and hold over the same bars.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

import numpy as np

from backtest import kernel
from backtest.evaluation import MINIMUM_BARS, Evaluation, Evaluator, rescore_deflated
from backtest.indicators import BarData
from backtest.metrics import Metrics, from_accumulators
from qtmesh.base.bars import BarSeries
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import Policy, StrategyFamily, StrategyGenome
from sesa.evolution import GenerationStats
from sesa.research._base import Objective, Search
from sesa.selection import Judgement, Ranking, SelectionConfig, rank


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One of the top genomes with the figures of each part of the bars."""

    judgement: Judgement
    # Each walk-forward fold of the training bars (the first is in sample): returns, no trades.
    folds: tuple[Metrics, ...]
    holdout: Metrics

    @property
    def in_sample(self) -> Metrics:
        return self.folds[0]

    @property
    def walk_forward(self) -> Metrics:
        return self.judgement.evaluation.out_of_sample


@dataclasses.dataclass(frozen=True)
class Study:
    search: str
    symbol: str
    budget: int
    evaluated: int
    bars_per_year: float
    train_bars: int
    holdout_bars: int
    ranking: Ranking
    candidates: tuple[Candidate, ...]
    buy_and_hold: Metrics
    # An evolution's generations (none for the other searches).
    generations: tuple[GenerationStats, ...]
    elapsed_seconds: float
    policy: Policy
    selection: SelectionConfig
    # Every genome evaluated, in the order evaluated (deflated with the final trial count).
    evaluations: tuple[Evaluation, ...] = dataclasses.field(repr=False)
    # Bar times, and the per-bar returns of the best genome (run as for its holdout figures)
    # and of buy and hold, over every bar: what the report's equity curves are drawn from.
    time: np.ndarray = dataclasses.field(repr=False)
    best_returns: np.ndarray = dataclasses.field(repr=False)
    buy_and_hold_returns: np.ndarray = dataclasses.field(repr=False)

    @property
    def best(self) -> Candidate:
        return self.candidates[0]


def split_bars(
    series: BarSeries, holdout: float, *, bars_per_year: float | None = None
) -> tuple[BarData, BarData, int]:
    """(training bars, all bars, first held-out bar) for a holdout share in (0, 0.9];
    ``bars_per_year`` overrides the one observed on the calendar."""
    if not 0 < holdout <= 0.9:
        raise InvalidArgument("holdout", f"{holdout} is not a share in (0, 0.9]")
    whole = BarData(series, bars_per_year=bars_per_year)
    start = len(series) - max(1, round(holdout * len(series)))
    if start < MINIMUM_BARS:
        raise InvalidArgument(
            "holdout",
            f"{len(series)} bars less a holdout of {holdout:.0%} leave {start} to search on; "
            f"at least {MINIMUM_BARS} are needed",
        )
    train = BarData(
        series.slice(0, start), bars_per_year=whole.bars_per_year, spacing=whole.spacing
    )
    return train, whole, start


def run_study(
    series: BarSeries,
    search: Search,
    *,
    families: tuple[StrategyFamily, ...] = tuple(StrategyFamily),
    budget: int = 400,
    holdout: float = 0.3,
    bars_per_year: float | None = None,
    evaluator: Evaluator | None = None,
    selection: SelectionConfig | None = None,
    progress: Callable[[int], None] = lambda evaluated: None,
    token: CancelToken | None = None,
) -> Study:
    began = time.perf_counter()
    evaluator = evaluator or Evaluator()
    selection = selection or SelectionConfig()
    train, whole, start = split_bars(series, holdout, bars_per_year=bars_per_year)
    objective = Objective(
        evaluator=evaluator,
        data=train,
        families=families,
        budget=budget,
        progress=progress,
        token=token,
    )
    search.run(objective)
    if not objective.archive:
        raise InvalidArgument("budget", "the search evaluated no genome")
    evaluations = list(objective.archive.values())
    ranking = rank(evaluations, objective.trials, selection, policy=evaluator.policy)
    genomes = [j.evaluation.genome for j in ranking.top]
    held_out, run = evaluator.holdout(genomes, whole, start=start)
    folds = _fold_metrics(evaluator, genomes, train)
    candidates = tuple(
        Candidate(judgement=j, folds=f, holdout=h)
        for j, f, h in zip(ranking.top, folds, held_out, strict=True)
    )
    market = np.concatenate([[0.0], whole.close[1:] / whole.close[:-1] - 1.0])
    return Study(
        search=search.name,
        symbol=series.symbol,
        budget=budget,
        evaluated=len(evaluations),
        bars_per_year=whole.bars_per_year,
        train_bars=start,
        holdout_bars=whole.n - start,
        ranking=ranking,
        candidates=candidates,
        buy_and_hold=_metrics(market[start:], whole.bars_per_year),
        evaluations=tuple(rescore_deflated(e, objective.trials) for e in evaluations),
        generations=tuple(search.generations),
        elapsed_seconds=time.perf_counter() - began,
        policy=evaluator.policy,
        selection=selection,
        time=whole.time,
        best_returns=run.returns[0],
        buy_and_hold_returns=market,
    )


def _fold_metrics(
    evaluator: Evaluator, genomes: list[StrategyGenome], data: BarData
) -> list[tuple[Metrics, ...]]:
    returns = evaluator.backtest(genomes, data, walk_forward=True).returns
    edges = [*evaluator.fold_starts(data.n).tolist(), data.n]
    return [
        tuple(_metrics(row[a:b], data.bars_per_year) for a, b in itertools.pairwise(edges))
        for row in returns
    ]


def _metrics(returns: np.ndarray, bars_per_year: float) -> Metrics:
    accumulators = kernel.return_statistics(returns)
    return from_accumulators(
        accumulators[kernel.ALL_BARS], bars_per_year=bars_per_year, trials=1, trial_variance=0.0
    )
