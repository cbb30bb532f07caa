"""Value at risk and expected shortfall (CVaR), historical and parametric, at 95% and 99%.

Conventions, for returns r over one horizon (n observations, n >= 2), confidence c, losses as
positive fractions of the value at risk:

==================  ============================================================================
historical VaR_c    -quantile(r, 1 - c), numpy's linear interpolation between order statistics
                    (empyrical's ``value_at_risk`` and SESA's ``value_at_risk_95``)
historical CVaR_c   -mean of the floor((1 - c)(n - 1)) + 1 smallest returns (empyrical's
                    ``conditional_value_at_risk``): the mean return at or below the quantile
parametric VaR_c    z_c sigma - mu: the loss a normal distribution N(mu, sigma^2) exceeds with
                    probability 1 - c; mu the sample mean, sigma the sample standard deviation
                    (ddof 1), z_c = Phi^-1(c) (1.645 at 95%, 2.326 at 99%)
parametric CVaR_c   sigma phi(z_c) / (1 - c) - mu: the normal's expected loss beyond its VaR
==================  ============================================================================

Historical CVaR is never below historical VaR (the mean of returns at or below the k-th order
statistic is at most the quantile, which lies at or above it). Parametric figures assume normal
returns; intraday returns have fat tails, so the historical figures are the ones the limits use.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np

from qtmesh.base.errors import InvalidArgument

LEVELS = (0.95, 0.99)
_NORMAL = NormalDist()


@dataclasses.dataclass(frozen=True)
class TailRisk:
    historical_var_95: float = 0.0
    historical_cvar_95: float = 0.0
    historical_var_99: float = 0.0
    historical_cvar_99: float = 0.0
    parametric_var_95: float = 0.0
    parametric_cvar_95: float = 0.0
    parametric_var_99: float = 0.0
    parametric_cvar_99: float = 0.0


def _tail(confidence: float) -> float:
    """1 - confidence, rounded so that 0.95 gives exactly 0.05 (not 0.050000000000000044)."""
    return round(1 - confidence, 12)


def historical_var(returns: np.ndarray, confidence: float) -> float:
    return float(-np.quantile(returns, _tail(confidence)))


def historical_cvar(returns: np.ndarray, confidence: float) -> float:
    cutoff = int((returns.shape[0] - 1) * _tail(confidence))
    return float(-np.mean(np.partition(returns, cutoff)[: cutoff + 1]))


def parametric_var(mean: float, stddev: float, confidence: float) -> float:
    return _NORMAL.inv_cdf(confidence) * stddev - mean


def parametric_cvar(mean: float, stddev: float, confidence: float) -> float:
    z = _NORMAL.inv_cdf(confidence)
    density = math.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return stddev * density / _tail(confidence) - mean


def tail_risk(returns: np.ndarray) -> TailRisk:
    """Every figure of :class:`TailRisk` for ``returns`` (finite, at least 2)."""
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1 or r.shape[0] < 2:
        raise ValueError("tail risk needs a series of at least 2 returns")
    mean, stddev = float(np.mean(r)), float(np.std(r, ddof=1))
    values = {}
    for c in LEVELS:
        level = round(c * 100)
        values[f"historical_var_{level}"] = historical_var(r, c)
        values[f"historical_cvar_{level}"] = historical_cvar(r, c)
        values[f"parametric_var_{level}"] = parametric_var(mean, stddev, c)
        values[f"parametric_cvar_{level}"] = parametric_cvar(mean, stddev, c)
    return TailRisk(**values)


def drawdown(returns: np.ndarray) -> float:
    """Current fall of the compounded returns from their running peak (starting at 1)."""
    if returns.shape[0] == 0:
        return 0.0
    path = np.cumprod(1 + returns)
    return float(max(0.0, 1 - path[-1] / max(1.0, float(np.max(path)))))


def check_series(returns: np.ndarray, *, field: str, minimum: int, maximum: int) -> np.ndarray:
    """``returns`` as a float array, or InvalidArgument naming ``field`` (and the index of the
    first bad value): too short or too long, not finite, or a loss beyond -100%."""
    r = np.asarray(returns, dtype=float)
    if r.shape[0] < minimum:
        raise InvalidArgument(field, f"{r.shape[0]} returns are too few: at least {minimum} needed")
    if r.shape[0] > maximum:
        raise InvalidArgument(field, f"{r.shape[0]} returns are too many: at most {maximum}")
    bad = np.flatnonzero(~np.isfinite(r) | (r <= -1))
    if bad.size:
        i = int(bad[0])
        raise InvalidArgument(f"{field}[{i}]", f"{r[i]} is not a finite return above -1")
    return r
