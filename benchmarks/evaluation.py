"""Evaluation kernel: 50 moving-average-crossover strategies x 43,200 one-minute bars (30 days),
every metric computed, in-sample and out of sample; then the same workload in each family.

    python -m benchmarks.evaluation
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from benchmarks._report import emit
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.genome import Policy, StrategyFamily, make_genome
from sesa.mutation import OPERATORS

STRATEGIES = 50
DAYS = 30
REPEATS = 7

_COLD = """
import time
start = time.perf_counter()
from benchmarks.evaluation import crossover_population, market_data
from backtest.evaluation import Evaluator
data = market_data(0)
genomes = crossover_population()
begin = time.perf_counter()
Evaluator().evaluate(genomes, data)
print(time.perf_counter() - begin)
"""


def market_data(index: int) -> BarData:
    return BarData(generate(SyntheticMarketSpec(seed=7, days=DAYS)).series[index])


def crossover_population() -> list:
    """Plain crossovers on a grid of windows: no filters, stops or thresholds, as compared."""
    policy = Policy()
    family = StrategyFamily.MA_CROSSOVER
    fast = np.geomspace(3, 60, 10).round()
    slow = np.geomspace(80, 800, 5).round()
    return [
        make_genome(family, policy.repair(family, {"fast": f, "slow": s}))
        for f in fast
        for s in slow
    ][:STRATEGIES]


def family_population(family: StrategyFamily) -> list:
    """The family default and tweaks of it (fixed seed): what a generation looks like."""
    policy = Policy()
    rng = np.random.default_rng(0)
    parent = policy.default_genome(family)
    genomes = {parent.id: parent}
    while len(genomes) < STRATEGIES:
        child = OPERATORS["parameter_tweak"].mutate(
            [parent], policy=policy, rng=rng, magnitude=0.3, rate=0.5, generation=1
        )
        genomes[child.id] = child
    return list(genomes.values())


def ns_per_strategy_bar(evaluator: Evaluator, genomes: list, data: BarData) -> float:
    evaluator.evaluate(genomes, data)  # indicators computed, kernels loaded
    timings = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        evaluator.evaluate(genomes, data)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings)) / (len(genomes) * data.n) * 1e9


def cold_start(env: dict[str, str]) -> float:
    """First evaluation in a fresh process (kernel loading or compilation included), seconds."""
    output = subprocess.run(
        [sys.executable, "-c", _COLD], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    print(
        f"workload: {STRATEGIES} MA-crossover strategies (fast x slow grid, no filters) x "
        f"{DAYS * 1440:,} one-minute bars, all 31 metrics on all bars and out of sample; "
        f"median of {REPEATS} runs; the same size per family"
    )
    evaluator = Evaluator()
    data = market_data(0)
    genomes = crossover_population()
    crossover = ns_per_strategy_bar(evaluator, genomes, data)
    # Kernels loaded; a window never seen before also pays for its indicators.
    fresh = market_data(1)
    start = time.perf_counter()
    evaluator.evaluate(genomes, fresh)
    with_indicators = (time.perf_counter() - start) / (len(genomes) * fresh.n) * 1e9
    by_family = {
        family.name.lower(): round(
            ns_per_strategy_bar(evaluator, family_population(family), data), 2
        )
        for family in StrategyFamily
    }
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    warm_cache = cold_start(env)
    with tempfile.TemporaryDirectory() as cache:
        no_cache = cold_start({**env, "NUMBA_CACHE_DIR": cache})
    emit(
        {
            "ns_per_strategy_bar": round(crossover, 2),
            "ns_per_strategy_bar_first_call_on_new_bars": round(with_indicators, 2),
            "strategies": len(genomes),
            "bars": data.n,
            "cold_start_s": round(warm_cache, 3),
            "cold_start_without_kernel_cache_s": round(no_cache, 3),
            "ns_per_strategy_bar_by_family": by_family,
            "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
        }
    )


if __name__ == "__main__":
    main()
