"""The probability of backtest overfitting (PBO), by combinatorially symmetric cross-validation
(CSCV: Bailey, Borwein, Lopez de Prado and Zhu, "The Probability of Backtest Overfitting",
Journal of Computational Finance 20(4), 2017).

The out-of-sample bars of every trial (every genome evaluated) are cut into ``S`` contiguous
blocks of equal length. For each of the C(S, S/2) ways of taking half the blocks as a training
set and the other half as its test set, the trial with the best Sharpe ratio on the training set
is located in the test set's ranking; its relative rank ``w`` in (0, 1) gives the logit
``log(w / (1 - w))``. PBO is the share of splits whose logit is at most 0: how often the best in
sample is no better than the median out of sample. Near 0, selection finds something that
holds; near or above 0.5, it picks noise.

Only the per-block sums a Sharpe ratio needs are kept per trial (:func:`block_sums`), so PBO
over thousands of trials costs no more memory than their metrics.

The same blocks give each trial's *consistency* (:func:`consistency`): the t statistic of its
per-block Sharpe ratios, ``mean / sd * sqrt(S)``. It is high when the edge is there in every
stretch of the out-of-sample bars, and low when a few stretches carry it, which is how a
strategy fitted to its history usually looks (the stability of performance across walk-forward
windows, as in R. Pardo, "The Evaluation and Optimization of Trading Strategies", 2nd ed.,
Wiley 2008, ch. 11).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numba
import numpy as np

from qtmesh.base.errors import InvalidArgument

# Blocks of the CSCV split: C(16, 8) = 12,870 train/test splits, the paper's choice.
BLOCKS = 16
# Splits x trials held at once while PBO is computed.
_CHUNK_CELLS = 4_000_000


def block_sums(returns: np.ndarray, blocks: int = BLOCKS, *, start: int = 0) -> np.ndarray:
    """(trials, blocks, 3) bar count, sum and sum of squares of each row of ``returns`` (trials
    x bars) from bar ``start`` on, over ``blocks`` contiguous blocks of near-equal length."""
    if blocks < 2 or blocks % 2:
        raise InvalidArgument("blocks", f"{blocks} is not an even number of at least 2")
    returns = np.ascontiguousarray(np.atleast_2d(returns), dtype=np.float64)
    edges = np.linspace(0, returns.shape[1] - start, blocks + 1).astype(np.int64)
    out = np.empty((returns.shape[0], blocks, 3))
    _block_sums(returns, start, edges, out)
    return out


def interval_sums(returns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(trials, intervals, 3) bar count, sum and sum of squares of each row of ``returns`` over
    the bars ``edges[k]`` to ``edges[k + 1]`` (the walk-forward folds, say)."""
    returns = np.ascontiguousarray(np.atleast_2d(returns), dtype=np.float64)
    edges = np.ascontiguousarray(edges, dtype=np.int64)
    out = np.empty((returns.shape[0], edges.shape[0] - 1, 3))
    _block_sums(returns, 0, edges, out)
    return out


def sharpe_of_sums(sums: np.ndarray, bars_per_year: float) -> np.ndarray:
    """Annualised Sharpe ratio of each (count, sum, sum of squares) in ``sums`` (last axis);
    0 where the returns are flat or there are fewer than two."""
    n = sums[..., 0]
    mean = np.divide(sums[..., 1], n, out=np.zeros_like(n), where=n > 1)
    variance = np.divide(sums[..., 2] - n * mean * mean, n - 1, out=np.zeros_like(n), where=n > 1)
    sd = np.sqrt(np.maximum(variance, 0.0))
    per_bar = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
    return per_bar * np.sqrt(bars_per_year)


@numba.njit(cache=True)
def _block_sums(returns: np.ndarray, start: int, edges: np.ndarray, out: np.ndarray) -> None:
    for i in range(returns.shape[0]):
        for b in range(edges.shape[0] - 1):
            total = 0.0
            squares = 0.0
            for t in range(start + edges[b], start + edges[b + 1]):
                r = returns[i, t]
                total += r
                squares += r * r
            out[i, b, 0] = edges[b + 1] - edges[b]
            out[i, b, 1] = total
            out[i, b, 2] = squares


