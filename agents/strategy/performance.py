"""How the strategy officer measures a strategy's recent performance.

A strategy the fleet deploys is measured by the fleet's paper P&L: its returns per period (one
hour) over the last ``lookback`` periods (72, three days). With r those returns, n their number
and P the periods in a year (a 365-day year):

* total return prod(1 + r) - 1; volatility std(r, ddof=1) sqrt(P); Sharpe mean(r) / std(r) sqrt(P)
  (risk-free rate 0); max drawdown of the compounded returns; trades opened in the lookback;
* PSR, the probabilistic Sharpe ratio of Bailey and Lopez de Prado: the probability that the
  true per-period Sharpe ratio is above 0 given the estimate, n and the returns' skewness and
  excess kurtosis (SESA's ``probabilistic_sharpe``, so the convention is the platform's).

Any other strategy of the book (a shadow, or a strategy promoted or added later) is measured by
its own record in the fleet since it entered its stage (:class:`market.fleet.StageRecord`): per
bar, on the live replay bars, with a deflated Sharpe ratio that counts the trials that found it
(for an evolution's candidate, every genome the evolution evaluated).

Each strategy is measured one way only (:func:`book_performance`): a deployed strategy has no
measure until the fleet has two periods, never its per-bar record in their place, so that
``min_observations`` fleet returns stay what a disable or an enable needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from agents.fleet_history import FleetHistory
from agents.strategy.book import Entry
from backtest.metrics import probabilistic_sharpe
from market.fleet import StageRecord
from qtmesh.base.genome import StrategyStage

FLEET = "fleet"
RECORD = "record"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Performance:
    source: str  # FLEET (per period of the fleet) or RECORD (per bar since its stage began)
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
    from scipy import stats  # 0.4 s to import: only a process that computes this pays it

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


def record_performance(record: StageRecord) -> Performance:
    """A strategy measured by its own record since it entered its stage."""
    return Performance(
        source=RECORD,
        observations=record.bar_count,
        total_return=record.total_return,
        volatility=record.volatility,
        sharpe=record.sharpe,
        max_drawdown=record.max_drawdown,
        trade_count=record.trade_count,
        psr=record.probabilistic_sharpe,
        deflated_sharpe=record.deflated_sharpe,
    )


def book_performance(
    entries: Sequence[Entry], history: FleetHistory, lookback: int
) -> dict[str, Performance]:
    """Each strategy of the book as the officer measures it: a deployed strategy in production by
    the fleet's periods over ``lookback`` (none before two periods), any other by its record
    since it entered its stage (none before two bars)."""
    by_fleet = fleet_performance(history, lookback)
    records = {s.strategy.id: s.record for s in history.current.strategies}
    performance = {}
    for e in entries:
        if e.in_fleet and e.record.stage is StrategyStage.PRODUCTION:
            if e.strategy_id in by_fleet:
                performance[e.strategy_id] = by_fleet[e.strategy_id]
            continue
        record = records.get(e.strategy_id)
        if record is not None and record.bar_count >= 2:
            performance[e.strategy_id] = record_performance(record)
    return performance
