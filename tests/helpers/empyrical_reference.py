"""The reference figures our metrics are checked against: empyrical-reloaded for every metric it
computes, scipy.stats for the moments (backtest/metrics.py documents each convention)."""

from __future__ import annotations

import warnings

import empyrical
import numpy as np
import scipy.stats


def reference(r: np.ndarray, bars_per_year: float) -> dict[str, float]:
    """Each ``Metrics`` field empyrical (or scipy) also computes, by field name, on per-bar
    returns ``r`` annualised at ``bars_per_year``. Losses are turned into our positive
    fractions (max drawdown, VaR, CVaR); empyrical's NaN and inf are passed through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "total_return": empyrical.cum_returns_final(r),
            "annualized_return": empyrical.annual_return(r, annualization=bars_per_year),
            "annualized_volatility": empyrical.annual_volatility(r, annualization=bars_per_year),
            "sharpe_ratio": empyrical.sharpe_ratio(r, annualization=bars_per_year),
            "sortino_ratio": empyrical.sortino_ratio(r, annualization=bars_per_year),
            "calmar_ratio": empyrical.calmar_ratio(r, annualization=bars_per_year),
            "omega_ratio": empyrical.omega_ratio(r, annualization=bars_per_year),
            "max_drawdown": -empyrical.max_drawdown(r),
            "value_at_risk_95": -empyrical.value_at_risk(r, 0.05),
            "conditional_value_at_risk_95": -empyrical.conditional_value_at_risk(r, 0.05),
            "tail_ratio": empyrical.tail_ratio(r),
            "stability": empyrical.stability_of_timeseries(r),
            "skewness": scipy.stats.skew(r),
            "kurtosis": scipy.stats.kurtosis(r),
        }
