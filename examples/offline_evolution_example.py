"""Offline evolution, in process, on the embedded synthetic market: 3 generations, 30 mutations
evaluated, the top 5 printed as a table; then the meta-learning update on the evolution's
evaluations and a paper fleet's trades (``meta.MetaLearningOS``), and a Global Action Plan
(``federation.FederatedEngineV2``), each printed.

    python -m examples.offline_evolution_example [--seed 7] [--symbol ORBT]
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
from rich.table import Table

from backtest.evaluation import Evaluator
from backtest.indicators import BarData
from examples._console import console as make_console
from examples._meta_section import FLEET, trades_of
from federation import FederatedEngineV2
from federation.plan import Plan
from market.synthetic import SyntheticMarketSpec, generate
from meta import MetaLearningOS
from meta.engine import UpdateResult
from sesa.api import meta_evaluations
from sesa.evolution import Evolution, EvolutionConfig, EvolutionResult
from sesa.selection import SelectionConfig


def top_table(result: EvolutionResult, *, title: str) -> Table:
    table = Table(title=title)
    columns = (
        "strategy",
        "origin",
        "stage",
        "score",
        "Sharpe",
        "win",
        "PF",
        "max DD",
        "trades",
        "DSR",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:3] else "right")
    for judgement in result.top:
        e = judgement.evaluation
        m = e.out_of_sample
        table.add_row(
            e.genome.id,
            e.genome.origin,
            judgement.stage.name.lower(),
            f"{e.composite_score:.3f}",
            f"{m.sharpe_ratio:.2f}",
            f"{m.win_rate:.0%}",
            f"{m.profit_factor:.2f}",
            f"{m.max_drawdown:.1%}",
            str(m.trade_count),
            f"{m.deflated_sharpe_ratio:.2f}",
        )
    table.caption = "out-of-sample figures; DSR = deflated Sharpe ratio"
    return table


async def learn_and_plan(
    result: EvolutionResult, trades, *, symbol: str, at: int
) -> tuple[UpdateResult, Plan]:
    """The meta update on the evolution's top strategies and ``trades``, then one GAP cycle."""
    meta_os = MetaLearningOS()
    federation = FederatedEngineV2(meta_learning_os=meta_os)
    try:
        update = await meta_os.run_meta_update(
            recent_trades=trades,
            recent_evaluations=meta_evaluations(result, symbol=symbol, at=at),
        )
        plan = await federation.generate_global_action_plan()
    finally:
        await federation.close()
        meta_os.close()
    return update, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--symbol", default="ORBT")
    args = parser.parse_args()
    console = make_console()
    market = generate(SyntheticMarketSpec(seed=args.seed, days=30))
    series = next(s for s in market.series if s.symbol == args.symbol)
    data = BarData(series)
    config = EvolutionConfig(num_generations=3, elite_carry_forward=1, num_mutations_per_parent=10)
    evolution = Evolution(
        evaluator=Evaluator(),
        selection=SelectionConfig(),
        config=config,
        rng=np.random.default_rng(args.seed),
    )
    stats = evolution.start([], data)
    console.print(
        f"{series.symbol} ({series.sector}), {data.n:,} one-minute bars; "
        f"generation 0: {stats.evaluated} seeds, best composite {stats.best_composite:.3f}"
    )
    while not evolution.finished:
        stats = evolution.step()
        console.print(
            f"generation {stats.generation}: {stats.evaluated} strategies, best "
            f"{stats.best_composite:.3f}, median {stats.median_composite:.3f}, "
            f"{stats.passed_gates} passed the gates, {stats.trials} trials"
        )
    result = evolution.result()
    mutations = (
        sum(s.evaluated for s in result.generations[1:])
        - config.num_generations * config.elite_carry_forward
    )
    console.print(top_table(result, title=f"Top {len(result.top)} after {mutations} mutations"))
    shadow, production = len(result.shadow_candidates), len(result.production_candidates)
    console.print(
        f"{shadow} shadow and {production} production candidates; production needs a deflated "
        f"Sharpe ratio >= 0.95 over {result.trials} trials."
    )
    at = int(series.time[-1])
    trades = [t for strategy in FLEET for t in trades_of(strategy, series)]
    update, plan = asyncio.run(learn_and_plan(result, trades, symbol=series.symbol, at=at))
    console.print(
        f"Meta-learning update: {len(trades)} paper trades, {len(result.top)} evaluations; "
        f"{update.detail}; decisions: " + ", ".join(d.type.name.lower() for d in update.decisions),
        highlight=False,
    )
    console.print(
        f"Global Action Plan #{plan.sequence}: {len(plan.actions)} actions "
        f"({', '.join(f'{a.action_type.name.lower()} {a.target}' for a in plan.actions)}); "
        f"{plan.summary}",
        highlight=False,
    )


if __name__ == "__main__":
    main()