def probability_of_overfitting(sums: Sequence[np.ndarray] | np.ndarray) -> float | None:
    """PBO of the trials whose :func:`block_sums` are given (module docstring); None when
    there are fewer than two trials or a block holds fewer than two bars."""
    stats = np.asarray(sums, dtype=np.float64)
    if stats.ndim != 3 or stats.shape[0] < 2:
        return None
    trials, blocks, _ = stats.shape
    if blocks < 2 or blocks % 2 or stats[:, :, 0].min() < 2:
        return None
    if not (stats[:, :, 0] == stats[0, :, 0]).all():
        raise InvalidArgument("sums", "every trial must cover the same bars")
    # Every split's complement is a split too, and the training set of one is the test set of
    # the other: the Sharpe ratios of the splits holding block 0 and of their complements serve
    # both, so each is computed once. Worked through in chunks to bound memory at
    # (chunk x trials).
    halves = np.array([c for c in itertools.combinations(range(blocks), blocks // 2) if c[0] == 0])
    chunk = max(1, _CHUNK_CELLS // trials)
    overfit = 0
    for first in range(0, len(halves), chunk):
        part = halves[first : first + chunk]
        train = np.zeros((len(part), blocks))
        train[np.arange(len(part))[:, None], part] = 1.0
        these = _sharpe(train, stats)
        complements = _sharpe(1.0 - train, stats)
        overfit += _overfit(these, complements) + _overfit(complements, these)
    return overfit / (2 * len(halves))


def _overfit(is_sharpe: np.ndarray, oos_sharpe: np.ndarray) -> int:
    """How many splits (rows) chose, in sample, a trial that ranks in the lower half out of
    sample: the relative rank w of the chosen trial, ties counted half, in (0, 1), with
    logit(w) <= 0."""
    trials = is_sharpe.shape[1]
    chosen = oos_sharpe[np.arange(len(oos_sharpe)), np.argmax(is_sharpe, axis=1)]
    below = (oos_sharpe < chosen[:, None]).sum(axis=1)
    ties = (oos_sharpe == chosen[:, None]).sum(axis=1) - 1
    w = (below + 0.5 * ties + 1.0) / (trials + 1.0)
    return int(np.count_nonzero(np.log(w / (1.0 - w)) <= 0.0))


def consistency(sums: np.ndarray) -> np.ndarray:
    """(trials,) t statistic of each trial's per-block Sharpe ratios from its :func:`block_sums`
    (module docstring); 0 for a trial with no return in any block."""
    stats = np.asarray(sums, dtype=np.float64).reshape(-1, *np.shape(sums)[-2:])
    n = stats[:, :, 0]
    mean = np.divide(stats[:, :, 1], n, out=np.zeros_like(n), where=n > 0)
    variance = np.divide(stats[:, :, 2], n, out=np.zeros_like(n), where=n > 0) - mean * mean
    sd = np.sqrt(np.maximum(variance, 0.0))
    sharpe = np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
    spread = sharpe.std(axis=1, ddof=1)
    t = np.divide(
        sharpe.mean(axis=1), spread, out=np.zeros(len(stats)), where=spread > 0
    ) * np.sqrt(stats.shape[1])
    return t


def _sharpe(masks: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """(splits, trials) per-bar Sharpe ratio over each split's blocks (every trial has the same
    bars, so one count per split)."""
    n = (masks @ stats[0, :, 0])[:, None]
    mean = (masks @ stats[:, :, 1].T) / n
    variance = (masks @ stats[:, :, 2].T) / n - mean * mean
    variance *= n / (n - 1)
    sd = np.sqrt(np.maximum(variance, 0.0))
    return np.divide(mean, sd, out=np.zeros_like(mean), where=sd > 0)
