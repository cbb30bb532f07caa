"""Performance metrics from the kernel's accumulators, with their conventions, plus the risk
score, the composite score and the probabilistic and deflated Sharpe ratios.

Conventions (r = per-bar strategy returns of the set, n bars, A = bars per year):

======================  ===========================================================================
total_return            prod(1 + r) - 1
annualized_return       (1 + total_return) ** (A / n) - 1 (compound annual growth, as empyrical)
annualized_volatility   std(r, ddof=1) * sqrt(A)
sharpe_ratio            mean(r) / std(r, ddof=1) * sqrt(A); risk-free rate 0
sortino_ratio           mean(r) * sqrt(A) / sqrt(mean(min(r, 0) ** 2)); target 0 (as empyrical)
calmar_ratio            annualized_return / max_drawdown
omega_ratio             sum(max(r, 0)) / -sum(min(r, 0)); threshold 0
max_drawdown            largest fall from a running peak of equity (starting at 1), positive
max_dd_duration_bars    longest run of bars below a previous peak
win_rate                winning trades / trades (a trade wins when its return, costs included, > 0)
profit_factor           sum of winning trade returns / -sum of losing trade returns
average_win / _loss     mean return of winning / losing trades (the loss is negative)
payoff_ratio            average_win / |average_loss|
expectancy              mean trade return
trade_count             closed trades (a position open at the end counts, closed at the last close)
exposure                share of bars closing with a position
turnover                units of position traded per bar (a round trip is 2)
average_holding_bars    bars a trade spans, on average
best_trade/worst_trade  largest / smallest trade return
value_at_risk_95        -percentile(r, 5), historical, numpy's linear interpolation (positive loss)
cvar_95                 -mean of the floor(0.05 (n - 1)) + 1 smallest returns (as empyrical)
tail_ratio              |percentile(r, 95)| / |percentile(r, 5)|
skewness / kurtosis     biased sample skewness and excess kurtosis (scipy.stats defaults)
stability               R^2 of a least-squares line through cumsum(log1p(r)) (as empyrical)
ulcer_index             sqrt(mean(drawdown ** 2)), drawdowns as fractions of the running peak
recovery_factor         total_return / max_drawdown
probabilistic_sharpe    PSR(0) of Bailey & Lopez de Prado (2012) on the per-bar Sharpe ratio
deflated_sharpe         PSR(SR0), SR0 the expected maximum Sharpe ratio of N trials (2014)
======================  ===========================================================================

A ratio whose denominator is 0 is reported as 0, except profit factor and omega ratio, which
are +inf when there are gains and no losses. All figures are fractions, not percent.

Deflated Sharpe ratio: SR0 = sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e))), g the
Euler-Mascheroni constant, Z the standard normal quantile, N the number of genomes tried so far
and V the variance of their per-bar Sharpe ratios, floored at 1 / (n - 1), the sampling variance
of a Sharpe ratio under the null: near-identical trials must not make SR0 collapse.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np

from backtest import kernel as k
from qtmesh.base.errors import InvalidArgument

EULER_GAMMA = 0.5772156649015329
# statistics.NormalDist and math.erfc: exact enough and ~50x cheaper per call than scipy.stats.
_NORMAL = NormalDist()


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclasses.dataclass(frozen=True)
class Metrics:
    total_return: float
    annualized_return: float
    annualized_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    omega_ratio: float
    max_drawdown: float
    max_drawdown_duration_bars: int
    win_rate: float
    profit_factor: float
    average_win: float
    average_loss: float
    payoff_ratio: float
    expectancy: float
    trade_count: int
    exposure: float
    turnover: float
    average_holding_bars: float
    best_trade: float
    worst_trade: float
    value_at_risk_95: float
    conditional_value_at_risk_95: float
    tail_ratio: float
    skewness: float
    kurtosis: float
    stability: float
    ulcer_index: float
    recovery_factor: float
    probabilistic_sharpe_ratio: float
    deflated_sharpe_ratio: float
    bar_count: int
    # Sharpe ratio per bar (not annualised): the unit of PSR and DSR.
    per_bar_sharpe: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreWeights:
    """Composite weights; non-negative and summing to 1 (validated)."""

    pnl: float = 0.25
    sharpe: float = 0.20
    win_rate: float = 0.15
    profit_factor: float = 0.15
    drawdown: float = 0.15
    risk: float = 0.10

    def __post_init__(self) -> None:
        values = dataclasses.asdict(self)
        for name, value in values.items():
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"weights.{name}", f"{value} is not a non-negative number")
        if abs(sum(values.values()) - 1.0) > 1e-9:
            raise InvalidArgument("weights", f"must sum to 1 (they sum to {sum(values.values())})")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else 0.0


def _gain_ratio(gains: float, losses: float) -> float:
    if losses < 0:
        return gains / -losses
    return math.inf if gains > 0 else 0.0


def sharpe_null_floor(bars: int) -> float:
    """Sampling variance of a per-bar Sharpe ratio estimate under the null (iid, SR = 0)."""
    return 1.0 / max(bars - 1, 1)


def expected_max_sharpe(trials: int, variance: float) -> float:
    """SR0: the Sharpe ratio the best of ``trials`` unskilled strategies is expected to reach."""
    if trials < 2:
        return 0.0
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / trials)
        + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (trials * math.e))
    )


def probabilistic_sharpe(
    sharpe: float, benchmark: float, bars: int, skewness: float, kurtosis: float
) -> float:
    """P(true per-bar Sharpe > benchmark) given the estimate, its length and higher moments."""
    if bars < 2:
        return 0.0
    denominator = 1 - skewness * sharpe + (kurtosis + 3 - 1) / 4 * sharpe * sharpe
    denominator = math.sqrt(max(denominator, 1e-12))
    return _normal_cdf((sharpe - benchmark) * math.sqrt(bars - 1) / denominator)


def from_accumulators(
    acc: np.ndarray, *, bars_per_year: float, trials: int, trial_variance: float
) -> Metrics:
    """Metrics of one statistics set (a row of the kernel's accumulators)."""
    acc = acc.tolist()  # Python floats: numpy scalar arithmetic is several times slower here
    n = int(acc[k.A_N])
    if n < 2:
        return empty_metrics(n)
    mean = acc[k.A_SUM] / n
    m2 = acc[k.A_SUM2] / n - mean * mean
    variance = max(m2 * n / (n - 1), 0.0)
    std = math.sqrt(variance)
    per_bar_sharpe = _ratio(mean, std)
    root_a = math.sqrt(bars_per_year)
    equity = acc[k.A_EQUITY]
    total = equity - 1.0
    annual = equity ** (bars_per_year / n) - 1.0 if equity > 0 else -1.0
    max_dd = acc[k.A_MAX_DD]
    m3 = acc[k.A_SUM3] / n - 3 * mean * acc[k.A_SUM2] / n + 2 * mean**3
    m4 = (
        acc[k.A_SUM4] / n
        - 4 * mean * acc[k.A_SUM3] / n
        + 6 * mean**2 * acc[k.A_SUM2] / n
        - 3 * mean**4
    )
    skewness = _ratio(m3, m2**1.5) if m2 > 0 else 0.0
    kurtosis = _ratio(m4, m2 * m2) - 3.0 if m2 > 0 else 0.0
    trades = int(acc[k.A_TRADES])
    wins = int(acc[k.A_WINS])
    losses = trades - wins
    average_win = _ratio(acc[k.A_WIN_SUM], wins)
    average_loss = _ratio(acc[k.A_LOSS_SUM], losses)
    # Stability: R^2 of cum log returns on the bar index, from running sums.
    mean_t = (n - 1) / 2.0
    var_t = (n * n - 1) / 12.0
    cov_ty = acc[k.A_ST_TY] / n - mean_t * (acc[k.A_ST_Y] / n)
    var_y = acc[k.A_ST_YY] / n - (acc[k.A_ST_Y] / n) ** 2
    stability = min(cov_ty * cov_ty / (var_t * var_y), 1.0) if var_t > 0 and var_y > 1e-30 else 0.0
    q05 = acc[k.A_Q05]
    q95 = acc[k.A_Q95]
    floor = max(trial_variance, sharpe_null_floor(n))
    return Metrics(
        total_return=total,
        annualized_return=annual,
        annualized_volatility=std * root_a,
        sharpe_ratio=per_bar_sharpe * root_a,
        sortino_ratio=_ratio(mean * root_a, math.sqrt(acc[k.A_DOWN2] / n)),
        calmar_ratio=_ratio(annual, max_dd),
        omega_ratio=_gain_ratio(acc[k.A_GAINS], acc[k.A_LOSSES]),
        max_drawdown=max_dd,
        max_drawdown_duration_bars=int(acc[k.A_MAX_DD_LEN]),
        win_rate=_ratio(wins, trades),
        profit_factor=_gain_ratio(acc[k.A_WIN_SUM], acc[k.A_LOSS_SUM]),
        average_win=average_win,
        average_loss=average_loss,
        payoff_ratio=_ratio(average_win, abs(average_loss)),
        expectancy=_ratio(acc[k.A_WIN_SUM] + acc[k.A_LOSS_SUM], trades),
        trade_count=trades,
        exposure=acc[k.A_EXPOSED] / n,
        turnover=acc[k.A_TURNOVER] / n,
        average_holding_bars=_ratio(acc[k.A_HOLDING], trades),
        best_trade=acc[k.A_BEST],
        worst_trade=acc[k.A_WORST],
        value_at_risk_95=-q05,
        conditional_value_at_risk_95=-acc[k.A_CVAR],
        tail_ratio=_ratio(abs(q95), abs(q05)),
        skewness=skewness,
        kurtosis=kurtosis,
        stability=stability,
        ulcer_index=math.sqrt(acc[k.A_ULCER] / n),
        recovery_factor=_ratio(total, max_dd),
        probabilistic_sharpe_ratio=probabilistic_sharpe(per_bar_sharpe, 0.0, n, skewness, kurtosis),
        deflated_sharpe_ratio=probabilistic_sharpe(
            per_bar_sharpe, expected_max_sharpe(trials, floor), n, skewness, kurtosis
        ),
        bar_count=n,
        per_bar_sharpe=per_bar_sharpe,
    )


def empty_metrics(bars: int = 0) -> Metrics:
    fields = {f.name: 0 for f in dataclasses.fields(Metrics)}
    fields["bar_count"] = bars
    return Metrics(**fields)


def risk_score(metrics: Metrics, *, bars_per_year: float) -> float:
    """0 (safe) to 100: 40% drawdown (30% = full), 30% volatility (60% a year = full),
    20% daily-scaled CVaR (5% = full), 10% exposure. A bar of a day or longer counts as a day."""
    bars_per_day = max(bars_per_year / 365.0, 1.0)
    daily_cvar = metrics.conditional_value_at_risk_95 * math.sqrt(bars_per_day)
    score = (
        0.4 * min(metrics.max_drawdown / 0.30, 1.0)
        + 0.3 * min(metrics.annualized_volatility / 0.60, 1.0)
        + 0.2 * min(max(daily_cvar, 0.0) / 0.05, 1.0)
        + 0.1 * metrics.exposure
    )
    return 100.0 * score


def composite_score(metrics: Metrics, risk: float, weights: ScoreWeights) -> float:
    """Weighted sum of components mapped to 0..1: PnL 0.5 + 0.5 tanh(total_return / 10%),
    Sharpe 0.5 + 0.5 tanh(Sharpe / 2), win rate, PF / (1 + PF), 1 - drawdown / 30% (floored
    at 0), 1 - risk / 100."""
    profit_factor = metrics.profit_factor
    pf_component = 1.0 if math.isinf(profit_factor) else profit_factor / (1.0 + profit_factor)
    return (
        weights.pnl * (0.5 + 0.5 * math.tanh(metrics.total_return / 0.10))
        + weights.sharpe * (0.5 + 0.5 * math.tanh(metrics.sharpe_ratio / 2.0))
        + weights.win_rate * metrics.win_rate
        + weights.profit_factor * pf_component
        + weights.drawdown * (1.0 - min(metrics.max_drawdown / 0.30, 1.0))
        + weights.risk * (1.0 - risk / 100.0)
    )
