"""The evaluation engine: backtests a population at once over the same bars and scores it.

Every genome is run by the compiled kernel (backtest/kernel.py) over walk-forward folds: the first
fold is in sample (it warms up indicators and trains the Q-learning trader, which keeps learning
online, always from the past only); the later folds are out of sample, each starting with
positions closed (purge) and ``embargo_minutes`` of bars without entries. Selection reads the
out-of-sample metrics; the all-bars metrics are reported beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from backtest import kernel
from backtest.cluster import Cluster, Simulated
from backtest.indicators import BarData
from backtest.metrics import (
    Metrics,
    ScoreWeights,
    composite_score,
    expected_max_sharpe,
    from_accumulators,
    probabilistic_sharpe,
    risk_score,
    sharpe_null_floor,
)
from backtest.overfitting import BLOCKS, block_sums, interval_sums, sharpe_of_sums
from qtmesh.base.concurrency import CancelToken
from qtmesh.base.errors import InvalidArgument
from qtmesh.base.genome import (
    COMMON,
    Policy,
    StrategyFamily,
    StrategyGenome,
    reject_conflicting_ids,
)

# The volatility filter's bounds, whose edges mean "no bound" (Evaluator._parameter_vector).
_VOL_MIN, _VOL_MAX = (next(s for s in COMMON if s.name == n) for n in ("vol_min", "vol_max"))
# numba's parallel kernel already uses every core; running two at once only thrashes.
_KERNEL_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True, kw_only=True)
class CostModel:
    """Trading costs in basis points of traded notional, per unit of position traded."""

    commission_bps: float = 1.0
    slippage_bps: float = 1.0

    def __post_init__(self) -> None:
        for name in ("commission_bps", "slippage_bps"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0 <= value <= 1000:
                raise InvalidArgument(f"costs.{name}", f"{value} is not in 0..1000")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationSettings:
    costs: CostModel = dataclasses.field(default_factory=CostModel)
    weights: ScoreWeights = dataclasses.field(default_factory=ScoreWeights)
    # Walk-forward folds; the first is in-sample warm-up, the rest out of sample.
    folds: int = 4
    # Market time without entries after each fold boundary, in bars at the data's spacing
    # rounded up: 60 bars of minute data, one bar of hourly or daily data.
    embargo_minutes: float = 60.0

    def __post_init__(self) -> None:
        if not 2 <= self.folds <= 20:
            raise InvalidArgument("folds", f"{self.folds} is not in 2..20")
        if not math.isfinite(self.embargo_minutes) or self.embargo_minutes < 0:
            raise InvalidArgument("embargo_minutes", "must be a non-negative number")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    genome: StrategyGenome
    metrics: Metrics
    out_of_sample: Metrics
    risk_score: float
    composite_score: float
    trials: int
    # The out-of-sample bars' per-block sums (backtest.overfitting.block_sums) that the
    # probability of backtest overfitting is computed from; None for scenario evaluations.
    out_of_sample_blocks: np.ndarray | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    # The annualised Sharpe ratio of each out-of-sample walk-forward fold; () for scenario
    # evaluations (their metrics average paths).
    fold_sharpe_ratios: tuple[float, ...] = dataclasses.field(default=(), compare=False)


@dataclasses.dataclass(frozen=True)
class Backtest:
    """Per-bar returns and positions (rows: genomes) and the kernel's accumulators."""

    returns: np.ndarray
    positions: np.ndarray
    accumulators: np.ndarray


class TrialLog:
    """Every genome tried so far: their number and the variance of their per-bar Sharpe ratios
    (out of sample), which the deflated Sharpe ratio needs. ``prior`` counts earlier trials."""

    def __init__(self, prior: int = 0) -> None:
        if prior < 0:
            raise InvalidArgument("prior_trials", "must not be negative")
        self.count = prior
        self._seen = 0
        self._mean = 0.0
        self._m2 = 0.0

    def add(self, sharpe: float) -> None:
        self.count += 1
        self._seen += 1
        delta = sharpe - self._mean
        self._mean += delta / self._seen
        self._m2 += delta * (sharpe - self._mean)

    @property
    def variance(self) -> float:
        return self._m2 / (self._seen - 1) if self._seen > 1 else 0.0


