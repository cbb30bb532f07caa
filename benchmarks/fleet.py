"""The paper fleet's accounting: the default fleet (27 strategies on 9 symbols) over 30 days of
one-minute bars, with a book changed by 40 executed actions (disables, enables, reweights,
halts and resumes, shadows added and promoted), simulated and reported. The reference is the
kernel's backtests of the same strategies alone (indicators computed afresh, as the fleet
does), so the ratio is what the book, the halts and the reports cost on top of them.

    python -m benchmarks.fleet
"""

from __future__ import annotations

import time

import numpy as np

from backtest.evaluation import EvaluationSettings, Evaluator
from backtest.indicators import BarData
from benchmarks._report import emit
from market.fleet import Backtester, Candidate, Cause, FleetState, deploy, simulate
from market.synthetic import SyntheticMarketSpec, generate
from qtmesh.base.genome import Policy, StrategyFamily, make_genome

DAYS = 30
REPEATS = 5
MINUTE = 60 * 10**9


def fleet_and_bars() -> tuple[FleetState, dict, int]:
    market = generate(SyntheticMarketSpec(seed=7, days=DAYS))
    series = {s.symbol: s for s in market.series}
    start = int(min(s.time[0] for s in market.series))
    deployed = start + 2 * 1440 * MINUTE
    setup = deploy(
        {s.symbol: s.sector for s in market.series}, deployment_time=deployed, warmup_bars=2880
    )
    state = FleetState(setup)
    ids = [s.id for s in setup.strategies]
    policy = Policy()
    defaults = policy.default_genome(StrategyFamily.MA_CROSSOVER).parameters
    at = deployed
    for k in range(40):
        at += 600 * MINUTE
        cause = Cause(f"k{k}", f"a{k}", k)
        match k % 8:
            case 0:
                change = state.disable_strategy(
                    strategy_id=ids[k % 27], at=at, cause=cause, field="f"
                )
            case 1:
                change = state.enable_strategy(
                    strategy_id=ids[(k - 1) % 27],
                    sector="",
                    genome=None,
                    weight=0.0,
                    at=at,
                    cause=cause,
                    field="f",
                )
            case 2:
                change = state.reweight_strategies(
                    weights={ids[k % 27]: 2.0}, at=at, cause=cause, field="f"
                )
            case 3:
                change = state.halt("portfolio", at=at, cause=cause, field="f")
            case 4:
                change = state.resume("portfolio", at=at, cause=cause, field="f")
            case 5:
                symbol = setup.strategies[k % 27].symbol
                sector = setup.strategies[k % 27].sector
                genome = make_genome(
                    StrategyFamily.MA_CROSSOVER, {**defaults, "fast": 5 + k, "slow": 60 + k}
                )
                change = state.add_shadows(
                    [Candidate(f"{symbol}/{genome.id}", sector, genome)],
                    evolution_id=f"evo-{k}",
                    trials=100,
                    at=at,
                    cause=cause,
                    field="f",
                )
            case 6:
                shadows = [e.strategy_id for e in state.book.values() if e.shadowing]
                change = (
                    state.promote_strategy(
                        strategy_id=shadows[-1], replaces="", at=at, cause=cause, field="f"
                    )
                    if shadows
                    else state.adjust_exposure("", 1.0, at=at, cause=cause, field="f")
                )
            case _:
                change = state.adjust_exposure("Tech", 1.1, at=at, cause=cause, field="f")
        state = state.with_change(change)
    clock = int(max(s.time[-1] for s in market.series))
    return state, series, clock


def main() -> None:
    state, series, clock = fleet_and_bars()
    evaluator = Evaluator(settings=EvaluationSettings(costs=state.setup.costs))
    entries = state.book
    by_symbol: dict[str, list] = {}
    for e in entries.values():
        by_symbol.setdefault(e.symbol, []).append(e.genome)
    kernel, fleet = [], []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        # As the fleet does: indicators computed afresh from the symbol's bars.
        for symbol, genomes in by_symbol.items():
            evaluator.backtest(genomes, BarData(series[symbol]))
        kernel.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        run = simulate(state, series, clock_time=clock, backtester=Backtester(state.setup))
        run.report()
        fleet.append(time.perf_counter() - begin)
    bars = int(run.times.size)
    emit(
        {
            "strategies": len(entries),
            "bars": bars,
            "changes": len(state.changes),
            "kernel_ms": round(float(np.median(kernel)) * 1000, 3),
            "fleet_ms": round(float(np.median(fleet)) * 1000, 3),
            "fleet_over_kernel": round(float(np.median(fleet) / np.median(kernel)), 3),
        }
    )


if __name__ == "__main__":
    main()
