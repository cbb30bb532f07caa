"""Evaluation on a local Dask cluster against in process: 50 and 5,000 strategies x 43,200
one-minute bars (30 days), with 1 and 2 worker processes, and what the engine costs per task.

    python -m benchmarks.distributed

Every figure's reference is measured in the same run: ``ratio`` is the cluster's throughput over
in-process evaluation's (above 1: the cluster is faster). In process, the kernel already runs a
chunk's strategies on every core (numba's threads), so on one machine the cluster can only add
its overhead: the point of these runs is that overhead (task round trip, bars shipped, results
gathered), which the scaling model in docs/operations.md takes to N machines.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from backtest.cluster import DEFAULT_TASK_SIZE, DaskCluster
from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from benchmarks._report import emit
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.genome import Policy, StrategyFamily
from sesa.mutation import OPERATORS

DAYS = 30
SIZES = (50, 5000)
WORKERS = (1, 2)
TASK_SIZE = DEFAULT_TASK_SIZE
REPEATS = {50: 7, 5000: 3}
NOOP_TASKS = 200


def population(size: int) -> list:
    """Tweaks of every family's default genome (fixed seed): a generation's mix."""
    policy = Policy()
    rng = np.random.default_rng(0)
    parents = [policy.default_genome(f) for f in StrategyFamily]
    found: dict[str, object] = {}
    while len(found) < size:
        parent = parents[len(found) % len(parents)]
        child = OPERATORS["parameter_tweak"].mutate(
            [parent], policy=policy, rng=rng, magnitude=0.3, rate=0.5, generation=1
        )
        found[child.id] = child
    return list(found.values())


def seconds(evaluator: Evaluator, genomes: list, data: BarData, repeats: int) -> float:
    evaluator.evaluate(genomes, data)  # kernels loaded, indicators built (on every worker)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluator.evaluate(genomes, data)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def task_overhead_ms(cluster: DaskCluster) -> float:
    """Median round trip of an empty task (submit, run, result), milliseconds."""
    client = cluster.client
    timings = []
    for i in range(NOOP_TASKS):
        start = time.perf_counter()
        client.submit(abs, -i, pure=False).result()
        timings.append(time.perf_counter() - start)
    return round(statistics.median(timings) * 1000, 3)


def scatter_ms(cluster: DaskCluster, data: BarData) -> float:
    """Shipping one window's bars to every worker, milliseconds."""
    start = time.perf_counter()
    future = cluster.client.scatter(data.series, broadcast=True, hash=False)
    elapsed = time.perf_counter() - start
    cluster.client.cancel([future])
    return round(elapsed * 1000, 3)


def main() -> None:
    data = BarData(generate(SyntheticMarketSpec(seed=7, days=DAYS)).series[0])
    print(
        f"workload: {' and '.join(f'{n:,}' for n in SIZES)} strategies (every family) x "
        f"{data.n:,} one-minute bars; in process, then a local Dask cluster of "
        f"{' and '.join(map(str, WORKERS))} worker processes, at most {TASK_SIZE} strategies "
        "per task",
        flush=True,
    )
    populations = {n: population(n) for n in SIZES}
    in_process = {n: seconds(Evaluator(), populations[n], data, REPEATS[n]) for n in SIZES}
    figures: dict[str, object] = {
        "bars": data.n,
        "task_size": TASK_SIZE,
        "in_process": {
            str(n): {"s": round(s, 4), "strategies_per_s": round(n / s, 1)}
            for n, s in in_process.items()
        },
    }
    for workers in WORKERS:
        start = time.perf_counter()
        cluster = DaskCluster.local(workers=workers, task_size=TASK_SIZE)
        started = time.perf_counter() - start
        try:
            runs = {}
            for n in SIZES:
                s = seconds(Evaluator(cluster=cluster), populations[n], data, REPEATS[n])
                runs[str(n)] = {
                    "s": round(s, 4),
                    "strategies_per_s": round(n / s, 1),
                    "ratio": round(in_process[n] / s, 3),
                    "tasks": -(-n // min(TASK_SIZE, -(-n // workers))),
                }
                print(f"{workers} worker(s), {n:,} strategies: {runs[str(n)]}", flush=True)
            figures[f"workers_{workers}"] = {
                **runs,
                "cluster_start_s": round(started, 3),
                "task_round_trip_ms": task_overhead_ms(cluster),
                "bars_scatter_ms": scatter_ms(cluster, data),
            }
        finally:
            cluster.close()
    figures["threads"] = int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1))
    emit(figures)


if __name__ == "__main__":
    main()