MINIMUM_BARS = 500


class Evaluator:
    """Evaluates genomes on one BarData; keyword-only so settings read at the call site. With a
    ``cluster`` (:mod:`backtest.cluster`) the populations of :meth:`evaluate` and
    :meth:`evaluate_scenarios` are backtested on its workers, with the same results."""

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        settings: EvaluationSettings | None = None,
        chunk_size: int = 16,
        cluster: Cluster | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.settings = settings or EvaluationSettings()
        self.chunk_size = chunk_size
        self.cluster = cluster

    def without_cluster(self) -> Evaluator:
        """The same evaluator, evaluating in process."""
        return Evaluator(policy=self.policy, settings=self.settings, chunk_size=self.chunk_size)

    def simulate_population(
        self,
        genomes: Sequence[StrategyGenome],
        data: BarData,
        *,
        summaries: bool,
        token: CancelToken | None = None,
    ) -> Simulated:
        """The kernel over ``genomes`` in process: accumulators and, with ``summaries``, the
        out-of-sample block sums and the later folds' sums (what :meth:`evaluate` scores)."""
        count = len(genomes)
        if not summaries:
            return Simulated(self._simulate(list(genomes), data, token))
        blocks = np.empty((count, BLOCKS, 3))
        folds = np.empty((count, self.settings.folds - 1, 3))
        accumulators = self._simulate(
            list(genomes), data, token, blocks_out=blocks, folds_out=folds
        )
        return Simulated(accumulators, blocks, folds)

    def _population(
        self,
        genomes: list[StrategyGenome],
        data: BarData,
        *,
        summaries: bool,
        token: CancelToken | None,
    ) -> Simulated:
        if self.cluster is None:
            return self.simulate_population(genomes, data, summaries=summaries, token=token)
        return self.cluster.simulate(self, genomes, data, summaries=summaries, token=token)

    def evaluate(
        self,
        genomes: Sequence[StrategyGenome],
        data: BarData,
        *,
        trials: TrialLog | None = None,
        token: CancelToken | None = None,
    ) -> list[Evaluation]:
        """Evaluations in the order of ``genomes``. Each new genome counts as a trial in
        ``trials`` (a fresh log counting only this batch when None). ``token`` is polled
        between chunks of strategies so a cancelled call stops early."""
        if data.n < MINIMUM_BARS:
            raise InvalidArgument(
                "bars", f"{data.n} bars are too few to evaluate; at least {MINIMUM_BARS} needed"
            )
        reject_conflicting_ids(genomes, field="genomes")
        trials = trials if trials is not None else TrialLog()
        unique = list({g.id: g for g in genomes}.values())
        simulated = self._population(unique, data, summaries=True, token=token)
        accumulators, blocks, folds = simulated.accumulators, simulated.blocks, simulated.folds
        assert blocks is not None
        assert folds is not None
        fold_sharpes = sharpe_of_sums(folds, data.bars_per_year)
        for i in range(len(unique)):
            trials.add(_per_bar_sharpe(accumulators[i, kernel.OUT_OF_SAMPLE]))
        by_id = {}
        for i, genome in enumerate(unique):
            by_id[genome.id] = dataclasses.replace(
                self._score(genome, accumulators[i], data, trials, blocks[i]),
                fold_sharpe_ratios=tuple(float(s) for s in fold_sharpes[i]),
            )
        return [by_id[g.id] for g in genomes]

    def evaluate_scenarios(
        self,
        genomes: Sequence[StrategyGenome],
        paths: Sequence[BarData],
        *,
        trials: TrialLog | None = None,
        token: CancelToken | None = None,
    ) -> list[Evaluation]:
        """Forward evaluation: every genome on every scenario path; each metric and score is
        the mean over paths. A genome counts as one trial, with its mean per-bar Sharpe."""
        if not paths:
            raise InvalidArgument("paths", "no scenario paths given")
        for path in paths:
            if path.n < MINIMUM_BARS:
                raise InvalidArgument("paths", f"a path of {path.n} bars is too short")
        reject_conflicting_ids(genomes, field="genomes")
        trials = trials if trials is not None else TrialLog()
        unique = list({g.id: g for g in genomes}.values())
        per_path = [
            self._population(unique, path, summaries=False, token=token).accumulators
            for path in paths
        ]
        for i in range(len(unique)):
            sharpes = [_per_bar_sharpe(acc[i, kernel.OUT_OF_SAMPLE]) for acc in per_path]
            trials.add(float(np.mean(sharpes)))
        by_id = {}
        for i, genome in enumerate(unique):
            scored = [
                self._score(genome, acc[i], path, trials)
                for acc, path in zip(per_path, paths, strict=True)
            ]
            by_id[genome.id] = Evaluation(
                genome=genome,
                metrics=average_metrics([e.metrics for e in scored]),
                out_of_sample=average_metrics([e.out_of_sample for e in scored]),
                risk_score=float(np.mean([e.risk_score for e in scored])),
                composite_score=float(np.mean([e.composite_score for e in scored])),
                trials=trials.count,
            )
        return [by_id[g.id] for g in genomes]

    def backtest_returns(self, genomes: Sequence[StrategyGenome], data: BarData) -> np.ndarray:
        """Per-bar returns of each genome (rows), under the same fill model and folds."""
        return self.backtest(genomes, data, walk_forward=True).returns

    def backtest(
        self, genomes: Sequence[StrategyGenome], data: BarData, *, walk_forward: bool = False
    ) -> Backtest:
        """Per-bar returns and positions of each genome under the fill model. Without
        ``walk_forward`` there are no fold boundaries: positions run on as they would live (the
        paper fleet's view); with it, the evaluation's folds apply."""
        returns = np.empty((len(genomes), data.n))
        positions = np.empty((len(genomes), data.n), dtype=np.int8)
        folds = None if walk_forward else np.array([0, data.n], dtype=np.int64)
        accumulators = self._simulate(
            list(genomes), data, None, returns_out=returns, positions_out=positions, folds=folds
        )
        return Backtest(returns=returns, positions=positions, accumulators=accumulators)

    def holdout(
        self, genomes: Sequence[StrategyGenome], data: BarData, *, start: int
    ) -> tuple[list[Metrics], Backtest]:
        """Each genome run over every bar with one boundary, at ``start``: the bars before it
        warm up indicators and train the Q-learning trader, the bars from it on are held out
        (positions closed there and the embargo applied, as at a fold boundary). Returns the
        held-out bars' metrics (one trial each: nothing was selected on them) and the run."""
        if not 0 < start < data.n:
            raise InvalidArgument("start", f"{start} is not inside the {data.n} bars")
        returns = np.empty((len(genomes), data.n))
        positions = np.empty((len(genomes), data.n), dtype=np.int8)
        accumulators = self._simulate(
            list(genomes),
            data,
            None,
            returns_out=returns,
            positions_out=positions,
            folds=np.array([0, start], dtype=np.int64),
        )
        metrics = [
            from_accumulators(
                acc[kernel.OUT_OF_SAMPLE],
                bars_per_year=data.bars_per_year,
                trials=1,
                trial_variance=0.0,
            )
            for acc in accumulators
        ]
        return metrics, Backtest(returns=returns, positions=positions, accumulators=accumulators)

    def _score(
        self,
        genome: StrategyGenome,
        acc: np.ndarray,
        data: BarData,
        trials: TrialLog,
        blocks: np.ndarray | None = None,
    ) -> Evaluation:
        every = from_accumulators(
            acc[kernel.ALL_BARS],
            bars_per_year=data.bars_per_year,
            trials=trials.count,
            trial_variance=trials.variance,
        )
        oos = from_accumulators(
            acc[kernel.OUT_OF_SAMPLE],
            bars_per_year=data.bars_per_year,
            trials=trials.count,
            trial_variance=trials.variance,
        )
        risk = risk_score(oos, bars_per_year=data.bars_per_year)
        return Evaluation(
            genome=genome,
            metrics=every,
            out_of_sample=oos,
            risk_score=risk,
            composite_score=composite_score(oos, risk, self.settings.weights),
            trials=trials.count,
            out_of_sample_blocks=blocks,
        )

    def fold_starts(self, n: int) -> np.ndarray:
        """First bar of each walk-forward fold; out of sample is every bar from the second on."""
        return np.array(
            [n * k // self.settings.folds for k in range(self.settings.folds)], dtype=np.int64
        )

    def _simulate(
        self,
        genomes: list[StrategyGenome],
        data: BarData,
        token: CancelToken | None,
        *,
        returns_out: np.ndarray | None = None,
        positions_out: np.ndarray | None = None,
        folds: np.ndarray | None = None,
        blocks_out: np.ndarray | None = None,
        folds_out: np.ndarray | None = None,
    ) -> np.ndarray:
        count = len(genomes)
        families = np.array([g.family.value for g in genomes], dtype=np.int64)
        parameters = np.array([self._parameter_vector(g) for g in genomes]).reshape(
            count, kernel.PARAMETER_COUNT
        )
        rows = np.array([self._rows(g, data) for g in genomes], dtype=np.int64).reshape(
            count, kernel.ROW_COUNT
        )
        seeds = np.array([_seed(g.id) for g in genomes], dtype=np.uint64)
        fold_start = self.fold_starts(data.n) if folds is None else folds
        costs = self.settings.costs
        accumulators = np.zeros((count, 2, kernel.ACCUMULATOR_COUNT))
        scratch = np.empty((min(self.chunk_size, count), data.n))
        scratch_positions = np.empty((min(self.chunk_size, count), data.n), dtype=np.int8)
        for first in range(0, count, self.chunk_size):
            if token is not None:
                token.raise_if_cancelled()
            stop = min(first + self.chunk_size, count)
            returns = scratch[: stop - first] if returns_out is None else returns_out[first:stop]
            positions = (
                scratch_positions[: stop - first]
                if positions_out is None
                else positions_out[first:stop]
            )
            with _KERNEL_LOCK:
                kernel.simulate_population(
                    families[first:stop],
                    parameters[first:stop],
                    rows[first:stop],
                    data.table,
                    data.open,
                    data.high,
                    data.low,
                    data.close,
                    data.hour,
                    data.volatility,
                    fold_start,
                    data.bars_in(self.settings.embargo_minutes * 60),
                    costs.commission_bps / 1e4,
                    costs.slippage_bps / 1e4,
                    seeds[first:stop],
                    returns,
                    positions,
                    accumulators[first:stop],
                )
            if blocks_out is not None:
                blocks_out[first:stop] = block_sums(returns, BLOCKS, start=int(fold_start[1]))
            if folds_out is not None:
                edges = np.append(fold_start[1:], data.n)
                folds_out[first:stop] = interval_sums(returns, edges)
        return accumulators

    def _parameter_vector(self, genome: StrategyGenome) -> np.ndarray:
        p = genome.parameters
        vector = np.zeros(kernel.PARAMETER_COUNT)
        vector[kernel.P_ALLOW_SHORT] = p["allow_short"]
        vector[kernel.P_ENTRY] = p["entry_threshold"]
        vector[kernel.P_EXIT] = p["exit_threshold"]
        # A bound at the edge of its range is no bound: the band is open on that side, and a
        # wide-open band lets entries through before the volatility is known (its half-life).
        vol_min, vol_max = p["vol_min"], p["vol_max"]
        vector[kernel.P_VOL_MIN] = -math.inf if vol_min <= _VOL_MIN.low else vol_min
        vector[kernel.P_VOL_MAX] = math.inf if vol_max >= _VOL_MAX.high else vol_max
        vector[kernel.P_SESSION_START] = p["session_start"]
        vector[kernel.P_SESSION_HOURS] = p["session_hours"]
        vector[kernel.P_STOP_ATR] = p["stop_atr"]
        vector[kernel.P_RISK_REWARD] = p["risk_reward"]
        if genome.family is StrategyFamily.MA_CROSSOVER:
            # Absent from genomes stored before it existed: they keep their state-based entries.
            vector[kernel.P_ENTRY_ON_CROSS] = p.get("entry_on_cross", 0.0)
        if genome.family is StrategyFamily.MEAN_REVERSION:
            vector[kernel.P_RSI_BAND] = p["rsi_band"]
        if genome.family is StrategyFamily.Q_LEARNING:
            vector[kernel.P_LEARNING_RATE] = p["learning_rate"]
            vector[kernel.P_EXPLORATION] = p["exploration"]
            vector[kernel.P_DISCOUNT] = p["discount"]
        return vector

    def _rows(self, genome: StrategyGenome, data: BarData) -> list[int]:
        p = genome.parameters
        atr = data.row("atr", int(p["atr_period"]))
        match genome.family:
            case StrategyFamily.MA_CROSSOVER:
                fast, slow = data.row("sma", int(p["fast"])), data.row("sma", int(p["slow"]))
                return [fast, slow, fast, fast, atr]
            case StrategyFamily.MEAN_REVERSION:
                z = data.row("zscore", int(p["bb_period"]))
                return [z, data.row("rsi", int(p["rsi_period"])), z, z, atr]
            case StrategyFamily.BREAKOUT:
                entry, exit_ = int(p["entry_period"]), int(p["exit_period"])
                return [
                    data.row("prior_high", entry),
                    data.row("prior_low", entry),
                    data.row("prior_high", exit_),
                    data.row("prior_low", exit_),
                    atr,
                ]
            case StrategyFamily.Q_LEARNING:
                return [
                    data.row("sma", 10),
                    data.row("sma", 50),
                    data.row("rsi", 14),
                    data.row("volatility_reference", data.reference_half_life),
                    atr,
                ]
        raise InvalidArgument("family", f"unknown family {genome.family}")


def average_metrics(metrics: Sequence[Metrics]) -> Metrics:
    """Field-wise mean (counts rounded) of the metrics of several scenario paths."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Metrics):
        mean = float(np.mean([getattr(m, field.name) for m in metrics]))
        values[field.name] = round(mean) if field.type in ("int", int) else mean
    return Metrics(**values)


def rescore_deflated(evaluation: Evaluation, trials: TrialLog) -> Evaluation:
    """The evaluation with its deflated Sharpe ratios recomputed for the trials so far."""

    def deflate(m: Metrics) -> Metrics:
        floor = max(trials.variance, sharpe_null_floor(m.bar_count))
        benchmark = expected_max_sharpe(trials.count, floor)
        dsr = probabilistic_sharpe(m.per_bar_sharpe, benchmark, m.bar_count, m.skewness, m.kurtosis)
        return dataclasses.replace(m, deflated_sharpe_ratio=dsr)

    return dataclasses.replace(
        evaluation,
        metrics=deflate(evaluation.metrics),
        out_of_sample=deflate(evaluation.out_of_sample),
        trials=trials.count,
    )


def _per_bar_sharpe(acc: np.ndarray) -> float:
    n = acc[kernel.A_N]
    if n < 2:
        return 0.0
    mean = acc[kernel.A_SUM] / n
    variance = (acc[kernel.A_SUM2] - n * mean * mean) / (n - 1)
    return mean / math.sqrt(variance) if variance > 0 else 0.0


def _seed(genome_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(genome_id.encode(), digest_size=8).digest(), "little")
