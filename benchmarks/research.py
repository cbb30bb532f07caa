"""Research: SESA's search against random search and Optuna's TPE at an equal budget.

Each case is a data set and a strategy family; each search spends the same budget of genomes
evaluated on the first 70% of the bars, is ranked by SESA's own selection, and its best genome
is measured on the last 30%, which no search saw. Held-out Sharpe ratios are averaged over
seeds. Data: backtesting.py's GOOG (daily) and EURUSD (hourly) samples, the embedded synthetic
market (one-minute bars) and, as the control, a zero-drift random walk on which nothing may be
promoted.

    python -m benchmarks.research [--seeds 5] [--budget 400] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._report import emit
from benchmarks.noise import random_walk
from market.sources import load_bars
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.bars import BarSeries
from qtmesh.base.genome import StrategyFamily
from sesa.research import SEARCHES, run_study

FAMILIES = (StrategyFamily.MA_CROSSOVER, StrategyFamily.BREAKOUT, StrategyFamily.MEAN_REVERSION)


def datasets() -> dict[str, BarSeries]:
    import backtesting.test  # the reference's own samples, a test dependency

    samples = Path(backtesting.test.__file__).parent
    return {
        "GOOG": load_bars(samples / "GOOG.csv")[0],
        "EURUSD": load_bars(samples / "EURUSD.csv")[0],
        "synthetic": generate(SyntheticMarketSpec(days=30)).series[0],
        "noise": random_walk(0).series,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="GOOG and the noise control only")
    args = parser.parse_args()
    data = datasets()
    if args.quick:
        data = {k: v for k, v in data.items() if k in ("GOOG", "noise")}
    print(
        f"workload: {len(data)} data sets x {len(FAMILIES)} families x {args.seeds} seeds x "
        f"{', '.join(SEARCHES)} at {args.budget} genomes each; held-out Sharpe of the best"
    )
    began = time.perf_counter()
    cases: dict[str, dict[str, float]] = {}
    wall: dict[str, float] = dict.fromkeys(SEARCHES, 0.0)
    noise_production: dict[str, int] = dict.fromkeys(SEARCHES, 0)
    for name, series in data.items():
        for family in FAMILIES:
            case = f"{name}/{family.name.lower()}"
            means: dict[str, float] = {}
            for search in SEARCHES:
                sharpes = []
                for seed in range(args.seeds):
                    study = run_study(
                        series,
                        SEARCHES[search](rng=np.random.default_rng(seed)),
                        families=(family,),
                        budget=args.budget,
                    )
                    sharpes.append(study.best.holdout.sharpe_ratio)
                    wall[search] += study.elapsed_seconds
                    if name == "noise":
                        noise_production[search] += len(study.ranking.production_candidates)
                means[search] = round(float(np.mean(sharpes)), 3)
                means[f"{search}_sd"] = round(float(np.std(sharpes)), 3)
            cases[case] = means
            print(case, means, flush=True)
    real = [c for c in cases if not c.startswith("noise/")]
    wins = {
        rival: sum(cases[c]["sesa"] >= cases[c][rival] for c in real) for rival in ("random", "tpe")
    }
    emit(
        {
            "benchmark": "research",
            "budget": args.budget,
            "seeds": args.seeds,
            "cases": cases,
            "sesa_at_least_random": f"{wins['random']}/{len(real)}",
            "sesa_at_least_tpe": f"{wins['tpe']}/{len(real)}",
            "mean_holdout_sharpe": {
                s: round(float(np.mean([cases[c][s] for c in real])), 3) for s in SEARCHES
            },
            "noise_production_candidates": noise_production,
            "search_wall_seconds": {s: round(w, 1) for s, w in wall.items()},
            "wall_seconds": round(time.perf_counter() - began, 1),
        }
    )


if __name__ == "__main__":
    main()
