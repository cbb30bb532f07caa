"""The strategy evaluation engine: indicators, the compiled simulation kernel, the metrics and the
walk-forward evaluator. SESA evolves with it, the market's paper fleet trades with it and the
strategy officer measures with it, so a strategy scores the same wherever it is run.
"""

from backtest.evaluation import (
    MINIMUM_BARS,
    Backtest,
    CostModel,
    Evaluation,
    EvaluationSettings,
    Evaluator,
    TrialLog,
    rescore_deflated,
)
from backtest.indicators import BarData
from backtest.metrics import Metrics, ScoreWeights, expected_max_sharpe, probabilistic_sharpe

__all__ = [
    "MINIMUM_BARS",
    "Backtest",
    "BarData",
    "CostModel",
    "Evaluation",
    "EvaluationSettings",
    "Evaluator",
    "Metrics",
    "ScoreWeights",
    "TrialLog",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "rescore_deflated",
]
