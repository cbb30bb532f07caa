"""What a replay measures of an equity curve, and the paired comparison of two arms over seeds.

* Returns are simple returns between consecutive samples of the fleet's equity.
* Sharpe is annualised by the samples per year the curve itself shows (samples over elapsed
  calendar time), so it holds for minute, hourly and daily bars alike; no risk-free rate.
* Max drawdown is the largest fall from a running peak, as a positive fraction.
* The paired test is the two-sided t test of the per-seed differences (closed minus static),
  ``scipy.stats.ttest_rel``; with fewer than two seeds, or differences that are all equal, its
  p-value is None (undefined), never a number that looks like evidence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

NANOS_PER_YEAR = 365 * 86_400 * 10**9


@dataclasses.dataclass(frozen=True)
class CurveMetrics:
    sharpe: float
    total_return: float
    max_drawdown: float
    volatility: float  # annualised


def drawdowns(equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """The fall from the running peak at every sample, as positive fractions."""
    e = np.asarray(equity, dtype=np.float64)
    if e.size == 0:
        return e
    peak = np.maximum.accumulate(e)
    return 1.0 - e / peak


def curve_metrics(times: Sequence[int], equity: Sequence[float]) -> CurveMetrics:
    """Metrics of an equity curve sampled at ``times`` (Unix nanoseconds, increasing)."""
    e = np.asarray(equity, dtype=np.float64)
    if e.size < 2:
        return CurveMetrics(0.0, 0.0, 0.0, 0.0)
    returns = e[1:] / e[:-1] - 1.0
    elapsed = (int(times[-1]) - int(times[0])) / NANOS_PER_YEAR
    per_year = returns.size / elapsed if elapsed > 0 else 0.0
    sd = float(returns.std(ddof=1)) if returns.size > 1 else 0.0
    sharpe = float(returns.mean() / sd * math.sqrt(per_year)) if sd > 0 else 0.0
    return CurveMetrics(
        sharpe=sharpe,
        total_return=float(e[-1] / e[0] - 1.0),
        max_drawdown=float(drawdowns(e).max()),
        volatility=sd * math.sqrt(per_year),
    )


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired t test of ``a`` against ``b`` (module docstring)."""
    if len(a) != len(b):
        raise ValueError("paired samples need the same length")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2 or np.allclose(d, d[0]):
        return None
    return float(stats.ttest_rel(a, b).pvalue)
