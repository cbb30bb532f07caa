"""Overfitting control: evolutions on zero-drift random walks must not promote anything.

100 seeds, each a fresh 30-day one-minute random walk and a 10-generation evolution with the
default EvolutionConfig; counts the runs that end with a production (or shadow) candidate.

    python -m benchmarks.noise [--seeds 100]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from benchmarks._report import emit
from qtmesh.base.bars import make_series
from sesa.evolution import Evolution, EvolutionConfig
from sesa.selection import SelectionConfig

T0 = 1_767_571_200 * 10**9
MINUTE = 60 * 10**9
BARS = 43_200
SIGMA = 5e-4  # per-minute volatility, about 36% a year


def random_walk(seed: int) -> BarData:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0, SIGMA, BARS)))
    open_ = np.r_[100.0, close[:-1]]
    excursion = np.abs(rng.normal(0, 0.6 * SIGMA, (2, BARS)))
    return BarData(
        make_series(
            "NOISE",
            "Noise",
            time=T0 + np.arange(BARS) * MINUTE,
            open=open_,
            high=np.maximum(open_, close) * np.exp(excursion[0]),
            low=np.minimum(open_, close) * np.exp(-excursion[1]),
            close=close,
            volume=np.ones(BARS),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    seeds = parser.parse_args().seeds
    print(
        f"workload: {seeds} seeds x (30-day one-minute zero-drift random walk, 10 generations of "
        "the default EvolutionConfig); production needs the gates and a deflated Sharpe >= 0.95"
    )
    start = time.perf_counter()
    production = shadow = 0
    best_dsr = []
    for seed in range(seeds):
        evolution = Evolution(
            evaluator=Evaluator(),
            selection=SelectionConfig(),
            config=EvolutionConfig(num_generations=10),
            rng=np.random.default_rng(seed),
        )
        evolution.start([], random_walk(seed))
        while not evolution.finished:
            evolution.step()
        result = evolution.result()
        production += bool(result.production_candidates)
        shadow += bool(result.shadow_candidates)
        best_dsr.append(max(j.evaluation.out_of_sample.deflated_sharpe_ratio for j in result.top))
    emit(
        {
            "seeds": seeds,
            "runs_with_production_candidate": production,
            "runs_without_production_candidate": seeds - production,
            "runs_with_shadow_candidate": shadow,
            "max_deflated_sharpe_of_top": round(float(np.max(best_dsr)), 4),
            "wall_s": round(time.perf_counter() - start, 1),
        }
    )


if __name__ == "__main__":
    main()
