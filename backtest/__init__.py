"""The strategy evaluation engine: indicators, the compiled simulation kernel, the metrics, the
walk-forward evaluator and the probability of backtest overfitting. SESA evolves with it, the
market's paper fleet trades with it and the strategy officer measures with it, so a strategy
scores the same wherever it is run.
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
from backtest.overfitting import block_sums, probability_of_overfitting

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
    "block_sums",
    "expected_max_sharpe",
    "probabilistic_sharpe",
    "probability_of_overfitting",
    "rescore_deflated",
]
