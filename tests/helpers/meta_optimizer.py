"""Builders of the meta-optimizer tests: sector reports with planted alpha, and seeded noise."""

from __future__ import annotations

import datetime

import numpy as np

from alpha_reporting.report import SectorReport, report_id_for


def planted(sector: str, alphas, *, benchmark: float = 0.001, first: int = 4) -> list:
    reports = []
    for day, alpha in enumerate(alphas):
        date = (datetime.date(2026, 2, first) + datetime.timedelta(days=day)).isoformat()
        roi = benchmark + float(alpha)
        reports.append(
            SectorReport(
                report_id=report_id_for(sector, date),
                sector=sector,
                trading_date=date,
                roi=roi,
                alpha=roi - benchmark,
                benchmark_return=benchmark,
                volatility=0.2 + day / 100,
                max_drawdown=0.01,
                trade_count=10,
                fleet_size=6,
            )
        )
    return reports


def noise(seed: int, mean: float, scale: float, days: int = 8) -> np.ndarray:
    return mean + scale * np.random.default_rng(seed).standard_normal(days)
