"""How the strategy officer measures a strategy's recent performance.

A strategy the fleet deploys is measured by the fleet's paper P&L: its returns per period (one
hour) over the last ``lookback`` periods (72, three days). With r those returns, n their number
and P the periods in a year (a 365-day year):

* total return prod(1 + r) - 1; volatility std(r, ddof=1) sqrt(P); Sharpe mean(r) / std(r) sqrt(P)
  (risk-free rate 0); max drawdown of the compounded returns; trades opened in the lookback;
* PSR, the probabilistic Sharpe ratio of Bailey and Lopez de Prado: the probability that the
  true per-period Sharpe ratio is above 0 given the estimate, n and the returns' skewness and
  excess kurtosis (SESA's ``probabilistic_sharpe``, so the convention is the platform's).

Any other strategy of the book (a shadow, or a promoted strategy the fleet does not trade) is
measured by SESA: an evaluation of its genome on its symbol's bars since it entered its stage,
which also gives a deflated Sharpe ratio given the number of shadows tested (the trials).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from agents.fleet_history import FleetHistory
from backtest.metrics import probabilistic_sharpe

FLEET = "fleet"
SESA = "sesa"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Performance:
    source: str  # FLEET (per period of the fleet) or SESA (per bar of an evaluation)
    observations: int
    total_return: float
    volatility: float  # annualised
    sharpe: float  # annualised
    max_drawdown: float
    trade_count: int
    psr: float  # P(true Sharpe > 0)
    deflated_sharpe: float | None = None


def fleet_performance(history: FleetHistory, lookback: int) -> dict[str, Performance]:
    """Per fleet strategy, over the last ``lookback`` periods kept (none without two)."""
    recent = history.last(lookback)
    r = recent.strategy_returns
    n = r.shape[0]
    if n < 2:
        return {}
    annual = math.sqrt(history.periods_per_year)
    mean, sd = r.mean(axis=0), r.std(axis=0, ddof=1)
    path = np.cumprod(1 + r, axis=0)
    peak = np.maximum.accumulate(np.vstack([np.ones((1, r.shape[1])), path]), axis=0)[1:]
    drawdowns = np.max(1 - path / peak, axis=0)
    trades = recent.strategy_trades.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        skew = stats.skew(r, axis=0)
        kurtosis = stats.kurtosis(r, axis=0)
    performances = {}
    for j, sid in enumerate(recent.strategies):
        flat = not sd[j] > 0
        per_period = 0.0 if flat else float(mean[j] / sd[j])
        psr = (
            0.5
            if flat
            else probabilistic_sharpe(per_period, 0.0, n, float(skew[j]), float(kurtosis[j]))
        )
        performances[sid] = Performance(
            source=FLEET,
            observations=n,
            total_return=float(path[-1, j] - 1),
            volatility=float(sd[j] * annual),
            sharpe=per_period * annual,
            max_drawdown=float(drawdowns[j]),
            trade_count=int(trades[j]),
            psr=psr,
        )
    return performances
